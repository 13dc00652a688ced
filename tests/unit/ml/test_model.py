"""Fraud scorer: monotone bounded score map, anomalous orders above normal ones, readable reasons, no labels as input."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline

from ml.features import FEATURE_COLUMNS, VELOCITY_COLUMNS
from ml.model import (
    FIRST_INPUT_COLUMNS,
    INPUT_COLUMNS,
    RECENT_BURST,
    FraudFeatures,
    ScoreCalibration,
    fit_calibrated,
    model_input,
)
from ml.scoring import score_frame
from ml.train import fit_isolation_forest


def normal_orders(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Customers buying near their own average, at home, from known devices, days apart, mostly in daytime."""
    rng = np.random.default_rng(seed)
    avg = np.exp(rng.normal(4.0, 0.6, n))
    amount = avg * np.exp(rng.normal(0.0, 0.35, n))
    prior = rng.integers(1, 30, n)
    pdf = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_time": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) * 60, unit="s"),
            "amount_value": amount,
            "hour_of_day": rng.choice(np.arange(7, 23), n),
            "day_of_week": rng.integers(0, 7, n),
            "prior_tx_count": prior,
            "prior_avg_amount": avg,
            "amount_to_avg_ratio": amount / avg,
            "amount_zscore": rng.normal(0, 1, n),
            "seconds_since_last_order": np.exp(rng.normal(np.log(7 * 86400), 1.0, n)),
            "is_new_device": rng.random(n) < 0.03,
            "is_new_ip_country": rng.random(n) < 0.01,
            "is_country_mismatch": rng.random(n) < 0.02,
            "currency": "USD",
            "ip_country": "US",
            "shipping_country": "US",
        }
    )
    first = rng.random(n) < 0.05  # first orders: no history at all
    pdf.loc[first, ["prior_avg_amount", "amount_to_avg_ratio", "amount_zscore", "seconds_since_last_order"]] = np.nan
    pdf.loc[first, ["prior_tx_count"]] = 0
    pdf.loc[first, ["is_new_device", "is_new_ip_country"]] = True
    pdf["label_is_fraud"] = False
    pdf["label_pattern"] = None
    return pdf


def one_order(**changes) -> pd.DataFrame:
    row = {
        "amount_value": 50.0, "hour_of_day": 14, "day_of_week": 2, "prior_tx_count": 12, "prior_avg_amount": 50.0,
        "amount_to_avg_ratio": 1.0, "amount_zscore": 0.0, "seconds_since_last_order": 6 * 86400.0,
        "is_new_device": False, "is_new_ip_country": False, "is_country_mismatch": False,
        "currency": "USD", "ip_country": "US", "shipping_country": "US",
    }  # fmt: skip
    row.update(changes)
    return pd.DataFrame([row])


ANOMALOUS = {"amount_value": 1000.0, "amount_to_avg_ratio": 20.0, "amount_zscore": 40.0, "is_new_device": True,
             "is_new_ip_country": True, "is_country_mismatch": True, "ip_country": "NG", "hour_of_day": 3}  # fmt: skip


@pytest.fixture(scope="module")
def scorer(settings):
    return fit_isolation_forest(normal_orders(), settings.fraud)


def test_score_map_is_monotone_and_within_0_100():
    rng = np.random.default_rng(7)
    for trial in range(20):
        train = rng.standard_normal(2000) * rng.uniform(0.01, 10) + rng.uniform(-5, 5)
        if trial % 3 == 0:
            train = np.round(train, 1)  # many ties
        cal = ScoreCalibration.fit(train, alert_rate=rng.uniform(0.005, 0.2), threshold=80)
        probe = np.sort(np.concatenate([rng.standard_normal(5000) * 20, train, [-1e12, 1e12]]))
        scores = cal(probe)
        assert np.all(np.diff(scores) >= 0)
        assert scores.min() >= 0 and scores.max() <= 100
        assert cal(np.array([-1e12]))[0] == 0 and cal(np.array([1e12]))[0] == 100


def test_threshold_sits_at_the_alert_rate_of_the_training_scores():
    raw = np.random.default_rng(3).gamma(2.0, 1.0, 50_000)
    cal = ScoreCalibration.fit(raw, alert_rate=0.02, threshold=80)
    assert (cal(raw) >= 80).mean() == pytest.approx(0.02, abs=0.002)
    assert (cal(raw) >= 40).mean() == pytest.approx(0.51, abs=0.01)  # linear below the threshold: 40 = median-ish


