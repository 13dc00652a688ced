"""Gold summaries: order metrics per period and dimension, and their rows in PostgreSQL ``analytics_summaries``.

Layer: gold. Input: silver orders in the reporting currency and their item
lines (``pipelines.gold.orders``), or the live minute figures of
``pipelines.gold.live``. Output: PostgreSQL ``analytics_summaries``, grain: one
row per (metric, grain, period_start, dimension).

Metrics (``METRICS``), per period and dimension value: ``orders``, ``revenue``
(reporting currency), ``avg_order_value`` (revenue / orders), ``customers``
(distinct, exact), ``alerts`` (orders scored as fraud), ``alert_rate``
(alerts / scored orders; no row when no order was scored), ``late_events``
(overall only: events that reached the live stream after their minute had
closed, see docs/gold.md). Grains: ``minute`` (live stream and its daily
recomputation) and ``day`` (the daily batch's ``summaries`` step).

Dimension encoding, the one place it is defined (``dimension_key``):

| gold ``dimension`` | gold ``dimension_value`` | ``analytics_summaries.dimension`` |
| --- | --- | --- |
| ``all`` (overall) | ``""`` | ``""`` |
| ``category`` | e.g. ``books`` | ``category=books`` |
| ``payment_method`` | e.g. ``card`` | ``payment_method=card`` |
| ``channel`` | e.g. ``web`` | ``channel=web`` |

An order counts once overall, once under its payment method and its channel,
and once in each category it has item lines in, with that category's lines as
revenue (quantity x unit price, converted); a line without a category counts
under ``category=unknown``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ecom.lake import TABLES, ensure_table
from ecom.settings import Settings
from pipelines.gold import fx, orders

OVERALL = "all"
DIMENSIONS = (OVERALL, "category", "payment_method", "channel")
UNKNOWN_CATEGORY = "unknown"
METRICS = ("orders", "revenue", "avg_order_value", "customers", "alerts", "alert_rate", "late_events")
SUMMARY_COLUMNS = ("metric", "grain", "period_start", "dimension", "value")
SUMMARY_KEY = ("metric", "grain", "period_start", "dimension")
# One row per (order, dimension, dimension value): what every metric is aggregated from.
DIMENSION_ROW_COLUMNS = (
    "event_id", "customer_id", "event_time", "dimension", "dimension_value", "revenue", "is_alert", "is_scored",
)  # fmt: skip
FIGURE_COLUMNS = ("orders", "revenue", "avg_order_value", "customers", "alerts", "alert_rate")
# Revenue is summed in whole millionths of the reporting currency (each order's or category's share rounded half
# up), as for RFM and cohorts: the sum does not depend on the order rows are added in, so the live stream and the
# batch give the same figure and a rerun rewrites nothing.
MICROS = 1_000_000


def dimension_key(dimension: str, value: str) -> str:
    """``analytics_summaries.dimension`` of a gold (dimension, dimension_value): "" overall, else "name=value"."""
    return "" if dimension == OVERALL else f"{dimension}={value}"


# -- Spark: the batch path -----------------------------------------------------------------------


def order_dimensions(orders: DataFrame, lines: DataFrame) -> DataFrame:
    """Gold orders and their lines -> ``DIMENSION_ROW_COLUMNS``: one row per (order, dimension, value)."""
    flags = [
        F.col("event_id"),
        F.col("customer_id"),
        F.col("event_time"),
        F.coalesce(F.col("is_fraud"), F.lit(False)).alias("is_alert"),
        F.col("is_fraud").isNotNull().alias("is_scored"),
    ]

    def by(dimension: str, value) -> DataFrame:
        return orders.select(
            *flags, F.lit(dimension).alias("dimension"), value.alias("dimension_value"), F.col("revenue")
        )

    categories = (
        lines.groupBy("event_id", F.coalesce(F.col("category"), F.lit(UNKNOWN_CATEGORY)).alias("dimension_value"))
        .agg(F.sum("line_revenue").alias("revenue"))
        .join(orders.select(*flags), "event_id")
        .withColumn("dimension", F.lit("category"))
    )
    return (
        by(OVERALL, F.lit(""))
        .unionByName(by("payment_method", F.col("payment_method")))
        .unionByName(by("channel", F.col("channel")))
        .unionByName(categories)
        .select(*DIMENSION_ROW_COLUMNS)
    )


def period_metrics(rows: DataFrame, grain: str) -> DataFrame:
    """Dimension rows -> one row per (``period_start`` = event time truncated to ``grain``, dimension, value)."""
    totals = rows.groupBy(
        F.date_trunc(grain, F.col("event_time")).alias("period_start"), "dimension", "dimension_value"
    ).agg(
        F.count(F.lit(1)).alias("orders"),
        (F.sum(F.round(F.col("revenue") * MICROS).cast("long")) / MICROS).alias("revenue"),
        F.countDistinct("customer_id").alias("customers"),
        F.sum(F.col("is_alert").cast("long")).alias("alerts"),
        F.sum(F.col("is_scored").cast("long")).alias("scored"),
    )
    return totals.select(
        "period_start",
        "dimension",
        "dimension_value",
        "orders",
        "revenue",
        (F.col("revenue") / F.col("orders")).alias("avg_order_value"),
        "customers",
        "alerts",
        F.when(F.col("scored") > 0, F.col("alerts") / F.col("scored")).alias("alert_rate"),
    )


def silver_orders(spark: SparkSession, settings: Settings, since: dt.datetime, until: dt.datetime):
    """Gold orders and lines (reporting currency) of the silver rows with event time in [since, until)."""
    silver = (
        spark.read.format("delta")
        .load(settings.lake.table("silver", "transactions"))
        .where(F.col("event_date").between(since.date(), until.date()))
        .where((F.col("event_time") >= F.lit(since)) & (F.col("event_time") < F.lit(until)))
    )
    rates = fx.fx_rates_frame(spark, settings.gold.reporting_currency)
    gold_orders = orders.with_order_revenue(silver, rates)
    return gold_orders, orders.order_lines(gold_orders, rates)


# -- PostgreSQL rows ---------------------------------------------------------------------------------


def _utc(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values)
    return stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")


def summary_rows(figures: pd.DataFrame, grain: str, period: str = "period_start") -> list[tuple]:
    """Figures (one row per period, dimension, value) -> ``SUMMARY_COLUMNS`` tuples, one per metric.

    Null metrics (no average without orders, no alert rate without scored
    orders) have no row; ``late_events`` is kept for the overall rows only.
    """
    if figures.empty:
        return []
    present = [m for m in METRICS if m in figures.columns]
    frame = figures[[period, "dimension", "dimension_value", *present]].copy()
    frame[period] = _utc(frame[period])
    frame["key"] = [dimension_key(d, v) for d, v in zip(frame["dimension"], frame["dimension_value"], strict=True)]
    long = frame.melt(id_vars=[period, "dimension", "key"], value_vars=present, var_name="metric")
    long = long[long["value"].notna() & ((long["metric"] != "late_events") | (long["dimension"] == OVERALL))]
    return [
        (metric, grain, start.to_pydatetime(), key, float(value))
        for metric, start, key, value in zip(long["metric"], long[period], long["key"], long["value"], strict=True)
    ]


def sync_summaries(dsn: str, rows: Sequence[tuple], grain: str, since: dt.datetime, until: dt.datetime) -> int:
    """Make ``analytics_summaries`` hold exactly ``rows`` for ``grain`` in [since, until); rows changed."""
    from serving import db

    scope = "grain = %s AND metric = ANY(%s) AND period_start >= %s AND period_start < %s"
    with db.connection(dsn) as conn, conn.cursor() as cur:
        upserted, deleted = db.sync_table(
            cur, "analytics_summaries", SUMMARY_COLUMNS, SUMMARY_KEY, rows, scope, (grain, list(METRICS), since, until)
        )
    return upserted + deleted


# -- the daily batch's "summaries" step ------------------------------------------------------------


def daily_summaries(spark: SparkSession, settings: Settings, since: dt.datetime, until: dt.datetime) -> dict[str, int]:
    """Day rows of ``analytics_summaries`` for the days in [since, until), from silver; rows changed per table.

    The figures come from silver (distinct customers of a day cannot be added
    up from minutes); ``late_events`` is the sum of the day's minutes in
    ``gold/minute_metrics``. ``since`` and ``until`` are UTC midnights.
    """
    minutes = settings.lake.table("gold", "minute_metrics")
    ensure_table(spark, minutes, *TABLES[("gold", "minute_metrics")])
    gold_orders, lines = silver_orders(spark, settings, since, until)
    figures = period_metrics(order_dimensions(gold_orders, lines), "day")
    late = (
        spark.read.format("delta")
        .load(minutes)
        .where(F.col("event_date").between(since.date(), until.date()) & (F.col("dimension") == OVERALL))
        .where((F.col("window_start") >= F.lit(since)) & (F.col("window_start") < F.lit(until)))
        .groupBy(F.date_trunc("day", F.col("window_start")).alias("period_start"))
        .agg(F.sum("late_events").alias("late_events"))
        .withColumn("dimension", F.lit(OVERALL))
        .withColumn("dimension_value", F.lit(""))
    )
    days = figures.join(late, ["period_start", "dimension", "dimension_value"], "left").fillna(0, ["late_events"])
    rows = summary_rows(days.toArrow().to_pandas(), "day")
    return {"pg/analytics_summaries": sync_summaries(settings.postgres.dsn, rows, "day", since, until)}
