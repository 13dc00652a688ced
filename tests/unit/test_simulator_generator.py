"""Simulator behaviour: reproducibility, customers, baskets, catalogue and the public API."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest

from simulator.catalogue import CATEGORIES, Catalogue
from simulator.generator import Generated, TransactionSimulator, format_event_time

END = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.fixture(scope="module")
def history(settings):
    """30,000 orders over 90 days from the test profile's 2,000 customers and 200 products."""
    sim = TransactionSimulator(settings.simulator, seed=3, expected_orders=30_000)
    return sim, list(sim.backfill(30_000, days=90, end=END))


def test_format_event_time_is_utc_with_milliseconds():
    ts = datetime(2026, 11, 25, 19, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert format_event_time(ts) == "2026-11-25T18:00:00.123Z"
    assert format_event_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"


def test_same_seed_gives_the_same_events_event_for_event(settings):
    a = list(TransactionSimulator(settings.simulator, seed=99).backfill(3000, days=10, end=END))
    b = list(TransactionSimulator(settings.simulator, seed=99).backfill(3000, days=10, end=END))
    assert a == b
    assert any(g.label for g in a)
    c = list(TransactionSimulator(settings.simulator, seed=100).backfill(3000, days=10, end=END))
    assert [g.event["event_id"] for g in c] != [g.event["event_id"] for g in a]


def test_seed_from_settings_is_used_when_none_is_given(settings):
    seeded = settings.simulator.model_copy(update={"seed": 5})
    start = datetime(2026, 1, 1, tzinfo=UTC)
    a = [g.event for g in TransactionSimulator(seeded).events(200, start=start, rate_per_s=10)]
    b = [g.event for g in TransactionSimulator(seeded).events(200, start=start, rate_per_s=10)]
    assert a == b


def test_events_keeps_the_walking_skeleton_api(settings):
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    out = list(TransactionSimulator(settings.simulator, seed=1).events(5, start=start, rate_per_s=4))
    assert all(isinstance(g, Generated) for g in out)
    assert [g.event["event_time"] for g in out] == [
        "2026-03-01T12:00:00.000Z",
        "2026-03-01T12:00:00.250Z",
        "2026-03-01T12:00:00.500Z",
        "2026-03-01T12:00:00.750Z",
        "2026-03-01T12:00:01.000Z",
    ]


def test_shards_split_the_customers_without_overlap(settings):
    ids = []
    for shard in range(2):
        sim = TransactionSimulator(settings.simulator, seed=8, shard=shard, shards=2)
        ids.append({g.event["customer_id"] for g in sim.backfill(2000, days=5, end=END)})
    assert ids[0] and ids[1]
    assert not ids[0] & ids[1]
    assert all(int(c[1:]) % 2 == 0 for c in ids[0]) and all(int(c[1:]) % 2 == 1 for c in ids[1])


def test_repeat_buyers_one_off_buyers_and_multi_line_baskets_exist(history):
    _, events = history
    orders = Counter(g.event["customer_id"] for g in events)
    assert sum(1 for n in orders.values() if n >= 5) > 0.2 * len(orders)
    assert sum(1 for n in orders.values() if n == 1) > 0.1 * len(orders)
    lines = [len(g.event["items"]) for g in events]
    assert 0.2 < sum(n > 1 for n in lines) / len(lines) < 0.8
    assert any(i["quantity"] > 1 for g in events for i in g.event["items"])


def test_personas_shape_frequency_and_spend(history):
    sim, events = history
    by_id = {c.customer_id: c for c in sim.customers.known.values()}
    orders = Counter(g.event["customer_id"] for g in events)
    per_persona: dict[str, list[int]] = {}
    for cid, n in orders.items():
        per_persona.setdefault(by_id[cid].persona.name, []).append(n)
    assert statistics.mean(per_persona["frequent"]) > 3 * statistics.mean(per_persona["occasional"])
    # one-off customers order once, unless an account takeover or card test hit them
    assert statistics.median(per_persona["one_off"]) == 1
    big = [c.baseline_usd_cents for c in by_id.values() if c.persona.name == "big_spender"]
    usual = [c.baseline_usd_cents for c in by_id.values() if c.persona.name == "occasional"]
    assert statistics.median(big) > 3 * statistics.median(usual)


def test_first_orders_spread_over_the_window_so_cohorts_form(history):
    _, events = history
    first: dict[str, datetime] = {}
    for g in events:
        first.setdefault(g.event["customer_id"], datetime.fromisoformat(g.event["event_time"].replace("Z", "+00:00")))
    start = END - timedelta(days=90)
    per_month = Counter(min(2, (t - start).days // 30) for t in first.values())
    assert sorted(per_month) == [0, 1, 2]
    assert min(per_month.values()) > 0.2 * len(first)


def test_popularity_is_skewed_with_a_long_tail(history):
    _, events = history
    sold = Counter(i["product_id"] for g in events for i in g.event["items"])
    ranked = [n for _, n in sold.most_common()]
    top = sum(ranked[: len(ranked) // 20])
    assert top > 0.25 * sum(ranked)
    assert len(sold) > 0.8 * 200  # the tail still sells


def test_companion_products_are_really_bought_together(history):
    sim, events = history
    cat = sim.catalogue
    index = {p.product_id: i for i, p in enumerate(cat.products)}
    multi = [[index[i["product_id"]] for i in g.event["items"]] for g in events if len(g.event["items"]) > 1]
    with_pair = sum(any(b in cat.companions[a] for a in basket for b in basket) for basket in multi)
    assert with_pair > 0.4 * len(multi)


def test_catalogue_has_ten_categories_with_typical_prices():
    cat = Catalogue(500, seed=1)
    assert set(CATEGORIES) >= {
        "electronics",
        "fashion",
        "home",
        "beauty",
        "sports",
        "books",
        "toys",
        "grocery",
        "garden",
        "automotive",
    }
    assert {p.category for p in cat.products} == set(CATEGORIES)

    def median(category: str) -> float:
        return statistics.median(p.price_usd_cents for p in cat.products if p.category == category)

    assert median("electronics") > 5 * median("grocery")
    assert median("books") < median("home")
    assert all(p.price_usd_cents % 100 in (49, 99) for p in cat.products)


def test_catalogue_needs_one_product_per_category():
    with pytest.raises(ValueError, match="at least 10 products"):
        Catalogue(5, seed=1)


def test_currency_follows_the_customer_and_jpy_has_no_minor_units(history):
    _, events = history
    currency: dict[str, str] = {}
    for g in events:
        assert currency.setdefault(g.event["customer_id"], g.event["currency"]) == g.event["currency"]
        if g.event["currency"] == "JPY":
            assert all(float(i["unit_price"]).is_integer() for i in g.event["items"])
    assert len(set(currency.values())) >= 5
