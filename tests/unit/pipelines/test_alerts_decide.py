"""``FastPath.decide`` on records one poll brought: what it folds into the state, what it alerts, what it leaves.

No Kafka, no PostgreSQL: records are plain tuples with kafka-python's field names, ``stored`` answers as
``job.stored_events`` does, and the champion is a forest fitted on a simulated history.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import namedtuple

import pandas as pd
import pytest

from ml.features import apply_history, with_history_features
from ml.train import fit_isolation_forest
from pipelines.alerts import job
from pipelines.silver.state import CustomerState

Record = namedtuple("Record", "topic partition offset timestamp value")
NOW = dt.datetime(2026, 3, 1, 14, 30, tzinfo=dt.UTC)  # fixed: the simulated shop and the forest do not vary by day


class Champion:
    def __init__(self, model):
        self.model = model

    def refresh(self):
        return self.model


@pytest.fixture(scope="module")
def shop(settings):
    """A forest and profiles from 2,000 orders of the last month; 40 orders of the last minutes as records,
    the first five clearly anomalous (so that they alert)."""
    from simulator.generator import TransactionSimulator

    sim = TransactionSimulator(settings.simulator, seed=5)
    history = pd.DataFrame([g.event for g in sim.backfill(2000, days=30, end=NOW - dt.timedelta(hours=1))]).assign(
        event_time=lambda d: pd.to_datetime(d["event_time"], utc=True).dt.tz_convert(None),
        amount=lambda d: d["amount"].astype(float),
        customer_email_hash=None,
    )
    forest = fit_isolation_forest(with_history_features(history), settings.fraud)
    events = [g.event for g in sim.backfill(40, days=1 / 144, end=NOW)]
    for event in events[:5]:
        item = {**event["items"][0], "quantity": 5, "unit_price": 9999.99}
        event.update(items=[item], amount=49999.95, currency="USD", ip_country="NG", shipping_country="US")
    stamp = int(NOW.timestamp() * 1000)
    records = [Record("orders", 0, 100 + i, stamp, json.dumps(e).encode()) for i, e in enumerate(events)]
    return settings, (forest, "1"), apply_history(history).profiles, records


def fast_path(shop) -> job.FastPath:
    settings, model, profiles, _ = shop
    return job.FastPath(settings, CustomerState(dict(profiles)), b"key", tracker=Champion(model))


def test_every_order_is_folded_in_and_the_anomalous_ones_alert(shop):
    path = fast_path(shop)
    records = shop[3]

    alerts = path.decide(records, NOW)

    anomalous = {json.loads(r.value)["event_id"] for r in records[:5]}
    assert anomalous <= set(alerts["event_id"])
    assert path.counts.taken == 40 and path.counts.repeats == 0 and path.counts.behind == 0
    customers = {json.loads(r.value)["customer_id"] for r in records}
    folded = sum(path.state.profiles[c].tx_count for c in customers)
    assert folded == sum(shop[2][c].tx_count for c in customers if c in shop[2]) + 40


def test_orders_the_micro_batch_served_first_are_folded_in_without_an_alert_and_repeats_are_left(shop):
    path = fast_path(shop)
    records = shop[3]
    first, second = (json.loads(r.value)["event_id"] for r in records[:2])
    stored = {
        first: (records[0].partition, records[0].offset),  # served by the micro-batch from this very record
        second: (records[0].partition, 7),  # the same event from another record: a repeat
    }

    alerts = path.decide(records, NOW, lambda ids: {e: stored[e] for e in ids if e in stored})

    assert first not in set(alerts["event_id"]) and second not in set(alerts["event_id"])
    assert set(alerts["event_id"]) >= {json.loads(r.value)["event_id"] for r in records[2:5]}
    assert (path.counts.taken, path.counts.behind, path.counts.repeats) == (39, 1, 1)
    again = path.decide(records[2:5], NOW)  # a second delivery of records this path took
    assert again.empty and path.counts.repeats == 4


def test_the_maximum_age_comes_from_the_settings(shop):
    settings, model, profiles, _ = shop
    fraud = settings.fraud.model_copy(update={"fast_path_max_age_s": 30.0})
    path = job.FastPath(
        settings.model_copy(update={"fraud": fraud}), CustomerState(dict(profiles)), b"k", Champion(model)
    )
    assert path.max_age == dt.timedelta(seconds=30)


def test_only_orders_younger_than_the_maximum_age_alert(shop):
    path = fast_path(shop)
    later = NOW + dt.timedelta(seconds=path.max_age.total_seconds() + 60)  # the same records, read much later

    alerts = path.decide(shop[3], later)

    assert alerts.empty and path.counts.stale == path.counts.taken == 40
