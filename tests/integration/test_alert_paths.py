"""The per-order path beside the micro-batch, against the real broker, Delta tables, registry and PostgreSQL:
one alert row and one ``fraud-alerts`` message per alerted order when both paths run, when the fast path
alerts orders the micro-batch does not (withdrawn), and when the fast path is killed (kill -9) between its
insert and its send and then restarted. (The micro-batch alone: test_silver_stream's replay test.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from deltalake import DeltaTable

from ecom.lake import prepare_lake
from ecom.runtime.kafka import ensure_topics
from ecom.settings import Settings, child_environment
from pipelines.alerts import job
from pipelines.silver.job import SilverBatch
from serving.db import connection
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from tests.conftest import with_registry, with_topic
from tests.faults import read_records

pytestmark = pytest.mark.integration

KAFKA_SOURCE_DDL = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, timestampType int"
)


def batch_frame(spark, records):
    """Kafka records as the stream's source hands them to a micro-batch."""
    rows = [
        (r.key, r.value, r.topic, r.partition, r.offset, datetime.fromtimestamp(r.timestamp / 1000, UTC).replace(tzinfo=None), 0)
        for r in records
    ]  # fmt: skip
    return spark.createDataFrame(rows, KAFKA_SOURCE_DDL)


def produce(settings: Settings, events) -> None:
    producer = TransactionProducer(settings)
    for generated in events:
        producer.send(generated)
    producer.flush()
    producer.close()


