"""Product catalogue of the simulated shop: categories, prices, skewed popularity, affinities.

Prices are held in integer cents, per currency (fixed exchange rates), so
every order amount is an exact sum of ``quantity * unit_price``. Popularity is
Zipf-like (a few best sellers, a long tail); each product has companions that
are really bought together (same or complementary category).
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from itertools import accumulate

from ecom.reference import FX_PER_USD

# category -> (median price USD, log-normal sigma, min USD, max USD, max quantity per line)
CATEGORY_PRICES: dict[str, tuple[float, float, float, float, int]] = {
    "electronics": (110.0, 0.9, 5.0, 2500.0, 2),
    "fashion": (40.0, 0.6, 5.0, 600.0, 3),
    "home": (55.0, 0.8, 4.0, 1500.0, 3),
    "beauty": (20.0, 0.5, 3.0, 200.0, 4),
    "sports": (50.0, 0.8, 5.0, 1200.0, 3),
    "books": (15.0, 0.4, 3.0, 80.0, 3),
    "toys": (25.0, 0.6, 3.0, 300.0, 3),
    "grocery": (7.0, 0.5, 1.0, 60.0, 6),
    "garden": (35.0, 0.8, 3.0, 900.0, 3),
    "automotive": (45.0, 0.9, 4.0, 1200.0, 2),
}
CATEGORIES = tuple(CATEGORY_PRICES)

# Share of the catalogue per category (more fashion and home items than garden ones).
CATEGORY_SHARE = {
    "electronics": 0.14,
    "fashion": 0.18,
    "home": 0.14,
    "beauty": 0.10,
    "sports": 0.09,
    "books": 0.10,
    "toys": 0.07,
    "grocery": 0.08,
    "garden": 0.05,
    "automotive": 0.05,
}

# Bought together across categories.
COMPLEMENTS = {
    "electronics": "electronics",
    "fashion": "beauty",
    "home": "garden",
    "beauty": "fashion",
    "sports": "fashion",
    "books": "toys",
    "toys": "books",
    "grocery": "home",
    "garden": "home",
    "automotive": "electronics",
}

# Units of each currency per US dollar (fixed, so a price list is stable).
# Currencies without minor units are priced in whole units (still written with 2 dp).
WHOLE_UNIT_CURRENCIES = frozenset({"JPY"})

# Cheap categories used by card testers.
CHEAP_CATEGORIES = ("grocery", "beauty", "books")


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    category: str
    price_usd_cents: int
    max_quantity: int


def _price_cents(rng: random.Random, category: str) -> int:
    median, sigma, low, high, _ = CATEGORY_PRICES[category]
    dollars = min(high, max(low, math.exp(rng.gauss(math.log(median), sigma))))
    # Shop prices end in .99 (or .49 below ten dollars).
    if dollars < 10:
        return max(99, int(dollars) * 100 + 49)
    return int(dollars) * 100 + 99


def local_cents(usd_cents: int, currency: str) -> int:
    """Price in the minor units of ``currency`` (whole units for JPY)."""
    value = usd_cents * FX_PER_USD[currency]
    if currency in WHOLE_UNIT_CURRENCIES:
        return max(100, round(value / 100) * 100)
    return max(1, round(value))


class Catalogue:
    """Products with per-currency prices, a popularity distribution and companions."""

    def __init__(self, n_products: int, seed: int):
        if n_products < len(CATEGORIES):
            raise ValueError(f"need at least {len(CATEGORIES)} products, got {n_products}")
        rng = random.Random(seed)
        categories = list(CATEGORIES)  # one of each, then by share
        categories += rng.choices(
            CATEGORIES, weights=[CATEGORY_SHARE[c] for c in CATEGORIES], k=n_products - len(categories)
        )
        rng.shuffle(categories)
        self.products = [
            Product(f"P{i:05d}", cat, _price_cents(rng, cat), CATEGORY_PRICES[cat][4])
            for i, cat in enumerate(categories)
        ]
        # Zipf popularity over a random ranking: product ranked r sells ~ 1 / r^1.1.
        ranking = list(range(n_products))
        rng.shuffle(ranking)
        self.popularity = [0.0] * n_products
        for rank, idx in enumerate(ranking, start=1):
            self.popularity[idx] = 1.0 / rank**1.1
        self._cum = list(accumulate(self.popularity))
        self._total = self._cum[-1]
        self._cum[-1] = math.inf  # a draw of exactly the total still lands on the last product
        self.by_category: dict[str, list[int]] = {c: [] for c in CATEGORIES}
        for i, p in enumerate(self.products):
            self.by_category[p.category].append(i)
        self.cheap = [
            i for c in CHEAP_CATEGORIES for i in self.by_category[c] if self.products[i].price_usd_cents < 1500
        ]
        self.expensive = sorted(range(n_products), key=lambda i: -self.products[i].price_usd_cents)[
            : max(10, n_products // 20)
        ]
        self.companions = [self._pick_companions(rng, i) for i in range(n_products)]
        self.log_price = [math.log(p.price_usd_cents) for p in self.products]
        self.prices = {cur: [local_cents(p.price_usd_cents, cur) for p in self.products] for cur in FX_PER_USD}

    def _pick_companions(self, rng: random.Random, idx: int) -> tuple[int, ...]:
        cat = self.products[idx].category
        same = [j for j in self.by_category[cat] if j != idx]
        other = self.by_category[COMPLEMENTS[cat]]
        picks = rng.sample(same, min(2, len(same))) + [rng.choice(other)]
        return tuple(dict.fromkeys(j for j in picks if j != idx))

    def popular(self, rng: random.Random) -> int:
        """A product index drawn by popularity."""
        return bisect.bisect(self._cum, rng.random() * self._total)

    def _closest(self, candidates: list[int], target_cents: float) -> int:
        """The candidate whose price is nearest to the target on a log scale."""
        log_target = math.log(target_cents)
        log_price = self.log_price
        best, best_gap = candidates[0], math.inf
        for i in candidates:
            gap = abs(log_price[i] - log_target)
            if gap < best_gap:
                best, best_gap = i, gap
        return best

    def basket(self, rng: random.Random, target_usd_cents: float, n_lines: int) -> list[tuple[int, int]]:
        """Lines ``(product index, quantity)`` near a target value; later lines prefer companions."""
        line_target = max(150.0, target_usd_cents / n_lines)
        lines: list[tuple[int, int]] = []
        chosen: set[int] = set()
        cum, total = self._cum, self._total
        for _ in range(n_lines):
            if lines and rng.random() < 0.6:
                options = [j for j in self.companions[lines[int(rng.random() * len(lines))][0]] if j not in chosen]
                idx = self._closest(options, line_target) if options else None
            else:
                idx = None
            if idx is None:
                rnd = rng.random
                idx = self._closest([bisect.bisect(cum, rnd() * total) for _ in range(3)], line_target)
                if idx in chosen:
                    continue
            chosen.add(idx)
            product = self.products[idx]
            quantity = 1
            if product.max_quantity > 1 and rng.random() < 0.3:
                fit = int(line_target / product.price_usd_cents)
                quantity = max(2, min(product.max_quantity, fit)) if fit > 1 else rng.randint(2, product.max_quantity)
            lines.append((idx, quantity))
        return lines

    def expensive_basket(self, rng: random.Random, target_usd_cents: float, n_lines: int) -> list[tuple[int, int]]:
        """High-value lines (electronics and the like) summing to roughly the target."""
        picks = rng.sample(self.expensive, min(n_lines, len(self.expensive)))
        line_target = target_usd_cents / len(picks)
        return [(i, max(1, min(3, round(line_target / self.products[i].price_usd_cents)))) for i in picks]

    def cheap_line(self, rng: random.Random) -> tuple[int, int]:
        """One small line, as card testers place."""
        pool = self.cheap or self.by_category["grocery"]
        return (pool[int(rng.random() * len(pool))], 1)
