"""When orders happen: the time-of-day and day-of-week arrival curve, and live/backfill schedules.

Backfill spreads a fixed number of orders over a window with a density that
follows the shop's daily and weekly rhythm (quiet nights, business hours,
evening peak, busier weekends). Live mode paces at a constant target rate.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

# Relative order intensity per hour of the day (UTC shop time).
HOUR_WEIGHTS = (
    0.30, 0.20, 0.14, 0.10, 0.10, 0.14,  # 00-05 night
    0.30, 0.55, 0.80, 1.00, 1.05, 1.10,  # 06-11 morning
    1.15, 1.10, 1.00, 1.00, 1.05, 1.15,  # 12-17 business hours
    1.35, 1.60, 1.75, 1.70, 1.30, 0.70,  # 18-23 evening peak
)  # fmt: skip
# Monday .. Sunday.
DOW_WEIGHTS = (0.92, 0.90, 0.93, 0.97, 1.05, 1.20, 1.15)
NIGHT_HOURS = frozenset(range(0, 6))


def intensity(ts: datetime) -> float:
    """Relative arrival intensity at ``ts``."""
    return HOUR_WEIGHTS[ts.hour] * DOW_WEIGHTS[ts.weekday()]


def curve_times(rng: random.Random, count: int, start: datetime, end: datetime) -> Iterator[datetime]:
    """``count`` sorted times in [start, end) whose density follows the hour/day curve.

    Stratified inverse-CDF sampling over hourly slots: event i sits at
    cumulative intensity (i + u_i) / count, so the count is exact and the
    times are ordered without sorting.
    """
    if count <= 0:
        return
    start = start.astimezone(UTC)
    end = end.astimezone(UTC)
    hour = timedelta(hours=1)
    slot_start = start.replace(minute=0, second=0, microsecond=0)
    slots: list[tuple[datetime, float, float]] = []  # (from, seconds, mass)
    t = start
    while t < end:
        nxt = min(slot_start + hour, end)
        seconds = (nxt - t).total_seconds()
        slots.append((t, seconds, intensity(t) * seconds))
        t = slot_start = slot_start + hour
        t = max(t, start)
    total = sum(s[2] for s in slots)
    step = total / count
    i, acc = 0, 0.0
    position = rng.random() * step
    last = len(slots) - 1
    for n, (slot_from, seconds, mass) in enumerate(slots):
        while i < count and (position < acc + mass or n == last):
            offset = min(max(position - acc, 0.0) / mass, 1.0) * seconds if mass else 0.0
            yield slot_from + timedelta(seconds=min(offset, seconds * 0.999999))
            i += 1
            position = (i + rng.random()) * step
        acc += mass
