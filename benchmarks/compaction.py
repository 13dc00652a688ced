"""Compaction benchmark: the streaming tables' small files before and after ``ecom maintain compact``.

``python -m benchmarks.compaction --transactions 1000000`` writes N simulated
orders into a scratch lake the way the stream does: micro-batches of
``--batch-rows`` orders in event-time order, each appended to bronze and
silver as one delta-rs commit (``LakeSink.append``), so the tables hold the
small files a day of streaming leaves. Then it times, and prints as one JSON
object on its last line:

- ``compact_seconds``: ``ecom.maintenance.compact`` over the tables;
- ``files_before``, ``files_after``: data files in the tables' current
  versions (totals), and per table under ``files_per_table``;
- ``read_seconds_before``, ``read_seconds_after``: a read query (orders and
  revenue per day and channel over silver, DuckDB on the delta-rs dataset, as
  notebooks read the lake; the median of ``--reads`` runs) before and after;
- ``vacuum_seconds``: VACUUM with no retention afterwards (the scratch lake
  has no readers), and ``write_seconds`` for the appends alone.

The scratch lake (under ``<data_dir>/bench/``) is removed at the end. No
service is needed. ``python -m benchmarks.lifecycle`` runs this half beside
the archive half and prints both in one object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
import uuid
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from benchmarks._common import bench_settings, emit, log, machine_info
from ecom.schemas import BRONZE_SCHEMA, SILVER_SCHEMA, arrow_schema
from ecom.settings import Settings

TABLES = (("bronze", "transactions"), ("silver", "transactions"))
READ_QUERY = """
    SELECT event_date, channel, count(*) AS orders, sum(amount) AS revenue
    FROM silver GROUP BY event_date, channel ORDER BY event_date, channel
