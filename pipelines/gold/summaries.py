"""Gold summaries: order metrics per period and dimension, and their rows in PostgreSQL ``analytics_summaries``.

Layer: gold. Input: silver order rows (``SILVER_COLUMNS``) as Arrow: a live
micro-batch (``pipelines.gold.live``), or the days the daily batch
recomputes, which Spark reads from ``silver/transactions`` and hands over with
``toArrow``. Output: PostgreSQL ``analytics_summaries``, grain: one row per
(metric, grain, period_start, dimension).

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
under ``category=unknown``. The stream and the batch both count with
``dimension_rows`` and Arrow kernels in the driver: the figures of a few days
are small, and one Spark job to read them costs less than the shuffles of an
aggregation in Spark.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ecom.lake import TABLES, ensure_table
from ecom.settings import Settings
from pipelines.gold import fx

OVERALL = "all"
DIMENSIONS = (OVERALL, "category", "payment_method", "channel")
UNKNOWN_CATEGORY = "unknown"
METRICS = ("orders", "revenue", "avg_order_value", "customers", "alerts", "alert_rate", "late_events")
SUMMARY_COLUMNS = ("metric", "grain", "period_start", "dimension", "value")
SUMMARY_KEY = ("metric", "grain", "period_start", "dimension")
# What the metrics read of a silver row.
SILVER_COLUMNS = (
    "event_id", "event_time", "customer_id", "items", "amount", "currency", "payment_method", "channel", "is_fraud",
)  # fmt: skip
# One row per (order, dimension, dimension value): what every metric is aggregated from.
DIMENSION_ROW_COLUMNS = (
    "event_id", "customer_id", "window", "dimension", "dimension_value", "revenue", "is_alert", "is_scored",
)  # fmt: skip
FIGURE_COLUMNS = ("orders", "revenue", "avg_order_value", "customers", "alerts", "alert_rate")
# Revenue is summed in whole millionths of the reporting currency (each order's or category's share rounded half
# up), as for RFM and cohorts: the sum does not depend on the order rows are added in, so the live stream and the
# batch give the same figure and a rerun rewrites nothing.
MICROS = 1_000_000
MINUTE_US = 60_000_000
PERIOD_US = {"minute": MINUTE_US, "day": 24 * 60 * MINUTE_US}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def dimension_key(dimension: str, value: str) -> str:
    """``analytics_summaries.dimension`` of a gold (dimension, dimension_value): "" overall, else "name=value"."""
    return "" if dimension == OVERALL else f"{dimension}={value}"


def reporting_rates(reporting_currency: str) -> dict[str, float]:
    """Currency -> units of it per reporting unit, from the one FX reference (``pipelines.gold.fx``)."""
    return {row[0]: row[2] for row in fx.fx_rate_rows(reporting_currency)}


# -- Arrow: dimension rows and figures per period (the stream and the batch) ----------------------


def as_array(column) -> pa.Array:
    """A column as one Arrow array."""
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def epoch_micros(column) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch (UTC)."""
    values = as_array(column)
    return pc.cast(pc.cast(values, pa.timestamp("us", values.type.tz)), pa.int64()).to_numpy(zero_copy_only=False)


def revenue_micros(revenue: np.ndarray) -> np.ndarray:
    """Amounts in whole millionths, rounded half up (as Spark's ``round``)."""
    return np.floor(revenue * MICROS + 0.5).astype(np.int64)


