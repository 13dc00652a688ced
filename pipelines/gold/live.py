"""Gold live metrics: per-minute order figures on event time, watermarked, from silver to ``gold/minute_metrics`` and
PostgreSQL ``analytics_summaries``.

Layer: gold. Input: ``silver/transactions`` (a Delta stream, ``skipChangeCommits``
so retention deletes and rescoring rewrites do not stop it). Output:
``gold/minute_metrics`` (grain: one row per event-time minute, dimension and
dimension value; ``ecom.schemas.MINUTE_METRICS_SCHEMA``) and the ``minute``
rows of ``analytics_summaries`` (encoding: ``pipelines.gold.summaries``).

How a micro-batch is handled (``MinuteBatch``, a named ``foreachBatch``
function): one Spark job brings the batch's silver rows (``LIVE_COLUMNS``) to
the driver as Arrow; ``LiveMinutes.fold`` (pure, pandas, milliseconds) adds
them to the open minutes it holds and returns what changed:

- ``figures``: the new figures of every (minute, dimension value) the batch
  touched -> upserted into PostgreSQL at once, so a minute's figures are there
  one micro-batch after its last order reached silver;
- ``late``: events whose minute had already closed (its end at or before the
  watermark) -> counted in that minute's ``late_events`` (overall row), never
  added to its figures; the daily batch's ``recompute_minutes`` adds them;
- ``closed``: the final figures of the minutes the watermark passed -> merged
  into ``gold/minute_metrics`` (the lake holds closed minutes only).

The watermark is the highest event time seen minus ``gold.watermark``, each
event's time capped at the time silver processed it (an order stamped in the
future cannot close the present); it moves at batch boundaries, as Spark's
does. PostgreSQL gets the figures, the late counts (added to) and the state
after the batch (watermark and folded Kafka offsets, ``stream_progress``) in
one transaction recorded under the batch id, so a replayed batch changes
nothing there; the lake merge is tagged with the batch id and skipped on a
replay that finds the tag. After a restart the first batch N rebuilds the open
minutes as they were after batch N-1: its recorded watermark and offsets, and
the silver rows of the open minutes up to those offsets.

Each batch is counted in the stage's Prometheus metrics (``ecom.metrics``, stage ``stream_gold``); a stream
that runs on (not ``once``) serves them with ``/healthz`` (docs/observability.md).

Runs as ``ecom stream gold`` or ``spark-submit pipelines/gold/live.py``.
``recompute_minutes`` is the batch side (``ecom batch minutes``). docs/gold.md
has the design and the measurements that chose it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery

from ecom import metrics
from ecom.health import query_check
from ecom.lake import TABLES, ensure_table, prepare_lake
from ecom.schemas import MINUTE_METRICS_SCHEMA, SILVER_SCHEMA, arrow_schema
from ecom.settings import Settings, get_settings
from pipelines.gold.summaries import (
    FIGURE_COLUMNS,
    MICROS,
    MINUTE_US,
    OVERALL,
    SUMMARY_COLUMNS,
    SUMMARY_KEY,
    as_array,
    dimension_rows,
    epoch_micros,
    lake_late_events,
    period_figures,
    reporting_rates,
    revenue_micros,
    silver_rows,
    summary_rows,
    sync_summaries,
)
from pipelines.gold.summaries import with_late_events as _with_late_events
from serving import db

log = logging.getLogger(__name__)

QUERY_NAME = "gold_minute_metrics"
STAGE = "stream_gold"  # the process name of metrics.ports and /healthz
STREAM, BATCH = "stream", "batch"  # values of ``source``
MINUTE = pd.Timedelta(minutes=1)
MINUTE_COLUMNS = tuple(MINUTE_METRICS_SCHEMA.fieldNames())
MINUTE_KEY = ("window_start", "dimension", "dimension_value")
# What the live metrics read of a silver row.
LIVE_COLUMNS = (
    "event_id", "event_time", "processed_time", "customer_id", "items", "amount", "currency", "payment_method",
    "channel", "is_fraud", "kafka_partition", "kafka_offset",
)  # fmt: skip
LIVE_SCHEMA = T.StructType([SILVER_SCHEMA[c] for c in LIVE_COLUMNS])
PROGRESS_KEEP = 100  # stream_progress rows kept per sink (a restart needs the last one)


def _stamp(micros: int) -> pd.Timestamp:
    return pd.Timestamp(int(micros), unit="us")


@dataclass
class _Figures:
    """Running figures of one (minute, dimension, value)."""

    orders: int = 0
    revenue_micros: int = 0  # whole millionths of the reporting currency (summaries.MICROS)
    alerts: int = 0
    scored: int = 0
    customers: set = field(default_factory=set)


@dataclass
class MinuteChanges:
    """What one batch changed: ``figures`` (touched open minutes), ``late`` counts, ``closed`` minutes."""

    figures: pd.DataFrame  # MINUTE_COLUMNS
    late: pd.DataFrame  # window_start, late_events
    closed: pd.DataFrame  # MINUTE_COLUMNS
    watermark: pd.Timestamp | None

    def late_rows(self, updated_at: dt.datetime) -> pd.DataFrame:
        """The late counts as ``MINUTE_COLUMNS`` rows (overall, no figures), for the lake merge."""
        return minute_frame(
            [((start, OVERALL, ""), _Figures(), int(n)) for start, n in zip(self.late["window_start"], self.late["late_events"], strict=True)],
            updated_at,
        )  # fmt: skip


_NUMERIC = {"orders": "int64", "revenue": "float64", "avg_order_value": "float64", "customers": "int64",
            "alerts": "int64", "alert_rate": "float64", "late_events": "int64"}  # fmt: skip


def minute_frame(records: Sequence[tuple[tuple, _Figures, int]], updated_at: dt.datetime) -> pd.DataFrame:
    """``MINUTE_COLUMNS`` rows (source ``stream``) from ((window_start, dimension, value), figures, late events)."""
    rows = [
        (
            start, dimension, value, f.orders, f.revenue_micros / MICROS,
            f.revenue_micros / MICROS / f.orders if f.orders else None,
            len(f.customers), f.alerts, f.alerts / f.scored if f.scored else None, late, STREAM, start.date(),
            updated_at,
        )
        for (start, dimension, value), f, late in records
    ]  # fmt: skip
    columns = zip(*rows, strict=True) if rows else ([] for _ in MINUTE_COLUMNS)
    return pd.DataFrame(
        {
            name: np.asarray(values, dtype=_NUMERIC[name]) if name in _NUMERIC else list(values)
            for name, values in zip(MINUTE_COLUMNS, columns, strict=True)
        }
    )


class LiveMinutes:
    """The open minutes of the live metrics: running figures, the watermark, the Kafka offsets folded so far.

    ``fold`` is the whole stream's logic as a function of a batch's silver rows; it holds no I/O.
    """

    def __init__(
        self,
        rates: Mapping[str, float],
        delay: pd.Timedelta,
        watermark: pd.Timestamp | None = None,
        offsets: Mapping[int, int] | None = None,
    ):
        self.rates = dict(rates)
        self.delay = delay
        self.watermark = watermark
        self.offsets: dict[int, int] = dict(offsets or {})
        self.minutes: dict[pd.Timestamp, dict[tuple[str, str], _Figures]] = {}
        self.seen: dict[int, set[str]] = {}  # event ids counted per open minute (epoch us): a row never counts twice

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveMinutes:
        return cls(reporting_rates(settings.gold.reporting_currency), pd.Timedelta(settings.gold.watermark))

    def _closed(self, windows: np.ndarray) -> np.ndarray:
        """Whether each minute (epoch us) is closed: its end is at or before the watermark."""
        if self.watermark is None:
            return np.zeros(len(windows), dtype=bool)
        return windows + MINUTE_US <= self.watermark.value // 1000

    def fold(self, batch: pa.Table, now: dt.datetime | None = None) -> MinuteChanges:
        """Add one batch of silver rows (``LIVE_COLUMNS``); returns what changed."""
        now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        dims = dimension_rows(batch, self.rates)
        closed = self._closed(dims["window"].to_numpy())
        late = (
            dims.filter(pc.and_(pa.array(closed), pc.equal(dims["dimension"], OVERALL)))
            .group_by("window", use_threads=False)
            .aggregate([("event_id", "count_distinct")])
            .to_pandas()
        )
        late = pd.DataFrame(
            {"window_start": pd.to_datetime(late["window"], unit="us"), "late_events": late["event_id_count_distinct"]}
        ).astype({"late_events": "int64"})
        touched = self._add(dims.filter(pa.array(~closed)))
        figures = minute_frame([(key, self.minutes[key[0]][key[1:]], 0) for key in sorted(touched)], now)
        self._advance(batch)
        return MinuteChanges(figures, late, self._close(now), self.watermark)

    def _add(self, dims: pa.Table) -> set[tuple]:
        """Fold on-time dimension rows into the open minutes; returns the (minute, dimension, value) touched."""
        overall = dims.filter(pc.equal(dims["dimension"], OVERALL))
        ids, windows = overall["event_id"].to_pylist(), overall["window"].to_pylist()
        fresh = []
        for event_id, window in zip(ids, windows, strict=True):
            seen = self.seen.setdefault(window, set())
            if event_id not in seen:
                seen.add(event_id)
                fresh.append(event_id)
        if not fresh:
            return set()
        if len(fresh) < len(ids):  # a replay overlapping what the state holds
            if len(set(ids)) < len(ids):
                raise ValueError("a batch of silver rows holds an event id twice")
            dims = dims.filter(pc.is_in(dims["event_id"], value_set=pa.array(fresh, pa.string())))
        groups = (
            dims.append_column("micros", pa.array(revenue_micros(dims["revenue"].to_numpy())))
            .group_by(["window", "dimension", "dimension_value"], use_threads=False)
            .aggregate([("event_id", "count"), ("micros", "sum"), ("is_alert", "sum"), ("is_scored", "sum"), ("customer_id", "distinct")])
        )  # fmt: skip
        touched = set()
        for g in groups.to_pylist():
            start = _stamp(g["window"])
            figures = self.minutes.setdefault(start, {}).setdefault((g["dimension"], g["dimension_value"]), _Figures())
            figures.orders += g["event_id_count"]
            figures.revenue_micros += g["micros_sum"]
            figures.alerts += g["is_alert_sum"]
            figures.scored += g["is_scored_sum"]
            figures.customers.update(g["customer_id_distinct"])
            touched.add((start, g["dimension"], g["dimension_value"]))
        return touched

    def _advance(self, batch: pa.Table) -> None:
        """Move the watermark (highest event time, each capped at its processing time, minus the delay) and the
        folded Kafka offsets past this batch."""
        if not batch.num_rows:
            return
        capped = np.minimum(epoch_micros(batch["event_time"]), epoch_micros(batch["processed_time"])).max()
        candidate = _stamp(capped) - self.delay
        if self.watermark is None or candidate > self.watermark:
            self.watermark = candidate
        partitions = as_array(batch["kafka_partition"]).to_numpy(zero_copy_only=False)
        offsets = as_array(batch["kafka_offset"]).to_numpy(zero_copy_only=False)
        for partition in np.unique(partitions):
            highest = int(offsets[partitions == partition].max())
            self.offsets[int(partition)] = max(highest, self.offsets.get(int(partition), -1))

    def _close(self, now: dt.datetime) -> pd.DataFrame:
        """Remove the minutes the watermark passed; returns their final figures."""
        done = sorted(m for m in self.minutes if self.watermark is not None and m + MINUTE <= self.watermark)
        records = [((m, *key), figures, 0) for m in done for key, figures in sorted(self.minutes[m].items())]
        for m in done:
            del self.minutes[m]
            del self.seen[m.value // 1000]
        return minute_frame(records, now)

    # -- restart ----------------------------------------------------------------------------------
    def progress(self) -> dict:
        """What a restart needs to continue exactly after this point (stored with the batch)."""
        return {
            "watermark": None if self.watermark is None else self.watermark.isoformat(),
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
        }

    def resume(self, progress: Mapping | None, silver_rows: pa.Table) -> None:
        """Become the state recorded in ``progress``: its watermark and offsets, and the open minutes rebuilt from
        ``silver_rows`` (at least the rows of the minutes open then; rows past the offsets are left out)."""
        if not progress:
            return
        offsets = {int(p): int(o) for p, o in progress.get("offsets", {}).items()}
        watermark = pd.Timestamp(progress["watermark"]) if progress.get("watermark") else None
        self.watermark, self.offsets = watermark, offsets
        if not silver_rows.num_rows:
            return
        partition, offset = silver_rows["kafka_partition"], silver_rows["kafka_offset"]
        folded = pc.is_in(partition, pa.array(list(offsets), pa.int32()))
        for p, o in offsets.items():
            folded = pc.and_kleene(folded, pc.or_kleene(pc.not_equal(partition, p), pc.less_equal(offset, o)))
        dims = dimension_rows(silver_rows.filter(folded), self.rates)
        self._add(dims.filter(pa.array(~self._closed(dims["window"].to_numpy()))))


# -- PostgreSQL and lake writes of one batch -----------------------------------------------------


def minute_writes(changes: MinuteChanges, sink: str, batch_id: int, progress: Mapping) -> list[db.TableWrite]:
    """The batch's PostgreSQL writes (for ``db.commit_batch_writes``): figures, late counts (added), progress."""
    now = dt.datetime.now(dt.UTC)
    columns = (*SUMMARY_COLUMNS, "updated_at")
    figures = [(*row, now) for row in summary_rows(changes.figures, "minute", "window_start")]
    late = [
        ("late_events", "minute", start.tz_localize("UTC").to_pydatetime(), "", float(n), now)
        for start, n in zip(changes.late["window_start"], changes.late["late_events"], strict=True)
    ]
    return [
        db.TableWrite("analytics_summaries", columns, SUMMARY_KEY, figures, update=("value", "updated_at")),
        db.TableWrite("analytics_summaries", columns, SUMMARY_KEY, late, update=("updated_at",), accumulate=("value",)),
        db.TableWrite(
            "stream_progress",
            ("sink", "batch_id", "progress"),
            ("sink", "batch_id"),
            [(sink, batch_id, json.dumps(progress))],
            update=("progress",),
        ),
    ]


