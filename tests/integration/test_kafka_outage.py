"""The Kafka broker stopped under load: every acknowledged order arrives once, every failure is counted.

A broker of its own (free ports, own data folder) is stopped while two
producers send at a steady rate, then started again on the same data:

- the simulator's producer as configured (delivery timeout 120 s) rides out
  the outage: when the broker is back within that timeout, all it sent is
  acknowledged; each acknowledged order and label is in its topic once;
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


class Tracked(TransactionProducer):
    """The simulator's producer, keeping each send's topic, event id, time and future (its acknowledgement)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sends: list[tuple[str, str, float, object]] = []

    def _send(self, topic, key, value, on_ok=None):
        future = super()._send(topic, key, value, on_ok)
        self.sends.append((topic, json.loads(value)["event_id"], time.monotonic(), future))
        return future

    def acknowledged(self, topic: str) -> dict[str, float]:
        """Event id -> when it was sent, for every send to ``topic`` the broker acknowledged."""
        return {eid: at for t, eid, at, f in self.sends if t == topic and f is not None and f.succeeded()}


def assert_acknowledged_arrived_once(producer: Tracked, settings, topics: list[str]) -> None:
    """Every send has an outcome; each acknowledged one is in its topic, and no event is in a topic twice."""
    stats = producer.stats
    assert stats.delivered + stats.failed == stats.sent == len(producer.sends), stats.errors
    assert sum(len(producer.acknowledged(t)) for t in topics) == stats.delivered
    for topic in topics:
        in_topic = _event_ids(settings, topic)
        assert all(n == 1 for n in in_topic.values()), f"an event is in {topic} twice"
        missing = set(producer.acknowledged(topic)) - set(in_topic)
        assert not missing, f"{len(missing)} acknowledged events are not in {topic}"


@pytest.fixture
def broker(settings, tmp_path):
    own = with_topic(private_kafka(settings, tmp_path / "broker"), "labels", "outage")
    kafka = EmbeddedKafka(own)
    kafka.start()
    yield own, kafka
    kafka.stop()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("outage_s", [15.0, pytest.param(60.0, marks=pytest.mark.chaos)])
def test_a_broker_outage_under_load_loses_nothing_acknowledged_and_counts_every_failure(
    broker, outage_s, record_property
):
    settings, kafka = broker
    impatient_settings = with_topic(settings, "transactions", "impatient", partitions=3)
    ensure_topics(impatient_settings)
    steady = Tracked(settings)
    impatient = Tracked(impatient_settings, client_overrides=IMPATIENT)
    orders_topic, labels_topic = settings.kafka.transactions_topic, settings.kafka.labels_topic
    timeline: dict[str, float] = {}

    def outage() -> None:
        time.sleep(BEFORE_S)
        kafka.stop()
        timeline["down"] = time.monotonic()
        time.sleep(outage_s)
        kafka.start()
        timeline["up"] = time.monotonic()
        backlog = steady.stats.sent  # everything sent before and during the outage
        if wait_until(lambda: steady.stats.delivered + steady.stats.failed >= backlog, 300, 0.1):
            timeline["caught_up"] = time.monotonic()

    chaos = threading.Thread(target=outage, daemon=True)
    chaos.start()
    run_live(
        settings,
        steady,
        TransactionSimulator(settings.simulator, seed=11),
        RATE,
        duration=BEFORE_S + outage_s + RESTART_BUDGET_S + AFTER_S,
        progress=False,
        on_event=lambda event: impatient.send_raw(event["customer_id"], encode(event)),
    )
    impatient.close()
    chaos.join(timeout=300)
    assert "up" in timeline and port_open(settings.kafka.host, settings.kafka.port), "the broker did not come back"

    s, i = steady.stats, impatient.stats
    downtime_s = timeline["up"] - timeline["down"]
    recovery_s = timeline.get("caught_up", float("inf")) - timeline["up"]
    record_property("downtime_s", round(downtime_s, 1))
    record_property("recovery_s", round(recovery_s, 1))
    record_property("sent", s.sent)
    record_property("delivered", s.delivered)
    record_property("failed", s.failed)
    record_property("impatient_sent", i.sent)
    record_property("impatient_failed", i.failed)
    record_property("impatient_client_restarts", i.client_restarts)

    assert_acknowledged_arrived_once(steady, settings, [orders_topic, labels_topic])
    if downtime_s + recovery_s < settings.producer.delivery_timeout_ms / 1000:  # the timeout outlasted the outage
        assert s.failed == 0, s.errors
    assert_acknowledged_arrived_once(impatient, impatient_settings, [impatient_settings.kafka.transactions_topic])
    assert i.failed > 0, "an outage longer than the delivery timeout must fail some sends"
    acknowledged_at = impatient.acknowledged(impatient_settings.kafka.transactions_topic).values()
    assert any(at > timeline["up"] for at in acknowledged_at), "the impatient producer never delivered again"


@pytest.mark.chaos
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("outage_s", [60.0, 240.0])
def test_the_ingest_stream_rides_out_a_broker_outage_and_reconciles_exactly(
    isolated, tmp_path, record_property, outage_s
):
    """The stream runs through the outage (a broker of its own, the test's lake and database): afterwards every
    acknowledged order is in bronze, silver and PostgreSQL once, and ``ecom reconcile`` is exact.

    Which mechanism rides it out depends on where the outage meets the stream: a batch reading the source fails
    and is tried again (``faults.unavailable``); a query planning its next batch, when the outage outlasts
    Spark's own retries (about three minutes, so only the 240 s outage can), fails and is restarted from its
    checkpoint (``pipelines.supervisor``). Both log the wait. The producer's delivery timeout outlasts both."""
    from tests.integration.test_silver_faults import Stream, assert_exact, pg_count

    settings = private_kafka(isolated, tmp_path / "broker")
    kafka = EmbeddedKafka(settings)
    kafka.start()
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
        patient = {"delivery_timeout_ms": int((outage_s + 120) * 1000)}  # outlasts the outage: nothing fails
        producer = TransactionProducer(settings, client_overrides=patient)
        run_live(settings, producer, sim, 100.0, duration=BEFORE_S + outage_s + RESTART_BUDGET_S, progress=False)
        chaos.join(timeout=outage_s + 60)
        assert producer.stats.failed == 0, producer.stats.errors
        orders = warm_up + producer.stats.delivered - producer.stats.labels_delivered
        caught_up = wait_until(lambda: pg_count(settings) >= orders or stream.process.poll() is not None, 600, 1)
        assert caught_up and stream.process.poll() is None, f"the stream died or lagged:\n{stream.tail()}"
        record_property("orders", orders)
        record_property("downtime_s", round(timeline["up"] - timeline["down"], 1))
        record_property("caught_up_after_s", round(time.monotonic() - timeline["up"], 1))
        log = (tmp_path / "stream.log").read_text(errors="replace")
        record_property("batch_retries", log.count(": kafka unavailable"))
        record_property("query_restarts", log.count("restarting from its checkpoint"))
        # The outage met the stream either in a batch reading the source (the batch waits and runs again) or,
        # when longer than Spark's source keeps asking for offsets, planning one (the query is restarted).
        assert ": kafka unavailable for" in log, stream.tail()
        stream.kill()
        assert_exact(settings, orders, silver=orders, quarantine=0, duplicates=0)
    finally:
        stream.kill()
        kafka.stop()
