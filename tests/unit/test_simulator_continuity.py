"""Live generation continues the backfilled shop: the same customers, realistic gaps, new ids (simulator.shop)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from ml.features import with_history_features
from simulator import shop
from simulator.customers import customer_index
from simulator.generator import TransactionSimulator

END = datetime(2026, 11, 25, 12, tzinfo=UTC)
BACKFILL_ORDERS = 20_000  # over 30 days, by two workers, from the test profile's 2,000 customers


@pytest.fixture(scope="module")
def backfill(settings):
    """A backfill as `ecom generate --backfill-days 30` runs it (customer i in worker i mod 2), and its record."""
    events, parts, sims = [], [], []
    for worker in range(2):
        sim = TransactionSimulator(
            settings.simulator, seed=17, shard=worker, shards=2, expected_orders=BACKFILL_ORDERS // 2
        )
        events += list(sim.backfill(BACKFILL_ORDERS // 2, days=30, end=END))
        parts.append(sim.state())
        sims.append(sim)
    events.sort(key=lambda g: g.event["event_time"])
    customers = {c.customer_id: c for sim in sims for c in sim.customers.known.values()}
    return events, shop.merge(parts), customers


@pytest.fixture(scope="module")
def slow_live(settings, backfill):
    """Three weeks of live orders at a rate the backfilled customers can mostly fill themselves."""
    _, record, _ = backfill
    sim = TransactionSimulator(settings.simulator, shop=record)
    return list(sim.events(3000, start=END + timedelta(hours=1), rate_per_s=0.0015)), sim


def _by_customer(events) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for g in events:
        out[g.event["customer_id"]].append(g.event)
    return out


def _features(events) -> pd.DataFrame:
    """ml.features' per-order history features (seconds since the previous order, new device) over the stream."""
    cols = ["event_id", "customer_id", "event_time", "amount", "device_id", "ip_country", "shipping_country",
            "payment_method"]  # fmt: skip
    frame = pd.DataFrame([{c: g.event[c] for c in cols} for g in events])
    frame["event_time"] = pd.to_datetime(frame["event_time"]).dt.tz_convert(None)
    return with_history_features(frame)


def test_a_customer_is_the_same_person_whatever_the_worker_layout(settings):
    one = TransactionSimulator(settings.simulator, seed=17, expected_orders=4000)
    two = TransactionSimulator(settings.simulator, seed=17, shard=1, shards=2, expected_orders=2000)
    list(one.backfill(4000, days=10, end=END))
    list(two.backfill(2000, days=10, end=END))
    shared = set(one.customers.known) & set(two.customers.known)
    assert len(shared) > 100 and all(i % 2 == 1 for i in two.customers.known)
    for i in shared:
        a, b = one.customers.known[i], two.customers.known[i]
        assert (a.persona, a.country, a.currency, a.email, a.devices[: a.own_devices], a.baseline_usd_cents) == (
            b.persona,
            b.country,
            b.currency,
            b.email,
            b.devices[: b.own_devices],
            b.baseline_usd_cents,
        )


def test_live_customers_are_the_backfilled_customers(backfill, slow_live):
    events, _, customers = backfill
    live, sim = slow_live
    before = _by_customer(events)
    returning = [g for g in live if g.event["customer_id"] in before]
    assert len(returning) > 0.5 * len(live)  # most live orders here come from the backfilled customers
    for g in returning:
        e = g.event
        history = before[e["customer_id"]]
        assert {h["currency"] for h in history} == {e["currency"]}
        assert {h["customer_email"] for h in history} == {e["customer_email"]}
        backfilled, now = customers[e["customer_id"]], sim.customers.known[customer_index(e["customer_id"])]
        assert (now.persona, now.country, now.baseline_usd_cents) == (
            backfilled.persona,
            backfilled.country,
            backfilled.baseline_usd_cents,
        )
        assert now.devices[: len(backfilled.devices)] == backfilled.devices  # plus any new phone since
        if g.kind == "normal":  # an ordinary order: from home, on one of the devices the customer has
            home = Counter(h["ip_country"] for h in history if h["ip_country"] == h["shipping_country"])
            assert e["ip_country"] == e["shipping_country"] == home.most_common(1)[0][0] == backfilled.country
            assert e["device_id"] in now.devices