def lake_source(changes: MinuteChanges, updated_at: dt.datetime) -> pa.Table | None:
    """Closed minutes and late counts as one Arrow table (``MINUTE_COLUMNS`` + ``is_late``), or None if neither."""
    late = changes.late_rows(updated_at).assign(is_late=True)
    closed = changes.closed.assign(is_late=False)
    frames = [f for f in (closed, late) if len(f)]
    if not frames:
        return None
    schema = arrow_schema(MINUTE_METRICS_SCHEMA).append(pa.field("is_late", pa.bool_(), False))
    return pa.Table.from_pandas(pd.concat(frames, ignore_index=True), schema=schema, preserve_index=False)


def merge_into_lake(path: str, source: pa.Table, tag: str, attempts: int = 5) -> None:
    """Closed minutes replace their row (inserted if new); late counts are added to the minute's overall row
    (a row with zero figures if the minute had none). Retried when a concurrent commit (the daily batch) wins."""
    from deltalake import CommitProperties
    from deltalake.exceptions import CommitFailedError

    from ecom.storage import delta_table

    match = " AND ".join(f"t.{c} = s.{c}" for c in ("event_date", *MINUTE_KEY))
    every = {c: f"s.{c}" for c in MINUTE_COLUMNS}
    for attempt in range(attempts):
        try:
            (
                delta_table(path)
                .merge(
                    source,
                    match,
                    source_alias="s",
                    target_alias="t",
                    commit_properties=CommitProperties(custom_metadata={"userMetadata": tag}),
                )
                .when_matched_update(
                    {"late_events": "t.late_events + s.late_events", "updated_at": "s.updated_at"}, "s.is_late"
                )
                .when_matched_update(every, "NOT s.is_late")
                .when_not_matched_insert(every)
                .execute()
            )
            return
        except CommitFailedError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def committed_with_tag(path: str, tag: str, depth: int = 200) -> bool:
    """True if one of the table's last ``depth`` commits carries ``tag`` as its userMetadata."""
    from ecom.storage import delta_table

    return any(c.get("userMetadata") == tag for c in delta_table(path).history(depth))