def dimension_rows(batch: pa.Table, rates: Mapping[str, float]) -> pa.Table:
    """Silver rows (``SILVER_COLUMNS``) -> ``DIMENSION_ROW_COLUMNS``: one row per (order, dimension, value), with
    ``window`` the event-time minute (epoch microseconds) and ``revenue`` in the reporting currency: the order's
    amount, or for a category the quantity x unit price of its lines, converted (as ``pipelines.gold.orders``
    converts them). An unknown currency fails loudly. About a millisecond per thousand orders."""
    currency = as_array(batch["currency"])
    known = pc.index_in(currency, value_set=pa.array(list(rates), pa.string()))
    if known.null_count:
        raise ValueError(f"no FX rate for currency {pc.filter(currency, pc.is_null(known))[0].as_py()}")
    units = np.asarray(list(rates.values()), dtype=float)[known.to_numpy(zero_copy_only=False)]
    is_fraud = as_array(batch["is_fraud"])
    micros = epoch_micros(batch["event_time"])
    orders = {
        "event_id": as_array(batch["event_id"]),
        "customer_id": as_array(batch["customer_id"]),
        "window": pa.array(micros - micros % MINUTE_US, pa.int64()),
        "is_alert": pc.fill_null(is_fraud, False),
        "is_scored": pc.is_valid(is_fraud),
    }
    revenue = pc.cast(as_array(batch["amount"]), pa.float64()).to_numpy(zero_copy_only=False) / units

    items = as_array(batch["items"])
    rows = pc.list_parent_indices(items).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(items)
    quantity = pc.cast(flat.field("quantity"), pa.float64()).to_numpy(zero_copy_only=False)
    price = pc.cast(flat.field("unit_price"), pa.float64()).to_numpy(zero_copy_only=False)
    lines = pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            "category": pc.fill_null(flat.field("category"), UNKNOWN_CATEGORY),
            "revenue": pa.array(quantity * price / units[rows], pa.float64()),
        }
    ).filter(pc.is_valid(flat.field("product_id")))  # as order_lines: a line without a product is not a sale
    categories = lines.group_by(["row", "category"], use_threads=False).aggregate([("revenue", "sum")])

    def part(dimension: str, values, money, take=None) -> pa.Table:
        columns = orders if take is None else {k: v.take(take) for k, v in orders.items()}
        n = len(money)
        return pa.table(
            {
                **columns,
                "dimension": pa.array([dimension] * n, pa.string()),
                "dimension_value": pa.array([""] * n, pa.string()) if values is None else values,
                "revenue": pa.array(money, pa.float64()),
            }
        )

    return pa.concat_tables(
        [
            part(OVERALL, None, revenue),
            part("payment_method", as_array(batch["payment_method"]), revenue),
            part("channel", as_array(batch["channel"]), revenue),
            part(
                "category",
                categories["category"].combine_chunks(),
                categories["revenue_sum"].to_numpy(),
                categories["row"].combine_chunks(),
            ),
        ]
    ).select(list(DIMENSION_ROW_COLUMNS))


def period_figures(dims: pa.Table, grain: str) -> pa.Table:
    """Dimension rows -> one row per (``period_start`` = the minute truncated to ``grain``, dimension, value) with
    ``FIGURE_COLUMNS``: all the rows given counted."""
    window = dims["window"].to_numpy()
    period = window - window % PERIOD_US[grain]
    totals = (
        pa.table(
            {
                "period": period,
                "dimension": dims["dimension"],
                "dimension_value": dims["dimension_value"],
                "event_id": dims["event_id"],
                "micros": revenue_micros(dims["revenue"].to_numpy()),
                "customer_id": dims["customer_id"],
                "is_alert": dims["is_alert"],
                "is_scored": dims["is_scored"],
            }
        )
        .group_by(["period", "dimension", "dimension_value"], use_threads=False)
        .aggregate(
            [
                ("event_id", "count", pc.CountOptions(mode="all")),
                ("micros", "sum"),
                ("customer_id", "count_distinct"),
                ("is_alert", "sum"),
                ("is_scored", "sum"),
            ]
        )
    )
    orders = totals["event_id_count"].to_numpy()
    revenue = totals["micros_sum"].to_numpy() / MICROS
    alerts, scored = totals["is_alert_sum"].to_numpy(), totals["is_scored_sum"].to_numpy()
    return pa.table(
        {
            "period_start": pc.cast(totals["period"], pa.timestamp("us", "UTC")),
            "dimension": totals["dimension"],
            "dimension_value": totals["dimension_value"],
            "orders": pa.array(orders, pa.int64()),
            "revenue": pa.array(revenue, pa.float64()),
            "avg_order_value": pa.array(revenue / orders, pa.float64()),
            "customers": pa.array(totals["customer_id_count_distinct"].to_numpy(), pa.int64()),
            "alerts": pa.array(alerts, pa.int64()),
            "alert_rate": pa.array(alerts / np.maximum(scored, 1), pa.float64(), mask=scored == 0),
        }
    )