class Shop:
    """History in the topic and in silver (micro-batch 0), a champion fitted on it, then 100 new orders in the
    topic, six of them clearly anomalous; ``micro_batch()`` runs the stream's batch 1 on the new orders."""

    def __init__(self, settings: Settings, spark):
        from benchmarks.fraud import register_champion
        from ml.train import fit_isolation_forest, load_silver

        self.settings, self.spark = settings, spark
        now = datetime.now(UTC)
        sim = TransactionSimulator(settings.simulator, seed=21)
        produce(settings, sim.events(1000, start=now - timedelta(seconds=30), rate_per_s=200))
        history = read_records(settings, settings.kafka.transactions_topic)
        self.batch = SilverBatch(settings, f"{settings.lake.checkpoints}/alert-paths", write_bronze=True)
        self.batch(batch_frame(spark, history), 0)  # no model yet: unscored history, the forest is fitted on it
        silver = load_silver(settings)
        register_champion(settings, fit_isolation_forest(silver, settings.fraud), silver, silver)
        orders = list(sim.events(100, start=now, rate_per_s=200))
        firsts = [
            g
            for i, g in enumerate(orders)
            if g.event["customer_id"] not in {o.event["customer_id"] for o in orders[:i]}
        ]
        for generated in firsts[:6]:  # 50,000 USD shipped elsewhere than the buyer is
            item = {**generated.event["items"][0], "quantity": 5, "unit_price": 9999.99}
            generated.event.update(
                items=[item], amount=49999.95, currency="USD", ip_country="NG", shipping_country="US"
            )
        self.anomalous = {g.event["event_id"] for g in firsts[:6]}
        produce(settings, orders)
        seen = {(r.partition, r.offset) for r in history}
        self.orders = [
            r for r in read_records(settings, settings.kafka.transactions_topic) if (r.partition, r.offset) not in seen
        ]
        assert len(self.orders) == 100

    def micro_batch(self) -> None:
        self.batch(batch_frame(self.spark, self.orders), 1)

    def flagged(self) -> set[str]:
        silver = DeltaTable(self.settings.lake.table("silver", "transactions")).to_pandas(
            columns=["event_id", "is_fraud"]
        )
        return set(silver.loc[silver["is_fraud"].eq(True), "event_id"])

    def alerts(self) -> dict[str, tuple]:
        """PostgreSQL fraud_alerts: event_id -> (alert_id, source, fast-path score, score, reconciled, sent)."""
        with connection(self.settings.postgres.dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT event_id, alert_id, source, fast_path_score, fraud_score, reconciled_at IS NOT NULL,"
                " fast_path_sent_at IS NOT NULL FROM fraud_alerts"
            )
            return {row[0]: row[1:] for row in cur.fetchall()}

    def agreement(self) -> list[tuple]:
        with connection(self.settings.postgres.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT batch_id, confirmed, corrected, withdrawn, micro_batch_only FROM alert_path_agreement")
            return cur.fetchall()

    def messages(self) -> Counter:
        """fraud-alerts messages per (event_id, alert_id)."""
        values = [json.loads(r.value) for r in read_records(self.settings, self.settings.kafka.alerts_topic)]
        return Counter((v["event_id"], v["alert_id"]) for v in values)

    def fast_path(self, settings: Settings | None = None) -> job.FastPath:
        """The fast path read the new orders (from the state's first missing offsets) and wrote its alerts."""
        path = job.FastPath.from_settings(settings or self.settings)
        consumer = job.consumer_for(self.settings)
        deadline = time.monotonic() + 120
        try:
            job.run(
                self.settings, path, consumer, stop=lambda: path.counts.records >= 100 or time.monotonic() > deadline
            )
        finally:
            consumer.close()
        assert path.counts.records == 100
        return path


@pytest.fixture
def shop(isolated, spark, tmp_path) -> Shop:
    settings = with_registry(with_topic(isolated, "alerts", uuid.uuid4().hex[:8]), tmp_path)
    ensure_topics(settings)
    prepare_lake(spark, settings)
    return Shop(settings, spark)


def test_both_paths_give_one_alert_per_order_and_the_fast_path_writes_first(shop):
    fast = shop.fast_path()
    before = shop.alerts()
    assert shop.anomalous <= set(before) and fast.counts.alerts == len(before)
    assert all(source == "fast-path" and sent for _, source, _, _, _, sent in before.values())

    shop.micro_batch()

    flagged = shop.flagged()
    after = shop.alerts()
    assert set(after) == flagged == set(before)  # the same orders alerted by both
    assert all(after[e][0] == before[e][0] and after[e][1] == "fast-path" and after[e][4] for e in after)
    assert shop.agreement() == [(1, len(flagged), 0, 0, 0)]  # every score confirmed
    messages = shop.messages()
    assert Counter(event for event, _ in messages.elements()) == Counter(flagged)  # sent once, by the fast path
    assert {(e, after[e][0]) for e in flagged} == set(messages)


def test_the_micro_batch_withdraws_what_it_does_not_alert_and_its_scores_win(shop):
    """A fast path with a lower threshold alerts more orders: the micro-batch keeps its own alerts (the fast
    path's messages of those stand) and deletes the others, counted as withdrawn."""
    lower = shop.settings.fraud.model_copy(update={"alert_threshold": 50.0})
    fast = shop.fast_path(shop.settings.model_copy(update={"fraud": lower}))
    by_fast = set(shop.alerts())

    shop.micro_batch()

    flagged = shop.flagged()
    assert flagged < by_fast and fast.counts.alerts == len(by_fast)  # the fast path alerted more
    assert set(shop.alerts()) == flagged
    assert shop.agreement() == [(1, len(flagged), 0, len(by_fast - flagged), 0)]
    assert Counter(event for event, _ in shop.messages().elements()) == Counter(by_fast)  # none sent twice


def wait_for_exit(proc: subprocess.Popen, timeout_s: float) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def committed_all(settings: Settings) -> bool:
    """The fast path's consumer group has committed the orders topic's end offsets."""
    from kafka import KafkaConsumer, TopicPartition

    from ecom.kafka_config import client_kwargs

    consumer = KafkaConsumer(**client_kwargs(settings), group_id=job.GROUP_ID, enable_auto_commit=False)
    try:
        topic = settings.kafka.transactions_topic
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        end = consumer.end_offsets(parts)
        return bool(parts) and all(consumer.committed(tp) == end[tp] for tp in parts)
    finally:
        consumer.close()


def test_a_fast_path_killed_between_insert_and_send_restarts_without_duplicates(shop):
    """kill -9 right after the first alerts were inserted and before Kafka had them; the restarted process
    reads from the state's offsets again, writes nothing twice, and the micro-batch sends what the fast path
    had not."""
    env = {**child_environment(shop.settings), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ecom.cli", "stream", "alerts"]
    killed = subprocess.Popen(cmd, env={**env, "ECOM_FAULT_KILL_AT": "fast_path_inserted"}, start_new_session=True)
    assert wait_for_exit(killed, 120) == -signal.SIGKILL
    inserted = shop.alerts()
    assert inserted and not any(sent for *_, sent in inserted.values())  # in PostgreSQL, not yet on Kafka
    assert not shop.messages()

    restarted = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not committed_all(shop.settings) and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        os.killpg(restarted.pid, signal.SIGTERM)
        wait_for_exit(restarted, 60)
    assert committed_all(shop.settings)
    restarted_rows = shop.alerts()
    assert {e: r[:4] for e, r in restarted_rows.items() if e in inserted} == {e: r[:4] for e, r in inserted.items()}

    shop.micro_batch()

    flagged = shop.flagged()
    assert shop.anomalous <= flagged and set(shop.alerts()) == flagged
    messages = shop.messages()
    assert Counter(event for event, _ in messages.elements()) == Counter(flagged)  # exactly one message each