# -- the stream ------------------------------------------------------------------------------------


class MinuteBatch:
    """The ``foreachBatch`` function of the live metrics stream (``ecom stream gold``)."""

    def __init__(self, settings: Settings, query_name: str = QUERY_NAME):
        self.settings = settings
        self.query_name = query_name
        self.path = settings.lake.table("gold", "minute_metrics")
        self.sink = ""  # named after the query id Spark keeps in the checkpoint, read at the first batch
        self.state: LiveMinutes | None = None
        self.last_timings: dict[str, float] = {}
        self._conn = None

    def _db(self):
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.settings.postgres.dsn)
        return self._conn

    def _sink(self, spark: SparkSession) -> str:
        query = next((q for q in spark.streams.active if q.name == self.query_name), None)
        return f"gold-minutes-{query.id if query is not None else self.query_name}"

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        spark = batch_df.sparkSession
        started = time.perf_counter()
        timings: dict[str, float] = {}

        def mark(step: str) -> None:
            nonlocal started
            now = time.perf_counter()
            timings[step] = round(1000 * (now - started), 1)
            started = now

        if not self.sink:
            self.sink = self._sink(spark)
        if self.state is None:
            self.state = resume_minutes(spark, self.settings, self._db(), self.sink, batch_id)
            mark("resume")
        rows = batch_df.toArrow()
        mark("read")
        changes = self.state.fold(rows)
        mark("fold")
        written = db.commit_batch_writes(
            self._db(), self.sink, batch_id, minute_writes(changes, self.sink, batch_id, self.state.progress())
        )
        mark("postgres")
        source = lake_source(changes, dt.datetime.now(dt.UTC).replace(tzinfo=None))
        tag = f"{self.sink}:{batch_id}"
        merged = 0
        if source is not None and not (written is None and committed_with_tag(self.path, tag)):
            merge_into_lake(self.path, source, tag)
            merged = source.num_rows
            mark("lake")
        if batch_id % PROGRESS_KEEP == 0:
            with self._db() as conn, conn.cursor() as cur:
                cur.execute(
                    "DELETE FROM stream_progress WHERE sink = %s AND batch_id < %s",
                    (self.sink, batch_id - PROGRESS_KEEP),
                )
        self.last_timings = timings
        metrics.record_microbatch(
            STAGE,
            records_in=rows.num_rows,
            written={  # written: rows per TableWrite of minute_writes, the first two into analytics_summaries
                "postgres.analytics_summaries": sum((written or [])[:2]),
                "gold.minute_metrics": merged,
            },
            duration_s=sum(timings.values()) / 1000,
        )
        log.info(
            "live minutes: %d rows, %d late, %d minutes closed, watermark %s; batch %d%s: %s ms",
            rows.num_rows, int(changes.late["late_events"].sum()), changes.closed["window_start"].nunique(),
            changes.watermark, batch_id, " (replay)" if written is None else "",
            ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        )  # fmt: skip


