"""Shared layout pieces: changes against the previous period, the refresh guard, table rows."""

import datetime as dt

import pandas as pd
import psycopg2
import pytest
from dash import no_update

from dashboard.components import change_text, failure_message, guarded, records


@pytest.mark.parametrize(
    ("current", "previous", "text", "css"),
    [
        (110.0, 100.0, "▲ 10.0 %", "text-success"),
        (75.0, 100.0, "▼ 25.0 %", "text-danger"),
        (737.0, 5.0, "▲ ×147", "text-success"),
        (100.0, 100.0, "±0.0 %", "text-muted"),
        (5.0, 0.0, "new", "text-muted"),
        (0.0, 0.0, "–", "text-muted"),
    ],
)
def test_change_against_the_previous_period(current, previous, text, css):
    assert change_text(current, previous) == (text, css)


def test_a_successful_refresh_returns_its_values_no_message_and_the_new_time():
    now = dt.datetime(2026, 11, 25, 10, 0, 5, tzinfo=dt.UTC)
    assert guarded(lambda: ("a", 1), 2, None, now) == ("a", 1, None, "2026-11-25 10:00:05")


def test_a_failed_refresh_keeps_the_shown_data_and_says_since_when():
    def broken():
        raise psycopg2.OperationalError('connection to server at "127.0.0.1" failed: Connection refused\nmore')

    out = guarded(broken, 3, "2026-11-25 09:59:00")
    assert out[:3] == (no_update, no_update, no_update) and out[4] is no_update
    text = str(out[3].children)
    assert "The database cannot be reached" in text
    assert "2026-11-25 09:59:00 UTC" in text
    assert "more" not in text and "Traceback" not in text  # one line, never a traceback


def test_a_failure_before_any_good_data_says_so():
    text = str(failure_message(ValueError("bad"), None).children)
    assert "could not be refreshed (ValueError)" in text and "No data could be read yet" in text


def test_records_format_times_and_turn_missing_values_into_none():
    df = pd.DataFrame({"t": pd.to_datetime(["2026-11-25 10:00:01.5"], utc=True), "x": [float("nan")], "s": ["a"]})
    assert records(df, ("t",)) == [{"t": "2026-11-25 10:00:01", "x": None, "s": "a"}]


def test_a_section_without_a_status_area_shows_the_failure_in_its_own_place():
    from dashboard.components import guarded_section

    assert guarded_section(lambda: ("ok", [1]), (None, []), 0) == ("ok", [1])

    def broken():
        raise psycopg2.OperationalError("down")

    message, rows = guarded_section(broken, (None, []), 0)
    assert rows == [] and "The database cannot be reached" in str(message.children)
