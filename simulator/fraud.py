"""Fraud injection and hard negatives: how risky orders are shaped.

Four fraud patterns (account takeover, card testing bursts, amount spikes,
shipping/IP country mismatch) and four kinds of legitimate orders that look
risky (big purchases, travel, a new phone, gifts shipped abroad). Patterns
show up in the fraud model's features (amount, hour, deviation from the
customer's baseline, new device, new IP country, time since last order) but
overlap with the hard negatives, so the model has to work. Only the pattern
name travels, as a label; the order event itself carries no hint.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from simulator.customers import COUNTRY_CODES, RISKY_COUNTRIES, TRAVEL_COUNTRIES, Customer, new_device_id

PATTERNS = ("account_takeover", "card_testing", "amount_spike", "geo_mismatch")
HARD_NEGATIVES = {"big_purchase": 0.3, "travel": 0.3, "new_device": 0.25, "gift_abroad": 0.15}
CARD_TEST_BURST = (3, 9)  # orders per card-testing burst (inclusive)
CARD_TEST_SPACING_S = (5.0, 60.0)  # seconds between a burst's orders, at least (uniform)
ACCOUNT_MIN_AGE = timedelta(hours=1)  # takeovers, card tests and mismatches hit accounts at least this old
FRAUD_PAYMENT = (("card", 0.7), ("gift_card", 0.2), ("paypal", 0.1))


@dataclass(slots=True)
class Draft:
    """An order before it becomes an event: who, what, from where."""

    customer: Customer
    lines: list[tuple[int, int]]
    device_id: str
    ip_country: str
    shipping_country: str
    payment_method: str
    channel: str
    kind: str = "normal"
    fraud_pattern: str | None = None


def foreign_country(rng: random.Random, home: str, choices: tuple[str, ...] = COUNTRY_CODES + TRAVEL_COUNTRIES) -> str:
    """A country other than ``home``."""
    while True:
        country = choices[int(rng.random() * len(choices))]
        if country != home:
            return country


def fraud_payment(rng: random.Random) -> str:
    return rng.choices([p for p, _ in FRAUD_PAYMENT], weights=[w for _, w in FRAUD_PAYMENT])[0]


class FraudInjector:
    """Decides which orders are fraud and which pattern, keeping the share at ``fraud_rate``.

    ``fraud_rate`` is a share of *events*; card testing comes in bursts, so the
    probability of starting an incident is solved from the expected burst
    length. Account takeovers lean towards night hours.
    """

    def __init__(self, rng: random.Random, fraud_rate: float, pattern_shares: dict[str, float]):
        unknown = set(pattern_shares) - set(PATTERNS)
        if unknown:
            raise ValueError(f"unknown fraud patterns {sorted(unknown)}; known: {', '.join(PATTERNS)}")
        total = sum(pattern_shares.values())
        self.rng = rng
        self.shares = (
            {p: pattern_shares.get(p, 0.0) / total for p in PATTERNS} if total else dict.fromkeys(PATTERNS, 0.0)
        )
        burst = (CARD_TEST_BURST[0] + CARD_TEST_BURST[1]) / 2
        lengths = {p: burst if p == "card_testing" else 1.0 for p in PATTERNS}
        z = sum(self.shares[p] / lengths[p] for p in PATTERNS)
        self.incident_weights = {p: (self.shares[p] / lengths[p]) / z for p in PATTERNS} if z else self.shares
        mean_len = 1.0 / z if z else 1.0
        extra = self.incident_weights["card_testing"] * (burst - 1)
        # share f of events: q * E[L] / (1 + q * extra) = f
        self.incident_p = fraud_rate / (mean_len - fraud_rate * extra) if fraud_rate > 0 else 0.0
        self.pending: list[tuple[datetime, int, dict]] = []  # open card-testing bursts, next one due first (heap)
        self._opened = 0

    def due_burst(self, when: datetime) -> dict | None:
        """An open card-testing burst whose next order is due by ``when`` (half the time: they interleave)."""
        if self.pending and self.pending[0][0] <= when and self.rng.random() < 0.5:
            return heapq.heappop(self.pending)[2]
        return None

    def keep_open(self, burst: dict) -> None:
        """After one of its orders: the burst waits for its next one, if any is left."""
        if burst["left"] > 0:
            self._opened += 1
            heapq.heappush(self.pending, (burst["next_at"], self._opened, burst))

    def start_incident(self) -> bool:
        return self.rng.random() < self.incident_p

    def choose(self, night: bool) -> str:
        w = dict(self.incident_weights)
        w["account_takeover"] *= 3.0 if night else 0.8
        return self.rng.choices(PATTERNS, weights=[w[p] for p in PATTERNS])[0]


def account_takeover(rng: random.Random, draft: Draft, catalogue) -> None:
    """Someone else in the account: new device, foreign IP, high amount, often shipped elsewhere."""
    c = draft.customer
    draft.device_id = new_device_id(rng)
    draft.ip_country = rng.choice(RISKY_COUNTRIES) if rng.random() < 0.6 else foreign_country(rng, c.country)
    if draft.ip_country == c.country:
        draft.ip_country = foreign_country(rng, c.country)
    draft.shipping_country = draft.ip_country if rng.random() < 0.5 else c.country
    draft.payment_method = fraud_payment(rng)
    draft.channel = "web" if rng.random() < 0.7 else "mobile_app"
    target = c.baseline_usd_cents * rng.uniform(2.5, 12.0)
    n = rng.randint(1, 3)
    if rng.random() < 0.6:
        draft.lines = catalogue.expensive_basket(rng, target, n)
    else:
        draft.lines = catalogue.basket(rng, target, n)


def card_testing_burst(rng: random.Random, customer: Customer) -> dict:
    """The shared identity of one burst: one device, one IP country."""
    ip = customer.country if rng.random() < 0.5 else rng.choice(RISKY_COUNTRIES)
    return {
        "customer": customer,
        "device_id": new_device_id(rng),
        "ip_country": ip,
        "channel": "web",
        "left": rng.randint(*CARD_TEST_BURST),
    }


def card_testing(rng: random.Random, draft: Draft, burst: dict, catalogue, when: datetime) -> None:
    """Small single-line orders in quick succession (seconds to a minute apart) from one new device."""
    draft.customer = burst["customer"]
    draft.device_id = burst["device_id"]
    draft.ip_country = burst["ip_country"]
    draft.shipping_country = burst["customer"].country
    draft.payment_method = "card"
    draft.channel = burst["channel"]
    draft.lines = [catalogue.cheap_line(rng)]
    burst["left"] -= 1
    burst["next_at"] = when + timedelta(seconds=rng.uniform(*CARD_TEST_SPACING_S))


def amount_spike(rng: random.Random, draft: Draft, catalogue) -> None:
    """An order far above the customer's baseline, mostly from home."""
    c = draft.customer
    if rng.random() < 0.4:
        draft.device_id = new_device_id(rng)
    if rng.random() < 0.2:
        draft.ip_country = foreign_country(rng, c.country)
    draft.payment_method = fraud_payment(rng) if rng.random() < 0.5 else draft.payment_method
    target = c.baseline_usd_cents * rng.uniform(5.0, 25.0)
    draft.lines = catalogue.expensive_basket(rng, target, rng.randint(1, 3))