def test_known_anomalous_order_scores_above_a_normal_one(scorer):
    normal = scorer.score(one_order())
    anomalous = scorer.score(one_order(**ANOMALOUS))
    assert anomalous["fraud_score"].iloc[0] > normal["fraud_score"].iloc[0]
    assert anomalous["fraud_score"].iloc[0] >= 80 > normal["fraud_score"].iloc[0]
    assert normal["fraud_reasons"].iloc[0] == []


def test_reasons_mention_the_amount_ratio_of_an_amount_spike(scorer):
    spike = scorer.score(one_order(amount_value=700.0, amount_to_avg_ratio=14.0, amount_zscore=30.0))
    reasons = spike["fraud_reasons"].iloc[0]
    assert spike["fraud_score"].iloc[0] >= scorer.reasons_min_score
    assert any("14x the customer's average (50.00 USD over 12 orders)" in r for r in reasons), reasons
    takeover = scorer.score(one_order(**ANOMALOUS))["fraud_reasons"].iloc[0]
    assert any("new device and an IP in NG" in r and "03:00" in r for r in takeover), takeover
    assert len(takeover) <= scorer.max_reasons


def test_scores_nulls_first_orders_and_empty_frames(scorer):
    first = one_order(prior_tx_count=0, prior_avg_amount=None, amount_to_avg_ratio=None, amount_zscore=None,
                      seconds_since_last_order=None, is_new_device=None, currency=None)  # fmt: skip
    out = scorer.score(pd.concat([first.astype(object), one_order().astype(object)], ignore_index=True))
    assert out["fraud_score"].between(0, 100).all() and out["fraud_score"].notna().all()
    empty = scorer.score(one_order().iloc[:0])
    assert list(empty.columns) == ["fraud_score", "fraud_reasons"] and empty.empty


def test_labels_are_never_a_model_input(settings):
    """The input has no label column, and scrambling the training labels changes no score."""
    assert not {"label_is_fraud", "label_pattern", "is_fraud", "fraud_pattern"} & set(INPUT_COLUMNS)
    assert set(FEATURE_COLUMNS) <= set(INPUT_COLUMNS)
    train = normal_orders(1500, seed=1)
    scrambled = train.assign(label_is_fraud=np.random.default_rng(0).random(len(train)) < 0.5, label_pattern="x")
    probe = model_input(normal_orders(200, seed=2))
    a = fit_isolation_forest(train, settings.fraud).score(probe)["fraud_score"]
    b = fit_isolation_forest(scrambled, settings.fraud).score(probe)["fraud_score"]
    pd.testing.assert_series_equal(a, b)


def test_scorer_pickles(scorer):
    again = pickle.loads(pickle.dumps(scorer))
    probe = one_order(**ANOMALOUS)
    pd.testing.assert_frame_equal(again.score(probe), scorer.score(probe))


# The model inputs of the default model before the velocity features (as such champions were pickled).
FIRST_MODEL_FEATURES = (
    "log_amount_rel", "log_amount_ratio", "log_prior_tx_count", "log10_seconds_since_last",
    "is_new_device_known_customer", "is_new_ip_country_known_customer", "is_country_mismatch", "hour_sin", "hour_cos",
)  # fmt: skip


def with_velocity(pdf: pd.DataFrame, seed: int = 0, burst: bool = False) -> pd.DataFrame:
    """Velocity columns as silver has them: mostly no recent order; ``burst``: nine orders in the last minutes."""
    rng = np.random.default_rng(seed)
    recent = np.full(len(pdf), 9) if burst else rng.poisson(0.05, len(pdf))
    return pdf.assign(customer_orders_10m=recent, customer_orders_1h=recent, device_orders_10m=recent,
                      device_orders_1h=recent, device_payment_methods_1h=1)  # fmt: skip


