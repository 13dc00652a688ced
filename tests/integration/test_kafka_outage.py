"""The Kafka broker stopped under load: every acknowledged order arrives once, every failure is counted.

A broker of its own (free ports, own data folder) is stopped while two
producers send at a steady rate, then started again on the same data:

- the simulator's producer as configured (delivery timeout 120 s) rides out
  the outage: all it sent is acknowledged, and the topic holds each order once;
- an impatient producer (delivery timeout 8 s) loses sends during the outage:
  each is counted as failed, what it had acknowledged is in its topic once,
  and once the broker is back it delivers again (a client that stalled with
  unanswered sends is replaced).

CI stops the broker for 15 s; ``make chaos`` for 60 s.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from ecom.runtime.kafka import EmbeddedKafka, ensure_topics
from ecom.runtime.process import port_open, wait_until
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer, encode
from simulator.runner import run_live
from tests.conftest import with_topic
from tests.faults import private_kafka, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.fault]

RATE = 300.0  # orders per second, into each producer
BEFORE_S, RESTART_BUDGET_S, AFTER_S = 5.0, 40.0, 20.0
IMPATIENT = {"delivery_timeout_ms": 8000, "request_timeout_ms": 3000}


def _event_ids(settings, topic: str) -> Counter:
    """How often each event id is in ``topic``."""
    return Counter(json.loads(value)["event_id"] for value in read_topic(settings, topic))


@pytest.fixture
def broker(settings, tmp_path):
    own = with_topic(private_kafka(settings, tmp_path / "broker"), "labels", "outage")
    kafka = EmbeddedKafka(own)
    kafka.start()
    yield own, kafka
    kafka.stop()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("outage_s", [15.0, pytest.param(60.0, marks=pytest.mark.chaos)])
def test_a_broker_outage_under_load_loses_nothing_acknowledged_and_counts_every_failure(
    broker, outage_s, record_property
):
    settings, kafka = broker
    impatient_settings = with_topic(settings, "transactions", "impatient", partitions=3)
    ensure_topics(impatient_settings)
    steady = TransactionProducer(settings)
    impatient = TransactionProducer(impatient_settings, client_overrides=IMPATIENT)
    sent_ids: list[str] = []
    impatient_sends: list[tuple[str, float, object]] = []  # (event id, when sent, future)

    def also_impatient(event: dict) -> None:
        sent_ids.append(event["event_id"])
        future = impatient.send_raw(event["customer_id"], encode(event))
        impatient_sends.append((event["event_id"], time.monotonic(), future))

    timeline: dict[str, float] = {}

    def outage() -> None:
        time.sleep(BEFORE_S)
        kafka.stop()
        timeline["down"] = time.monotonic()
        time.sleep(outage_s)
        kafka.start()
        timeline["up"] = time.monotonic()
        backlog = steady.stats.sent  # everything sent before and during the outage
        if wait_until(lambda: steady.stats.delivered >= backlog, RESTART_BUDGET_S + AFTER_S, 0.1):
            timeline["caught_up"] = time.monotonic()

    chaos = threading.Thread(target=outage, daemon=True)
    chaos.start()
    sim = TransactionSimulator(settings.simulator, seed=11)
    run_live(
        settings,
        steady,
        sim,
        RATE,
        duration=BEFORE_S + outage_s + RESTART_BUDGET_S + AFTER_S,
        progress=False,
        on_event=also_impatient,
    )
    impatient.close()
    chaos.join(timeout=120)
    assert "up" in timeline and port_open(settings.kafka.host, settings.kafka.port), "the broker did not come back"

    s = steady.stats
    downtime_s = timeline["up"] - timeline["down"]
    record_property("downtime_s", round(downtime_s, 1))
    record_property("sent", s.sent)
    record_property("delivered", s.delivered)
    record_property("failed", s.failed)
    record_property("recovery_s", round(timeline.get("caught_up", float("nan")) - timeline["up"], 1))
    assert s.delivered + s.failed == s.sent and s.failed == 0, s.errors
    in_topic = _event_ids(settings, settings.kafka.transactions_topic)
    assert set(in_topic.values()) == {1}, "an order is in the topic twice"
    assert set(in_topic) == set(sent_ids) and len(sent_ids) == s.sent - s.labels_sent
    labels = _event_ids(settings, settings.kafka.labels_topic)  # fraud labels went through the same outage
    assert set(labels.values()) == {1} and len(labels) == s.labels_sent

    i = impatient.stats
    acknowledged = [(eid, at) for eid, at, f in impatient_sends if f is not None and f.is_done and f.succeeded()]
    record_property("impatient_sent", i.sent)
    record_property("impatient_failed", i.failed)
    record_property("impatient_client_restarts", i.client_restarts)
    assert i.delivered + i.failed == i.sent == len(impatient_sends)
    assert i.failed > 0, "an outage longer than the delivery timeout must fail some sends"
    assert len(acknowledged) == i.delivered
    impatient_topic = _event_ids(impatient_settings, impatient_settings.kafka.transactions_topic)
    assert set(impatient_topic.values()) == {1}
    assert {eid for eid, _ in acknowledged} <= set(impatient_topic), "an acknowledged order is missing"
    assert any(at > timeline["up"] for _, at in acknowledged), "the impatient producer never delivered again"


@pytest.mark.chaos
@pytest.mark.timeout(1500)
def test_the_ingest_stream_rides_out_a_broker_outage_and_reconciles_exactly(isolated, tmp_path, record_property):
    """The stream runs through the outage (a broker of its own, the test's lake and database): afterwards every
    acknowledged order is in bronze, silver and PostgreSQL once, and ``ecom reconcile`` is exact."""
    from tests.integration.test_silver_faults import Stream, assert_exact, pg_count

    settings = private_kafka(isolated, tmp_path / "broker")
    kafka = EmbeddedKafka(settings)
    kafka.start()
    outage_s = 60.0
    stream = Stream(settings, tmp_path / "stream.log", ECOM_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers)
    try:
        producer = TransactionProducer(settings)
        sim = TransactionSimulator(settings.simulator, seed=12)
        warm_up = 2000  # the stream is running and has served these before the broker goes away
        run_live(settings, producer, sim, 1000.0, count=warm_up, progress=False)
        assert wait_until(lambda: pg_count(settings) >= warm_up, 600, 1), stream.tail()
        timeline: dict[str, float] = {}

        def outage() -> None:
            time.sleep(BEFORE_S)
            kafka.stop()
            timeline["down"] = time.monotonic()
            time.sleep(outage_s)
            kafka.start()
            timeline["up"] = time.monotonic()

        chaos = threading.Thread(target=outage, daemon=True)
        chaos.start()
        producer = TransactionProducer(settings)
        run_live(settings, producer, sim, 100.0, duration=BEFORE_S + outage_s + RESTART_BUDGET_S, progress=False)
        chaos.join(timeout=120)
        assert producer.stats.failed == 0, producer.stats.errors
        orders = warm_up + producer.stats.delivered - producer.stats.labels_delivered
        caught_up = wait_until(lambda: pg_count(settings) >= orders or stream.process.poll() is not None, 600, 1)
        assert caught_up and stream.process.poll() is None, f"the stream died or lagged:\n{stream.tail()}"
        record_property("orders", orders)
        record_property("downtime_s", round(timeline["up"] - timeline["down"], 1))
        record_property("caught_up_after_s", round(time.monotonic() - timeline["up"], 1))
        stream.kill()
        assert_exact(settings, orders, silver=orders, quarantine=0, duplicates=0)
    finally:
        stream.kill()
        kafka.stop()
