"""Gold layer, batch: monthly retention cohorts -> ``gold/cohorts`` (columns of ``COHORT_SCHEMA``).

Input: all orders, one row per order with ``customer_id``, ``event_time`` (UTC
timestamp) and ``revenue`` (double, reporting currency). Output grain: one row
per (cohort month, months since the first order), for every month from the
cohort's first up to the latest month with any order in the input, so a
heatmap gets a full triangle: a month inside that range in which nobody of
the cohort ordered is a row with 0 active customers, 0 orders, 0 revenue, and
null averages. The latest month may be partial (it ends at the newest order).

- cohort_month: first day of the UTC calendar month of the customer's first order;
- months_since_first: calendar months from cohort_month to the order's month (0 = the first month);
- cohort_size: customers whose first order is in cohort_month;
- active_customers: distinct customers of the cohort with an order in that month;
- retention_rate = active_customers / cohort_size (1.0 at month 0);
- orders, revenue (summed exactly in millionths, as in ``pipelines.gold.rfm``);
- avg_order_value = revenue / orders, orders_per_active_customer = orders / active_customers (null with no orders).

A null ``customer_id``, ``event_time`` or ``revenue`` fails the job with the column's name.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from ecom.schemas import COHORT_SCHEMA
from pipelines.gold.rfm import checked_orders, conform, from_micros, to_micros

_CELL_FIELDS = ("active_customers", "orders", "revenue_micros")


def customer_months(orders: DataFrame) -> DataFrame:
    """Orders -> one row per (customer, month with an order): cohort_month, order_month, orders, revenue_micros.

    Partitioned by customer once, so the month totals and the customer's first
    month come out of one shuffle of the orders.
    """
    return (
        checked_orders(orders)
        .select("customer_id", F.trunc(F.to_date("event_time"), "month").alias("order_month"), "revenue")
        .repartition("customer_id")
        .groupBy("customer_id", "order_month")
        .agg(F.count(F.lit(1)).alias("orders"), F.sum(to_micros(F.col("revenue"))).alias("revenue_micros"))
        .withColumn("cohort_month", F.min("order_month").over(Window.partitionBy("customer_id")))
    )


def cohort_cells(months: DataFrame) -> DataFrame:
    """Customer months -> one row per (cohort_month, months_since_first) with activity."""
    return (
        months.withColumn("months_since_first", F.months_between("order_month", "cohort_month").cast("int"))
        .groupBy("cohort_month", "months_since_first")
        .agg(
            F.count(F.lit(1)).alias("active_customers"),
            F.sum("orders").alias("orders"),
            F.sum("revenue_micros").alias("revenue_micros"),
        )
    )


def with_empty_cells(cells: DataFrame) -> DataFrame:
    """Adds the cells without activity up to the latest month seen, with zero counts.

    Each cohort's cells go into one map keyed by month, then the months
    0..(latest - cohort) are read out of it: no join, no second pass.
    """
    latest = F.max(F.add_months("cohort_month", F.col("months_since_first"))).over(Window.partitionBy())
    cell = F.struct(*(F.col(name) for name in _CELL_FIELDS))
    per_cohort = (
        cells.withColumn("_latest_month", latest)
        .groupBy("cohort_month")
        .agg(
            F.max("_latest_month").alias("_latest_month"),
            F.map_from_entries(F.collect_list(F.struct("months_since_first", cell))).alias("_cells"),
        )
    )
    grid = per_cohort.select(
        "cohort_month",
        "_cells",
        F.explode(F.sequence(F.lit(0), F.months_between("_latest_month", "cohort_month").cast("int"))).alias(
            "months_since_first"
        ),
    )
    found = F.try_element_at("_cells", F.col("months_since_first"))
    return grid.select(
        "cohort_month",
        "months_since_first",
        # every customer has a row at month 0, so the cohort's size is that cell's active count
        F.try_element_at("_cells", F.lit(0))["active_customers"].alias("cohort_size"),
        *(F.coalesce(found[name], F.lit(0)).alias(name) for name in _CELL_FIELDS),
    )


def with_cohort_rates(cells: DataFrame) -> DataFrame:
    """Adds revenue, retention_rate, avg_order_value and orders_per_active_customer."""
    revenue = from_micros(F.col("revenue_micros"))
    return cells.select(
        "*",
        revenue.alias("revenue"),
        (F.col("active_customers") / F.col("cohort_size")).alias("retention_rate"),
        F.try_divide(revenue, F.col("orders")).alias("avg_order_value"),
        F.try_divide(F.col("orders"), F.col("active_customers")).alias("orders_per_active_customer"),
    )


def cohort_table(orders: DataFrame) -> DataFrame:
    """All orders -> the ``gold/cohorts`` rows (``COHORT_SCHEMA``)."""
    return (
        customer_months(orders)
        .transform(cohort_cells)
        .transform(with_empty_cells)
        .transform(with_cohort_rates)
        .transform(lambda df: conform(df, COHORT_SCHEMA))
    )
