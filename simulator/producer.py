"""Kafka producer for simulated orders (kafka-python), configured from settings.

Orders go to ``ecommerce-transactions`` keyed by customer_id; ground-truth
labels for injected fraud go to ``fraud-labels`` only, optionally held back
until their ``label_time`` (like chargebacks) in a small heap that is drained
as labels fall due and completely on ``close``. Every delivery outcome is
counted by broker acknowledgement; failures are kept, never ignored.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.default import DefaultPartitioner, murmur2

from ecom.settings import Settings
from simulator.generator import Generated


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
    errors: list[str] = field(default_factory=list)

    def ok(self, _metadata) -> None:
        self.delivered += 1
        self.last_ack = time.monotonic()

    def ok_label(self, _metadata) -> None:
        self.delivered += 1
        self.labels_delivered += 1
        self.last_ack = time.monotonic()

    def error(self, exc: BaseException) -> None:
        self.failed += 1
        if len(self.errors) < 10:
            self.errors.append(repr(exc))

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
    p = settings.producer
    config = dict(
        bootstrap_servers=settings.kafka.bootstrap_servers.split(","),
        acks=p.acks,
        enable_idempotence=p.enable_idempotence,
        compression_type=p.compression_type,
        batch_size=p.batch_size,
        linger_ms=p.linger_ms,
        max_in_flight_requests_per_connection=p.max_in_flight,
        delivery_timeout_ms=p.delivery_timeout_ms,
        max_block_ms=p.max_block_ms,
        key_serializer=str.encode,
        partitioner=KeyHashPartitioner(),
    )
    config.update(overrides)
    return KafkaProducer(**config)


_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps(..., separators=) builds one per call


def encode(payload: dict) -> bytes:
    """Compact JSON bytes."""
    return _JSON.encode(payload).encode()


def _epoch(iso_utc: str) -> float:
    return datetime.strptime(iso_utc, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


class TransactionProducer:
    """Sends generated orders and labels; counts every delivery outcome."""

    def __init__(
        self,
        settings: Settings,
        producer: KafkaProducer | None = None,
        topic: str | None = None,
        labels_topic: str | None = None,
    ):
        self.settings = settings
        self.producer = producer or make_producer(settings)
        self.topic = topic or settings.kafka.transactions_topic
        self.labels_topic = labels_topic or settings.kafka.labels_topic
        self.stats = DeliveryStats()
        self._labels: list[tuple[float, int, str, bytes]] = []  # (due epoch s, seq, key, payload)
        self._seq = 0
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

    def send_raw(self, key: str | None, value: bytes, topic: str | None = None) -> None:
        """Send bytes as they are (used to test bad input)."""
        self._send(topic or self.topic, key, value)

    def _send_label(self, key: str, value: bytes) -> None:
        self.stats.labels_sent += 1
        self._send(self.labels_topic, key, value, self.stats.ok_label)

    def _send(self, topic: str, key: str | None, value: bytes, on_ok=None) -> None:
        stats = self.stats
        if stats.first_send is None:
            stats.first_send = time.monotonic()
        stats.sent += 1
        stats.bytes += len(value)
        try:
            future = self.producer.send(topic, key=key, value=value)
        except KafkaError as exc:  # refused before it left the client (no metadata, too large, buffer full)
            stats.error(exc)
            return
        future.add_callback(on_ok or stats.ok)
        future.add_errback(stats.error)

    def send_all(self, events: Iterable[Generated]) -> DeliveryStats:
        for generated in events:
            self.send(generated)
        self.flush()
        return self.stats

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        """Send every held-back label, wait for all acknowledgements, close the client."""
        if self._closed:
            return
        self._closed = True
        self.send_due_labels(now=float("inf"))
        self.producer.flush()
        self.producer.close()
