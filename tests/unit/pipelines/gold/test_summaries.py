"""Order metrics per period and dimension, and their encoding as analytics_summaries rows, on tiny inline frames.

Expected figures are worked out by hand. Reporting currency USD (EUR 0.92 per USD).
"""

import datetime as dt
from decimal import Decimal

import pandas as pd
from chispa import assert_approx_df_equality
from pyspark.sql import types as T

from ecom.schemas import SILVER_SCHEMA
from pipelines.gold.summaries import (
    SILVER_COLUMNS,
    dimension_key,
    dimension_rows,
    period_figures,
    reporting_rates,
    summary_rows,
)

D1 = dt.datetime(2026, 11, 20, 23, 59, 30)
D2 = dt.datetime(2026, 11, 21, 0, 0, 10)
COLUMNS = ("event_id", "customer_id", "customer_email_hash", "event_time", "event_date", "currency", "amount",
           "payment_method", "channel", "shipping_country", "fraud_score", "is_fraud", "items")  # fmt: skip
SCHEMA = T.StructType([SILVER_SCHEMA[c] for c in COLUMNS])
FIGURES = "period_start timestamp, dimension string, dimension_value string, orders long, revenue double, "
FIGURES += "avg_order_value double, customers long, alerts long, alert_rate double"


def dimensions(spark, rows):
    """Silver rows as the metrics read them (Arrow, from Spark) -> their dimension rows (USD)."""
    silver = spark.createDataFrame(
        [(e, c, None, t, t.date(), cur, Decimal(a), pay, ch, "US", None, fraud, items)
         for e, c, t, cur, a, pay, ch, fraud, items in rows],
        SCHEMA,
    )  # fmt: skip
    return dimension_rows(silver.select(*SILVER_COLUMNS).toArrow(), reporting_rates("USD"))


def line(product, category, quantity, price):
    return (product, category, quantity, Decimal(price))


def test_the_dimension_encoding():
    assert dimension_key("all", "") == ""
    assert dimension_key("category", "books") == "category=books"
    assert dimension_key("payment_method", "card") == "payment_method=card"
    assert dimension_key("channel", "mobile_app") == "channel=mobile_app"


def test_an_order_counts_once_per_category_and_lines_without_product_are_no_sale(spark):
    # e1: two books lines (10 + 2 x 5) and a line without category (3): books once with 20, unknown with 3;
    # a line without product (toys) is left out. e2 is not scored (null is_fraud).
    lines = [line("P1", "books", 1, "10.00"), line("P2", "books", 2, "5.00"), line("P3", None, 1, "3.00"), line(None, "toys", 1, "9.00")]  # fmt: skip
    dims = dimensions(spark, [("e1", "C1", D1, "USD", "23.00", "card", "web", True, lines)])
    got = spark.createDataFrame(dims).select(
        "event_id", "dimension", "dimension_value", "revenue", "is_alert", "is_scored"
    )
    expected = spark.createDataFrame(
        [
            ("e1", "all", "", 23.0, True, True),
            ("e1", "payment_method", "card", 23.0, True, True),
            ("e1", "channel", "web", 23.0, True, True),
            ("e1", "category", "books", 20.0, True, True),
            ("e1", "category", "unknown", 3.0, True, True),
        ],
        "event_id string, dimension string, dimension_value string, revenue double, is_alert boolean, is_scored boolean",
    )
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_day_figures_per_dimension(spark):
    # Day 1: C1 10 USD (books, card, web) and C1 18.40 EUR = 20 USD (toys, paypal, web), both scored, no alert.
    # Day 2: C2 5 USD (books, card, mobile_app), an alert; C3 7 USD (books, card, web), not scored.
    dims = dimensions(
        spark,
        [
            ("e1", "C1", D1, "USD", "10.00", "card", "web", False, [line("P1", "books", 1, "10.00")]),
            ("e2", "C1", D1, "EUR", "18.40", "paypal", "web", False, [line("P2", "toys", 2, "9.20")]),
            ("e3", "C2", D2, "USD", "5.00", "card", "mobile_app", True, [line("P1", "books", 1, "5.00")]),
            ("e4", "C3", D2, "USD", "7.00", "card", "web", None, [line("P1", "books", 1, "7.00")]),
        ],
    )
    day1, day2 = dt.datetime(2026, 11, 20), dt.datetime(2026, 11, 21)
    expected = spark.createDataFrame(
        [
            (day1, "all", "", 2, 30.0, 15.0, 1, 0, 0.0),
            (day1, "category", "books", 1, 10.0, 10.0, 1, 0, 0.0),
            (day1, "category", "toys", 1, 20.0, 20.0, 1, 0, 0.0),
            (day1, "payment_method", "card", 1, 10.0, 10.0, 1, 0, 0.0),
            (day1, "payment_method", "paypal", 1, 20.0, 20.0, 1, 0, 0.0),
            (day1, "channel", "web", 2, 30.0, 15.0, 1, 0, 0.0),
            (day2, "all", "", 2, 12.0, 6.0, 2, 1, 1.0),
            (day2, "category", "books", 2, 12.0, 6.0, 2, 1, 1.0),
            (day2, "payment_method", "card", 2, 12.0, 6.0, 2, 1, 1.0),
            (day2, "channel", "mobile_app", 1, 5.0, 5.0, 1, 1, 1.0),
            (day2, "channel", "web", 1, 7.0, 7.0, 1, 0, None),
        ],
        FIGURES,
    )
    got = spark.createDataFrame(period_figures(dims, "day"))
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_summary_rows_drop_null_metrics_and_keep_late_events_overall():
    minute = pd.Timestamp("2026-11-20 10:00")
    figures = pd.DataFrame(
        [
            (minute, "all", "", 2, 30.0, 15.0, 2, 0, None, 1),
            (minute, "category", "books", 1, 10.0, 10.0, 1, 0, 0.0, 0),
        ],
        columns=["window_start", "dimension", "dimension_value", "orders", "revenue", "avg_order_value", "customers",
                 "alerts", "alert_rate", "late_events"],
    )  # fmt: skip
    at = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)
    expected = {
        ("orders", "minute", at, "", 2.0), ("revenue", "minute", at, "", 30.0),
        ("avg_order_value", "minute", at, "", 15.0), ("customers", "minute", at, "", 2.0),
        ("alerts", "minute", at, "", 0.0), ("late_events", "minute", at, "", 1.0),
        ("orders", "minute", at, "category=books", 1.0), ("revenue", "minute", at, "category=books", 10.0),
        ("avg_order_value", "minute", at, "category=books", 10.0), ("customers", "minute", at, "category=books", 1.0),
        ("alerts", "minute", at, "category=books", 0.0), ("alert_rate", "minute", at, "category=books", 0.0),
    }  # fmt: skip
    rows = summary_rows(figures, "minute", "window_start")
    assert len(rows) == len(expected)
    assert set(rows) == expected
