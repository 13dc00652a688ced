"""``ecom reconcile``: prove that nothing was lost and nothing was processed twice.

Counts, for the whole run or a Kafka-timestamp range: produced (Kafka offsets),
bronze, silver, quarantine, duplicates and PostgreSQL rows, and checks:

- every produced record still in Kafka reached bronze (``produced = bronze``,
  unless pending); records Kafka no longer holds (trimmed by its retention)
  are counted apart as ``out_of_retention`` and checked in the lake only;
- every bronze record is in exactly one of silver, quarantine or duplicates,
  by Kafka coordinates (so ``bronze = silver + quarantine + duplicates``);
- silver holds each event_id once; every duplicate's event_id is in silver;
- PostgreSQL serves silver: every transaction it holds is a silver event, and
  every silver event inside the hot horizon (``retention.days``) is served.

Each layer counts its hot table and its archive (``archive/<layer>/<table>``,
docs/lifecycle.md) together; a row in both (a lifecycle run cut off between
its copy and its delete) counts once and is reported as ``in_both``.

Reads the lake with delta-rs and DuckDB (no Spark), and PostgreSQL directly.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime

import duckdb
import pyarrow as pa
from deltalake.exceptions import TableNotFoundError

from ecom.settings import Settings
from ecom.storage import delta_table
from serving.db import connection

TABLES = {
    "bronze": ("bronze", "transactions"),
    "silver": ("silver", "transactions"),
    "quarantine": ("silver", "quarantine"),
    "duplicates": ("silver", "duplicates"),
}
COORDS = "kafka_topic, kafka_partition, kafka_offset"
# The columns reconcile reads of each table (besides the Kafka coordinates and timestamp).
COLUMNS = {"bronze": (), "silver": ("event_id", "event_time"), "quarantine": (), "duplicates": ("event_id",)}


@dataclass
class Report:
    since: str | None
    until: str | None
    produced: int  # records Kafka holds (in the range)
    bronze: int  # hot + archive, here and below
    silver: int
    quarantine: int
    duplicates: int
    postgres: int
    pending: int
    out_of_retention: int = 0  # bronze records Kafka no longer holds (checked in the lake only)
    archived: dict[str, int] = field(default_factory=dict)  # of the counts above, rows in the archive
    in_both: int = 0  # rows in a hot table and its archive (a lifecycle run cut off; the next run completes it)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        rows = [
            ("produced (Kafka)", self.produced),
            ("bronze", self.bronze),
            ("silver", self.silver),
            ("quarantine", self.quarantine),
            ("duplicates removed", self.duplicates),
            ("PostgreSQL transactions", self.postgres),
            ("pending (not yet in bronze)", self.pending),
            ("out of Kafka's retention", self.out_of_retention),
        ]
        out = [f"{name:<30}{value:>12,}" for name, value in rows]
        if any(self.archived.values()):
            out.append("of which in the archive: " + ", ".join(f"{k} {v:,}" for k, v in self.archived.items()))
        if self.out_of_retention:
            out.append(
                f"{self.out_of_retention:,} bronze records are older than Kafka's retention: checked against "
                "silver, quarantine and duplicates only"
            )
        if self.in_both:
            out.append(f"{self.in_both:,} rows are both hot and archived (a lifecycle run was cut off; rerun it)")
        out.append(
            f"{'bronze = silver + quarantine + duplicates':<44}"
            f"{'yes' if self.bronze == self.silver + self.quarantine + self.duplicates else 'NO'}"
        )
        out += [f"PROBLEM: {p}" for p in self.problems] or ["all checks passed"]
        return out

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok})


@dataclass(frozen=True)
class KafkaRange:
    """One partition's offsets: ``first`` still held by Kafka, and the range [lo, hi) of the timestamps asked."""

    partition: int
    first: int
    lo: int
    hi: int


