"""The producer wrapper with a stand-in client: keys, topics, held-back labels, failures, pacing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.partitioner.default import DefaultPartitioner

from simulator.generator import Generated, TransactionSimulator
from simulator.producer import KeyHashPartitioner, TransactionProducer, encode
from simulator.runner import run_live


class FakeFuture:
    def __init__(self, fail: bool):
        self.fail = fail

    def add_callback(self, fn):
        if not self.fail:
            fn(object())
        return self

    def add_errback(self, fn):
        if self.fail:
            fn(KafkaTimeoutError("no broker"))
        return self


class FakeClient:
    """Records sends; fails the ones whose value contains ``fail_marker``."""

    def __init__(self, fail_marker: bytes | None = None):
        self.sent: list[tuple[str, str, bytes]] = []
        self.fail_marker = fail_marker
        self.flushed = self.closed = 0

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key, value))
        return FakeFuture(self.fail_marker is not None and self.fail_marker in value)

    def flush(self, timeout=None):
        self.flushed += 1

    def close(self, timeout=None):
        self.closed += 1


def _order(label_time: datetime | None, customer: str = "C0000001") -> Generated:
    event = {"event_id": "e1", "transaction_id": "t1", "customer_id": customer, "amount": 1.0}
    label = None
    if label_time is not None:
        label = {"event_id": "e1", "transaction_id": "t1", "is_fraud": True, "fraud_pattern": "amount_spike",
                 "label_time": label_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"}  # fmt: skip
    return Generated(event=event, label=label)


def test_orders_are_keyed_by_customer_and_labels_go_only_to_the_labels_topic(settings):
    client = FakeClient()
    producer = TransactionProducer(settings, producer=client)
    producer.send(_order(None, "C1"))
    producer.send(_order(datetime.now(UTC) - timedelta(seconds=1), "C2"))
    producer.close()
    k = settings.kafka
    assert [(t, key) for t, key, _ in client.sent] == [
        (k.transactions_topic, "C1"),
        (k.transactions_topic, "C2"),
        (k.labels_topic, "C2"),
    ]
    assert b"fraud_pattern" not in client.sent[1][2] and b"fraud_pattern" in client.sent[2][2]
    assert producer.stats.delivered == 3 and producer.stats.labels_delivered == 1 and producer.stats.failed == 0
    assert client.flushed == 1 and client.closed == 1


def test_delayed_labels_wait_until_due_and_are_flushed_at_close(settings):
    client = FakeClient()
    producer = TransactionProducer(settings, producer=client)
    now = datetime.now(UTC)
    producer.send(_order(now + timedelta(hours=1)))
    producer.send(_order(now + timedelta(seconds=0.2)))
    assert producer.labels_pending == 2
    assert [t for t, _, _ in client.sent] == [settings.kafka.transactions_topic] * 2
    time.sleep(0.25)
    producer.send(_order(None))  # any send drains what has fallen due
    assert producer.labels_pending == 1
    assert [t for t, _, _ in client.sent].count(settings.kafka.labels_topic) == 1
    producer.close()
    assert producer.labels_pending == 0
    assert [t for t, _, _ in client.sent].count(settings.kafka.labels_topic) == 2


def test_delivery_failures_are_counted_and_kept(settings):
    client = FakeClient(fail_marker=b"C666")
    producer = TransactionProducer(settings, producer=client)
    for customer in ("C1", "C666", "C2", "C666"):
        producer.send(_order(None, customer))
    producer.close()
    stats = producer.stats
    assert (stats.sent, stats.delivered, stats.failed) == (4, 2, 2)
    assert stats.errors and "no broker" in stats.errors[0]
    assert stats.bytes == sum(len(v) for _, _, v in client.sent)


class FivePartitions:
    """The bit of cluster metadata a partitioner reads: topic ``t`` with partitions 0..4."""

    def topics(self, *_args, **_kwargs):
        return {"t"}

    def partitions_for_topic(self, _topic):
        return {0, 1, 2, 3, 4}

    def available_partitions_for_topic(self, _topic):
        return {0, 1, 2, 3, 4}


def test_cached_partitioner_agrees_with_kafkas_default():
    cluster = FivePartitions()
    mine, default = KeyHashPartitioner(), DefaultPartitioner()
    keys = [f"C{i:07d}".encode() for i in range(500)]
    for key in keys + keys:  # the second round comes from the cache
        assert mine.partition("t", None, key, None, None, cluster) == default.partition(
            "t", None, key, None, None, cluster
        )
    assert len({mine.partition("t", None, k, None, None, cluster) for k in keys}) == 5


def test_encode_is_compact_json():
    assert encode({"a": 1, "b": [1.5, "x"]}) == b'{"a":1,"b":[1.5,"x"]}'


@pytest.mark.parametrize("rate", [200.0, 2000.0])
def test_live_mode_paces_to_the_target_rate_measured_from_event_times(settings, rate):
    client = FakeClient()
    times: list[str] = []
    sim = TransactionSimulator(settings.simulator, seed=1)
    result = run_live(settings, TransactionProducer(settings, producer=client), sim, rate, duration=3.0, progress=False,
                      on_event=lambda e: times.append(e["event_time"]))  # fmt: skip
    parsed = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times]
    achieved = (len(parsed) - 1) / (parsed[-1] - parsed[0]).total_seconds()
    assert achieved == pytest.approx(rate, rel=0.02)
    assert result.transactions == len(times) and result.failed == 0


def test_live_mode_stops_after_a_count(settings):
    client = FakeClient()
    sim = TransactionSimulator(settings.simulator, seed=1)
    result = run_live(settings, TransactionProducer(settings, producer=client), sim, 5000.0, count=777, progress=False)
    assert result.transactions == 777
    assert sum(1 for t, _, _ in client.sent if t == settings.kafka.transactions_topic) == 777


class StalledFuture:
    """A send the client never answers (neither acknowledgement nor error)."""

    def add_callback(self, fn):
        return self

    def add_errback(self, fn):
        return self


class StalledClient(FakeClient):
    """A client stuck with its sends: no outcome ever, and a flush that times out."""

    config = {"api_version": (4, 1)}  # learnt from the broker when it was reachable

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key, value))
        return StalledFuture()

    def flush(self, timeout=None):
        raise KafkaTimeoutError("Timeout waiting for future")


@pytest.mark.fault
def test_a_stalled_client_is_replaced_and_its_unanswered_sends_count_as_failed(settings, monkeypatch):
    import simulator.producer as producer_module

    clients, made_with = [StalledClient(), FakeClient()], []
    monkeypatch.setattr(
        producer_module, "make_producer", lambda _settings, **overrides: made_with.append(overrides) or clients.pop(0)
    )
    monkeypatch.setattr(producer_module, "STALL_GRACE_S", 0.0)
    producer = TransactionProducer(settings, client_overrides={"delivery_timeout_ms": 100})
    for customer in ("C1", "C2", "C3"):
        producer.send(_order(None, customer))
    assert producer.stats.pending == 3
    time.sleep(0.15)  # longer than the client's delivery timeout, and not one outcome
    producer.send(_order(None, "C4"))
    producer.close()
    stats = producer.stats
    assert (stats.sent, stats.delivered, stats.failed, stats.unconfirmed, stats.client_restarts) == (4, 1, 3, 3, 1)
    assert clients == []  # the fresh client took over
    # told the broker's API version, the fresh client does not need the broker to be back to be built
    assert made_with == [{"delivery_timeout_ms": 100}, {"delivery_timeout_ms": 100, "api_version": (4, 1)}]


@pytest.mark.fault
def test_closing_a_stalled_client_counts_what_has_no_outcome_instead_of_waiting_forever(settings):
    client = StalledClient()
    producer = TransactionProducer(settings, producer=client)  # a client passed in is never replaced
    producer.send(_order(None, "C1"))
    producer.send(_order(None, "C2"))
    started = time.monotonic()
    producer.close()
    assert time.monotonic() - started < 5
    stats = producer.stats
    assert (stats.sent, stats.delivered, stats.failed, stats.pending) == (2, 0, 2, 0)
    assert "without an outcome" in stats.errors[-1]


@pytest.mark.fault
def test_a_crashed_backfill_worker_reports_what_was_delivered_and_counts_the_rest_as_failed(settings):
    from simulator.runner import _failed_report

    producer = TransactionProducer(settings, producer=FakeClient(fail_marker=b"C666"))
    for customer in ("C1", "C666", "C2"):
        producer.send(_order(None, customer))
    report = _failed_report(producer, 10, RuntimeError("worker crashed"))  # asked for 10 orders, sent 3
    assert (report["sent"], report["delivered"], report["failed"]) == (10, 2, 8)
    assert "worker crashed" in report["errors"][0]
