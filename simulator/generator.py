"""Synthetic e-commerce orders following the event contract (schema_version 1).

Minimal walking-skeleton version: uniform customers and products, no fraud.
Issue 3 replaces the internals; the public API (``TransactionSimulator``,
``Generated``) stays.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Iterator

from ecom.settings import SimulatorSettings

CATEGORIES = ("electronics", "fashion", "home", "beauty", "sports", "books", "toys", "grocery", "garden", "automotive")


@dataclass(frozen=True)
class Generated:
    """One order event and, for injected fraud, its ground-truth label."""

    event: dict
    label: dict | None


def format_event_time(ts: datetime) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2026-11-25T18:00:00.123Z``."""
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


class TransactionSimulator:
    """Deterministic for a given seed."""

    def __init__(self, settings: SimulatorSettings, seed: int | None = None):
        self.settings = settings
        self.rng = random.Random(seed if seed is not None else settings.seed)

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def generate(self, event_time: datetime) -> Generated:
        rng = self.rng
        customer = rng.randrange(self.settings.customers)
        lines = []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            product = rng.randrange(self.settings.products)
            price = Decimal(rng.randint(199, 49999)) / 100
            lines.append(
                {
                    "product_id": f"P{product:05d}",
                    "category": CATEGORIES[product % len(CATEGORIES)],
                    "quantity": rng.choice((1, 1, 2)),
                    "unit_price": float(price),
                }
            )
        amount = sum(Decimal(str(line["unit_price"])) * line["quantity"] for line in lines)
        event = {
            "event_id": self._uuid(),
            "transaction_id": f"T{self.rng.getrandbits(48):012x}",
            "event_time": format_event_time(event_time),
            "customer_id": f"C{customer:06d}",
            "customer_email": f"customer{customer}@example.com",
            "items": lines,
            "amount": float(amount.quantize(Decimal("0.01"))),
            "currency": "USD",
            "payment_method": rng.choice(("card", "paypal", "apple_pay", "gift_card", "bank_transfer")),
            "channel": rng.choice(("web", "mobile_app")),
            "device_id": f"D{customer:06d}",
            "ip_country": "US",
            "shipping_country": "US",
            "schema_version": 1,
        }
        return Generated(event=event, label=None)

    def events(self, count: int, start: datetime | None = None, rate_per_s: float | None = None) -> Iterator[Generated]:
        """``count`` orders with event times spaced at ``rate_per_s`` from ``start``."""
        start = start or datetime.now(timezone.utc)
        step = timedelta(seconds=1.0 / (rate_per_s or self.settings.rate_per_s))
        for i in range(count):
            yield self.generate(start + step * i)
