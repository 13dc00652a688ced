"""Gold layer, batch: RFM segmentation -> ``gold/rfm`` (columns of ``RFM_SCHEMA``).

Input: orders, one row per order with ``customer_id``, ``event_time`` (UTC
timestamp) and ``revenue`` (double, reporting currency); optionally the
``gold/rfm`` rows of earlier runs. Output grain: one row per (as_of date,
customer with at least one order in the window).

- Window: the ``window_days`` UTC calendar days ending with ``as_of``, both
  ends included: ``as_of - (window_days - 1) <= date(event_time) <= as_of``,
  i.e. ``event_time`` in ``[start 00:00 UTC, as_of + 1 day 00:00 UTC)``
  (``window_bounds``). So ``recency_days`` runs from 0 (last order on
  ``as_of``) to ``window_days - 1``.
- recency_days = ``as_of`` - date of the customer's last order in the window;
  frequency = orders in the window; monetary = their revenue, summed exactly
  in integer millionths of the currency unit (``to_micros``), so a sum does not
  depend on the order Spark adds the rows in and equal baskets tie exactly.
- Scores (``score``): ``1 + min(4, floor(5 * w / N))``, N = customers, w =
  customers with a strictly worse value (R: more days, F: fewer orders, M:
  less revenue). Values are compared exactly as stored, with no tolerance, so
  the scores can be recomputed from the table's own R/F/M columns.
- Segment: the first rule of ``SEGMENT_RULES`` that matches, else "Others".
- previous_segment: the customer's segment in their latest ``previous`` row
  dated before ``as_of`` (a rerun of the same date never sees itself).

A null ``customer_id``, ``event_time`` or ``revenue`` (impossible from silver,
whose schema forbids them) fails the job with the column's name.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from ecom.schemas import RFM_SCHEMA

REQUIRED_ORDER_COLUMNS = ("customer_id", "event_time", "revenue")
# Sums of money are exact in millionths of a unit (a long holds 9.2e12 units):
# far finer than any price, and integer addition is order independent.
MICROS_PER_UNIT = 1_000_000
OTHERS = "Others"


@dataclass(frozen=True)
class SegmentRule:
    """One row of the segment table: inclusive (low, high) score ranges for R, F and M."""

    segment: str
    r: tuple[int, int]
    f: tuple[int, int]
    m: tuple[int, int]

    def matches(self, r_score: Column, f_score: Column, m_score: Column) -> Column:
        """True where all three scores fall in this rule's ranges."""
        return r_score.between(*self.r) & f_score.between(*self.f) & m_score.between(*self.m)


# Issue 9, item 3: the first matching rule wins, in this order. This order
# makes all 11 segments reachable; combinations no rule covers are "Others".
SEGMENT_RULES: tuple[SegmentRule, ...] = (
    SegmentRule("Champions", (4, 5), (4, 5), (4, 5)),
    SegmentRule("Can't Lose Them", (1, 1), (4, 5), (4, 5)),
    SegmentRule("Loyal Customers", (2, 5), (3, 5), (3, 5)),
    SegmentRule("New Customers", (4, 5), (1, 1), (1, 1)),
    SegmentRule("Promising", (3, 4), (1, 1), (1, 1)),
    SegmentRule("Potential Loyalist", (3, 5), (1, 3), (1, 3)),
    SegmentRule("Lost", (1, 1), (1, 1), (1, 1)),
    SegmentRule("Need Attention", (2, 3), (2, 3), (2, 3)),
    SegmentRule("At Risk", (1, 2), (2, 5), (2, 5)),
    SegmentRule("About To Sleep", (2, 3), (1, 2), (1, 2)),
    SegmentRule("Hibernating", (1, 2), (1, 2), (1, 2)),
)


def conform(df: DataFrame, schema: StructType) -> DataFrame:
    """Exactly the schema's columns, in its order and with its types."""
    return df.select(*(F.col(field.name).cast(field.dataType).alias(field.name) for field in schema.fields))


def checked_orders(orders: DataFrame) -> DataFrame:
    """The order columns gold needs; a null in any of them stops the job with the column's name."""
    return orders.select(
        *(
            F.when(F.col(name).isNull(), F.raise_error(F.lit(f"gold orders: null {name}")))
            .otherwise(F.col(name))
            .alias(name)
            for name in REQUIRED_ORDER_COLUMNS
        )
    )


def to_micros(amount: Column) -> Column:
    """An amount -> whole millionths of a unit (long), for exact sums."""
    return F.round(amount * MICROS_PER_UNIT).cast("long")


def from_micros(micros: Column) -> Column:
    """Millionths of a unit -> the amount (double)."""
    return micros / F.lit(MICROS_PER_UNIT)


def window_bounds(as_of: dt.date, window_days: int) -> tuple[dt.date, dt.date]:
    """First and last UTC date (both included) of the RFM window ending with ``as_of``."""
    if window_days < 1:
        raise ValueError(f"the RFM window must hold at least one day, got window_days={window_days}")
    return as_of - dt.timedelta(days=window_days - 1), as_of


