"""Kafka producer for simulated orders (kafka-python), configured from settings.

Orders go to ``ecommerce-transactions`` keyed by customer_id; ground-truth
labels for injected fraud go to ``fraud-labels`` only, optionally held back
until their ``label_time`` (like chargebacks) in a small heap that is drained
as labels fall due and completely on ``close``. Every delivery outcome is
counted by broker acknowledgement; failures are kept, never ignored.

Every send ends as delivered or failed, also when the broker goes away: a
flush or close waits at most the client's delivery timeout plus a grace period,
then closes the client and counts what has no outcome as failed. A client that
holds sends past its own delivery timeout without any outcome has stalled
(kafka-python's idempotent producer can wait forever for a new producer id
after batches expire during an outage); it is closed, its sends are counted as
failed, and a fresh client takes over.

``DeliveryStats`` is what ``ecom generate`` exposes as Prometheus metrics and ``health`` what its ``/healthz``
answers (``ecom.metrics``, docs/observability.md).
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.default import DefaultPartitioner, murmur2

from ecom.health import Check
from ecom.kafka_config import producer_kwargs
from ecom.settings import Settings
from simulator.generator import Generated

log = logging.getLogger(__name__)

STALL_GRACE_S = 15.0  # past its delivery timeout, a client whose sends have no outcome at all has stalled
CLOSE_JOIN_S = 10.0  # how long a forced close waits for the client's I/O thread


@dataclass
class DeliveryStats:
    """What was handed to the client and what the broker confirmed (acks).

    The ack callbacks all run on the producer's one I/O thread, so the counters
    need no lock; other threads only read them.
    """

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    bytes: int = 0
    labels_sent: int = 0
    labels_delivered: int = 0
    first_send: float | None = None  # time.monotonic()
    last_ack: float | None = None
    last_outcome: float | None = None  # time.monotonic() of the last acknowledgement or error
    unconfirmed: int = 0  # sends without any outcome when their client was closed (included in failed)
    client_restarts: int = 0  # stalled clients replaced by a fresh one
    errors: list[str] = field(default_factory=list)

    def ok(self, _metadata) -> None:
        self.delivered += 1
        self.last_ack = self.last_outcome = time.monotonic()

    def ok_label(self, _metadata) -> None:
        self.labels_delivered += 1
        self.ok(_metadata)

    def error(self, exc: BaseException) -> None:
        self.failed += 1
        self.last_outcome = time.monotonic()
        if len(self.errors) < 10:
            self.errors.append(repr(exc))

    def settle(self, reason: str) -> int:
        """Count every send still without an outcome as failed (its client is closed: none will come)."""
        lost = self.pending
        if lost > 0:
            self.failed += lost
            self.unconfirmed += lost
            self.errors.append(f"{lost} sends without an outcome: {reason}")
        return lost

    @property
    def pending(self) -> int:
        return self.sent - self.delivered - self.failed

    def confirmed_rate(self) -> float:
        """Broker-confirmed messages per second, from the first send to the last acknowledgement."""
        if self.first_send is None or self.last_ack is None or self.last_ack <= self.first_send:
            return 0.0
        return self.delivered / (self.last_ack - self.first_send)


class KeyHashPartitioner(DefaultPartitioner):
    """Kafka's default keyed partitioning (murmur2), with the hash cached per key.

    Keys are customer ids, so the same few thousand keys repeat; the pure-Python
    murmur2 is the costliest part of partitioning and its result never changes.
    Keyless records are left to the default partitioner.
    """

    def __init__(self, max_keys: int = 1_000_000):
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        partitions = cluster.partitions_for_topic(topic) if serialized_key is not None else None
        if not partitions:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        h = self._hashes.get(serialized_key)
        if h is None:
            h = murmur2(serialized_key) & 0x7FFFFFFF
            if len(self._hashes) < self._max_keys:
                self._hashes[serialized_key] = h
        ordered = sorted(partitions)
        return ordered[h % len(ordered)]


def make_producer(settings: Settings, **overrides) -> KafkaProducer:
    """A kafka-python producer with the configured reliability and batching (``overrides`` for tests and tuned runs)."""
    config = producer_kwargs(settings)  # settings.producer plus the brokers' address and security
    return KafkaProducer(**{**config, "key_serializer": str.encode, "partitioner": KeyHashPartitioner(), **overrides})


_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps(..., separators=) builds one per call


def encode(payload: dict) -> bytes:
    """Compact JSON bytes."""
    return _JSON.encode(payload).encode()


def _epoch(iso_utc: str) -> float:
    return datetime.strptime(iso_utc, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _force_close(client) -> None:
    """Close a kafka-python client now; its unsent batches fail (their errbacks run) instead of waiting.

    ``KafkaProducer.close(timeout)`` flushes first and raises when the flush times out, so it never gets to
    the forced close: stop the I/O thread first, then close."""
    sender = getattr(client, "_sender", None)
    if sender is not None:
        sender.force_close()
        sender.join(CLOSE_JOIN_S)
    try:
        client.close(timeout=0)
    except KafkaError as exc:
        log.warning("closing a stalled Kafka producer: %r", exc)


class TransactionProducer:
    """Sends generated orders and labels; counts every delivery outcome.

    ``client_overrides`` are passed to ``make_producer`` for the client it builds (and rebuilds if one stalls);
    a ``producer`` passed in is used as it is and never replaced."""

    def __init__(
        self,
        settings: Settings,
        producer: KafkaProducer | None = None,
        topic: str | None = None,
        labels_topic: str | None = None,
        client_overrides: dict | None = None,
    ):
        self.settings = settings
        overrides = client_overrides or {}
        self._new_client: Callable[..., KafkaProducer] | None = (
            None if producer is not None else lambda **extra: make_producer(settings, **overrides, **extra)
        )
        self.producer = producer if producer is not None else self._new_client()
        delivery_ms = overrides.get("delivery_timeout_ms", settings.producer.delivery_timeout_ms)
        self.wait_limit_s = delivery_ms / 1000 + STALL_GRACE_S  # a send has an outcome by then, or never will
        self.topic = topic or settings.kafka.transactions_topic
        self.labels_topic = labels_topic or settings.kafka.labels_topic
        self.stats = DeliveryStats()
        self._labels: list[tuple[float, int, str, bytes]] = []  # (due epoch s, seq, key, payload)
        self._seq = 0
        self._busy_since = 0.0  # when the sends now pending began (pending went up from 0)
        self._closed = False

    def send(self, generated: Generated) -> None:
        """Send one order; its label (if any) now, or when its label_time comes."""
        key = generated.event["customer_id"]
        self._send(self.topic, key, encode(generated.event))
        label = generated.label
        now = time.time()
        if label is not None:
            due = _epoch(label["label_time"])
            if due <= now:
                self._send_label(key, encode(label))
            else:
                self._seq += 1
                heapq.heappush(self._labels, (due, self._seq, key, encode(label)))
        if self._labels and self._labels[0][0] <= now:
            self.send_due_labels(now)

    def send_due_labels(self, now: float | None = None) -> int:
        """Send the held-back labels whose time has come; returns how many."""
        now = time.time() if now is None else now
        n = 0
        while self._labels and self._labels[0][0] <= now:
            _, _, key, value = heapq.heappop(self._labels)
            self._send_label(key, value)
            n += 1
        return n

    @property
    def labels_pending(self) -> int:
        return len(self._labels)

    def send_raw(self, key: str | None, value: bytes, topic: str | None = None):
        """Send bytes as they are (used to test bad input); returns the client's future, None if refused."""
        return self._send(topic or self.topic, key, value)

    def _send_label(self, key: str, value: bytes) -> None:
        self.stats.labels_sent += 1
        self._send(self.labels_topic, key, value, self.stats.ok_label)

    def _send(self, topic: str, key: str | None, value: bytes, on_ok=None):
        """Hand one record to the client; returns its future (None if the client refused it at once)."""
        stats = self.stats
        now = time.monotonic()
        if stats.first_send is None:
            stats.first_send = now
        if stats.pending <= 0:
            self._busy_since = now
        elif self._stalled(now):
            self._replace_client()
        stats.sent += 1
        stats.bytes += len(value)
        try:
            future = self.producer.send(topic, key=key, value=value)
        except KafkaError as exc:  # refused before it left the client (no metadata, too large, buffer full)
            stats.error(exc)
            return None
        future.add_callback(on_ok or stats.ok)
        future.add_errback(stats.error)
        return future

    def health(self) -> Check:
        """``/healthz``: the client is not stalled (sends pending without any outcome past its delivery timeout)."""
        stats = self.stats
        if self._stalled(time.monotonic()):
            return Check(False, f"{stats.pending} sends without an outcome for over {self.wait_limit_s:.0f} s")
        return Check(True, f"{stats.delivered} delivered, {stats.failed} failed, {stats.pending} pending")

    def _stalled(self, now: float) -> bool:
        """Sends pending and no outcome at all for longer than the client's own delivery timeout allows."""
        since = max(self.stats.last_outcome or 0.0, self._busy_since)
        return self.stats.pending > 0 and now - since > self.wait_limit_s

    def _replace_client(self) -> None:
        """Close the stalled client (its sends count as failed) and carry on with a fresh one."""
        if self._new_client is None:
            return
        pending = self.stats.pending
        known = getattr(self.producer, "config", {}).get("api_version")
        _force_close(self.producer)
        self.stats.settle("the Kafka client stalled and was replaced")
        # The broker may still be away: told its API version, the new client connects when it can instead of
        # failing to bootstrap now (until then its sends wait for metadata, at most max_block_ms each).
        self.producer = self._new_client(**({"api_version": known} if known else {}))
        self.stats.client_restarts += 1
        log.warning("the Kafka producer stalled with %d sends pending; replaced by a fresh client", pending)

    def send_all(self, events: Iterable[Generated]) -> DeliveryStats:
        for generated in events:
            self.send(generated)
        self.flush()
        return self.stats

    def flush(self) -> None:
        """Wait until every send has an outcome; past ``wait_limit_s`` the client has stalled and is replaced."""
        try:
            self.producer.flush(timeout=self.wait_limit_s)
        except KafkaError:  # KafkaTimeoutError: no outcome within the client's own delivery timeout
            self._replace_client()

    def close(self) -> None:
        """Send every held-back label, wait for all outcomes (at most ``wait_limit_s``), close the client.

        Afterwards ``stats.delivered + stats.failed == stats.sent``: what has no outcome counts as failed."""
        if self._closed:
            return
        self._closed = True
        self.send_due_labels(now=float("inf"))
        try:
            self.producer.flush(timeout=self.wait_limit_s)
            self.producer.close(timeout=CLOSE_JOIN_S)
        except KafkaError:  # KafkaTimeoutError: the broker did not answer in time
            _force_close(self.producer)
        self.stats.settle("the producer was closed before the broker answered")
