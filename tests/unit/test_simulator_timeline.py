"""The arrival curve: exact counts, order, window, daily and weekly rhythm."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from simulator.timeline import DOW_WEIGHTS, HOUR_WEIGHTS, curve_times, intensity

START = datetime(2026, 9, 7, tzinfo=UTC)  # a Monday
END = START + timedelta(days=28)


def test_curve_times_are_exact_in_count_sorted_and_inside_the_window():
    times = list(curve_times(random.Random(1), 50_000, START, END))
    assert len(times) == 50_000
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < END


def test_evenings_are_busier_than_nights_and_weekends_than_weekdays():
    times = list(curve_times(random.Random(2), 100_000, START, END))
    hours = Counter(t.hour for t in times)
    assert hours[20] > 8 * hours[3]
    assert hours[20] > 1.3 * hours[10]
    days = Counter(t.weekday() for t in times)
    assert days[5] > 1.2 * days[1]
    # the shape follows the declared weights within sampling noise
    expected_20 = HOUR_WEIGHTS[20] / sum(HOUR_WEIGHTS)
    assert abs(hours[20] / len(times) - expected_20) < 0.003


def test_a_partial_window_and_an_empty_request():
    start = datetime(2026, 9, 7, 10, 30, tzinfo=UTC)
    end = start + timedelta(minutes=45)
    times = list(curve_times(random.Random(3), 100, start, end))
    assert len(times) == 100 and start <= times[0] and times[-1] < end
    assert list(curve_times(random.Random(3), 0, start, end)) == []


def test_intensity_combines_hour_and_weekday():
    saturday_8pm = datetime(2026, 9, 12, 20, tzinfo=UTC)
    assert intensity(saturday_8pm) == HOUR_WEIGHTS[20] * DOW_WEIGHTS[5]
