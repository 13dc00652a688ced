"""Kafka producer for simulated orders (kafka-python), configured from settings.

Key = customer_id; delivery failures are counted, never ignored; ``close``
flushes. Labels for injected fraud go to the ``fraud-labels`` topic only.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Iterable

from kafka import KafkaProducer

from ecom.settings import Settings
from simulator.generator import Generated


@dataclass
class DeliveryStats:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ok(self, _metadata) -> None:
        with self._lock:
            self.delivered += 1

    def error(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if len(self.errors) < 10:
                self.errors.append(repr(exc))


def make_producer(settings: Settings) -> KafkaProducer:
    p = settings.producer
    return KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers.split(","),
        acks=p.acks,
        enable_idempotence=p.enable_idempotence,
        compression_type=p.compression_type,
        batch_size=p.batch_size,
        linger_ms=p.linger_ms,
        max_in_flight_requests_per_connection=p.max_in_flight,
        delivery_timeout_ms=p.delivery_timeout_ms,
        key_serializer=str.encode,
    )


def encode(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class TransactionProducer:
    """Sends generated orders and labels; counts every delivery outcome."""

    def __init__(self, settings: Settings, producer: KafkaProducer | None = None):
        self.settings = settings
        self.producer = producer or make_producer(settings)
        self.stats = DeliveryStats()

    def send(self, generated: Generated) -> None:
        value = encode(generated.event)
        self._send(self.settings.kafka.transactions_topic, generated.event["customer_id"], value)
        if generated.label is not None:
            self._send(self.settings.kafka.labels_topic, generated.event["customer_id"], encode(generated.label))

    def send_raw(self, key: str | None, value: bytes, topic: str | None = None) -> None:
        """Send bytes as they are (used to test bad input)."""
        self._send(topic or self.settings.kafka.transactions_topic, key, value)

    def _send(self, topic: str, key: str | None, value: bytes) -> None:
        self.stats.sent += 1
        self.stats.bytes += len(value)
        future = self.producer.send(topic, key=key, value=value)
        future.add_callback(self.stats.ok)
        future.add_errback(self.stats.error)

    def send_all(self, events: Iterable[Generated]) -> DeliveryStats:
        for generated in events:
            self.send(generated)
        self.flush()
        return self.stats

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()
