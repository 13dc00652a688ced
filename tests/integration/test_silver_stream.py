"""Exactly-once through crashes and replays, against the real broker, Delta tables and PostgreSQL."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from deltalake import DeltaTable

from ecom.lake import prepare_lake
from ecom.reconcile import reconcile
from ecom.runtime.process import wait_until
from ecom.schemas import BRONZE_SCHEMA
from ecom.settings import child_environment
from pipelines.silver.job import SilverBatch
from serving.db import connection
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer

pytestmark = pytest.mark.integration


def rows(settings, layer, table) -> int:
    return DeltaTable(settings.lake.table(layer, table)).to_pyarrow_dataset().count_rows()


def pg_count(settings, table="transactions") -> int:
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        return cur.fetchone()[0]


def test_replaying_the_same_batch_id_changes_nothing(isolated, spark):
    settings = isolated
    prepare_lake(spark, settings)
    sim = TransactionSimulator(settings.simulator, seed=7)
    events = [g.event for g in sim.events(200, start=datetime.now(UTC), rate_per_s=100)]
    now = datetime.now(UTC).replace(tzinfo=None)
    payloads = [json.dumps(e) for e in events] + [json.dumps(events[0]), "{broken"]

    def records(first_offset: int):
        return spark.createDataFrame(
            [("k", p, "t", 0, first_offset + i, now, now, now.date()) for i, p in enumerate(payloads)], BRONZE_SCHEMA
        )

    batch = SilverBatch(settings, checkpoint=f"{settings.lake.checkpoints}/replay", write_bronze=False)

    def snapshot():
        profiles = DeltaTable(settings.lake.table("silver", "customer_profiles")).to_pandas(columns=["tx_count"])
        return (
            rows(settings, "silver", "transactions"),
            rows(settings, "silver", "quarantine"),
            rows(settings, "silver", "duplicates"),
            int(profiles["tx_count"].sum()),
            pg_count(settings),
            pg_count(settings, "customers"),
        )

    batch(records(0), 5)
    first = snapshot()
    assert first[:5] == (200, 1, 1, 200, 200)
    batch(records(0), 5)  # the same batch id again, as after a crash before the checkpoint commit
    assert snapshot() == first
    batch(records(1000), 6)  # the producer re-sent everything (new Kafka records): all repeats
    again = snapshot()
    assert again[:3] == (200, 2, 1 + 201)
    assert again[3:] == first[3:]  # profiles and PostgreSQL unchanged


def test_kill_9_mid_stream_then_restart_is_exact(isolated):
    settings = isolated
    sim = TransactionSimulator(settings.simulator, seed=11)
    producer = TransactionProducer(settings)
    total = 8000
    for g in sim.events(total, start=datetime.now(UTC), rate_per_s=2000):
        producer.send(g)
    producer.close()
    assert producer.stats.failed == 0

    env = child_environment(settings)
    small_batches = {**env, "ECOM_STREAM__MAX_OFFSETS_PER_TRIGGER": "1000"}
    cmd = [sys.executable, "-m", "ecom.cli", "stream", "all"]
    proc = subprocess.Popen(
        cmd, env=small_batches, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # Kill it hard once some, but not all, orders are served.
        assert wait_until(lambda: 0 < pg_count(settings) < total, 240, interval_s=0.05), "stream made no progress"
        time.sleep(0.3)  # most likely in the middle of a micro-batch now
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    served_at_kill = pg_count(settings)
    assert served_at_kill < total

    # Restart: Spark first replays the batch that was cut off, under the same id, then the rest.
    done = subprocess.run([*cmd, "--once"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]

    report = reconcile(settings)
    assert report.ok, report.lines()
    assert (report.produced, report.bronze, report.silver, report.postgres) == (total, total, total, total)
    assert report.quarantine == 0 and report.duplicates == 0
