"""The per-order path computes the micro-batch's features, scores and alerts on a recorded sequence of orders.

The same simulated Kafka values (fraud patterns included) go through the micro-batch (silver's Spark routing,
then ``plan.plan_batch`` per batch of 500, profiles carried from batch to batch) and through the per-order
path (``validate`` then ``step``, in polls of 7 values), both from the same state (profiles and recent orders)
carried from batch to batch and from poll to poll. Every silver column, feature (velocity included), score
and alert must be equal.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from pyspark.sql import functions as F

from ecom.schemas import BRONZE_SCHEMA, SILVER_BASE_COLUMNS, SILVER_SCHEMA
from ml.features import RecentOrders, apply_history, with_history_features
from ml.train import fit_isolation_forest
from pipelines.alerts import step, validate
from pipelines.bronze.job import with_bronze_columns
from pipelines.silver import plan
from pipelines.silver import transforms as t
from tests.integration.test_fuzz_path import kafka_records

KEY = b"test-key"
VERSION = "test"
NOW = dt.datetime.now(dt.UTC)
THRESHOLD = 80.0
NO_STORED = pd.DataFrame({"event_id": [], "kafka_partition": [], "kafka_offset": []})


@pytest.fixture(scope="module")
def recorded(settings):
    """1,200 simulated orders of the last day as Kafka values; a model fitted on 3,000 of the 30 days before, and the
    state after those (the customers' profiles, as a stream restores them from its snapshot, and the recent orders)."""
    from simulator.generator import TransactionSimulator

    sim = TransactionSimulator(settings.simulator, seed=21)
    history = [g.event for g in sim.backfill(3000, days=30, end=NOW - dt.timedelta(days=1))]
    frame = pd.DataFrame(history).assign(
        event_time=lambda d: pd.to_datetime(d["event_time"], utc=True).dt.tz_convert(None),
        amount=lambda d: d["amount"].astype(float),
        customer_email_hash=None,
    )
    scorer = fit_isolation_forest(with_history_features(frame), settings.fraud)
    values = [json.dumps(g.event).encode() for g in sim.backfill(1200, days=1, end=NOW)]  # the same customers
    return values, (scorer, "1"), apply_history(frame)  # the state both paths start from


def starting(state) -> tuple[dict, RecentOrders]:
    """A copy of the recorded state: the profiles and a window holding the recent orders."""
    window = RecentOrders()
    window.update(state.recent)
    return dict(state.profiles), window


def micro_batch_rows(spark, values: list[bytes], size: int, model, state) -> pd.DataFrame:
    """What the stream's micro-batches make of ``values``, from the profiles and recent orders in ``state``."""
    offsets = itertools.count()
    profiles, window = starting(state)
    out = []
    for start in range(0, len(values), size):
        routed = (
            kafka_records(spark, values[start : start + size], offsets)
            .transform(with_bronze_columns)
            .transform(t.with_parsed_event)
            .transform(t.with_rule_failures)
            .transform(lambda df: t.with_routed_records(df, KEY, VERSION))
            .select(
                *BRONZE_SCHEMA.fieldNames(),
                *[F.col(f"silver.{c}").alias(f"silver__{c}") for c in SILVER_BASE_COLUMNS],
                F.col("quarantine.pipeline_version").alias("quarantine__pipeline_version"),
            )
            .toArrow()
        )
        batch = plan.plan_batch(
            plan.batch_rows(routed), NO_STORED, plan.Attempt("new"), profiles, model,
            alert_threshold=THRESHOLD, write_bronze=True, pipeline_version=VERSION, now=NOW, recent=window,
        )  # fmt: skip
        profiles.update(batch.profiles)
        window.update(batch.recent)
        out.append(batch.silver)
    return pd.concat([rows for rows in out if len(rows)], ignore_index=True)


def per_order_rows(values: list[bytes], poll: int, model, state) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the per-order path makes of ``values`` from the profiles and recent orders in ``state``: its rows and
    its alerts."""
    profiles, window = starting(state)
    rows, alerts = [], []
    for start in range(0, len(values), poll):
        taken = []
        for offset, value in enumerate(values[start : start + poll], start):
            order = validate.checked(value, NOW)
            if order is not None:
                taken.append((order, ("fuzz", 0, offset, NOW)))
        done = step.score_step(step.order_rows(taken, KEY, VERSION, NOW), profiles, model, THRESHOLD, window)
        profiles.update(done.profiles)
        window.update(done.recent)
        rows.append(done.rows)
        alerts.append(done.alerts)
    alerts = [a for a in alerts if len(a)] or alerts[:1]
    return pd.concat([r for r in rows if len(r)], ignore_index=True), pd.concat(alerts, ignore_index=True)


COMPARED = [c for c in SILVER_SCHEMA.fieldNames() if c not in ("kafka_timestamp", "processed_time")]


def test_per_order_features_scores_and_alerts_equal_the_micro_batchs(spark, recorded):
    values, model, state = recorded
    batch = micro_batch_rows(spark, values, 500, model, state)
    fast, fast_alerts = per_order_rows(values, 7, model, state)

    assert len(fast) == len(batch) == len(values)
    assert (batch["prior_tx_count"] > 0).mean() > 0.5  # most customers have a history: the features say so
    assert (batch["device_orders_10m"] > 0).any() and (batch["customer_orders_1h"] > 0).any()  # some velocity
    key = ["kafka_offset"]
    assert_frame_equal(
        fast[COMPARED].sort_values(key).reset_index(drop=True).astype(object),
        batch[COMPARED].sort_values(key).reset_index(drop=True).astype(object),
        check_dtype=False,
    )
    alerted = set(batch.loc[batch["is_fraud"].eq(True), "event_id"])
    assert 0 < len(alerted) < len(values) / 10  # the model alerts on a few orders, as at the threshold
    assert set(fast_alerts["event_id"]) == alerted
    assert list(fast_alerts["alert_id"]) == [t.alert_id(e) for e in fast_alerts["event_id"]]


def test_the_email_hash_is_silvers_keyed_hash_of_the_normalised_address():
    assert step.email_hash("  Alice@Example.COM ", KEY) == t.hmac_sha256_hex_py("alice@example.com", KEY)
    assert step.email_hash("alice@example.com", KEY) != step.email_hash("alice@example.com", b"other-key")
    assert step.email_hash(None, KEY) is None
