"""Pure parts of the pages: metric cards, alert rows and filters, the batch-jobs table (no browser, no database)."""

import datetime as dt

import pandas as pd
import pytest

from serving.queries import card_windows

NOW = dt.datetime(2026, 11, 25, 10, 30, 20, tzinfo=dt.UTC)


def _text(component) -> str:
    return str(component)


def test_card_windows_are_complete_minutes_against_the_same_span_before():
    w = card_windows(NOW)
    end = dt.datetime(2026, 11, 25, 10, 30, tzinfo=dt.UTC)
    assert w["minute"] == (
        end - dt.timedelta(minutes=1),
        end,
        end - dt.timedelta(minutes=2),
        end - dt.timedelta(minutes=1),
    )
    assert w["hour"][0] == end - dt.timedelta(hours=1) and w["hour"][2] == end - dt.timedelta(hours=2)
    assert w["day"][1] - w["day"][0] == dt.timedelta(days=1)
    midnight = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    assert w["today"] == (midnight, end, midnight - dt.timedelta(days=1), end - dt.timedelta(days=1))


def test_overview_cards_show_values_and_derived_ratios_with_their_changes(dash_app):
    from dashboard import ids
    from dashboard.pages.overview import make_cards

    zero = {w: (0.0, 0.0) for w in ("minute", "hour", "day", "today")}
    cards = {
        "orders": {**zero, "day": (1200.0, 1000.0), "today": (400.0, 500.0)},
        "revenue": {**zero, "day": (36000.5, 30000.0), "today": (10000.0, 10000.0)},
        "alerts": {**zero, "today": (8.0, 5.0)},
        "scored": {**zero, "today": (400.0, 500.0)},
    }
    text = _text(make_cards(cards, "EUR"))
    assert f"'{ids.card_value('orders', 'day')}'" in text
    assert "1,200" in text and "▲ 20.0 %" in text  # orders in the last 24 h
    assert "36,000.50" in text
    assert "25.00 EUR" in text  # today's average order: 10,000 / 400
    assert "2.00 %" in text  # alert rate: 8 alerts / 400 scored orders
    assert "▲ 100.0 %" in text  # alert rate 2 % against 1 % (5 / 500)


def test_the_alert_rate_card_counts_scored_orders_only(dash_app):
    from dashboard.pages.overview import make_cards

    zero = {w: (0.0, 0.0) for w in ("minute", "hour", "day", "today")}
    cards = {
        "orders": {**zero, "today": (1000.0, 0.0)},  # 800 of them were backfilled before any model: unscored
        "revenue": zero,
        "alerts": {**zero, "today": (4.0, 0.0)},
        "scored": {**zero, "today": (200.0, 0.0)},
    }
    assert "2.00 %" in _text(make_cards(cards, "USD"))  # 4 / 200, not 4 / 1000


def test_alert_rows_carry_the_alert_id_the_currency_and_readable_status(dash_app):
    from dashboard.pages.fraud import table_rows

    alerts = pd.DataFrame(
        {"alert_id": ["a1"], "created_at": pd.to_datetime(["2026-11-25 10:00:01"], utc=True), "fraud_score": [91.5],
         "amount": [1234.5], "currency": ["JPY"], "amount_reporting": [8.23], "customer_id": ["C1"],
         "reasons": ["new device"], "model_version": ["3"], "status": ["false_positive"], "note": [None]}
    )  # fmt: skip
    (row,) = table_rows(alerts)
    assert row["id"] == "a1" and row["amount_text"] == "1,234.50 JPY"
    assert row["status"] == "false positive" and row["note"] is None
    assert row["created_at"] == "2026-11-25 10:00:01"


def test_alert_filter_reads_the_form_and_ignores_what_is_not_a_filter(dash_app):
    from dashboard.pages.fraud import alert_filter

    f = alert_filter(NOW, "85", "  device ", ["open", "bogus"], "7d")
    assert f.min_score == 85.0 and f.reason == "device" and f.statuses == ("open",)
    assert f.since == NOW - dt.timedelta(days=7)
    everything = alert_filter(NOW, "not a number", "", None, "all")
    assert (everything.min_score, everything.reason, everything.statuses, everything.since) == (None, None, (), None)


@pytest.mark.parametrize(("seconds", "text"), [(42, "42 s"), (600, "10 min"), (3 * 3600, "3.0 h"),
                                               (3 * 86400, "3.0 days"), (None, "–")])  # fmt: skip
def test_ages_read_naturally(dash_app, seconds, text):
    from dashboard.pages.health import age_text

    assert age_text(seconds) == text


def test_batch_jobs_table_shows_the_last_success_its_age_and_rows(dash_app):
    from dashboard.pages.health import job_rows

    jobs = pd.DataFrame(
        {"job": ["rfm", "cohorts"], "last_status": ["failed", "succeeded"],
         "last_success_at": [NOW - dt.timedelta(hours=3), None], "last_success_rows": ['{"pg/customers": 10, "gold/rfm": 5}', None],
         "last_error": ["ValueError: boom", None]}
    )  # fmt: skip
    rfm, cohorts = job_rows(jobs, NOW)
    assert rfm["success_age"] == "3.0 h" and rfm["rows"] == "15" and rfm["last_status"] == "failed"
    assert rfm["last_error"] == "ValueError: boom"
    assert cohorts["last_success_at"] == "never" and cohorts["rows"] == "–"
