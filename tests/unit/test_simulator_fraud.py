"""Fraud injection: share, patterns, labels, hard negatives, and that the patterns show in the model's features."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest

from ecom.schemas import EVENT_FIELDS
from simulator.catalogue import FX_PER_USD
from simulator.fraud import HARD_NEGATIVES, PATTERNS, FraudInjector
from simulator.generator import TransactionSimulator

END = datetime(2026, 11, 25, tzinfo=UTC)
LABEL_FIELDS = ("event_id", "transaction_id", "is_fraud", "fraud_pattern", "label_time")


@pytest.fixture(scope="module")
def run(settings):
    """40,000 orders over 60 days at the default 2 % fraud rate."""
    sim = TransactionSimulator(settings.simulator, seed=21, expected_orders=40_000)
    return list(sim.backfill(40_000, days=60, end=END))


@pytest.fixture(scope="module")
def features(run):
    """The fraud model's per-order features, computed from each customer's history so far."""
    seen_devices: dict[str, set] = defaultdict(set)
    seen_ips: dict[str, set] = defaultdict(set)
    spent: dict[str, list[float]] = defaultdict(list)
    last: dict[str, datetime] = {}
    rows = []
    for g in run:
        e = g.event
        cid = e["customer_id"]
        t = datetime.fromisoformat(e["event_time"].replace("Z", "+00:00"))
        usd = e["amount"] / FX_PER_USD[e["currency"]]
        history = spent[cid]
        rows.append(
            {
                "kind": g.kind,
                "is_fraud": g.label is not None,
                "usd": usd,
                "ratio": usd / statistics.mean(history) if history else None,
                "new_device": e["device_id"] not in seen_devices[cid],
                "new_ip": bool(history) and e["ip_country"] not in seen_ips[cid],
                "mismatch": e["ip_country"] != e["shipping_country"],
                "since_s": (t - last[cid]).total_seconds() if cid in last else None,
                "hour": t.hour,
            }
        )
        seen_devices[cid].add(e["device_id"])
        seen_ips[cid].add(e["ip_country"])
        history.append(usd)
        last[cid] = t
    return rows


def _share(rows, key) -> float:
    return sum(bool(r[key]) for r in rows) / len(rows)


def test_fraud_share_is_the_configured_rate(run):
    share = sum(g.label is not None for g in run) / len(run)
    assert share == pytest.approx(0.02, abs=0.003)


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_fraud_share_follows_other_rates(settings, rate):
    sim = TransactionSimulator(settings.simulator.model_copy(update={"fraud_rate": rate}), seed=4)
    events = list(sim.backfill(20_000, days=20, end=END))
    share = sum(g.label is not None for g in events) / len(events)
    assert share == pytest.approx(rate, rel=0.12, abs=0.0)


def test_every_pattern_and_every_hard_negative_is_present(run):
    kinds = Counter(g.kind for g in run)
    labelled = Counter(g.label["fraud_pattern"] for g in run if g.label)
    for pattern in PATTERNS:
        assert labelled[pattern] >= 100, (pattern, labelled)
        assert kinds[pattern] == labelled[pattern]
    for kind in (*HARD_NEGATIVES, "night_owl"):
        assert kinds[kind] >= 50, (kind, kinds)


def test_pattern_mix_follows_the_configured_shares(settings):
    mix = {"account_takeover": 0.0, "card_testing": 0.0, "amount_spike": 1.0, "geo_mismatch": 0.0}
    sim = TransactionSimulator(settings.simulator.model_copy(update={"fraud_patterns": mix}), seed=2)
    labels = [g.label for g in sim.backfill(10_000, days=10, end=END) if g.label]
    assert labels and {lbl["fraud_pattern"] for lbl in labels} == {"amount_spike"}


def test_unknown_pattern_is_refused():
    import random

    with pytest.raises(ValueError, match="unknown fraud patterns"):
        FraudInjector(random.Random(1), 0.02, {"phishing": 1.0})


def test_labels_are_only_for_fraud_and_carry_no_hint_in_the_event(run):
    for g in run:
        assert tuple(g.event) == EVENT_FIELDS  # nothing extra travels with the order
        if g.label is None:
            assert g.kind not in PATTERNS
            continue
        assert tuple(g.label) == LABEL_FIELDS
        assert g.label["event_id"] == g.event["event_id"]
        assert g.label["transaction_id"] == g.event["transaction_id"]
        assert g.label["is_fraud"] is True
        assert g.label["fraud_pattern"] == g.kind
        assert g.label["label_time"] >= g.event["event_time"]
    # device ids look alike whoever uses them
    shapes = {(len(g.event["device_id"]), g.event["device_id"][0]) for g in run}
    assert shapes == {(13, "D")}


def test_label_time_is_delayed_by_the_configured_delay(settings):
    sim = TransactionSimulator(
        settings.simulator.model_copy(update={"label_delay_s": 86_400.0, "fraud_rate": 0.2}), seed=6
    )
    labelled = [g for g in sim.backfill(500, days=5, end=END) if g.label]
    assert labelled
    for g in labelled:
        event_t = datetime.fromisoformat(g.event["event_time"].replace("Z", "+00:00"))
        label_t = datetime.fromisoformat(g.label["label_time"].replace("Z", "+00:00"))
        assert (label_t - event_t).total_seconds() == 86_400.0


def test_patterns_show_in_the_model_features(features):
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for row in features:
        by_kind[row["kind"]].append(row)
    normal = by_kind["normal"]
    ato = by_kind["account_takeover"]
    assert _share(ato, "new_device") == 1.0
    assert _share(ato, "new_ip") > 0.9
    assert statistics.median(r["ratio"] for r in ato if r["ratio"]) > 2.5
    card = by_kind["card_testing"]
    assert statistics.median(r["usd"] for r in card) < 20
    assert statistics.median(r["since_s"] for r in card if r["since_s"] is not None) < 600
    assert statistics.median(r["since_s"] for r in normal if r["since_s"] is not None) > 3600
    spike = by_kind["amount_spike"]
    assert statistics.median(r["ratio"] for r in spike if r["ratio"]) > 5
    assert _share(by_kind["geo_mismatch"], "mismatch") == 1.0
    assert _share(normal, "mismatch") < 0.01
    # account takeovers lean towards the night
    night = sum(r["hour"] < 6 for r in ato) / len(ato)
    assert night > 2 * sum(r["hour"] < 6 for r in normal) / len(normal)


def test_hard_negatives_overlap_the_fraud_signals(features):
    """Legitimate orders share every single signal, so no one rule separates fraud."""
    legit = [r for r in features if not r["is_fraud"]]
    fraud = [r for r in features if r["is_fraud"]]
    for signal in ("new_device", "new_ip", "mismatch"):
        flagged = [r for r in features if r[signal] and r["since_s"] is not None]
        precision = sum(r["is_fraud"] for r in flagged) / len(flagged)
        assert precision < 0.7, (signal, precision)
    high = [r for r in features if r["ratio"] and r["ratio"] > 4]
    assert 0.1 < sum(r["is_fraud"] for r in high) / len(high) < 0.8
    assert any(r["kind"] == "big_purchase" and r["ratio"] > 5 for r in legit)
    assert any(r["kind"] == "travel" and r["new_ip"] for r in legit)
    assert len(fraud) > 0