def test_a_model_fitted_before_the_velocity_features_still_scores_todays_rows():
    """A champion pickled before ``input_columns`` existed reads the columns it was fitted on: silver rows with the
    velocity columns score as before, whatever those hold."""
    pipeline = Pipeline([("features", FraudFeatures(FIRST_MODEL_FEATURES)),
                         ("model", IsolationForest(n_estimators=50, random_state=0))])  # fmt: skip
    old = fit_calibrated(pipeline, "isolation_forest", model_input(normal_orders(), FIRST_INPUT_COLUMNS),
                         alert_rate=0.02, threshold=80.0)  # fmt: skip
    assert old.input_columns == FIRST_INPUT_COLUMNS
    del old.__dict__["input_columns"]  # a scorer pickled by a version without the field...
    del old.reference.rates[RECENT_BURST]  # ...and its reasons' reference
    old = pickle.loads(pickle.dumps(old))
    assert "input_columns" not in old.__dict__ and old.input_columns == FIRST_INPUT_COLUMNS

    rows = with_velocity(normal_orders(300, seed=5))
    quiet = score_frame(rows, old, "1", 80.0)
    bursts = score_frame(with_velocity(rows, burst=True), old, "1", 80.0)
    assert quiet["fraud_score"].between(0, 100).all() and quiet["fraud_score"].notna().all()
    pd.testing.assert_series_equal(bursts["fraud_score"], quiet["fraud_score"])
    pd.testing.assert_series_equal(bursts["fraud_reasons"], quiet["fraud_reasons"])
    legacy = score_frame(rows.drop(columns=list(VELOCITY_COLUMNS)), old, "1", 80.0)  # rows written before them
    pd.testing.assert_series_equal(legacy["fraud_score"], quiet["fraud_score"])


def test_a_model_fitted_with_the_velocity_features_reads_them(settings):
    new = fit_isolation_forest(with_velocity(normal_orders()), settings.fraud)
    assert new.input_columns == INPUT_COLUMNS
    rows = with_velocity(normal_orders(300, seed=5))
    quiet = score_frame(rows, new, "1", 80.0)["fraud_score"]
    bursts = score_frame(with_velocity(rows, burst=True), new, "1", 80.0)
    assert (bursts["fraud_score"] > quiet).mean() > 0.9
    worded = bursts.loc[bursts["fraud_score"] >= new.reasons_min_score, "fraud_reasons"]
    assert len(worded) and all("9 orders by this customer in the 10 minutes before" in r for r in worded)


def test_the_model_inputs_are_the_listed_features_in_order_as_derived():
    """Unique features (every model fitted so far): exactly the derived columns, so a pickled model reads what
    it was fitted on."""
    orders = normal_orders(200, seed=3)
    features = FraudFeatures(FIRST_MODEL_FEATURES).fit(normal_orders())
    pd.testing.assert_frame_equal(features.transform(orders), features.derive(orders)[list(FIRST_MODEL_FEATURES)])


def test_a_feature_listed_twice_is_a_second_column_and_only_the_upper_side_of_the_ratio_counts():
    orders = normal_orders(200, seed=3)
    listed = ("log_amount_rel", "log_amount_above_avg", "log_amount_rel", "log_amount_rel")
    features = FraudFeatures(listed).fit(normal_orders())
    out = features.transform(orders)
    assert list(out.columns) == ["log_amount_rel", "log_amount_above_avg", "log_amount_rel#2", "log_amount_rel#3"]
    pd.testing.assert_series_equal(out["log_amount_rel#3"], out["log_amount_rel"], check_names=False)
    ratio = features.derive(orders)["log_amount_ratio"]
    assert (ratio < 0).any() and (ratio > 0).any()
    pd.testing.assert_series_equal(out["log_amount_above_avg"], ratio.clip(lower=0.0), check_names=False)


def test_a_forest_on_repeated_features_fits_scores_and_pickles(settings):
    fraud = settings.fraud.model_copy(update={"model_features": ["log_amount_rel", "log_amount_rel", "hour_sin"]})
    scorer = fit_isolation_forest(with_velocity(normal_orders()), fraud)
    again = pickle.loads(pickle.dumps(scorer))
    spike = one_order(amount_value=5000.0, amount_to_avg_ratio=100.0)
    orders = with_velocity(pd.concat([one_order(), spike], ignore_index=True))
    scores = score_frame(orders, again, "1", 80.0)["fraud_score"]
    assert scores.iloc[1] > scores.iloc[0]