def resume_minutes(spark: SparkSession, settings: Settings, conn, sink: str, batch_id: int) -> LiveMinutes:
    """The live minutes of ``sink`` as they were after its last batch committed before ``batch_id`` (recorded in
    ``stream_progress``), open minutes rebuilt from silver; empty on a first start. Any stream that folds silver
    rows (this stage, or the ingest micro-batch) calls it at its first batch and on a retry."""
    state = LiveMinutes.from_settings(settings)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT batch_id, progress FROM stream_progress WHERE sink = %s AND batch_id < %s "
            "ORDER BY batch_id DESC LIMIT 1",
            (sink, batch_id),
        )
        found = cur.fetchone()
    if found is None:
        return state
    progress = found[1]
    start = pd.Timestamp(progress["watermark"]).floor("min") if progress.get("watermark") else None
    rows = open_silver_rows(spark, settings, start) if progress.get("offsets") else empty_live_rows()
    state.resume(progress, rows)
    log.info(
        "live minutes resumed after batch %d: watermark %s, %d open minutes from %d silver rows",
        found[0], state.watermark, len(state.minutes), rows.num_rows,
    )  # fmt: skip
    return state


def live_rows(silver: pd.DataFrame) -> pa.Table:
    """Silver rows held as pandas (the ingest micro-batch's new rows) -> the Arrow rows ``LiveMinutes.fold`` takes."""
    return pa.Table.from_pandas(silver[list(LIVE_COLUMNS)], schema=arrow_schema(LIVE_SCHEMA), preserve_index=False)


