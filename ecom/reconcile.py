"""``ecom reconcile``: prove that nothing was lost and nothing was processed twice.

Counts, for the whole run or a Kafka-timestamp range: produced (Kafka offsets),
bronze, silver, quarantine, duplicates and PostgreSQL rows, and checks:

- every produced record reached bronze (``produced = bronze``, unless pending);
- every bronze record is in exactly one of silver, quarantine or duplicates,
  by Kafka coordinates (so ``bronze = silver + quarantine + duplicates``);
- silver holds each event_id once; every duplicate's event_id is in silver;
- the event-id set served in PostgreSQL equals the one in silver.

Reads the lake with delta-rs and DuckDB (no Spark), and PostgreSQL directly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime

import duckdb
from deltalake import DeltaTable

from ecom.settings import Settings
from serving.db import connection

TABLES = {
    "bronze": ("bronze", "transactions"),
    "silver": ("silver", "transactions"),
    "quarantine": ("silver", "quarantine"),
    "duplicates": ("silver", "duplicates"),
}


@dataclass
class Report:
    since: str | None
    until: str | None
    produced: int
    bronze: int
    silver: int
    quarantine: int
    duplicates: int
    postgres: int
    pending: int
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
        ]
        out = [f"{name:<30}{value:>12,}" for name, value in rows]
        out.append(
            f"{'bronze = silver + quarantine + duplicates':<44}"
            f"{'yes' if self.bronze == self.silver + self.quarantine + self.duplicates else 'NO'}"
        )
        out += [f"PROBLEM: {p}" for p in self.problems] or ["all checks passed"]
        return out

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok})


def _kafka_counts(settings: Settings, since: datetime | None, until: datetime | None) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers.split(","))
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
        return sum(max(hi[p] - lo[p], 0) for p in parts)
    finally:
        consumer.close()


def _register_lake(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    for name, (layer, table) in TABLES.items():
        con.register(name, DeltaTable(settings.lake.table(layer, table)).to_pyarrow_dataset())


def reconcile(
    settings: Settings, since: datetime | None = None, until: datetime | None = None, allow_pending: bool = False
) -> Report:
    """Count every layer and check they agree; ``allow_pending`` tolerates records still on their way to bronze."""
    con = duckdb.connect()
    _register_lake(con, settings)
    conds = []
    if since:
        conds.append(f"kafka_timestamp >= TIMESTAMPTZ '{since.isoformat()}'")
    if until:
        conds.append(f"kafka_timestamp < TIMESTAMPTZ '{until.isoformat()}'")
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    coords = "kafka_topic, kafka_partition, kafka_offset"
    for name in TABLES:
        con.execute(f"CREATE TEMP VIEW r_{name} AS SELECT * FROM {name} {where}")
    counts = {name: con.execute(f"SELECT count(*) FROM r_{name}").fetchone()[0] for name in TABLES}
    problems: list[str] = []

    missing = con.execute(
        f"""SELECT count(*) FROM (
              SELECT {coords} FROM r_bronze
              EXCEPT ALL (SELECT {coords} FROM r_silver UNION ALL SELECT {coords} FROM r_quarantine
                          UNION ALL SELECT {coords} FROM r_duplicates))"""
    ).fetchone()[0]
    extra = con.execute(
        f"""SELECT count(*) FROM (
              (SELECT {coords} FROM r_silver UNION ALL SELECT {coords} FROM r_quarantine
               UNION ALL SELECT {coords} FROM r_duplicates)
              EXCEPT ALL SELECT {coords} FROM r_bronze)"""
    ).fetchone()[0]
    if missing:
        problems.append(f"{missing} bronze records are in none of silver, quarantine, duplicates")
    if extra:
        problems.append(f"{extra} silver/quarantine/duplicate rows do not match exactly one bronze record")
    repeated = con.execute("SELECT count(*) - count(DISTINCT event_id) FROM silver").fetchone()[0]
    if repeated:
        problems.append(f"{repeated} event_ids appear more than once in silver")
    orphans = con.execute(
        "SELECT count(*) FROM r_duplicates d ANTI JOIN silver s ON d.event_id = s.event_id"
    ).fetchone()[0]
    if orphans:
        problems.append(f"{orphans} duplicates have no event in silver")

    silver_ids = [r[0] for r in con.execute("SELECT event_id FROM r_silver").fetchall()]
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM transactions WHERE event_id = ANY(%s)", (silver_ids,))
        served = cur.fetchone()[0]
        if not conds:
            cur.execute("SELECT count(*) FROM transactions")
            total_pg = cur.fetchone()[0]
            if total_pg != served:
                problems.append(f"{total_pg - served} PostgreSQL transactions are not in silver")
    if served != len(silver_ids):
        problems.append(f"{len(silver_ids) - served} silver events are missing in PostgreSQL")

    produced = _kafka_counts(settings, since, until)
    pending = produced - counts["bronze"]
    if pending < 0:
        problems.append(f"bronze has {-pending} more records than Kafka holds (topic trimmed by retention?)")
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
        problems=problems,
    )