def filter_window(orders: DataFrame, as_of: dt.date, window_days: int) -> DataFrame:
    """Orders whose UTC date falls in the window, plus any with a null event_time (for ``checked_orders``).

    Compares the raw timestamp with midnight UTC (the session time zone is UTC),
    so Delta can skip files by their event_time statistics.
    """
    first, last = window_bounds(as_of, window_days)
    time = F.col("event_time")
    start, end = F.lit(first).cast("timestamp"), F.lit(last + dt.timedelta(days=1)).cast("timestamp")
    return orders.filter(time.isNull() | ((time >= start) & (time < end)))


def rfm_values(orders: DataFrame, as_of: dt.date, window_days: int) -> DataFrame:
    """Orders -> one row per customer in the window: customer_id, recency_days, frequency, monetary."""
    return (
        filter_window(orders, as_of, window_days)
        .transform(checked_orders)
        .groupBy("customer_id")
        .agg(
            F.max("event_time").alias("_last_order"),
            F.count(F.lit(1)).alias("frequency"),
            F.sum(to_micros(F.col("revenue"))).alias("_monetary_micros"),
        )
        .select(
            "customer_id",
            F.datediff(F.lit(as_of), F.to_date("_last_order")).alias("recency_days"),
            "frequency",
            from_micros(F.col("_monetary_micros")).alias("monetary"),
        )
    )


def score(worse: Column, customers: Column) -> Column:
    """``1 + min(4, floor(5 * worse / customers))`` as an int.

    Exact in doubles: for integers below 2**53 a quotient that is not whole is
    at least 1/customers away from the next integer, far more than rounding.
    """
    step = F.floor(F.lit(5) * worse / customers)
    # not F.least: it skips nulls, and a missing value must not score 5
    return (F.lit(1) + F.when(step > 4, F.lit(4)).otherwise(step)).cast("int")


def _worse_count(better_first: Column) -> Column:
    """How many rows have a strictly worse value: rank - 1 with the worst value first."""
    return F.rank().over(Window.orderBy(better_first)) - 1


def with_rfm_scores(values: DataFrame) -> DataFrame:
    """Adds r_score, f_score, m_score and rfm_score (e.g. "545") from recency_days, frequency, monetary.

    The ranking windows have no partition: all customers meet in one task,
    which is what the definition needs (one row per customer: small).
    """
    customers = F.col("_customers")
    scored = (
        values.withColumn("_customers", F.count(F.lit(1)).over(Window.partitionBy()))
        .withColumn("r_score", score(_worse_count(F.col("recency_days").desc()), customers))
        .withColumn("f_score", score(_worse_count(F.col("frequency").asc()), customers))
        .withColumn("m_score", score(_worse_count(F.col("monetary").asc()), customers))
        .drop("_customers")
    )
    digits = (F.col(name).cast("string") for name in ("r_score", "f_score", "m_score"))
    return scored.withColumn("rfm_score", F.concat(*digits))


def segment(
    r_score: Column, f_score: Column, m_score: Column, rules: tuple[SegmentRule, ...] = SEGMENT_RULES
) -> Column:
    """The first rule's segment that the scores match, else "Others"."""
    first, *rest = rules
    result = F.when(first.matches(r_score, f_score, m_score), F.lit(first.segment))
    for rule in rest:
        result = result.when(rule.matches(r_score, f_score, m_score), F.lit(rule.segment))
    return result.otherwise(F.lit(OTHERS))


def with_segment(scored: DataFrame) -> DataFrame:
    """Adds ``segment`` from r_score, f_score and m_score."""
    return scored.withColumn("segment", segment(F.col("r_score"), F.col("f_score"), F.col("m_score")))


def with_previous_segment(current: DataFrame, previous: DataFrame | None, as_of: dt.date) -> DataFrame:
    """Adds ``previous_segment``: the customer's segment in their latest ``previous`` row dated before ``as_of``.

    Passing only the latest earlier run (one ``as_of`` partition) gives "the
    segment in the previous run" and reads the least; customers absent from
    ``previous`` get null.
    """
    if previous is None:
        return current.withColumn("previous_segment", F.lit(None).cast("string"))
    latest = (
        previous.filter(F.col("as_of") < F.lit(as_of))
        .groupBy("customer_id")
        .agg(F.max_by("segment", "as_of").alias("previous_segment"))
    )
    return current.join(latest, "customer_id", "left")


def rfm_table(orders: DataFrame, as_of: dt.date, window_days: int, previous: DataFrame | None = None) -> DataFrame:
    """Orders (+ earlier ``gold/rfm`` rows) -> the ``gold/rfm`` rows of ``as_of`` (``RFM_SCHEMA``)."""
    return (
        rfm_values(orders, as_of, window_days)
        .transform(with_rfm_scores)
        .transform(with_segment)
        .transform(lambda df: with_previous_segment(df, previous, as_of))
        .withColumn("as_of", F.lit(as_of))
        .transform(lambda df: conform(df, RFM_SCHEMA))
    )
