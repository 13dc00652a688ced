"""Gold dimensions: ``gold/customers`` and ``gold/products``.

Input: gold orders and order lines (``pipelines.gold.orders``), all of silver.
Output: ``customers`` (one row per customer seen in silver: lifetime figures in
the reporting currency, cohort month, home country) and ``products`` (one row
per product sold: catalogue attributes as last seen, sales figures).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from ecom.schemas import CUSTOMER_SCHEMA, PRODUCT_SCHEMA


def _latest(value: str, order_by: str = "event_time") -> F.Column:
    """The value on the row with the greatest ``order_by`` (ties: greatest value), as an aggregate."""
    return F.max_by(F.col(value), F.struct(F.col(order_by), F.col(value)))


def customer_dimension(orders: DataFrame) -> DataFrame:
    """Orders -> ``CUSTOMER_SCHEMA``: first/last order, count, revenue, AOV, cohort month, home country.

    The home country is the shipping country the customer used most (ties: the
    alphabetically first), the e-mail hash the one on the latest order.
    """
    countries = (
        orders.where(F.col("shipping_country").isNotNull())
        .groupBy("customer_id", "shipping_country")
        .count()
        .withColumn(
            "_pick",
            F.row_number().over(
                Window.partitionBy("customer_id").orderBy(F.col("count").desc(), F.col("shipping_country"))
            ),
        )
        .where(F.col("_pick") == 1)
        .select("customer_id", F.col("shipping_country").alias("home_country"))
    )
    totals = orders.groupBy("customer_id").agg(
        _latest("customer_email_hash").alias("customer_email_hash"),
        F.min("event_time").alias("first_order_time"),
        F.max("event_time").alias("last_order_time"),
        F.count(F.lit(1)).alias("order_count"),
        F.sum("revenue").alias("total_revenue"),
    )
    return (
        totals.join(countries, "customer_id", "left")
        .withColumn("avg_order_value", F.col("total_revenue") / F.col("order_count"))
        .withColumn("cohort_month", F.trunc("first_order_time", "month"))
        .select(*CUSTOMER_SCHEMA.fieldNames())
    )


def _order_and_customer_counts(lines: DataFrame) -> DataFrame:
    """Lines -> product_id, order_count, customers: distinct orders and distinct customers per product.

    An order belongs to one customer (silver holds one row per order), so the
    orders of a product are the sum over its customers of their distinct
    orders: one distinct count, by (product, customer), gives both.
    """
    per_customer = lines.groupBy("product_id", "customer_id").agg(F.count_distinct("event_id").alias("orders"))
    return per_customer.groupBy("product_id").agg(
        F.sum("orders").alias("order_count"), F.count("customer_id").alias("customers")
    )


def product_dimension(lines: DataFrame) -> DataFrame:
    """Order lines -> ``PRODUCT_SCHEMA``: category and list price as last sold, orders, units, revenue, customers.

    The distinct counts are an aggregation of their own, joined on the
    product: in one ``groupBy`` with the sums, Spark would copy every line
    three times (an ``Expand``) to count them.
    """
    sales = lines.groupBy("product_id").agg(
        _latest("category").alias("category"),
        _latest("unit_price").alias("list_price"),
        F.sum("quantity").cast("long").alias("units_sold"),
        F.sum("line_revenue").alias("revenue"),
        F.min("event_time").alias("first_sold_at"),
        F.max("event_time").alias("last_sold_at"),
    )
    return (
        sales.join(_order_and_customer_counts(lines), "product_id", "left")
        .withColumn("avg_unit_price", F.col("revenue") / F.col("units_sold"))
        .select(*PRODUCT_SCHEMA.fieldNames())
    )
