"""FX conversion, gold orders and lines, and the customer and product dimensions, on tiny inline frames."""

import datetime as dt
from decimal import Decimal

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import types as T

from ecom.schemas import CUSTOMER_SCHEMA, ITEM_SCHEMA, PRODUCT_SCHEMA
from pipelines.gold import dimensions, fx, orders

T0 = dt.datetime(2026, 10, 30, 23, 0)
T1 = dt.datetime(2026, 11, 2, 8, 30)
T2 = dt.datetime(2026, 11, 5, 12, 0)

SILVERISH = T.StructType(
    [
        T.StructField("event_id", T.StringType()),
        T.StructField("customer_id", T.StringType()),
        T.StructField("customer_email_hash", T.StringType()),
        T.StructField("event_time", T.TimestampType()),
        T.StructField("event_date", T.DateType()),
        T.StructField("currency", T.StringType()),
        T.StructField("amount", T.DecimalType(12, 2)),
        T.StructField("payment_method", T.StringType()),
        T.StructField("channel", T.StringType()),
        T.StructField("shipping_country", T.StringType()),
        T.StructField("fraud_score", T.DoubleType()),
        T.StructField("is_fraud", T.BooleanType()),
        T.StructField("items", T.ArrayType(ITEM_SCHEMA)),
    ]
)


def item(product, category, quantity, price):
    return (product, category, quantity, Decimal(price))


def silver(spark, rows):
    return spark.createDataFrame(
        [
            (
                eid,
                cust,
                f"h-{cust}-{eid}",
                ts,
                ts.date(),
                cur,
                Decimal(amount),
                "card",
                "web",
                country,
                None,
                None,
                items,
            )
            for eid, cust, ts, cur, amount, country, items in rows
        ],
        SILVERISH,
    )


@pytest.fixture
def gold_usd(spark):
    return fx.fx_rates_frame(spark, "USD")


def test_fx_rates_are_units_per_reporting_unit(spark):
    eur = {r.currency: r.units_per_reporting_unit for r in fx.fx_rates_frame(spark, "EUR").collect()}
    # From the reference (units per USD): EUR 0.92, JPY 150, USD 1 -> per EUR: 1, 150/0.92, 1/0.92.
    assert eur["EUR"] == pytest.approx(1.0)
    assert eur["JPY"] == pytest.approx(150 / 0.92)
    assert eur["USD"] == pytest.approx(1 / 0.92)


def test_unknown_reporting_currency_is_a_clear_error(spark):
    with pytest.raises(ValueError, match="XYZ"):
        fx.fx_rates_frame(spark, "XYZ")


def test_order_revenue_converts_each_currency(spark, gold_usd):
    df = silver(
        spark,
        [
            ("e1", "C1", T0, "USD", "10.00", "US", []),
            ("e2", "C1", T1, "EUR", "9.20", "DE", []),
            ("e3", "C2", T2, "JPY", "1500.00", "JP", []),
        ],
    )
    got = orders.with_order_revenue(df, gold_usd).select("event_id", "revenue")
    expected = spark.createDataFrame([("e1", 10.0), ("e2", 10.0), ("e3", 10.0)], "event_id string, revenue double")
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True)


def test_an_order_in_a_currency_without_rate_fails_loudly(spark, gold_usd):
    df = silver(spark, [("e1", "C1", T0, "XXX", "10.00", "US", [])])
    with pytest.raises(Exception, match="no FX rate for currency XXX"):
        orders.with_order_revenue(df, gold_usd).collect()


def test_order_lines_carry_converted_line_revenue_and_skip_lines_without_product(spark, gold_usd):
    df = silver(
        spark,
        [
            ("e1", "C1", T0, "GBP", "23.70", "GB", [item("P1", "books", 3, "7.90"), item(None, "toys", 1, "1.00")]),
        ],
    )
    lines = orders.order_lines(orders.with_order_revenue(df, gold_usd), gold_usd)
    got = lines.select("event_id", "product_id", "quantity", "unit_price", "line_revenue")
    expected = spark.createDataFrame(
        [("e1", "P1", 3, 7.90 / 0.79, 23.70 / 0.79)],
        "event_id string, product_id string, quantity int, unit_price double, line_revenue double",
    )
    assert_approx_df_equality(got, expected, 1e-9)


def test_customer_dimension(spark, gold_usd):
    df = silver(
        spark,
        [
            ("e1", "C1", T0, "USD", "30.00", "US", []),
            ("e2", "C1", T1, "USD", "10.00", "CA", []),
            ("e3", "C1", T2, "USD", "20.00", "CA", []),
            ("e4", "C2", T1, "USD", "5.00", None, []),
        ],
    )
    got = dimensions.customer_dimension(orders.with_order_revenue(df, gold_usd))
    expected = spark.createDataFrame(
        [
            ("C1", "h-C1-e3", T0, T2, 3, 60.0, dt.date(2026, 10, 1), "CA", 20.0),
            ("C2", "h-C2-e4", T1, T1, 1, 5.0, dt.date(2026, 11, 1), None, 5.0),
        ],
        "customer_id string, customer_email_hash string, first_order_time timestamp, last_order_time timestamp, "
        "order_count long, total_revenue double, cohort_month date, home_country string, avg_order_value double",
    ).select(*CUSTOMER_SCHEMA.fieldNames())
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_product_dimension(spark, gold_usd):
    df = silver(
        spark,
        [
            ("e1", "C1", T0, "USD", "25.00", "US", [item("P1", "books", 2, "10.00"), item("P2", "toys", 1, "5.00")]),
            ("e2", "C2", T1, "EUR", "11.04", "DE", [item("P1", "books", 1, "11.04")]),
            ("e3", "C2", T2, "USD", "12.00", "US", [item("P1", "books", 1, "12.00")]),
        ],
    )
    ords = orders.with_order_revenue(df, gold_usd)
    got = dimensions.product_dimension(orders.order_lines(ords, gold_usd))
    p1_revenue = 20.0 + 11.04 / 0.92 + 12.0
    expected = spark.createDataFrame(
        [
            ("P1", "books", 12.0, 3, 4, p1_revenue, p1_revenue / 4, 2, T0, T2),
            ("P2", "toys", 5.0, 1, 1, 5.0, 5.0, 1, T0, T0),
        ],
        PRODUCT_SCHEMA,
    )
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_dimensions_keep_declared_columns(spark, gold_usd):
    df = silver(spark, [("e1", "C1", T0, "USD", "1.00", "US", [item("P1", "books", 1, "1.00")])])
    ords = orders.with_order_revenue(df, gold_usd)
    assert_df_equality(
        dimensions.customer_dimension(ords).limit(0),
        spark.createDataFrame([], CUSTOMER_SCHEMA),
        ignore_nullable=True,
    )
