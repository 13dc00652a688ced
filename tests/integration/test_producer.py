"""The simulator's producer against the real embedded broker, in scratch topics.

Orders and labels land on their own topics, keyed by customer; the broker's
refusals are counted; live mode holds its rate (measured from the event times
read back from Kafka); parallel backfill delivers every order exactly once and
reproducibly; ``ecom generate`` works end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaConsumer

from benchmarks._common import scratch_topics
from ecom.schemas import EVENT_FIELDS
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from simulator.runner import run_live, run_parallel

pytestmark = pytest.mark.integration

END = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.fixture
def topics(stack):
    with scratch_topics(stack, "it-producer", {"tx": 3, "labels": 1}) as names:
        yield names


def consume(settings, topic: str, expected: int, timeout_s: float = 60.0) -> list:
    """Every record of ``topic`` (stops at ``expected`` records or after a quiet timeout)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap_servers.split(","),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    records = []
    try:
        for record in consumer:
            records.append(record)
            if len(records) >= expected:
                break
    finally:
        consumer.close()
    return records


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_orders_and_labels_reach_their_own_topics_keyed_by_customer(stack, topics):
    sim = TransactionSimulator(stack.simulator.model_copy(update={"fraud_rate": 0.05}), seed=5)
    generated = list(sim.backfill(3000, days=10, end=END))
    producer = TransactionProducer(stack, topic=topics["tx"], labels_topic=topics["labels"])
    producer.send_all(generated)
    producer.close()
    fraud_ids = {g.event["event_id"] for g in generated if g.label}
    assert producer.stats.failed == 0
    assert producer.stats.delivered == 3000 + len(fraud_ids)

    orders = consume(stack, topics["tx"], 3000)
    assert len(orders) == 3000
    partitions_of = defaultdict(set)
    for record in orders:
        event = json.loads(record.value)
        assert tuple(event) == EVENT_FIELDS
        assert record.key.decode() == event["customer_id"]
        partitions_of[event["customer_id"]].add(record.partition)
    assert all(len(p) == 1 for p in partitions_of.values())
    assert len({p for ps in partitions_of.values() for p in ps}) == 3

    labels = consume(stack, topics["labels"], len(fraud_ids))
    payloads = [json.loads(r.value) for r in labels]
    assert {p["event_id"] for p in payloads} == fraud_ids
    assert all(set(p) == {"event_id", "transaction_id", "is_fraud", "fraud_pattern", "label_time"} for p in payloads)


def test_broker_refusals_are_counted_not_ignored(stack):
    # gzip cannot shrink random bytes: a topic limited to 64 KB refuses a 256 KB record
    with scratch_topics(stack, "it-refusal", {"tx": 1}, configs={"max.message.bytes": "65536"}) as small:
        producer = TransactionProducer(stack, topic=small["tx"])
        producer.send_raw("C1", b"{}")
        producer.send_raw("C2", os.urandom(256 * 1024))
        producer.close()
    stats = producer.stats
    assert (stats.sent, stats.delivered, stats.failed) == (2, 1, 1)
    assert "TooLarge" in stats.errors[0]


def test_live_mode_holds_its_rate_measured_from_event_times_in_kafka(stack, topics):
    sim = TransactionSimulator(stack.simulator, seed=9)
    producer = TransactionProducer(stack, topic=topics["tx"], labels_topic=topics["labels"])
    result = run_live(stack, producer, sim, rate=1000.0, duration=6.0, progress=False)
    assert result.failed == 0
    records = consume(stack, topics["tx"], result.transactions)
    assert len(records) == result.transactions
    times = sorted(_epoch(json.loads(r.value)["event_time"]) for r in records)
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved == pytest.approx(1000.0, rel=0.02)


def test_parallel_backfill_delivers_every_order_once_and_reproducibly(stack, topics):
    runs = []
    for _ in range(2):
        result = run_parallel(
            stack,
            6000,
            seed=77,
            workers=2,
            days=30,
            end=END,
            topic=topics["tx"],
            labels_topic=topics["labels"],
            progress=False,
        )
        assert result.failed == 0 and result.transactions == 6000
        runs.append(result)
    records = consume(stack, topics["tx"], 12000)
    events = [json.loads(r.value) for r in records]
    assert len(events) == 12000
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == 6000  # the second run repeated the first, event for event
    times = [_epoch(e["event_time"]) for e in events]
    assert min(times) >= (END - timedelta(days=30)).timestamp() and max(times) < END.timestamp()
    assert runs[0].labels == runs[1].labels > 0


def test_ecom_generate_count_and_backfill_from_the_command_line(stack, topics):
    env = {**os.environ, "ECOM_PROFILE": stack.profile}
    base = [
        sys.executable,
        "-m",
        "ecom.cli",
        "generate",
        "--topic",
        topics["tx"],
        "--labels-topic",
        topics["labels"],
        "--no-progress",
    ]
    live = subprocess.run(
        [*base, "--count", "300", "--rate", "3000", "--seed", "3"], env=env, capture_output=True, text=True, timeout=120
    )
    assert live.returncode == 0, live.stderr
    assert "sent 300 orders" in live.stdout and "failed 0" in live.stdout
    backfill = subprocess.run(
        [
            *base,
            "--backfill-days",
            "7",
            "--count",
            "2000",
            "--workers",
            "2",
            "--seed",
            "3",
            "--end",
            "2026-11-01T00:00:00Z",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert backfill.returncode == 0, backfill.stderr
    assert "sent 2000 orders" in backfill.stdout
    assert "event times 2026-10-25" in backfill.stdout
    assert len(consume(stack, topics["tx"], 2300)) == 2300
