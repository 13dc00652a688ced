"""Exactly-once through crashes and replays, against the real broker, Delta tables and PostgreSQL."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from deltalake import DeltaTable
from pandas.testing import assert_frame_equal

from ecom.lake import prepare_lake
from ecom.reconcile import reconcile
from ecom.runtime.process import wait_until
from ecom.schemas import BRONZE_SCHEMA
from ecom.settings import child_environment
from ml.features import FEATURE_COLUMNS, with_history_features
from pipelines.silver.job import SilverBatch
from serving.db import connection
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from tests.conftest import with_registry, with_topic

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
    for g in sim.events(total, start=datetime.now(UTC), rate_per_s=20):  # 400 s of orders: some card-testing bursts
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
    # The features the stream stored across the kill (state rebuilt from the snapshot and silver) are those of one
    # pass over the same orders (each customer's and device's orders are in one partition, in time order).
    silver = DeltaTable(settings.lake.table("silver", "transactions")).to_pandas()
    silver["event_time"] = silver["event_time"].dt.tz_convert(None)
    one_pass = with_history_features(silver.drop(columns=list(FEATURE_COLUMNS)))
    assert_frame_equal(nulls_as_none(silver[list(FEATURE_COLUMNS)]), nulls_as_none(one_pass[list(FEATURE_COLUMNS)]))
    assert silver["customer_orders_10m"].max() > 0 and silver["device_orders_1h"].max() > 0


def nulls_as_none(frame):
    return frame.astype(object).where(frame.notna(), None)


KAFKA_SOURCE_DDL = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, timestampType int"
)


def alert_messages(settings) -> list[tuple[str, dict]]:
    """Every (key, value) on the settings' fraud-alerts topic, from the beginning to the end offsets."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers.split(","), enable_auto_commit=False)
    try:
        tps = [
            TopicPartition(settings.kafka.alerts_topic, p)
            for p in consumer.partitions_for_topic(settings.kafka.alerts_topic)
        ]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        messages = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend((r.key.decode(), json.loads(r.value)) for r in batch)
        return messages
    finally:
        consumer.close()


def test_replaying_a_batch_with_alerts_gives_one_alert_per_event(isolated, spark, tmp_path):
    """A scored batch with alerts, replayed under the same batch id (by the same and by a restarted SilverBatch) and
    re-sent by the producer: one alert per flagged event in PostgreSQL, in silver/fraud_alerts and on Kafka."""
    import uuid
    from collections import Counter

    from benchmarks.fraud import register_champion
    from ecom.runtime.kafka import ensure_topics
    from ml.train import fit_isolation_forest, load_silver

    settings = with_registry(with_topic(isolated, "alerts", uuid.uuid4().hex[:8]), tmp_path)
    ensure_topics(settings)
    prepare_lake(spark, settings)
    now = datetime.now(UTC)
    sim = TransactionSimulator(settings.simulator, seed=21)
    history = [g.event for g in sim.events(1000, start=now, rate_per_s=200)]
    orders = [g.event for g in sim.events(100, start=now + timedelta(seconds=10), rate_per_s=200)]
    # Clearly anomalous: 50,000 USD shipped elsewhere than the buyer is, each the first of six customers in the
    # batch (a customer's second such order would be measured against the first).
    anomalous = [e for i, e in enumerate(orders) if e["customer_id"] not in {o["customer_id"] for o in orders[:i]}][:6]
    for event in anomalous:
        item = {**event["items"][0], "quantity": 5, "unit_price": 9999.99}
        event.update(items=[item], amount=49999.95, currency="USD", ip_country="NG", shipping_country="US")

    def records(events: list[dict], first_offset: int):
        ts = datetime.now(UTC).replace(tzinfo=None)
        rows = [(e["customer_id"].encode(), json.dumps(e).encode(), "t", 0, first_offset + i, ts, 0)
                for i, e in enumerate(events)]  # fmt: skip
        return spark.createDataFrame(rows, KAFKA_SOURCE_DDL)

    checkpoint = f"{settings.lake.checkpoints}/alerts-replay"
    batch = SilverBatch(settings, checkpoint, write_bronze=True)
    batch(records(history, 0), 0)  # no model yet: unscored history, the forest is fitted on it
    silver_history = load_silver(settings)
    register_champion(settings, fit_isolation_forest(silver_history, settings.fraud), silver_history, silver_history)

    def snapshot() -> dict:
        """Events flagged in silver; alerts per event in PostgreSQL, in silver/fraud_alerts and on Kafka."""
        silver = DeltaTable(settings.lake.table("silver", "transactions")).to_pandas(columns=["event_id", "is_fraud"])
        with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT event_id, alert_id, fraud_score, model_version, created_at FROM fraud_alerts")
            postgres = {row[0]: row[1:] for row in cur.fetchall()}
        delta = DeltaTable(settings.lake.table("silver", "fraud_alerts")).to_pandas(columns=["event_id"])
        kafka = alert_messages(settings)
        assert all(key == value["customer_id"] for key, value in kafka)
        return {
            "flagged": set(silver.loc[silver["is_fraud"].eq(True), "event_id"]),
            "postgres": postgres,
            "delta": Counter(delta["event_id"]),
            "kafka": Counter(value["event_id"] for _, value in kafka),
        }

    batch(records(orders, len(history)), 1)
    first = snapshot()
    flagged = first["flagged"]
    assert {e["event_id"] for e in anomalous} <= flagged  # the anomalous orders alert (and maybe a few others)
    assert set(first["postgres"]) == flagged
    assert first["delta"] == Counter(flagged)
    assert first["kafka"] == Counter(flagged)

    batch(records(orders, len(history)), 1)  # the same batch id again, as after a crash before the checkpoint
    assert snapshot() == first
    restarted = SilverBatch(settings, checkpoint, write_bronze=True)  # a new process, same checkpoint
    restarted(records(orders, len(history)), 1)
    assert snapshot() == first
    restarted(records(orders, len(history) + len(orders)), 2)  # the producer re-sent them: all repeats
    assert snapshot() == first
