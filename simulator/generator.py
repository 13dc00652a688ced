"""Synthetic e-commerce orders following the event contract (schema_version 1).

Input: ``SimulatorSettings`` and a seed. Output: ``Generated`` pairs of one
order event (the JSON payload for ``ecommerce-transactions``) and, for
injected fraud only, its ground-truth label (for ``fraud-labels``). One call
to ``generate(event_time)`` is one order; ``events`` paces orders at a rate,
``backfill`` spreads them over past days along the daily/weekly curve.

The same seed (and shard) gives the same events, event for event.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ecom.settings import SimulatorSettings
from simulator import fraud
from simulator.catalogue import CATEGORIES, Catalogue
from simulator.customers import PAYMENT_WEIGHTS, Customer, CustomerBase
from simulator.fraud import Draft, FraudInjector
from simulator.shop import ShopState
from simulator.timeline import NIGHT_HOURS, curve_times

__all__ = ["CATEGORIES", "Generated", "TransactionSimulator", "format_event_time"]

SCHEMA_VERSION = 1
PAYMENT_METHODS = tuple(PAYMENT_WEIGHTS)
# RFC 4122 version-4 bits: version nibble 4, variant 10xx.
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)


@dataclass(frozen=True)
class Generated:
    """One order event and, for injected fraud, its ground-truth label.

    ``kind`` says how the order was made (``normal``, a fraud pattern, or a
    hard negative such as ``travel``); it is for tests and never sent.
    """

    event: dict
    label: dict | None
    kind: str = "normal"


def format_event_time(ts: datetime) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2026-11-25T18:00:00.123Z``."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.isoformat(timespec="milliseconds")[:23] + "Z"


def _money(cents: int) -> float:
    """Cents as a number whose shortest repr has at most two decimals (exact for cents < 2**53)."""
    return cents / 100


class TransactionSimulator:
    """Customers placing orders in a shop, with injected fraud. Deterministic for a given seed.

    ``shard``/``shards`` split the customer base between parallel producer
    processes (customer i belongs to shard i % shards), so each shard keeps
    consistent per-customer histories. ``expected_orders`` spreads the
    acquisition of first-time customers over a run of that many orders.
    ``shop`` continues a recorded shop (``state()`` of earlier runs): the same
    seed, the same customers with their history, new customers with new ids.
    """

    def __init__(
        self,
        settings: SimulatorSettings,
        seed: int | None = None,
        *,
        shard: int = 0,
        shards: int = 1,
        expected_orders: int | None = None,
        shop: ShopState | None = None,
    ):
        self.settings = settings
        base_seed = seed if seed is not None else settings.seed
        if shop is not None:
            if seed is not None and seed != shop.seed:
                raise ValueError(f"the recorded shop has seed {shop.seed}, not {seed}")
            if shards != 1:
                raise ValueError("a recorded shop continues in one process")
            base_seed = shop.seed
        if base_seed is None:
            base_seed = random.SystemRandom().getrandbits(63)
        self.seed = base_seed
        # The catalogue is the same in every shard; customers and choices differ per shard.
        self.catalogue = Catalogue(settings.products, seed=base_seed)
        run = f"live{shop.live_runs}/" if shop is not None else ""
        self.rng = random.Random(f"{base_seed}/{run}{shard}/{shards}")
        self._time_rng = random.Random(f"{base_seed}/{run}{shard}/{shards}/times")
        self.customers = CustomerBase(base_seed, settings.customers, self.rng, shard=shard, shards=shards)
        if shop is not None:
            self.customers.restore(shop.history, shop.next_index)
        self.shop = shop
        self.fraud = FraudInjector(self.rng, settings.fraud_rate, settings.fraud_patterns)
        self.hard_negative_rate = settings.hard_negative_rate
        self.new_share = settings.new_customer_share
        if expected_orders:  # first orders spread so that the population lasts the whole run
            self.new_share = min(0.9, 0.9 * settings.customers / shards / expected_orders)
        self._label_delay = timedelta(seconds=settings.label_delay_s)
        self.last_event_time: datetime | None = shop.until if shop is not None else None

    # -- choosing who orders -------------------------------------------------------------
    def _customer(self, when: datetime, night: bool, rate_per_s: float | None) -> Customer:
        customers = self.customers
        rng = self.rng
        if rate_per_s is not None:
            # Live: customers come back at their own pace (one order per persona gap on average), whatever the
            # shop's rate; first-time customers (new ids) make up the rest, and at least ``new_share``.
            back = min(1.0 - self.new_share, customers.returning_rate_per_s / rate_per_s)
            customer = customers.returning_customer(night) if rng.random() < back else None
            return customer or customers.first_timer(when)
        # Backfill: the window's orders are shared by a population of ``settings.customers``.
        if customers.has_new and (rng.random() < self.new_share or not customers.has_returning):
            return customers.first_timer(when)
        customer = customers.returning_customer(night)
        if customer is None:
            if customers.has_new:
                return customers.first_timer(when)
            customer = customers.win_back() or customers.any_seen() or customers.first_timer(when)
        return customer

    def _normal_draft(self, customer: Customer) -> Draft:
        rng = self.rng
        persona = customer.persona
        n_lines = 1
        p_more = persona.extra_lines / (1.0 + persona.extra_lines)
        while n_lines < 8 and rng.random() < p_more:
            n_lines += 1
        target = customer.baseline_usd_cents * math.exp(rng.gauss(0.0, 0.35))
        devices = customer.devices
        device = devices[0] if len(devices) == 1 or rng.random() < 0.6 else devices[int(rng.random() * len(devices))]
        return Draft(
            customer=customer,
            lines=self.catalogue.basket(rng, target, n_lines),
            device_id=device,
            ip_country=customer.country,
            shipping_country=customer.country,
            payment_method=customer.payment_method if rng.random() < 0.8 else rng.choice(PAYMENT_METHODS),
            channel=customer.channel
            if rng.random() < 0.85
            else ("web" if customer.channel == "mobile_app" else "mobile_app"),
        )

    def _draft(self, when: datetime, rate_per_s: float | None) -> Draft:
        rng = self.rng
        injector = self.fraud
        night = when.hour in NIGHT_HOURS
        burst = injector.due_burst(when)
        if burst is not None:
            draft = self._normal_draft(burst["customer"])
            fraud.card_testing(rng, draft, burst, self.catalogue, when)
            injector.keep_open(burst)
            draft.kind = draft.fraud_pattern = "card_testing"
            return draft
        customer = self._customer(when, night, rate_per_s)
        if injector.start_incident():
            pattern = injector.choose(night)
            victim = customer
            if pattern != "amount_spike" and customer.orders == 0:
                # fraudsters take over established accounts
                victim = self.customers.any_seen(when - fraud.ACCOUNT_MIN_AGE) or customer
            draft = self._normal_draft(victim)
            if pattern == "card_testing":
                burst = fraud.card_testing_burst(rng, victim)
                fraud.card_testing(rng, draft, burst, self.catalogue, when)
                injector.keep_open(burst)
            else:
                fraud.SINGLE_ORDER_PATTERNS[pattern](rng, draft, self.catalogue)
            draft.kind = draft.fraud_pattern = pattern
            return draft
        draft = self._normal_draft(customer)
        if customer.orders > 0 and rng.random() < self.hard_negative_rate:
            fraud.hard_negative(rng, draft, self.catalogue)
        elif night and customer.night_owl:
            draft.kind = "night_owl"
        return draft

    # -- building the event --------------------------------------------------------------
    def _uuid(self) -> str:
        """A random (version 4) UUID from the seeded generator; same text as ``uuid.UUID(int=n, version=4)``."""
        n = (self.rng.getrandbits(128) & _UUID_CLEAR) | _UUID_SET
        h = f"{n:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def generate(self, event_time: datetime, rate_per_s: float | None = None) -> Generated:
        """One order at ``event_time`` (and its fraud label if it is injected fraud).

        ``rate_per_s`` is the live shop's order rate: with it, customers come back at their persona's pace and
        first-time customers fill the rest; without it (backfill), orders are shared by the fixed population.
        """
        draft = self._draft(event_time, rate_per_s)
        customer = draft.customer
        prices = self.catalogue.prices[customer.currency]
        products = self.catalogue.products
        items = []
        amount_cents = 0
        for idx, quantity in draft.lines:
            cents = prices[idx]
            amount_cents += cents * quantity
            product = products[idx]
            items.append(
                {
                    "product_id": product.product_id,
                    "category": product.category,
                    "quantity": quantity,
                    "unit_price": _money(cents),
                }
            )
        event_id = self._uuid()
        transaction_id = f"T{self.rng.getrandbits(64):016x}"
        event = {
            "event_id": event_id,
            "transaction_id": transaction_id,
            "event_time": format_event_time(event_time),
            "customer_id": customer.customer_id,
            "customer_email": customer.email,
            "items": items,
            "amount": _money(amount_cents),
            "currency": customer.currency,
            "payment_method": draft.payment_method,
            "channel": draft.channel,
            "device_id": draft.device_id,
            "ip_country": draft.ip_country,
            "shipping_country": draft.shipping_country,
            "schema_version": SCHEMA_VERSION,
        }
        self.customers.record_order(customer, event_time)
        self.last_event_time = event_time
        label = None
        if draft.fraud_pattern is not None:
            label = {
                "event_id": event_id,
                "transaction_id": transaction_id,
                "is_fraud": True,
                "fraud_pattern": draft.fraud_pattern,
                "label_time": format_event_time(event_time + self._label_delay),
            }
        return Generated(event=event, label=label, kind=draft.kind)

    def state(self) -> ShopState:
        """This simulator's shop as it is now, to be recorded and continued by a later live run."""
        return ShopState(
            seed=self.seed,
            products=self.settings.products,
            next_index=self.customers.next_index,
            live_runs=self.shop.live_runs + 1 if self.shop is not None else 0,
            until=self.last_event_time,
            history=self.customers.snapshot(),
        )

    # -- schedules -----------------------------------------------------------------------
    def events(self, count: int, start: datetime | None = None, rate_per_s: float | None = None) -> Iterator[Generated]:
        """``count`` orders with event times spaced at ``rate_per_s`` from ``start``."""
        start = start or datetime.now(UTC)
        rate = rate_per_s or self.settings.rate_per_s
        step = 1.0 / rate
        for i in range(count):
            yield self.generate(start + timedelta(seconds=step * i), rate)

    def backfill(self, count: int, days: float | None = None, end: datetime | None = None) -> Iterator[Generated]:
        """``count`` orders over the ``days`` before ``end``, following the daily and weekly curve."""
        end = end or datetime.now(UTC)
        start = end - timedelta(days=days if days is not None else self.settings.backfill_days)
        for when in curve_times(self._time_rng, count, start, end):
            yield self.generate(when)