def test_fraud_patterns_hit_continued_customers(backfill, slow_live):
    events, _, _ = backfill
    live, _ = slow_live
    before = _by_customer(events)
    share = sum(g.label is not None for g in live) / len(live)
    assert share == pytest.approx(0.02, abs=0.01)
    takeovers = [g.event for g in live if g.kind == "account_takeover" and g.event["customer_id"] in before]
    assert takeovers
    for e in takeovers:  # someone else in a known account: a device and an IP country it never used
        history = before[e["customer_id"]]
        assert e["device_id"] not in {h["device_id"] for h in history}
        assert e["ip_country"] not in {h["ip_country"] for h in history if h["ip_country"] == h["shipping_country"]}


def test_new_customers_get_ids_nobody_had(settings, backfill, slow_live):
    events, record, _ = backfill
    live, sim = slow_live
    backfilled = {g.event["customer_id"] for g in events}
    first_live = {g.event["customer_id"] for g in live} - backfilled
    assert first_live  # the shop still wins customers
    highest = max(customer_index(c) for c in backfilled)
    assert all(customer_index(c) > highest for c in first_live)
    # a second live run continues the first: its new customers are new again
    again = TransactionSimulator(settings.simulator, shop=sim.state())
    later = {g.event["customer_id"] for g in again.events(500, start=END + timedelta(days=40), rate_per_s=1.0)}
    newest = later - backfilled - {g.event["customer_id"] for g in live}
    assert newest and all(customer_index(c) > max(customer_index(c) for c in first_live) for c in newest)


def test_at_the_demo_rate_customers_come_back_days_apart_not_seconds(settings, backfill):
    events, record, _ = backfill
    rate = 100.0
    live = list(TransactionSimulator(settings.simulator, shop=record).events(30_000, start=END, rate_per_s=rate))
    feats = _features(events + live)
    back, now = feats.iloc[: len(events)], feats.iloc[len(events) :]
    gaps = now["seconds_since_last_order"].dropna()
    assert len(gaps) > 100
    assert gaps.median() > 6 * 3600  # a returning customer's previous order is hours to days ago
    recent = (now["seconds_since_last_order"] < 60).mean()
    assert recent < 0.01  # the first live run of the old simulator: 92 % of orders within a minute of the last one
    assert recent == pytest.approx((back["seconds_since_last_order"] < 60).mean(), abs=0.005)
    per_customer = Counter(g.event["customer_id"] for g in live)
    assert statistics.quantiles(per_customer.values(), n=100)[-1] <= 2  # 99 % of customers order once or twice
    # a new device on a customer with history (what the fraud model weighs) is no more common than in the backfill
    known_new_device = lambda f: (f["is_new_device"] & (f["prior_tx_count"] > 0)).mean()  # noqa: E731
    assert known_new_device(now) <= known_new_device(back) + 0.01


def test_a_recorded_shop_continues_event_for_event(settings, backfill, tmp_path):
    _, record, _ = backfill
    path = tmp_path / "shop.json"
    shop.save(path, record)
    loaded = shop.load(path)
    assert (loaded.seed, loaded.next_index, loaded.customers) == (record.seed, record.next_index, record.customers)

    def live(state):
        return [g.event for g in TransactionSimulator(settings.simulator, shop=state).events(2000, start=END)]

    first = live(loaded)
    assert first == live(record)  # from the file or from memory: the same orders
    after = TransactionSimulator(settings.simulator, shop=record)
    list(after.events(10, start=END))
    assert after.state().live_runs == record.live_runs + 1
    second = live(after.state())  # the next run draws its own stream: no event id comes back
    assert not {e["event_id"] for e in first} & {e["event_id"] for e in second}


def test_a_shop_is_only_continued_as_recorded(settings, backfill, tmp_path):
    _, record, _ = backfill
    where = tmp_path / "shop.json"
    assert shop.to_continue(None, seed=None, products=200, where=where) is None
    assert shop.to_continue(record, seed=None, products=200, where=where) is record
    assert shop.to_continue(record, seed=record.seed, products=200, where=where) is record
    with pytest.raises(shop.ShopError, match="--fresh"):
        shop.to_continue(record, seed=record.seed + 1, products=200, where=where)
    with pytest.raises(shop.ShopError, match="200 products"):
        shop.to_continue(record, seed=None, products=500, where=where)
    with pytest.raises(ValueError, match="seed"):
        TransactionSimulator(settings.simulator, seed=record.seed + 1, shop=record)


def test_two_runs_never_generate_one_shop_at_once(tmp_path):
    path = tmp_path / "shop.json"
    with shop.hold(path), pytest.raises(shop.ShopError, match="another `ecom generate`"), shop.hold(path):
        pass
    with shop.hold(path):  # released when the first run ends
        pass
