"""Retention policy as data: which table keeps what, how a row's age is read, where it moves. Pure, no I/O.

Each lake table of the lifecycle has a ``LakePolicy``: the row's **event date** (a DuckDB expression over the
hot table's columns), the columns that name a row (its Kafka coordinates, or the event for alerts), the hot
table's partition columns (so deletes prune files) and the horizon that applies. A row whose event date is
before ``cutoff(as_of, days)`` moves to ``archive/<layer>/<table>``: the hot table's columns plus
``event_month`` (the first day of the event date's month, the archive's partition column).

The event date of a record is the same wherever the record is: bronze and quarantine read it from the
payload (``event_time``, an ISO-8601 instant, as silver parses it), falling back to the Kafka timestamp's date
when the payload has none that parses (malformed records); silver, duplicates and alerts have ``event_date``.
So a record and the row it became move to the archive in the same run.

PostgreSQL has a ``PgPolicy`` per table: the served copy is pruned by the same horizons.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from ecom.settings import RetentionSettings

ARCHIVE_PARTITION = "event_month"
COORDINATES = ("kafka_topic", "kafka_partition", "kafka_offset")

# The event date of a raw payload, as silver reads it (an ISO-8601 instant, in UTC); NULL when there is none.
PAYLOAD_EVENT_DATE = (
    "CASE WHEN json_valid(payload) THEN "
    "CAST(TRY_CAST(json_extract_string(payload, '$.event_time') AS TIMESTAMPTZ) AS DATE) END"
)


@dataclass(frozen=True)
class LakePolicy:
    """How one lake table ages: ``age`` (DuckDB SQL: the row's event date), ``key`` (columns naming a row),
    ``partitions`` (the hot table's partition columns), ``horizon`` (a field of ``RetentionSettings``)."""

    layer: str
    table: str
    age: str
    key: tuple[str, ...]
    partitions: tuple[str, ...]
    horizon: str = "days"

    @property
    def name(self) -> str:
        return f"{self.layer}/{self.table}"

    def days(self, retention: RetentionSettings) -> int:
        return getattr(retention, self.horizon)


LAKE_POLICIES: tuple[LakePolicy, ...] = (
    LakePolicy(
        "bronze",
        "transactions",
        f"coalesce({PAYLOAD_EVENT_DATE}, CAST(kafka_timestamp AS DATE), ingest_date)",
        COORDINATES,
        ("ingest_date",),
    ),
    LakePolicy("silver", "transactions", "event_date", COORDINATES, ("event_date",)),
    LakePolicy(
        "silver",
        "quarantine",
        f"coalesce({PAYLOAD_EVENT_DATE}, CAST(kafka_timestamp AS DATE), CAST(quarantined_time AS DATE))",
        COORDINATES,
        (),
    ),
    LakePolicy("silver", "duplicates", "event_date", COORDINATES, ()),
    LakePolicy("silver", "fraud_alerts", "event_date", ("event_id",), ("event_date",), horizon="alerts_days"),
)


@dataclass(frozen=True)
class PgPolicy:
    """How one PostgreSQL table ages: rows where ``age`` (SQL over its columns) is before the cutoff are deleted,
    except those where ``keep`` (SQL over the table's columns, the table by its own name) holds."""

    table: str
    age: str
    horizon: str = "days"
    keep: str = ""

    def days(self, retention: RetentionSettings) -> int:
        return getattr(retention, self.horizon)


def newest_batch_of_its_sink(table: str) -> str:
    """``keep`` for bookkeeping by (sink, batch_id): a sink's newest batch stays however old it is (a stream
    stopped for longer than the horizon resumes from it: replay check, gold's watermark)."""
    return f"batch_id = (SELECT max(k.batch_id) FROM {table} k WHERE k.sink = {table}.sink)"


PG_POLICIES: tuple[PgPolicy, ...] = (
    PgPolicy("transactions", "event_time"),
    PgPolicy("fraud_alerts", "coalesce(event_time, created_at)", horizon="alerts_days"),
    PgPolicy("fraud_labels", "label_time", horizon="alerts_days"),
    PgPolicy("analytics_summaries", "period_start", horizon="summaries_days"),
    PgPolicy("quarantine_counts", "minute"),
    # The streams' bookkeeping: a row per micro-batch and sink, about one a second while they run.
    PgPolicy("pipeline_batches", "committed_at", "bookkeeping_days", newest_batch_of_its_sink("pipeline_batches")),
    PgPolicy("stream_progress", "committed_at", "bookkeeping_days", newest_batch_of_its_sink("stream_progress")),
    PgPolicy("alert_path_agreement", "committed_at", "bookkeeping_days"),
)


def cutoff(as_of: dt.date, days: int) -> dt.date:
    """The first event date a hot table keeps on ``as_of``: rows dated before it move to the archive."""
    return as_of - dt.timedelta(days=days)


def cutoff_instant(day: dt.date) -> dt.datetime:
    """Midnight UTC at the start of ``day`` (PostgreSQL compares instants, not dates)."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def month_of(day: dt.date) -> dt.date:
    """The archive partition of an event date: the first day of its month."""
    return day.replace(day=1)


def archive_lookup_dates(event_dates: Iterable[dt.date], today: dt.date, retention: RetentionSettings) -> list[dt.date]:
    """The event dates whose events the silver stream also looks up in the archive: those older than the hot
    horizon minus ``lookup_margin_days`` (the margin covers a lifecycle run on a later date than the stream's)."""
    edge = cutoff(today, retention.days - retention.lookup_margin_days)
    return sorted({d for d in event_dates if d is not None and d < edge})
