"""Gold batch benchmark: the whole daily batch over N orders, a recommendation lookup, the live minute lag.

``python -m benchmarks.gold_batch --transactions 1000000`` builds a scratch
silver table of N simulated orders over a year (about 50,000 customers and
2,000 products at one million; built once and kept under
``<data_dir>/bench/``, since generating it is not what is measured), then runs
``ecom batch daily``'s jobs in-process on a scratch lake and database and
prints one JSON object as its last line:

- ``seconds``: the whole daily batch, PostgreSQL upserts included (the Spark
  session is started before the clock; ``spark_start_seconds`` says how long
  that took), and ``step_seconds`` per job;
- ``p95_lookup_ms``: one customer's recommendations from PostgreSQL
  (``serving.queries.customer_recommendations`` on an open connection, as a
  pool gives it), over ``--lookups`` random customers; also with a new
  connection per lookup;
- ``minute_lag_p95_s``: the streaming gold's lag from a minute's end to its
  figures in PostgreSQL at 1,000 orders/s (``benchmarks.gold_stream``), unless
  ``--skip-stream``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from benchmarks._common import bench_settings, emit, log, machine_info, percentile, services
from ecom.schemas import SILVER_SCHEMA, arrow_schema
from ecom.settings import Settings
from serving.db import connection, drop_database, recreate_database

AS_OF = dt.date(2026, 11, 1)


def _silver_rows(settings: Settings, count: int, seed: int) -> pa.Table:
    """``count`` simulated orders over the year before AS_OF, as silver rows (scores from the injected labels)."""
    from tqdm import tqdm

    from simulator.generator import TransactionSimulator

    sim_settings = settings.simulator.model_copy(update={"customers": max(1000, count // 20), "products": 2000})
    sim = TransactionSimulator(sim_settings, seed=seed, expected_orders=count)
    end = dt.datetime.combine(AS_OF, dt.time(23, 0), dt.UTC)
    processed = dt.datetime.now(dt.UTC)
    columns: dict[str, list] = {name: [] for name in SILVER_SCHEMA.fieldNames()}
    for i, g in enumerate(tqdm(sim.backfill(count, 365, end), total=count, desc="silver", mininterval=2)):
        e = g.event
        when = dt.datetime.fromisoformat(e["event_time"].replace("Z", "+00:00"))
        fraud = g.label is not None
        row = {
            "event_id": e["event_id"],
            "transaction_id": e["transaction_id"],
            "event_time": when,
            "customer_id": e["customer_id"],
            "customer_email_hash": f"h{e['customer_id']}",
            "items": [{**it, "unit_price": Decimal(str(it["unit_price"]))} for it in e["items"]],
            "item_count": len(e["items"]),
            "amount": Decimal(str(e["amount"])),
            "currency": e["currency"],
            "payment_method": e["payment_method"],
            "channel": e["channel"],
            "device_id": e["device_id"],
            "ip_country": e["ip_country"],
            "shipping_country": e["shipping_country"],
            "schema_version": 1,
            "event_date": when.date(),
            "fraud_score": 90.0 if fraud else 10.0,
            "is_fraud": fraud,
            "model_version": "bench",
            "kafka_topic": "bench",
            "kafka_partition": 0,
            "kafka_offset": i,
            "kafka_timestamp": when,
            "processed_time": processed,
            "pipeline_version": "bench",
        }
        for name, values in columns.items():
            values.append(row.get(name))
    return pa.table(columns, schema=arrow_schema(SILVER_SCHEMA))


def prepared_silver(spark, settings: Settings, count: int, seed: int) -> str:
    """Path of a silver table of ``count`` orders, built once and kept for later runs."""
    from deltalake import write_deltalake

    from ecom.lake import ensure_table

    path = Path(settings.data_dir) / "bench" / f"gold-silver-{count}-{seed}"
    done = path / "_ready"
    if not done.exists():
        shutil.rmtree(path, ignore_errors=True)
        log(f"building a silver table of {count:,} orders under {path} (once) ...")
        ensure_table(spark, str(path), SILVER_SCHEMA, ("event_date",))
        write_deltalake(str(path), _silver_rows(settings, count, seed), mode="append")
        done.touch()
    return str(path)


def lookup_latencies(dsn: str, customers: list[str], pooled: bool) -> list[float]:
    from serving.queries import customer_recommendations

    latencies = []
    with connection(dsn) as conn:
        for customer in customers:
            t0 = time.perf_counter()
            frame = customer_recommendations(conn if pooled else dsn, customer)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert len(frame), f"no recommendations for {customer}"
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gold_batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=1_000_000, help="orders in silver (default 1000000)")
    parser.add_argument("--seed", type=int, default=3, help="simulator seed (default 3)")
    parser.add_argument("--lookups", type=int, default=2000, help="recommendation lookups timed (default 2000)")
    parser.add_argument("--skip-stream", action="store_true", help="do not measure the streaming gold's minute lag")
    parser.add_argument("--stream-seconds", type=float, default=240, help="streaming gold run length (default 240)")
    args = parser.parse_args(argv)

    from ecom.spark import get_spark
    from pipelines.gold import batch

    settings = bench_settings()
    name = f"bench_gold_{uuid.uuid4().hex[:8]}"
    scratch = Path(settings.data_dir) / "bench" / name
    out: dict = {"benchmark": "gold_batch", "profile": settings.profile, "transactions": args.transactions}
    out["machine"] = machine_info()
    with services(settings):
        t0 = time.monotonic()
        spark = get_spark(settings, "bench-gold-batch")
        out["spark_start_seconds"] = round(time.monotonic() - t0, 1)
        silver = prepared_silver(spark, settings, args.transactions, args.seed)
        lake = settings.lake.model_copy(update={"root": str(scratch / "lake"), "checkpoints": str(scratch / "cp")})
        pg = settings.postgres.model_copy(update={"database": name})
        bench = settings.model_copy(update={"lake": lake, "postgres": pg})
        (scratch / "lake" / "silver").mkdir(parents=True, exist_ok=True)
        (scratch / "lake" / "silver" / "transactions").symlink_to(silver)
        recreate_database(bench.postgres.dsn)
        try:
            from ecom.lake import prepare_lake

            prepare_lake(spark, bench)  # table creation is set-up, not the batch
            seconds: dict[str, float] = {}
            t0 = time.monotonic()
            results = batch.run(spark, bench, list(batch.JOBS), AS_OF, echo=log, seconds=seconds)
            out["seconds"] = round(time.monotonic() - t0, 1)
            out["step_seconds"] = {k: round(v, 1) for k, v in seconds.items()}
            out["rows_written"] = {t: n for r in results.values() for t, n in r.items()}
            out["target_seconds"] = 60

            with connection(bench.postgres.dsn) as conn, conn.cursor() as cur:
                cur.execute("SELECT DISTINCT subject_id FROM recommendations WHERE subject_type = 'customer'")
                customers = [r[0] for r in cur.fetchall()]
            out["customers_with_recommendations"] = len(customers)
            sample = random.Random(1).choices(customers, k=args.lookups)
            pooled = lookup_latencies(bench.postgres.dsn, sample, pooled=True)
            fresh = lookup_latencies(bench.postgres.dsn, sample[: max(1, args.lookups // 4)], pooled=False)
            out["p50_lookup_ms"] = round(percentile(pooled, 50), 2)
            out["p95_lookup_ms"] = round(percentile(pooled, 95), 2)
            out["p95_lookup_ms_new_connection"] = round(percentile(fresh, 95), 2)
            out["target_p95_lookup_ms"] = 10
        finally:
            spark.stop()
            drop_database(bench.postgres.dsn)
            shutil.rmtree(scratch, ignore_errors=True)
        if not args.skip_stream:
            from benchmarks.gold_stream import measure_minute_lag

            out.update(measure_minute_lag(settings, seconds=args.stream_seconds))
            out["target_minute_lag_p95_s"] = 10
    emit(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
