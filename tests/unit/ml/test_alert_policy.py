"""The alert policy: a fixed share of orders (budget), or the share whose training precision reaches a target."""

import numpy as np
import pandas as pd
import pytest

from ecom.settings import load_settings
from ml.model import AlertPolicy, ScoreCalibration
from ml.train import fit_isolation_forest


def scored(n: int, fraud_rate: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores where fraud tends to score high: labels and scores of ``n`` orders."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < fraud_rate
    return rng.normal(0, 1, n) + 3.0 * y, y


def precision_at(raw: np.ndarray, y: np.ndarray, rate: float) -> float:
    top = np.argsort(-raw, kind="stable")[: int(round(rate * len(raw)))]
    return float(y[top].mean())


def test_the_budget_alerts_the_same_share_whatever_the_fraud_rate():
    policy = AlertPolicy("budget", alert_rate=0.02)
    for rate in (0.005, 0.02, 0.05):
        raw, y = scored(20_000, rate)
        assert policy.rate(raw, y) == (0.02, "budget")


@pytest.mark.parametrize("fraud_rate", [0.005, 0.02, 0.05])
def test_the_precision_policy_follows_the_shops_fraud_rate(fraud_rate):
    raw, y = scored(40_000, fraud_rate)
    rate, how = AlertPolicy("precision", target_precision=0.5).rate(raw, y)
    assert how == "precision 0.5"
    assert precision_at(raw, y, rate) >= 0.5
    assert precision_at(raw, y, rate + 0.002) < 0.5 or rate == AlertPolicy.MAX_RATE  # the largest such share
    assert fraud_rate / 3 < rate < fraud_rate * 2  # far from a fixed 2 % at 0.5 % and at 5 %


def test_the_precision_policy_needs_labels_and_falls_back_to_the_budget():
    raw, y = scored(5_000, 0.002)  # about 10 labelled frauds
    policy = AlertPolicy("precision", alert_rate=0.02, min_labelled=20)
    assert policy.rate(raw, y)[0] == 0.02 and policy.rate(raw, y)[1].startswith("budget")
    assert policy.rate(raw, None)[0] == 0.02


def test_the_score_map_puts_the_chosen_share_at_the_threshold():
    raw, y = scored(40_000, 0.05)
    rate, _ = AlertPolicy("precision", target_precision=0.6).rate(raw, y)
    calibration = ScoreCalibration.fit(raw, rate, 80.0)
    assert abs((calibration(raw) >= 80).mean() - rate) < 0.002


def test_training_with_the_precision_policy_records_what_it_chose():
    from simulator.generator import TransactionSimulator

    settings = load_settings("test")
    sim = TransactionSimulator(settings.simulator.model_copy(update={"fraud_rate": 0.05}), seed=4)
    generated = list(sim.backfill(6000, days=20))
    frame = pd.DataFrame([g.event for g in generated]).assign(
        event_time=lambda d: pd.to_datetime(d["event_time"], utc=True).dt.tz_convert(None),
        amount=lambda d: d["amount"].astype(float),
        customer_email_hash=None,
    )
    from ml.features import with_history_features

    train = with_history_features(frame).assign(label_is_fraud=[g.label is not None for g in generated])
    fraud = settings.fraud.model_copy(update={"alert_policy": "precision", "target_precision": 0.5})
    scorer = fit_isolation_forest(train, fraud)
    assert scorer.metadata["alert_policy"] == "precision 0.5"
    assert scorer.calibration.alert_rate != fraud.alert_rate
    budget = fit_isolation_forest(train, settings.fraud)
    assert budget.calibration.alert_rate == settings.fraud.alert_rate and budget.metadata["alert_policy"] == "budget"
