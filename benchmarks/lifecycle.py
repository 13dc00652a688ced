"""Lifecycle benchmark: archiving rows past the horizon, and compacting the small files the stream leaves.

``python -m benchmarks.lifecycle`` (defaults: 1,000,000 rows each) runs two halves, each in a scratch lake of its
own (deleted at the end; no service is needed), and prints one JSON object as its last line:

- archive: ``--rows`` silver rows and as many bronze records dated between ``--days`` days ago and the horizon,
  plus ``--hot-rows`` of each inside it (delta-rs, in ``--files`` appends per table), then
  ``pipelines.lifecycle.archive.move_table`` for bronze and silver is timed: read, copy to the archive, count,
  delete from the hot table. ``archive_seconds`` (both tables), per table under ``archive``;
- compaction (``benchmarks.compaction``): ``--transactions`` simulated orders appended to bronze and silver in
  micro-batches of ``--batch-rows`` as the stream does, then ``ecom.maintenance.compact`` is timed:
  ``compact_seconds``, ``files_before`` and ``files_after`` (totals over the streaming tables; per table under
  ``files_per_table``), ``read_seconds_before`` and ``read_seconds_after`` (a read query over silver, DuckDB
  on the delta-rs dataset, the median of ``--reads`` runs), ``vacuum_seconds`` and ``write_seconds``.

PostgreSQL pruning is not part of it (``tests/integration/test_lifecycle.py`` covers it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake

from benchmarks import compaction
from benchmarks._common import bench_settings, emit, log, machine_info
from ecom.schemas import BRONZE_SCHEMA, ITEM_SCHEMA, SILVER_SCHEMA, arrow_schema
from ecom.settings import LakeSettings
from pipelines.lifecycle import archive
from pipelines.lifecycle.policy import LAKE_POLICIES, cutoff

POLICIES = {p.name: p for p in LAKE_POLICIES}
PRICE = Decimal("12.50")


def _items(n: int) -> pa.Array:
    """One basket line per order."""
    arrow_item = arrow_schema(SILVER_SCHEMA).field("items").type.value_type
    lines = pa.StructArray.from_arrays(
        [
            pa.array([f"P{i % 500:04d}" for i in range(n)], pa.string()),
            pa.array(["books"] * n, pa.string()),
            pa.array(np.ones(n, dtype="int32")),
            pa.array([PRICE] * n, pa.decimal128(12, 2)),
        ],
        fields=list(arrow_item),
    )
    assert [f.name for f in arrow_item] == ITEM_SCHEMA.fieldNames()
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype="int32")), lines)


def silver_rows(start: int, n: int, event_times: np.ndarray) -> pa.Table:
    """``n`` silver rows (Kafka offsets from ``start``), every nullable column left null."""
    schema = arrow_schema(SILVER_SCHEMA)
    times = pa.array(event_times, pa.timestamp("us", tz="UTC"))
    now = pa.array(np.full(n, np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None), "us")), pa.timestamp("us"))
    values = {
        "event_id": pa.array([f"e-{start + i}" for i in range(n)]),
        "transaction_id": pa.array([f"t-{start + i}" for i in range(n)]),
        "event_time": times,
        "customer_id": pa.array([f"C{(start + i) % 20000:05d}" for i in range(n)]),
        "items": _items(n),
        "item_count": pa.array(np.ones(n, dtype="int32")),
        "amount": pa.array([PRICE] * n, pa.decimal128(12, 2)),
        "currency": pa.array(["USD"] * n),
        "payment_method": pa.array(["card"] * n),
        "channel": pa.array(["web"] * n),
        "schema_version": pa.array(np.ones(n, dtype="int32")),
        "event_date": pc.cast(times, pa.date32()),
        "kafka_topic": pa.array(["bench"] * n),
        "kafka_partition": pa.array(np.zeros(n, dtype="int32")),
        "kafka_offset": pa.array(np.arange(start, start + n, dtype="int64")),
        "kafka_timestamp": now.cast(pa.timestamp("us", tz="UTC")),
        "processed_time": now.cast(pa.timestamp("us", tz="UTC")),
        "pipeline_version": pa.array(["bench"] * n),
    }
    columns = [values[f.name] if f.name in values else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def bronze_rows(silver: pa.Table) -> pa.Table:
    """The bronze records of ``silver``'s rows: a JSON payload with their event time."""
    schema = arrow_schema(BRONZE_SCHEMA)
    stamps = silver.column("event_time").to_pylist()
    payloads = [
        f'{{"event_id":"{e}","event_time":"{t.strftime("%Y-%m-%dT%H:%M:%S.000Z")}","amount":12.50}}'
        for e, t in zip(silver.column("event_id").to_pylist(), stamps, strict=True)
    ]
    today = pa.array([dt.datetime.now(dt.UTC).date()] * silver.num_rows, pa.date32())
    values = {
        "kafka_key": silver.column("customer_id"),
        "payload": pa.array(payloads),
        "kafka_topic": silver.column("kafka_topic"),
        "kafka_partition": silver.column("kafka_partition"),
        "kafka_offset": silver.column("kafka_offset"),
        "kafka_timestamp": silver.column("kafka_timestamp"),
        "ingest_time": silver.column("processed_time"),
        "ingest_date": today,
    }
    return pa.Table.from_arrays([values[f.name] for f in schema], schema=schema)