"""


def simulated_batches(settings: Settings, count: int, days: int, batch_rows: int) -> Iterator[list[dict]]:
    """``count`` simulated orders over the last ``days`` days in event-time order (as the stream receives a
    backfill), in micro-batches of ``batch_rows``."""
    from simulator.generator import TransactionSimulator

    sim = TransactionSimulator(settings.simulator, seed=11, expected_orders=count)
    batch: list[dict] = []
    for generated in sim.backfill(count, days):
        batch.append(generated.event)
        if len(batch) == batch_rows:
            yield batch
            batch = []
    if batch:
        yield batch


def batch_tables(events: list[dict], first_offset: int) -> tuple[pa.Table, pa.Table]:
    """One micro-batch's bronze and silver rows (Arrow, the tables' schemas)."""
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    bronze, silver = [], []
    for i, e in enumerate(events):
        offset = first_offset + i
        when = dt.datetime.fromisoformat(e["event_time"].replace("Z", "+00:00"))
        coordinates = {"kafka_topic": "bench", "kafka_partition": 0, "kafka_offset": offset, "kafka_timestamp": now}
        bronze.append(
            {"kafka_key": e["customer_id"], "payload": json.dumps(e), **coordinates,
             "ingest_time": now, "ingest_date": now.date()}
        )  # fmt: skip
        silver.append(
            {
                **{k: e[k] for k in ("event_id", "transaction_id", "customer_id", "currency", "payment_method")},
                **{k: e[k] for k in ("channel", "device_id", "ip_country", "shipping_country")},
                "event_time": when,
                "customer_email_hash": f"h{e['customer_id']}",
                "items": [{**it, "unit_price": Decimal(str(it["unit_price"]))} for it in e["items"]],
                "item_count": len(e["items"]),
                "amount": Decimal(str(e["amount"])),
                "schema_version": 1,
                "event_date": when.date(),
                **coordinates,
                "processed_time": now,
                "pipeline_version": "bench",
            }
        )
    return (
        pa.Table.from_pylist(bronze, schema=arrow_schema(BRONZE_SCHEMA)),
        pa.Table.from_pylist(silver, schema=arrow_schema(SILVER_SCHEMA)),
    )


def write_like_the_stream(settings: Settings, batches: Iterable[list[dict]], total: int) -> float:
    """Append each micro-batch to bronze and silver with the stream's lake sink; returns the seconds spent
    appending (simulating the orders is not counted)."""
    from deltalake import write_deltalake
    from tqdm import tqdm

    from ecom.lake import TABLES as LAKE_TABLES
    from pipelines.silver.sinks import LakeSink

    for layer, table in TABLES:  # created as the lake creates them (partitioned, no deletion vectors)
        schema, partition_by = LAKE_TABLES[(layer, table)]
        empty = pa.Table.from_pylist([], schema=arrow_schema(schema))
        write_deltalake(
            settings.lake.table(layer, table),
            empty,
            partition_by=list(partition_by),
            configuration={"delta.enableDeletionVectors": "false"},
        )
    sink = LakeSink(settings.lake)
    spent, first = 0.0, 0
    for b, events in enumerate(tqdm(batches, total=total, desc="micro-batches", mininterval=2)):
        bronze, silver = batch_tables(events, first)
        first += len(events)
        started = time.monotonic()
        sink.append(lambda t=bronze: t, "bronze", "transactions", LakeSink.tag("bench", b), retry=False)
        sink.append(lambda t=silver: t, "silver", "transactions", LakeSink.tag("bench", b), retry=False)
        spent += time.monotonic() - started
    return spent


def read_seconds(settings: Settings, runs: int) -> float:
    """Median time of ``READ_QUERY`` over silver (DuckDB on the delta-rs dataset, the table opened each run)."""
    import duckdb
    from deltalake import DeltaTable

    times = []
    for _ in range(runs):
        started = time.perf_counter()
        con = duckdb.connect()
        con.register("silver", DeltaTable(settings.lake.table("silver", "transactions")).to_pyarrow_dataset())
        con.execute(READ_QUERY).fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(transactions: int, batch_rows: int, days: int, reads: int) -> dict:
    """Stream ``transactions`` orders into a scratch lake, compact and VACUUM it, time each step; the scratch lake
    is removed."""
    from ecom import maintenance

    base = bench_settings()
    scratch = Path(base.data_dir) / "bench" / f"compaction_{uuid.uuid4().hex[:8]}"
    lake = {"root": str(scratch / "lake"), "checkpoints": str(scratch / "checkpoints")}
    settings = base.model_copy(update={"lake": base.lake.model_copy(update=lake)})
    micro_batches = -(-transactions // batch_rows)
    try:
        log(f"streaming {transactions:,} simulated orders in micro-batches of {batch_rows:,} to {scratch}")
        batches = simulated_batches(settings, transactions, days, batch_rows)
        write_s = write_like_the_stream(settings, batches, micro_batches)
        before = maintenance.files_per_table(settings, TABLES)
        read_before = read_seconds(settings, reads)
        started = time.monotonic()
        maintenance.compact(settings, TABLES, echo=log)
        compact_s = time.monotonic() - started
        after = maintenance.files_per_table(settings, TABLES)
        read_after = read_seconds(settings, reads)
        started = time.monotonic()
        for path in maintenance.table_paths(settings, TABLES).values():
            maintenance.vacuum_table(path, 0, enforce=False)  # a scratch lake: nobody reads older versions
        vacuum_s = time.monotonic() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "transactions": transactions,
        "batch_rows": batch_rows,
        "micro_batches": micro_batches,
        "write_seconds": round(write_s, 2),
        "compact_seconds": round(compact_s, 2),
        "vacuum_seconds": round(vacuum_s, 2),
        "files_before": sum(before.values()),
        "files_after": sum(after.values()),
        "files_per_table": {name: {"before": before[name], "after": after.get(name)} for name in before},
        "read_seconds_before": round(read_before, 4),
        "read_seconds_after": round(read_after, 4),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transactions", type=int, default=1_000_000, help="orders streamed in (default 1,000,000)")
    parser.add_argument("--batch-rows", type=int, default=1000, help="orders per micro-batch (default 1,000)")
    parser.add_argument("--days", type=int, default=2, help="days of event time the orders span (default 2)")
    parser.add_argument("--reads", type=int, default=5, help="runs of the read query, before and after")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    info = machine_info()
    result = measure(args.transactions, args.batch_rows, args.days, args.reads)
    emit({"benchmark": "compaction", **result, "machine": info})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
