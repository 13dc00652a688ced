"""Simulated customers: persona, home country, devices, signup date, spending baseline, history.

A customer is a pure function of the shop's seed and the customer's index
(``make_customer``): whichever process, shard or run draws customer
``C0000042``, it is the same person with the same persona, country, currency,
email and devices. What changes over time (orders, last order, churn, a new
phone) is the customer's history, held by ``CustomerBase`` and recorded
between runs (``simulator.shop``).

A persona sets how often a customer comes back (mean gap between orders),
how likely they churn after an order, basket size and spending baseline, so
recency, frequency, monetary value and retention emerge from behaviour.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate

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
DAY_S = 86_400.0


@dataclass(frozen=True)
class Persona:
    name: str
    share: float  # of the customer base
    gap_days: float | None  # mean days between a returning customer's orders (None: never comes back)
    churn: float  # probability of not coming back after an order
    extra_lines: float  # mean number of basket lines beyond the first
    baseline_usd: float  # median personal order value

    @property
    def rate_per_s(self) -> float:
        """Orders per second of one returning customer (0 for one-off buyers)."""
        return 1.0 / (self.gap_days * DAY_S) if self.gap_days else 0.0


PERSONAS = (
    Persona("frequent", 0.20, 4.0, 0.01, 1.2, 45.0),
    Persona("occasional", 0.45, 24.0, 0.06, 0.6, 60.0),
    Persona("big_spender", 0.10, 12.0, 0.02, 1.5, 260.0),
    Persona("one_off", 0.25, None, 1.0, 0.4, 55.0),
)
PERSONA_BY_NAME = {p.name: p for p in PERSONAS}
RETURNING = tuple(p for p in PERSONAS if p.gap_days)

_PERSONA_CUM = list(accumulate(p.share for p in PERSONAS))
_COUNTRY_CUM = list(accumulate(c[1] for c in COUNTRIES.values()))
_PAYMENT_CUM = list(accumulate(PAYMENT_WEIGHTS.values()))
_PAYMENTS = tuple(PAYMENT_WEIGHTS)
_DEVICE_COUNTS = (1, 1, 2, 2, 3)


_DEVICE_MASK = (1 << 48) - 1
_TWO_POW_MINUS_53 = 2.0**-53


def _pick(draw, values: tuple, cum: list[float]):
    return values[min(bisect.bisect(cum, draw.random() * cum[-1]), len(values) - 1)]


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
    own_devices: int = 0  # devices the customer starts with; later ones (a new phone) are history
    signup: datetime | None = None
    orders: int = 0
    last_order: datetime | None = None
    churned: bool = False


def new_device_id(rng: random.Random) -> str:
    """Every device id has the same shape, whether a customer's phone or a fraudster's."""
    return f"D{rng.getrandbits(48):012x}"


def customer_id(index: int) -> str:
    return f"C{index:07d}"


def customer_index(cid: str) -> int:
    return int(cid[1:])


class _Draws:
    """Uniform draws from a hash of a key: a customer's own random numbers, cheaper than seeding a generator."""

    __slots__ = ("_words", "_next")

    def __init__(self, key: str):
        raw = b"".join(hashlib.blake2b(f"{key}/{part}".encode(), digest_size=64).digest() for part in (0, 1))
        self._words = struct.unpack("<16Q", raw)
        self._next = 0

    def bits(self) -> int:
        word = self._words[self._next]
        self._next += 1
        return word

    def random(self) -> float:
        """Uniform in [0, 1)."""
        return (self.bits() >> 11) * _TWO_POW_MINUS_53

    def gauss(self) -> float:
        """Standard normal (Box-Muller)."""
        return math.sqrt(-2.0 * math.log(1.0 - self.random())) * math.cos(2.0 * math.pi * self.random())


def make_customer(seed: int, index: int) -> Customer:
    """Customer ``index`` of the shop with ``seed``: the same person in every process, shard and run."""
    draw = _Draws(f"{seed}/customer/{index}")
    persona = _pick(draw, PERSONAS, _PERSONA_CUM)
    country = _pick(draw, COUNTRY_CODES, _COUNTRY_CUM)
    baseline = persona.baseline_usd * math.exp(0.45 * draw.gauss())
    devices = [f"D{draw.bits() & _DEVICE_MASK:012x}" for _ in range(_DEVICE_COUNTS[int(draw.random() * 5)])]
    return Customer(
        index=index,
        customer_id=customer_id(index),
        email=f"customer{index}@example.com",
        country=country,
        currency=COUNTRIES[country][0],
        persona=persona,
        baseline_usd_cents=int(baseline * 100),
        devices=devices,
        channel="web" if draw.random() < 0.45 else "mobile_app",
        payment_method=_pick(draw, _PAYMENTS, _PAYMENT_CUM),
        night_owl=draw.random() < 0.08,
        own_devices=len(devices),
    )


@dataclass(slots=True)
class _Returning:
    """Customers of one persona who may come back (churned ones are dropped lazily)."""

    persona: Persona
    indices: list[int] = field(default_factory=list)
    active: int = 0