def event_times(rows: int, hot_rows: int, days: int, horizon_days: int) -> np.ndarray:
    """``rows`` event times spread over the days before the horizon (back to ``days`` ago) and ``hot_rows`` over
    the horizon, oldest first (a day's margin each side of the cutoff)."""
    end = np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None), "us")
    day_us = 86_400 * 1_000_000

    def spread(n: int, newest_days: float, oldest_days: float) -> np.ndarray:
        back = np.linspace(oldest_days * day_us, newest_days * day_us, n, endpoint=False)
        return end - back.astype("int64").astype("timedelta64[us]")

    return np.concatenate([spread(rows, horizon_days + 1, days), spread(hot_rows, 0, horizon_days - 1)])


def build_lake(lake: LakeSettings, times: np.ndarray, files: int) -> None:
    """Silver rows and bronze records at ``times``, in ``files`` appends per table."""
    rows = len(times)
    per_file = -(-rows // files)
    for start in range(0, rows, per_file):
        n = min(per_file, rows - start)
        silver = silver_rows(start, n, times[start : start + n])
        write_deltalake(lake.table("silver", "transactions"), silver, mode="append", partition_by=["event_date"],
                        configuration={"delta.enableDeletionVectors": "false"})  # fmt: skip
        write_deltalake(lake.table("bronze", "transactions"), bronze_rows(silver), mode="append",
                        partition_by=["ingest_date"], configuration={"delta.enableDeletionVectors": "false"})  # fmt: skip


def measure(rows: int, hot_rows: int, days: int, horizon_days: int, files: int) -> dict:
    """Build a scratch lake, move the ``rows`` past the horizon, time it; the scratch lake is removed."""
    scratch = tempfile.mkdtemp(prefix="ecom-bench-lifecycle-")
    try:
        lake = LakeSettings(root=f"{scratch}/lake", checkpoints=f"{scratch}/checkpoints")
        log(f"writing {rows:,} silver rows and bronze records past the horizon, {hot_rows:,} inside it ...")
        build_lake(lake, event_times(rows, hot_rows, days, horizon_days), files)
        first_kept = cutoff(dt.datetime.now(dt.UTC).date(), horizon_days).isoformat()
        tables = {}
        for name in ("bronze/transactions", "silver/transactions"):
            log(f"archiving {name} before {first_kept} ...")
            started = time.perf_counter()
            moves = archive.move_table(lake, POLICIES[name], first_kept)
            tables[name] = {
                "seconds": round(time.perf_counter() - started, 2),
                "rows_moved": sum(m.rows for m in moves),
                "months": len(moves),
            }
        return {
            "archive_seconds": round(sum(t["seconds"] for t in tables.values()), 2),
            "rows": rows,
            "hot_rows": hot_rows,
            "rows_moved": tables["silver/transactions"]["rows_moved"],
            "tables": tables,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    settings = bench_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="silver rows (and bronze records) past the horizon: moved"
    )
    parser.add_argument("--hot-rows", type=int, default=300_000, help="rows inside the horizon: kept")
    parser.add_argument("--archive-days", type=int, default=120, help="the oldest event date, in days before today")
    parser.add_argument("--files", type=int, default=50, help="appends per table (archive half)")
    compaction.add_arguments(parser)
    parser.add_argument("--only", choices=("archive", "compaction"), help="run one half only")
    args = parser.parse_args(argv)
    machine = machine_info()
    result: dict = {"benchmark": "lifecycle", "horizon_days": settings.retention.days}
    if args.only != "compaction":
        moved = measure(args.rows, args.hot_rows, args.archive_days, settings.retention.days, args.files)
        result |= {"archive_seconds": moved.pop("archive_seconds"), "archive": moved}
    if args.only != "archive":
        result |= compaction.measure(args.transactions, args.batch_rows, args.days, args.reads)
    emit({**result, "machine": machine})


if __name__ == "__main__":
    main()