def geo_mismatch(rng: random.Random, draft: Draft, catalogue) -> None:
    """Shipped to one foreign country, ordered from another IP country."""
    c = draft.customer
    if rng.random() < 0.5:
        draft.device_id = new_device_id(rng)
    draft.shipping_country = foreign_country(rng, c.country, RISKY_COUNTRIES + TRAVEL_COUNTRIES)
    if rng.random() < 0.7:
        draft.ip_country = foreign_country(rng, draft.shipping_country, RISKY_COUNTRIES + COUNTRY_CODES)
    if draft.ip_country == draft.shipping_country:
        draft.ip_country = c.country
    target = c.baseline_usd_cents * rng.uniform(1.5, 5.0)
    draft.lines = catalogue.basket(rng, target, rng.randint(1, 3))


def hard_negative(rng: random.Random, draft: Draft, catalogue) -> None:
    """Turn a legitimate order into one that looks risky but is not."""
    kind = rng.choices(tuple(HARD_NEGATIVES), weights=tuple(HARD_NEGATIVES.values()))[0]
    c = draft.customer
    draft.kind = kind
    if kind == "big_purchase":
        target = c.baseline_usd_cents * rng.uniform(3.0, 10.0)
        draft.lines = catalogue.expensive_basket(rng, target, rng.randint(1, 2))
    elif kind == "travel":
        draft.ip_country = foreign_country(rng, c.country, TRAVEL_COUNTRIES)
        if rng.random() < 0.2:
            draft.shipping_country = draft.ip_country  # to the hotel
        if rng.random() < 0.25:
            draft.device_id = new_device_id(rng)  # a hotel or borrowed computer
        draft.lines = catalogue.basket(rng, c.baseline_usd_cents * rng.uniform(1.0, 2.5), rng.randint(1, 3))
    elif kind == "new_device":
        draft.device_id = new_device_id(rng)
        c.devices.append(draft.device_id)  # the new phone becomes a known device
    else:  # gift_abroad
        draft.shipping_country = foreign_country(rng, c.country, TRAVEL_COUNTRIES + COUNTRY_CODES)
        draft.lines = catalogue.basket(rng, c.baseline_usd_cents * rng.uniform(1.0, 3.0), rng.randint(1, 2))


# Single-order patterns by name (card testing is driven by its bursts).
SINGLE_ORDER_PATTERNS = {
    "account_takeover": account_takeover,
    "amount_spike": amount_spike,
    "geo_mismatch": geo_mismatch,
}