def empty_live_rows() -> pa.Table:
    return arrow_schema(LIVE_SCHEMA).empty_table()


def open_silver_rows(spark: SparkSession, settings: Settings, start: pd.Timestamp | None) -> pa.Table:
    """Silver rows (``LIVE_COLUMNS``) with event time from ``start`` on (all of silver if None)."""
    silver = spark.read.format("delta").load(settings.lake.table("silver", "transactions"))
    if start is not None:
        begin = start.to_pydatetime()
        silver = silver.where((F.col("event_date") >= F.lit(begin.date())) & (F.col("event_time") >= F.lit(begin)))
    return silver.select(*LIVE_COLUMNS).toArrow()


def start(spark: SparkSession, settings: Settings, once: bool = False) -> StreamingQuery:
    """Start the live metrics stream: a Delta stream over silver -> ``MinuteBatch``."""
    prepare_lake(spark, settings)
    source = (
        spark.readStream.format("delta")
        .option("skipChangeCommits", "true")
        .load(settings.lake.table("silver", "transactions"))
        .select(*LIVE_COLUMNS)
    )
    writer = (
        source.writeStream.queryName(QUERY_NAME)
        .foreachBatch(MinuteBatch(settings))
        .option("checkpointLocation", settings.lake.checkpoint(QUERY_NAME))
    )
    writer = (
        writer.trigger(availableNow=True) if once else writer.trigger(processingTime=settings.gold.trigger_interval)
    )
    query = writer.start()
    if not once:  # a long-running stream: /metrics and /healthz (a run that stops by itself is not scraped)
        metrics.serve(settings, STAGE).add("query", query_check(query))
    return query


