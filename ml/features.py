"""Per-order features from the customer's history: one module for streaming and training.

The silver stream calls ``with_history_features(orders, profiles)`` on each
micro-batch with the running profiles of the batch's customers; model training
calls it on the whole silver history with no profiles. Both then compute the
same columns the same way, so training and scoring cannot drift.

Every history feature of an order uses only the customer's orders strictly
before it (ordered by ``event_time``, then ``event_id``), never the order
itself or later ones. Grain of ``silver/customer_profiles``: one row per customer.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from ecom.schemas import PROFILE_SCHEMA

MAX_REMEMBERED = 20  # devices / countries kept per customer

# Columns added to each order, in order. ``ml`` trains on FEATURE_COLUMNS.
HISTORY_COLUMNS = (
    "hour_of_day",
    "day_of_week",
    "prior_tx_count",
    "prior_avg_amount",
    "amount_to_avg_ratio",
    "amount_zscore",
    "seconds_since_last_order",
    "is_new_device",
    "is_new_ip_country",
    "is_country_mismatch",
)
FEATURE_COLUMNS = ("amount_value", *HISTORY_COLUMNS)

_ORDER = ("event_time", "event_id")


def hour_of_day(ts: Column) -> Column:
    return F.hour(ts)


def day_of_week(ts: Column) -> Column:
    """0 = Monday ... 6 = Sunday."""
    return F.weekday(ts)


def zscore(value: Column, count: Column, total: Column, total_sq: Column) -> Column:
    """(value - mean) / sample std of the prior amounts; null with fewer than two, 0 when they are all equal."""
    mean = total / count
    var = (total_sq - count * mean * mean) / (count - 1)
    std = F.sqrt(F.greatest(var, F.lit(0.0)))
    return F.when(count < 2, F.lit(None)).when(std < 1e-9, F.lit(0.0)).otherwise((value - mean) / std)


def _empty_profiles(orders: DataFrame) -> DataFrame:
    return orders.sparkSession.createDataFrame([], PROFILE_SCHEMA)


def with_history_features(orders: DataFrame, profiles: DataFrame | None = None) -> DataFrame:
    """Adds ``HISTORY_COLUMNS`` (and ``amount_value``) to one row per order.

    ``orders`` needs customer_id, event_id, event_time, amount, device_id,
    ip_country, shipping_country. ``profiles`` is the customers' state before
    these orders (``PROFILE_SCHEMA``), or None for no earlier history.
    """
    profiles = profiles if profiles is not None else _empty_profiles(orders)
    amount = F.col("amount").cast("double")
    prior = Window.partitionBy("customer_id").orderBy(*_ORDER).rowsBetween(Window.unboundedPreceding, -1)
    p = profiles.select(
        "customer_id",
        F.col("tx_count").alias("_p_count"),
        F.col("amount_sum").alias("_p_sum"),
        F.col("amount_sumsq").alias("_p_sumsq"),
        F.col("last_order_time").alias("_p_last"),
        F.col("devices").alias("_p_devices"),
        F.col("ip_countries").alias("_p_countries"),
    )
    df = (
        orders.withColumn("amount_value", amount)
        .withColumn("_b_count", F.count(F.lit(1)).over(prior))
        .withColumn("_b_sum", F.coalesce(F.sum(amount).over(prior), F.lit(0.0)))
        .withColumn("_b_sumsq", F.coalesce(F.sum(amount * amount).over(prior), F.lit(0.0)))
        .withColumn("_b_last", F.max("event_time").over(prior))
        .withColumn("_b_devices", F.collect_set("device_id").over(prior))
        .withColumn("_b_countries", F.collect_set("ip_country").over(prior))
        .join(F.broadcast(p), "customer_id", "left")
    )
    count = F.coalesce(F.col("_p_count"), F.lit(0)) + F.col("_b_count")
    total = F.coalesce(F.col("_p_sum"), F.lit(0.0)) + F.col("_b_sum")
    total_sq = F.coalesce(F.col("_p_sumsq"), F.lit(0.0)) + F.col("_b_sumsq")
    last = F.greatest(F.col("_p_last"), F.col("_b_last"))
    devices = F.array_union(F.coalesce(F.col("_p_devices"), F.array().cast("array<string>")), F.col("_b_devices"))
    countries = F.array_union(F.coalesce(F.col("_p_countries"), F.array().cast("array<string>")), F.col("_b_countries"))
    mean = F.when(count > 0, total / count)
    return (
        df.withColumn("hour_of_day", hour_of_day(F.col("event_time")))
        .withColumn("day_of_week", day_of_week(F.col("event_time")))
        .withColumn("prior_tx_count", count.cast("long"))
        .withColumn("prior_avg_amount", mean)
        .withColumn("amount_to_avg_ratio", F.when(mean > 0, amount / mean))
        .withColumn("amount_zscore", zscore(amount, count, total, total_sq))
        .withColumn(
            "seconds_since_last_order",
            F.when(last.isNotNull(), F.unix_micros(F.col("event_time")) / 1e6 - F.unix_micros(last) / 1e6),
        )
        .withColumn("is_new_device", F.coalesce(~F.array_contains(devices, F.col("device_id")), F.lit(True)))
        .withColumn("is_new_ip_country", F.coalesce(~F.array_contains(countries, F.col("ip_country")), F.lit(True)))
        .withColumn("is_country_mismatch", F.coalesce(F.col("ip_country") != F.col("shipping_country"), F.lit(False)))
        .drop(*[c for c in df.columns if c.startswith("_b_") or c.startswith("_p_")])
    )


def updated_profiles(orders: DataFrame, profiles: DataFrame | None = None) -> DataFrame:
    """The profiles of the orders' customers after these orders (``PROFILE_SCHEMA``)."""
    profiles = profiles if profiles is not None else _empty_profiles(orders)
    amount = F.col("amount").cast("double")
    batch = orders.groupBy("customer_id").agg(
        F.count(F.lit(1)).alias("b_count"),
        F.sum(amount).alias("b_sum"),
        F.sum(amount * amount).alias("b_sumsq"),
        F.min("event_time").alias("b_first"),
        F.max("event_time").alias("b_last"),
        F.collect_set("device_id").alias("b_devices"),
        F.collect_set("ip_country").alias("b_countries"),
        F.max_by("customer_email_hash", F.struct(*[F.col(c) for c in _ORDER])).alias("b_email"),
    )
    p = profiles.alias("p")
    joined = batch.alias("b").join(p, "customer_id", "left")

    def capped(prev: str, new: str) -> Column:
        merged = F.array_union(F.coalesce(F.col(prev), F.array().cast("array<string>")), F.col(new))
        return F.slice(merged, F.greatest(F.size(merged) - MAX_REMEMBERED + 1, F.lit(1)), MAX_REMEMBERED)

    return joined.select(
        "customer_id",
        (F.coalesce(F.col("p.tx_count"), F.lit(0)) + F.col("b_count")).cast("long").alias("tx_count"),
        (F.coalesce(F.col("p.amount_sum"), F.lit(0.0)) + F.col("b_sum")).alias("amount_sum"),
        (F.coalesce(F.col("p.amount_sumsq"), F.lit(0.0)) + F.col("b_sumsq")).alias("amount_sumsq"),
        F.least(F.col("p.first_order_time"), F.col("b_first")).alias("first_order_time"),
        F.greatest(F.col("p.last_order_time"), F.col("b_last")).alias("last_order_time"),
        capped("p.devices", "b_devices").alias("devices"),
        capped("p.ip_countries", "b_countries").alias("ip_countries"),
        F.coalesce(F.col("b_email"), F.col("p.customer_email_hash")).alias("customer_email_hash"),
        F.current_timestamp().alias("updated_time"),
    )