class CustomerBase:
    """The customers who have ordered, and who orders next.

    First-time customers get the next unused index (``shard``, then every
    ``shards``-th), so shards never share a customer and a new customer never
    takes an id someone else had. In a backfill the population is the first
    ``size`` indices; live, the population grows as far as the rate needs.
    Returning customers are drawn in proportion to their persona's order rate
    (1 / mean gap); after an order a customer churns with the persona's churn
    probability and stops returning.
    """

    def __init__(self, seed: int, size: int, rng: random.Random, shard: int = 0, shards: int = 1):
        self.seed = seed
        self.size = size
        self.rng = rng
        self.next_index = shard
        self.stride = shards
        self.known: dict[int, Customer] = {}  # customers with at least one order
        self.seen: list[int] = []  # their indices, in order of first order
        self._first_orders: list[datetime | None] = []  # when each of them first ordered (None: an earlier run)
        self._established = 0  # seen[:_established] first ordered before the last any_seen's cut-off
        self.returning = {p.name: _Returning(p) for p in RETURNING}
        self.night_owls: list[int] = []
        self.churned: list[int] = []

    # -- who orders -------------------------------------------------------------------------
    @property
    def has_new(self) -> bool:
        """Backfill: whether the population of ``size`` customers still has someone who never ordered."""
        return self.next_index < self.size

    @property
    def has_returning(self) -> bool:
        return any(r.active for r in self.returning.values())

    @property
    def returning_rate_per_s(self) -> float:
        """Orders per second the customers who may come back place together (each at their persona's rate)."""
        return sum(r.active * r.persona.rate_per_s for r in self.returning.values())

    def first_timer(self, when: datetime) -> Customer:
        """A customer who never ordered, with the next unused index."""
        customer = make_customer(self.seed, self.next_index)
        self.next_index += self.stride
        customer.signup = when - timedelta(days=self.rng.expovariate(1 / 20.0))
        return customer

    def returning_customer(self, night: bool = False) -> Customer | None:
        """A returning customer (night owls favoured at night), or None if nobody can return."""
        rng = self.rng
        if night and self.night_owls and rng.random() < 0.6:
            candidates = self.night_owls
        else:
            groups = [r for r in self.returning.values() if r.active]
            if not groups:
                return None
            weights = [r.active * r.persona.rate_per_s for r in groups]
            point = rng.random() * sum(weights)
            group = groups[-1]
            for g, w in zip(groups, weights, strict=True):
                if point < w:
                    group = g
                    break
                point -= w
            candidates = group.indices
        for _ in range(8):
            customer = self.known[candidates[int(rng.random() * len(candidates))]]
            if not customer.churned:
                return customer
        self._drop_churned()  # mostly churned entries: drop them and draw again
        return self.returning_customer(night) if self.has_returning else None

    def _drop_churned(self) -> None:
        for group in self.returning.values():
            group.indices = [i for i in group.indices if not self.known[i].churned]
        self.night_owls = [i for i in self.night_owls if not self.known[i].churned]

    def win_back(self) -> Customer | None:
        """Reactivate a churned customer (used when the pool is used up and nobody returns)."""
        if not self.churned:
            return None
        customer = self.known[self.churned.pop(int(self.rng.random() * len(self.churned)))]
        customer.churned = False
        self._may_return(customer)
        return customer

    def any_seen(self, first_ordered_by: datetime | None = None) -> Customer | None:
        """Any customer with at least one order, placed by ``first_ordered_by`` if given (accounts fraudsters take
        over are established ones, not accounts that placed their first order seconds ago)."""
        if first_ordered_by is None:
            pool = len(self.seen)
        else:
            times, n = self._first_orders, self._established
            while n < len(times) and (times[n] is None or times[n] <= first_ordered_by):
                n += 1
            self._established = n
            pool = self._established
        if not pool:
            return None
        return self.known[self.seen[int(self.rng.random() * pool)]]

    # -- history ----------------------------------------------------------------------------
    def _may_return(self, customer: Customer) -> None:
        group = self.returning.get(customer.persona.name)
        if group is None:
            return
        group.indices.append(customer.index)
        group.active += 1
        if customer.night_owl:
            self.night_owls.append(customer.index)

    def _churn(self, customer: Customer) -> None:
        customer.churned = True
        self.churned.append(customer.index)
        self.returning[customer.persona.name].active -= 1

    def record_order(self, customer: Customer, when: datetime) -> None:
        """Update history; a first order makes the customer known and, by persona, a returning one."""
        first = customer.orders == 0
        customer.orders += 1
        customer.last_order = when
        if first:
            self.known[customer.index] = customer
            self.seen.append(customer.index)
            self._first_orders.append(when)
            self._may_return(customer)
        elif customer.persona.gap_days and self.rng.random() < customer.persona.churn and not customer.churned:
            self._churn(customer)

    def restore(self, history: list[dict], next_index: int) -> None:
        """Continue from recorded history (``snapshot`` of earlier runs); new customers start at ``next_index``."""
        self.next_index = max(self.next_index, next_index)
        for row in history:
            customer = make_customer(self.seed, row["index"])
            customer.orders = row["orders"]
            customer.last_order = row["last_order"]
            customer.signup = row["signup"]
            customer.devices.extend(row["added_devices"])
            self.known[customer.index] = customer
            self.seen.append(customer.index)
            self._first_orders.append(None)
            self._may_return(customer)
            if row["churned"]:
                self._churn(customer)
        self._drop_churned()

    def snapshot(self) -> list[dict]:
        """Every known customer's history, in order of first order (what ``restore`` needs)."""
        return [
            {
                "index": c.index,
                "orders": c.orders,
                "last_order": c.last_order,
                "signup": c.signup,
                "churned": c.churned,
                "added_devices": c.devices[c.own_devices :],
            }
            for c in (self.known[i] for i in self.seen)
        ]