# -- the batch side: recompute minutes from silver -------------------------------------------------


def minute_metrics(dims: pa.Table) -> pa.Table:
    """Dimension rows (``summaries.dimension_rows``) -> the figures per (``window_start``, dimension, value), all
    orders counted."""
    figures = period_figures(dims, "minute")
    return figures.rename_columns(["window_start", *figures.column_names[1:]])


def with_late_events(figures: pa.Table, late: pa.Table) -> pa.Table:
    """Figures plus ``late_events`` from ``late`` (window_start, dimension, dimension_value, late_events); a
    minute known only by its late count keeps a row with zero figures, so no count is dropped."""
    return _with_late_events(figures, late, "window_start", "full outer")


def stream_frontier(path: str) -> dt.datetime | None:
    """The end of the latest minute the live stream closed (None if it never closed one), read with delta-rs."""
    from ecom.storage import delta_table

    rows = delta_table(path).to_pyarrow_table(columns=["window_start"], filters=[("source", "=", STREAM)])
    latest = pc.max(rows["window_start"]).as_py() if rows.num_rows else None
    return None if latest is None else _utc(latest) + dt.timedelta(minutes=1)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def recompute_minutes(
    spark: SparkSession, settings: Settings, since: dt.datetime, until: dt.datetime
) -> dict[str, int]:
    """Recompute ``gold/minute_metrics`` for the minutes in [since, until) from silver, late events included, and
    make ``analytics_summaries`` hold exactly those minutes; returns rows written per table.

    The rows get ``source`` = ``batch``; ``late_events`` keeps what the stream counted (how many of the minute's
    events came after it had closed), the figures now include them. Minutes the live stream has not closed yet
    are left to it: ``until`` stops at the end of the latest minute it closed (when it ever closed one). Spark
    reads the silver rows of the range; they are counted in the driver as the stream counts them
    (``summaries.dimension_rows``).
    """
    path = settings.lake.table("gold", "minute_metrics")
    ensure_table(spark, path, *TABLES[("gold", "minute_metrics")])
    since, until = _utc(since), _utc(until)
    frontier = stream_frontier(path)
    if frontier is not None:
        until = min(until, frontier)
    if until <= since:
        return {"gold/minute_metrics": 0, "pg/analytics_summaries": 0}
    rows = silver_rows(spark, settings, since, until)
    figures = with_late_events(
        minute_metrics(dimension_rows(rows, reporting_rates(settings.gold.reporting_currency))),
        lake_late_events(path, since, until),
    )
    n = figures.num_rows
    start = figures["window_start"]
    data = (
        pa.table(
            {
                **{c: figures[c] for c in figures.column_names},
                "source": pa.array([BATCH] * n, pa.string()),
                "event_date": pc.cast(start, pa.date32()),
                "updated_at": pa.array([dt.datetime.now(dt.UTC)] * n, pa.timestamp("us", "UTC")),
            }
        )
        .select(list(MINUTE_COLUMNS))
        .cast(arrow_schema(MINUTE_METRICS_SCHEMA))
    )
    predicate = (
        f"event_date >= '{since.date()}' AND event_date <= '{until.date()}' AND "
        f"window_start >= '{since.isoformat()}' AND window_start < '{until.isoformat()}'"
    )
    _overwrite(path, data, predicate, json.dumps({"job": "gold-batch", "table": "minute_metrics", "since": str(since)}))
    figures = data.select(["window_start", "dimension", "dimension_value", *FIGURE_COLUMNS, "late_events"])
    pg = sync_summaries(
        settings.postgres.dsn, summary_rows(figures.to_pandas(), "minute", "window_start"), "minute", since, until
    )
    return {"gold/minute_metrics": data.num_rows, "pg/analytics_summaries": pg}


def _overwrite(path: str, data: pa.Table, predicate: str, tag: str, attempts: int = 5) -> None:
    """Replace the rows matching ``predicate`` by ``data`` (delta-rs), retried when the stream's merge won."""
    from deltalake import CommitProperties
    from deltalake.exceptions import CommitFailedError

    from ecom.storage import write_delta

    for attempt in range(attempts):
        try:
            write_delta(
                path,
                data,
                mode="overwrite",
                predicate=predicate,
                commit_properties=CommitProperties(custom_metadata={"userMetadata": tag}),
            )
            return
        except CommitFailedError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Live metrics stream: silver -> per-minute gold metrics + PostgreSQL.")
    parser.add_argument("--once", action="store_true", help="process what is available, then stop")
    parser.add_argument("--profile", help="settings profile (default: $ECOM_PROFILE or local)")
    args = parser.parse_args(argv)
    from ecom.spark import get_spark
    from pipelines import supervisor

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # one line per micro-batch
    settings = get_settings(args.profile)
    spark = get_spark(settings, QUERY_NAME)
    supervisor.run(lambda: start(spark, settings, once=args.once), settings.stream, QUERY_NAME)


if __name__ == "__main__":
    main()
