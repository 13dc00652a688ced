"""The per-order path against the real broker and PostgreSQL: one alert row and one message per alerted order,
also across a restart (a new process reads the topic again from the state's first missing offset)."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pandas as pd
import pytest

from ecom.runtime.kafka import ensure_topics
from ml.features import apply_history, with_history_features
from ml.train import fit_isolation_forest
from pipelines.alerts import job, step
from pipelines.silver.state import CustomerState
from serving.db import connection
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from tests.conftest import with_topic
from tests.faults import read_topic

pytestmark = pytest.mark.integration

KEY = b"test-key"


class Champion:
    """The registry's answer: a forest fitted on the shop's history, as version 1."""

    def __init__(self, scorer):
        self.model = (scorer, "1")

    def refresh(self):
        return self.model


@pytest.fixture
def shop(isolated):
    """A shop with 30 days of history (the state a stream would restore) and 400 orders of the last hour in its
    topic (fraud patterns included)."""
    settings = with_topic(isolated, "alerts", uuid.uuid4().hex[:8])
    ensure_topics(settings)
    sim = TransactionSimulator(settings.simulator.model_copy(update={"fraud_rate": 0.05}), seed=31)
    now = dt.datetime.now(dt.UTC)
    history = pd.DataFrame([g.event for g in sim.backfill(3000, days=30, end=now - dt.timedelta(hours=2))]).assign(
        event_time=lambda d: pd.to_datetime(d["event_time"], utc=True).dt.tz_convert(None),
        amount=lambda d: d["amount"].astype(float),
        customer_email_hash=None,
    )
    scorer = fit_isolation_forest(with_history_features(history), settings.fraud)
    producer = TransactionProducer(settings)
    # the last hour as the live shop makes it (customers at their own pace, not 400 orders from the history's few)
    for generated in sim.events(400, start=now - dt.timedelta(hours=1), rate_per_s=400 / 3600):
        producer.send(generated)
    producer.close()
    return settings, apply_history(history).profiles, Champion(scorer)


def run_until_read(settings, state_profiles, champion, count: int) -> job.FastPath:
    path = job.FastPath(
        settings, CustomerState(dict(state_profiles)), KEY, tracker=champion, max_age_s=7200
    )  # every order of the last hour alerts
    consumer = job.consumer_for(settings)
    deadline = time.monotonic() + 120
    try:
        job.run(settings, path, consumer, stop=lambda: path.counts.records >= count or time.monotonic() > deadline)
    finally:
        consumer.close()
    return path


def alert_rows(settings) -> list[tuple]:
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id, alert_id, fraud_score FROM fraud_alerts ORDER BY event_id")
        return cur.fetchall()


def test_each_alerted_order_has_one_row_and_one_message_also_after_a_restart(shop):
    settings, profiles, champion = shop
    first = run_until_read(settings, profiles, champion, 400)

    assert first.counts.records == 400 and first.counts.taken == 400
    rows = alert_rows(settings)
    assert 0 < len(rows) == first.counts.alerts < 400 * 0.2
    messages = [json.loads(v) for v in read_topic(settings, settings.kafka.alerts_topic)]
    assert sorted(m["event_id"] for m in messages) == [r[0] for r in rows]
    assert all(m["alert_id"] == r[1] for m, r in zip(sorted(messages, key=lambda m: m["event_id"]), rows, strict=True))
    assert all(score >= settings.fraud.alert_threshold for _, _, score in rows)

    again = run_until_read(settings, profiles, champion, 400)  # a restart: the same records, the same state

    assert again.counts.alerts == 0 and again.counts.alerts_existing == len(rows)
    assert alert_rows(settings) == rows
    assert len(read_topic(settings, settings.kafka.alerts_topic)) == len(messages)


def test_the_scores_are_the_steps_on_the_same_orders(shop):
    """What the process wrote equals the pure step on the same records (no I/O lost or changed a value)."""
    settings, profiles, champion = shop
    path = run_until_read(settings, profiles, champion, 400)
    values = read_topic(settings, settings.kafka.transactions_topic)
    assert len(values) == 400
    now = dt.datetime.now(dt.UTC)
    from pipelines.alerts import validate

    taken = [(validate.order(v, now), ("t", 0, i, now)) for i, v in enumerate(values)]
    taken.sort(key=lambda x: (x[0].event_time, x[0].event_id))
    expected = step.score_step(step.order_rows(taken, KEY, "x", now), profiles, champion.model, 80.0).alerts
    assert sorted(expected["event_id"]) == [r[0] for r in alert_rows(settings)]
    assert path.counts.refused == 0
