"""Simulated customers: persona, home country, devices, signup date, spending baseline, history.

A customer's persona sets how often they come back (selection weight), how
likely they are to churn after an order, basket size and spending baseline,
so recency, frequency, monetary value and retention emerge from behaviour.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

# country -> (currency, share of customers)
COUNTRIES: dict[str, tuple[str, float]] = {
    "US": ("USD", 0.34),
    "GB": ("GBP", 0.10),
    "DE": ("EUR", 0.10),
    "FR": ("EUR", 0.07),
    "ES": ("EUR", 0.04),
    "IT": ("EUR", 0.04),
    "NL": ("EUR", 0.03),
    "CA": ("CAD", 0.07),
    "AU": ("AUD", 0.05),
    "JP": ("JPY", 0.05),
    "BR": ("BRL", 0.05),
    "IN": ("INR", 0.06),
}
COUNTRY_CODES = tuple(COUNTRIES)
# Holiday destinations for legitimate travel, and countries fraud often comes from.
TRAVEL_COUNTRIES = ("ES", "IT", "FR", "US", "GB", "PT", "GR", "MX", "TH", "JP", "TR", "HR")
RISKY_COUNTRIES = ("NG", "RU", "VN", "RO", "UA", "ID", "PH", "CN", "BR", "IN")

PAYMENT_WEIGHTS = {"card": 0.55, "paypal": 0.2, "apple_pay": 0.15, "gift_card": 0.04, "bank_transfer": 0.06}


@dataclass(frozen=True)
class Persona:
    name: str
    share: float  # of the customer base
    weight: int  # relative order frequency among returning customers (0: never returns)
    churn: float  # probability of not coming back after an order
    extra_lines: float  # mean number of basket lines beyond the first
    baseline_usd: float  # median personal order value


PERSONAS = (
    Persona("frequent", 0.20, 12, 0.01, 1.2, 45.0),
    Persona("occasional", 0.45, 2, 0.06, 0.6, 60.0),
    Persona("big_spender", 0.10, 4, 0.02, 1.5, 260.0),
    Persona("one_off", 0.25, 0, 1.0, 0.4, 55.0),
)
PERSONA_BY_NAME = {p.name: p for p in PERSONAS}


@dataclass(slots=True)
class Customer:
    index: int
    customer_id: str
    email: str
    country: str
    currency: str
    persona: Persona
    baseline_usd_cents: int
    devices: list[str]
    channel: str
    payment_method: str
    night_owl: bool
    signup: datetime | None = None
    orders: int = 0
    last_order: datetime | None = None
    churned: bool = False
    pos: int = 0  # position in its CustomerBase pool


def new_device_id(rng: random.Random) -> str:
    """Every device id has the same shape, whether a customer's phone or a fraudster's."""
    return f"D{rng.getrandbits(48):012x}"


def make_customer(rng: random.Random, index: int) -> Customer:
    """One customer, drawn from the persona and country mixes."""
    persona = rng.choices(PERSONAS, weights=[p.share for p in PERSONAS])[0]
    country = rng.choices(COUNTRY_CODES, weights=[c[1] for c in COUNTRIES.values()])[0]
    baseline = persona.baseline_usd * math.exp(rng.gauss(0.0, 0.45))
    devices = [new_device_id(rng) for _ in range(rng.choice((1, 1, 2, 2, 3)))]
    return Customer(
        index=index,
        customer_id=f"C{index:07d}",
        email=f"customer{index}@example.com",
        country=country,
        currency=COUNTRIES[country][0],
        persona=persona,
        baseline_usd_cents=int(baseline * 100),
        devices=devices,
        channel=rng.choices(("web", "mobile_app"), weights=(0.45, 0.55))[0],
        payment_method=rng.choices(tuple(PAYMENT_WEIGHTS), weights=tuple(PAYMENT_WEIGHTS.values()))[0],
        night_owl=rng.random() < 0.08,
    )


class CustomerBase:
    """The customer population and who orders next.

    First-time customers are taken from the pool in index order (a share of
    orders while the pool lasts), so cohorts form over time. Returning
    customers are drawn with their persona weight; after an order a customer
    churns with the persona's churn probability and stops returning.
    """

    def __init__(self, n_customers: int, rng: random.Random, shard: int = 0, shards: int = 1):
        self.rng = rng
        self.pool = [make_customer(rng, i) for i in range(shard, n_customers, shards)]
        for pos, customer in enumerate(self.pool):
            customer.pos = pos
        self.next_new = 0
        self.returning: list[int] = []  # pool positions, repeated by persona weight
        self.night_owls: list[int] = []
        self.churned: list[int] = []

    @property
    def has_new(self) -> bool:
        return self.next_new < len(self.pool)

    def first_timer(self, when: datetime) -> Customer:
        customer = self.pool[self.next_new]
        self.next_new += 1
        customer.signup = when - timedelta(days=self.rng.expovariate(1 / 20.0))
        return customer

    def returning_customer(self, night: bool = False) -> Customer | None:
        """A returning customer (night owls favoured at night), or None if nobody can return."""
        rng = self.rng
        candidates = self.night_owls if night and self.night_owls and rng.random() < 0.6 else self.returning
        for _ in range(8):
            if not candidates:
                return None
            customer = self.pool[candidates[int(rng.random() * len(candidates))]]
            if not customer.churned:
                return customer
        # Mostly churned entries: drop them and draw again.
        self.returning = [p for p in self.returning if not self.pool[p].churned]
        self.night_owls = [p for p in self.night_owls if not self.pool[p].churned]
        if not self.returning:
            return None
        return self.pool[self.returning[int(rng.random() * len(self.returning))]]

    def win_back(self) -> Customer | None:
        """Reactivate a churned customer (used when the pool is used up and nobody returns)."""
        if not self.churned:
            return None
        pos = self.churned.pop(int(self.rng.random() * len(self.churned)))
        customer = self.pool[pos]
        customer.churned = False
        self.returning.extend([pos] * customer.persona.weight)
        return customer

    def any_seen(self) -> Customer | None:
        """Any customer with at least one order (accounts fraudsters take over)."""
        if not self.next_new:
            return None
        return self.pool[int(self.rng.random() * self.next_new)]

    def record_order(self, customer: Customer, when: datetime) -> None:
        """Update history; a first order puts the customer into the returning draw."""
        first = customer.orders == 0
        customer.orders += 1
        customer.last_order = when
        if first and customer.persona.weight:
            self.returning.extend([customer.pos] * customer.persona.weight)
            if customer.night_owl:
                self.night_owls.append(customer.pos)
        elif not first and customer.persona.weight and self.rng.random() < customer.persona.churn:
            customer.churned = True
            self.churned.append(customer.pos)
