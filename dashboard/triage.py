"""Fraud triage: an analyst's decision on an alert is stored in PostgreSQL and published as a label.

Layer: dashboard (the one write it does). Input: alert id, decision
(``confirmed_fraud`` | ``false_positive``), note, the signed-in analyst.
Output: ``fraud_alerts`` status/note/reviewer and a ``fraud_labels`` row,
written as the ``ecom_analyst`` role, and a message on Kafka ``fraud-labels``
with the simulator's label contract {event_id, transaction_id, is_fraud,
fraud_pattern, label_time}, keyed by customer id. The label is published
(and acknowledged by the broker) before the database transaction commits: if
Kafka refuses it, nothing is stored; if the commit fails after the send, a
retry sends the same label again, which ``ecom train`` reads once (the last
label of an event wins).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import psycopg2

from dashboard.data import ANALYST_ROLE, role_dsn
from ecom.settings import Settings
from serving import queries

SEND_TIMEOUT_S = 10.0
_producers: dict[str, object] = {}
_lock = threading.Lock()


def label_message(label: dict) -> dict:
    """The Kafka payload of a label from ``queries.record_triage`` (label_time as ISO-8601 UTC, ms, ``Z``)."""
    from simulator.generator import format_event_time

    return {**label, "label_time": format_event_time(label["label_time"])}


def _producer(settings: Settings):
    from simulator.producer import make_producer

    with _lock:
        key = settings.kafka.bootstrap_servers
        if key not in _producers:
            _producers[key] = make_producer(settings, max_block_ms=int(SEND_TIMEOUT_S * 1000))
        return _producers[key]


def publish_label(settings: Settings, message: dict, customer_id: str) -> None:
    """Send one label to ``fraud-labels`` and wait for the broker's acknowledgement."""
    from simulator.producer import encode

    future = _producer(settings).send(settings.kafka.labels_topic, key=customer_id, value=encode(message))
    future.get(timeout=SEND_TIMEOUT_S)


def triage(settings: Settings, alert_id: str, decision: str, note: str, analyst: str) -> dict:
    """Record the decision and publish its label; returns the published message."""
    conn = psycopg2.connect(role_dsn(settings, ANALYST_ROLE), connect_timeout=5, application_name="ecom-triage")
    try:
        with conn:  # commits after the label is on Kafka, rolls back if anything fails
            label = queries.record_triage(conn, alert_id, decision, note.strip(), analyst, datetime.now(UTC))
            with conn.cursor() as cur:
                cur.execute("SELECT customer_id FROM fraud_alerts WHERE alert_id = %s", (alert_id,))
                customer_id = cur.fetchone()[0]
            message = label_message(label)
            publish_label(settings, message, customer_id)
        return message
    finally:
        conn.close()