def _kafka_ranges(settings: Settings, since: datetime | None, until: datetime | None) -> list[KafkaRange]:
    from kafka import KafkaConsumer, TopicPartition

    from ecom.kafka_config import client_kwargs

    consumer = KafkaConsumer(**client_kwargs(settings))
    try:
        topic = settings.kafka.transactions_topic
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        begin = consumer.beginning_offsets(parts)
        end = consumer.end_offsets(parts)

        def offsets_at(ts: datetime | None, default: dict) -> dict:
            if ts is None:
                return default
            found = consumer.offsets_for_times({p: int(ts.timestamp() * 1000) for p in parts})
            return {p: (found[p].offset if found.get(p) else end[p]) for p in parts}

        lo, hi = offsets_at(since, begin), offsets_at(until, end)
        return [KafkaRange(p.partition, begin[p], max(lo[p], begin[p]), hi[p]) for p in parts]
    finally:
        consumer.close()


def _dataset(path: str):
    try:
        return delta_table(path).to_pyarrow_dataset()
    except TableNotFoundError:
        return None


def _register_lake(con: duckdb.DuckDBPyConnection, settings: Settings, where: str) -> None:
    """Views ``h_<name>`` (hot), ``a_<name>`` (archive) and ``r_<name>`` (both, a row in both once) per table."""
    for name, (layer, table) in TABLES.items():
        columns = ", ".join([COORDS, "kafka_timestamp", *COLUMNS[name]])
        con.register(f"{name}_hot", delta_table(settings.lake.table(layer, table)).to_pyarrow_dataset())
        archive = _dataset(settings.lake.archive(layer, table))
        if archive is None:
            con.execute(f"CREATE TEMP VIEW {name}_archive AS SELECT * FROM {name}_hot LIMIT 0")
        else:
            con.register(f"{name}_archive", archive)
        con.execute(f"CREATE TEMP TABLE h_{name} AS SELECT {columns} FROM {name}_hot {where}")
        con.execute(f"CREATE TEMP TABLE a_{name} AS SELECT {columns} FROM {name}_archive {where}")
        con.execute(
            f"CREATE TEMP VIEW r_{name} AS SELECT * FROM h_{name} UNION ALL "
            f"SELECT * FROM a_{name} ANTI JOIN h_{name} USING ({COORDS})"
        )


def _hot_horizon(settings: Settings) -> datetime:
    """The first instant PostgreSQL ``transactions`` keeps (the lifecycle prunes what is older)."""
    today = dt.datetime.now(dt.UTC).date()
    return dt.datetime.combine(today - dt.timedelta(days=settings.retention.days), dt.time(), tzinfo=dt.UTC)