def silver_rows(spark: SparkSession, settings: Settings, since: dt.datetime, until: dt.datetime) -> pa.Table:
    """Silver rows (``SILVER_COLUMNS``) with event time in [since, until), read with Spark, as Arrow."""
    silver = (
        spark.read.format("delta")
        .load(settings.lake.table("silver", "transactions"))
        .where(F.col("event_date").between(since.date(), until.date()))
        .where((F.col("event_time") >= F.lit(since)) & (F.col("event_time") < F.lit(until)))
    )
    return silver.select(*SILVER_COLUMNS).toArrow()


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


def lake_late_events(path: str, since: dt.datetime, until: dt.datetime) -> pa.Table:
    """The minutes of ``gold/minute_metrics`` in [since, until) with late events: window_start, dimension,
    dimension_value, late_events (read with delta-rs, from the partitions of those days only)."""
    from ecom.storage import delta_table

    days = [("event_date", ">=", since.date().isoformat()), ("event_date", "<=", until.date().isoformat())]
    rows = delta_table(path).to_pyarrow_table(
        partitions=days, columns=["window_start", "dimension", "dimension_value", "late_events"]
    )
    start = epoch_micros(rows["window_start"])
    kept = (start >= _epoch_us(since)) & (start < _epoch_us(until)) & (rows["late_events"].to_numpy() > 0)
    return rows.filter(pa.array(kept))


def with_late_events(figures: pa.Table, late: pa.Table, period: str, join_type: str = "left outer") -> pa.Table:
    """Figures (keyed by ``period``, dimension, value) with ``late_events`` from ``late`` (0 where none); with
    ``join_type`` "full outer", a period known only by its late count keeps a row with zero figures."""
    key = [period, "dimension", "dimension_value"]
    joined = figures.join(late.select([*key, "late_events"]), keys=key, join_type=join_type)
    zero = {"orders": 0, "revenue": 0.0, "customers": 0, "alerts": 0, "late_events": 0}
    columns = [*figures.column_names, "late_events"]
    return pa.table({c: pc.fill_null(joined[c], zero[c]) if c in zero else joined[c] for c in columns})


def daily_summaries(spark: SparkSession, settings: Settings, since: dt.datetime, until: dt.datetime) -> dict[str, int]:
    """Day rows of ``analytics_summaries`` for the days in [since, until), from silver; rows changed per table.

    The figures come from silver (distinct customers of a day cannot be added
    up from minutes); ``late_events`` is the sum of the day's minutes in
    ``gold/minute_metrics``. ``since`` and ``until`` are UTC midnights.
    """
    minutes = settings.lake.table("gold", "minute_metrics")
    ensure_table(spark, minutes, *TABLES[("gold", "minute_metrics")])
    rows = silver_rows(spark, settings, since, until)
    figures = period_figures(dimension_rows(rows, reporting_rates(settings.gold.reporting_currency)), "day")
    late = lake_late_events(minutes, since, until)
    late = late.filter(pc.equal(late["dimension"], OVERALL))
    start = epoch_micros(late["window_start"])
    late_days = (
        pa.table(
            {
                "period_start": pc.cast(pa.array(start - start % PERIOD_US["day"]), pa.timestamp("us", "UTC")),
                "dimension": late["dimension"],
                "dimension_value": late["dimension_value"],
                "late_events": late["late_events"],
            }
        )
        .group_by(["period_start", "dimension", "dimension_value"], use_threads=False)
        .aggregate([("late_events", "sum")])
    )
    days = with_late_events(
        figures, late_days.append_column("late_events", late_days["late_events_sum"]), "period_start"
    )
    rows = summary_rows(days.to_pandas(), "day")
    return {"pg/analytics_summaries": sync_summaries(settings.postgres.dsn, rows, "day", since, until)}


def _epoch_us(moment: dt.datetime) -> int:
    """A datetime (naive = UTC) as microseconds since the epoch."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return (aware - EPOCH) // dt.timedelta(microseconds=1)