def reconcile(
    settings: Settings, since: datetime | None = None, until: datetime | None = None, allow_pending: bool = False
) -> Report:
    """Count every layer (hot and archived) and check they agree; ``allow_pending`` tolerates records still on
    their way to bronze."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    conds = []
    if since:
        conds.append(f"kafka_timestamp >= TIMESTAMPTZ '{since.isoformat()}'")
    if until:
        conds.append(f"kafka_timestamp < TIMESTAMPTZ '{until.isoformat()}'")
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    _register_lake(con, settings, where)
    counts = {name: con.execute(f"SELECT count(*) FROM r_{name}").fetchall()[0][0] for name in TABLES}
    archived = {
        name: con.execute(f"SELECT count(*) FROM a_{name} ANTI JOIN h_{name} USING ({COORDS})").fetchall()[0][0]
        for name in TABLES
    }
    in_both = sum(
        con.execute(f"SELECT count(*) FROM a_{name} SEMI JOIN h_{name} USING ({COORDS})").fetchall()[0][0]
        for name in TABLES
    )
    problems: list[str] = []

    missing = con.execute(
        f"""SELECT count(*) FROM (
              SELECT {COORDS} FROM r_bronze
              EXCEPT ALL (SELECT {COORDS} FROM r_silver UNION ALL SELECT {COORDS} FROM r_quarantine
                          UNION ALL SELECT {COORDS} FROM r_duplicates))"""
    ).fetchall()[0][0]
    extra = con.execute(
        f"""SELECT count(*) FROM (
              (SELECT {COORDS} FROM r_silver UNION ALL SELECT {COORDS} FROM r_quarantine
               UNION ALL SELECT {COORDS} FROM r_duplicates)
              EXCEPT ALL SELECT {COORDS} FROM r_bronze)"""
    ).fetchall()[0][0]
    if missing:
        problems.append(f"{missing} bronze records are in none of silver, quarantine, duplicates")
    if extra:
        problems.append(f"{extra} silver/quarantine/duplicate rows do not match exactly one bronze record")
    silver_all = (
        f"SELECT event_id, {COORDS} FROM silver_hot UNION ALL "
        f"SELECT event_id, {COORDS} FROM silver_archive ANTI JOIN silver_hot USING ({COORDS})"
    )
    repeated = con.execute(f"SELECT count(*) - count(DISTINCT event_id) FROM ({silver_all})").fetchall()[0][0]
    if repeated:
        problems.append(f"{repeated} event_ids appear more than once in silver (hot and archive)")
    orphans = con.execute(
        f"SELECT count(*) FROM r_duplicates d ANTI JOIN ({silver_all}) s ON d.event_id = s.event_id"
    ).fetchall()[0][0]
    if orphans:
        problems.append(f"{orphans} duplicates have no event in silver")

    served, problems_pg = _check_postgres(con, settings, bool(conds))
    problems += problems_pg

    ranges = _kafka_ranges(settings, since, until)
    con.register(
        "kafka_ranges",
        pa.table(
            {f: pa.array([getattr(r, f) for r in ranges], pa.int64()) for f in ("partition", "first", "lo", "hi")}
        ),
    )
    produced = sum(max(r.hi - r.lo, 0) for r in ranges)
    in_kafka, out_of_retention = con.execute(
        "SELECT count(*) FILTER (WHERE b.kafka_offset >= k.lo AND b.kafka_offset < k.hi), "
        "count(*) FILTER (WHERE b.kafka_offset < k.first) "
        "FROM r_bronze b JOIN kafka_ranges k ON b.kafka_partition = k.partition"
    ).fetchall()[0]
    pending = produced - in_kafka
    if pending < 0:
        problems.append(f"bronze has {-pending} more records than Kafka holds in the same offsets")
    elif pending and not allow_pending:
        problems.append(f"{pending} produced records are not in bronze yet (is the stream running?)")
    return Report(
        since=since.isoformat() if since else None,
        until=until.isoformat() if until else None,
        produced=produced,
        bronze=counts["bronze"],
        silver=counts["silver"],
        quarantine=counts["quarantine"],
        duplicates=counts["duplicates"],
        postgres=served,
        pending=pending,
        out_of_retention=out_of_retention or 0,
        archived=archived,
        in_both=in_both,
        problems=problems,
    )


def _check_postgres(con: duckdb.DuckDBPyConnection, settings: Settings, ranged: bool) -> tuple[int, list[str]]:
    """PostgreSQL ``transactions`` against silver (hot and archived): the events served, and the problems."""
    problems = []
    silver = con.sql("SELECT event_id, event_time FROM r_silver").to_arrow_table()
    ids = silver.column("event_id").to_pylist()
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id FROM transactions WHERE event_id = ANY(%s)", (ids,))
        served_ids = pa.table({"event_id": pa.array([r[0] for r in cur.fetchall()], pa.string())})
        if not ranged:
            cur.execute("SELECT count(*) FROM transactions")
            total_pg = cur.fetchall()[0][0]
            if total_pg != served_ids.num_rows:
                problems.append(f"{total_pg - served_ids.num_rows} PostgreSQL transactions are not in silver")
    con.register("served_ids", served_ids)
    con.register("silver_events", silver)
    unserved = con.execute(
        "SELECT count(*) FROM silver_events s ANTI JOIN served_ids p USING (event_id) WHERE s.event_time >= ?",
        [_hot_horizon(settings)],
    ).fetchall()[0][0]
    if unserved:
        problems.append(f"{unserved} silver events inside the hot horizon are missing in PostgreSQL")
    return served_ids.num_rows, problems
