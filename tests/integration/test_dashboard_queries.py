"""The dashboard's queries against the real PostgreSQL (an isolated database), read as the ``ecom_reader`` role.

Expected values are computed by hand from the few rows each test writes.
Filter values hold quotes, ``%``, ``_``, ``--`` and SQL fragments: they must
match literally, return only what they should and never raise.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import psycopg2
import pytest

from dashboard.data import ANALYST_ROLE, READER_ROLE, Reader, role_dsn
from serving import db, queries

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 25, 10, 30, 20, tzinfo=dt.UTC)
END = dt.datetime(2026, 11, 25, 10, 30, tzinfo=dt.UTC)  # the last complete minute ends here
TX_COLUMNS = ("event_id", "transaction_id", "event_time", "customer_id", "amount", "currency", "payment_method",
              "channel", "item_count", "processed_time", "fraud_score", "is_fraud", "model_version")  # fmt: skip
ALERT_COLUMNS = ("alert_id", "event_id", "transaction_id", "customer_id", "amount", "fraud_score", "reasons",
                 "model_version", "event_time", "created_at", "status")  # fmt: skip
REASONS = {
    "e1": ["amount 14x the customer's average", "new device"],
    "e2": ["only 0 seconds after the customer's previous order"],
    "e4": ["100% of the basket -- gift cards", "name_with_underscore"],
}
HOSTILE = ["'", "%", "_", "--", "'; DROP TABLE fraud_alerts; --", "' OR '1'='1", "\\", "%' OR 1=1 --", '"; --']


def write(dsn: str, table: str, columns, rows, key) -> None:
    conn = db.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            db.upsert_rows(cur, table, columns, key, rows)
    finally:
        conn.close()


def minute_rows(metric: str, values: dict[dt.datetime, float], dimension: str = "", grain: str = "minute"):
    return [(metric, grain, t, dimension, v) for t, v in values.items()]


@pytest.fixture
def shop(isolated):
    """An isolated database with FX rates, a few orders and alerts; yields (owner DSN, reader)."""
    dsn = isolated.postgres.dsn
    write(dsn, "fx_rates", ("currency", "reporting_currency", "units_per_reporting_unit", "source", "as_of"),
          [("USD", "USD", 1.0, "t", dt.date(2026, 1, 1)), ("EUR", "USD", 0.92, "t", dt.date(2026, 1, 1)),
           ("JPY", "USD", 150.0, "t", dt.date(2026, 1, 1))], ("currency",))  # fmt: skip
    t = END - dt.timedelta(minutes=5)
    write(dsn, "transactions", TX_COLUMNS, [
        ("e1", "t1", t, "C1", "92.00", "EUR", "card", "web", 1, t, 95.0, True, "3"),  # 100 USD
        ("e2", "t2", t + dt.timedelta(seconds=1), "C1", "1500", "JPY", "paypal", "web", 2, t, 85.0, True, "3"),  # 10
        ("e3", "t3", t + dt.timedelta(seconds=2), "C2", "10.50", "USD", "card", "mobile_app", 1, t, 12.0, False, "3"),
        ("e4", "t4", t + dt.timedelta(seconds=3), "C'3", "5.00", "USD", "card", "web", 1, t, 99.0, True, "3"),
    ], ("event_id",))  # fmt: skip
    reasons = REASONS
    scores = {"e1": 95.0, "e2": 85.0, "e4": 99.0}
    amounts = {"e1": "92.00", "e2": "1500", "e4": "5.00"}
    customers = {"e1": "C1", "e2": "C1", "e4": "C'3"}
    write(dsn, "fraud_alerts", ALERT_COLUMNS, [
        (f"a-{e}", e, f"t{e[1]}", customers[e], amounts[e], scores[e], reasons[e], "3", t, t + dt.timedelta(seconds=i),
         "open")
        for i, e in enumerate(("e1", "e2", "e4"))
    ], ("event_id",))  # fmt: skip
    reader = Reader(role_dsn(isolated, READER_ROLE), max_connections=2, ttl_s=60)
    yield dsn, reader
    reader.close()


def test_reader_reads_as_the_read_only_role(shop):
    _, reader = shop
    user = reader.run(queries._one, "SELECT current_user")[0]  # noqa: SLF001 - the role the pool connects as
    assert user == READER_ROLE


def test_cards_sum_complete_minutes_per_window_against_the_period_before(shop):
    dsn, reader = shop
    m = dt.timedelta(minutes=1)
    orders = {
        END - m: 5,  # the last complete minute
        END - 2 * m: 4,  # the minute before
        END - 30 * m: 10,  # in the last hour
        END - 90 * m: 7,  # the hour before
        END - dt.timedelta(hours=20): 100,  # last 24 h, yesterday 14:30: after yesterday's 10:30
        END - dt.timedelta(hours=30): 50,  # the 24 h before, yesterday 04:30: same hours as today's so far
        END: 999,  # the current, incomplete minute: not counted yet
    }
    revenue = {t: 10.0 * n for t, n in orders.items()}
    rows = minute_rows("orders", orders) + minute_rows("revenue", revenue) + minute_rows("alerts", {END - m: 1})
    # scored orders: 2 of the last minute's 5 (1 alert at a rate of 0.5), all 4 of the minute before (rate 0),
    # none of the other minutes (no alert_rate row: nothing scored)
    rows += minute_rows("alert_rate", {END - m: 0.5, END - 2 * m: 0.0})
    rows += minute_rows("orders", {END - m: 3}, "channel=web")  # a dimension row never counts in the cards
    write(dsn, "analytics_summaries", ("metric", "grain", "period_start", "dimension", "value"), rows,
          ("metric", "grain", "period_start", "dimension"))  # fmt: skip
    cards = reader.run(queries.overview_cards, NOW)
    o = cards["orders"]
    assert o["minute"] == (5, 4)
    assert o["hour"] == (5 + 4 + 10, 7)
    assert o["day"] == (5 + 4 + 10 + 7 + 100, 50)
    assert o["today"] == (5 + 4 + 10 + 7, 50)  # midnight to 10:30, against yesterday's 00:00 to 10:30
    assert cards["revenue"]["day"] == (1260.0, 500.0)
    assert cards["alerts"]["minute"] == (1.0, 0.0)
    assert cards["scored"]["minute"] == (2.0, 4.0) and cards["scored"]["today"] == (6.0, 0.0)
    hours = reader.run(queries.alert_rate_series, END - dt.timedelta(hours=1), NOW, "hour")
    # 09:30-10:29 holds three minutes with orders, all in the 10:00 hour
    assert hours.to_dict("records") == [{"period": END.replace(minute=0), "alerts": 1.0, "scored": 6.0}]
    assert cards["data_until"] == END + m


def test_series_use_day_rows_for_past_days_and_minutes_for_today(shop):
    dsn, reader = shop
    today = END.replace(hour=0, minute=0)
    rows = minute_rows("orders", {today - dt.timedelta(days=1): 40, today - dt.timedelta(days=2): 30}, grain="day")
    rows += minute_rows("orders", {today - dt.timedelta(days=1, hours=-3): 999})  # a minute of a day with a day row
    rows += minute_rows("orders", {today + dt.timedelta(hours=1): 2, today + dt.timedelta(hours=1, minutes=5): 3})
    write(dsn, "analytics_summaries", ("metric", "grain", "period_start", "dimension", "value"), rows,
          ("metric", "grain", "period_start", "dimension"))  # fmt: skip
    days = reader.run(queries.summary_series, NOW - dt.timedelta(days=3), NOW, "day", ("orders",))
    assert dict(zip(days["period"], days["orders"], strict=True)) == {
        today - dt.timedelta(days=2): 30.0, today - dt.timedelta(days=1): 40.0, today: 5.0,
    }  # fmt: skip
    hours = reader.run(queries.summary_series, today, NOW, "hour", ("orders", "revenue"))
    assert hours.to_dict("records") == [{"period": today + dt.timedelta(hours=1), "orders": 5.0, "revenue": 0.0}]


def test_breakdown_sums_each_value_of_a_dimension_kind(shop):
    dsn, reader = shop
    t = END - dt.timedelta(minutes=3)
    rows = minute_rows("revenue", {t: 30.0, t - dt.timedelta(minutes=1): 5.0}, "category=books")
    rows += minute_rows("revenue", {t: 50.0}, "category=home") + minute_rows("orders", {t: 2}, "category=home")
    rows += minute_rows("revenue", {t: 99.0}, "channel=web")
    write(dsn, "analytics_summaries", ("metric", "grain", "period_start", "dimension", "value"), rows,
          ("metric", "grain", "period_start", "dimension"))  # fmt: skip
    out = reader.run(queries.summary_breakdowns, END - dt.timedelta(hours=1), NOW)
    assert out["category"].to_dict("records") == [
        {"name": "home", "orders": 2.0, "revenue": 50.0},
        {"name": "books", "orders": 0.0, "revenue": 35.0},
    ]
    assert out["channel"].to_dict("records") == [{"name": "web", "orders": 0.0, "revenue": 99.0}]
    assert out["payment_method"].empty
    with pytest.raises(ValueError, match="not additive"):
        queries.summary_breakdowns(dsn, END, NOW, ("revenue) FROM x; --",))


def holding(text: str) -> set[str]:
    """The alerts with a reason that contains ``text`` literally, ignoring case (worked out in Python)."""
    return {f"a-{e}" for e, reasons in REASONS.items() if any(text.lower() in r.lower() for r in reasons)}


@pytest.mark.parametrize("reason", ["customer's", "%", "--", "_with_", "NEW DEVICE", "x_", *HOSTILE])
def test_reason_filter_matches_literally_and_never_breaks(shop, reason):
    _, reader = shop
    rows, total = reader.run(queries.alerts_page, queries.AlertFilter(reason=reason))
    assert set(rows["alert_id"]) == holding(reason) and total == len(holding(reason))


def test_the_reason_filter_cases_are_not_all_trivial():
    assert holding("customer's") == {"a-e1", "a-e2"} and holding("%") == {"a-e4"}
    assert holding("x_") == set() and holding("_with_") == {"a-e4"}  # "_" is no wildcard: "14x the" is no match


def test_alerts_table_filters_sorts_pages_and_shows_amounts_in_both_currencies(shop):
    dsn, reader = shop
    rows, total = reader.run(queries.alerts_page, queries.AlertFilter())
    assert total == 3 and list(rows["alert_id"]) == ["a-e4", "a-e2", "a-e1"]  # newest first
    by_id = rows.set_index("alert_id")
    assert by_id.loc["a-e1", "currency"] == "EUR" and by_id.loc["a-e1", "amount_reporting"] == pytest.approx(100.0)
    assert by_id.loc["a-e2", "amount_reporting"] == pytest.approx(10.0)
    cheap_first, _ = reader.run(queries.alerts_page, queries.AlertFilter(), "amount_reporting", False)
    assert list(cheap_first["alert_id"]) == ["a-e4", "a-e2", "a-e1"]  # 5, 10, 100 USD
    top, total = reader.run(queries.alerts_page, queries.AlertFilter(min_score=90), "fraud_score", True, 0, 1)
    assert list(top["alert_id"]) == ["a-e4"] and total == 2
    second, _ = reader.run(queries.alerts_page, queries.AlertFilter(min_score=90), "fraud_score", True, 1, 1)
    assert list(second["alert_id"]) == ["a-e1"]
    weird_sort, _ = reader.run(queries.alerts_page, queries.AlertFilter(), "amount; DROP TABLE x", True)
    assert list(weird_sort["alert_id"]) == ["a-e4", "a-e2", "a-e1"]  # unknown columns sort by time
    later = END - dt.timedelta(minutes=5) + dt.timedelta(seconds=1)
    recent, total = reader.run(queries.alerts_page, queries.AlertFilter(since=later))
    assert set(recent["alert_id"]) == {"a-e2", "a-e4"} and total == 2
    for status in HOSTILE + ["open' OR '1'='1"]:
        _, total = reader.run(queries.alerts_page, queries.AlertFilter(statuses=(status,)))
        assert total == 0
    _, total = reader.run(queries.alerts_page, queries.AlertFilter(statuses=("open",)))
    assert total == 3


def test_customer_lookups_convert_money_and_take_any_text_as_a_plain_value(shop):
    _, reader = shop
    orders = reader.run(queries.customer_orders, "C1")
    assert list(orders["transaction_id"]) == ["t2", "t1"]
    assert list(orders["amount_reporting"]) == pytest.approx([10.0, 100.0])
    assert list(reader.run(queries.customer_orders, "C'3")["amount"]) == [5.0]
    assert list(reader.run(queries.customer_alerts, "C'3")["transaction_id"]) == ["t4"]
    for value in HOSTILE + ["C1' OR '1'='1", "C%"]:
        assert reader.run(queries.customer_orders, value).empty
        assert reader.run(queries.customer_profile, value) is None
        assert reader.run(queries.product_pairs, value).empty
        assert reader.run(queries.best_sellers, value).empty
    assert reader.run(queries.customer_profile, "C1") is None  # the stream's customers rows are not written here


def test_score_distribution_counts_the_newest_scored_orders_per_bucket(shop):
    _, reader = shop
    dist = reader.run(queries.score_distribution, NOW)
    assert dict(zip(dist["bucket_start"], dist["orders"], strict=True)) == {10.0: 1, 85.0: 1, 95.0: 2}
    assert reader.run(queries.score_distribution, NOW, latest=1)["orders"].sum() == 1
    assert reader.run(queries.score_distribution, NOW + dt.timedelta(days=2)).empty  # older than 24 h


def test_triage_stores_status_and_label_as_the_analyst_and_precision_follows(shop, isolated):
    dsn, reader = shop
    analyst = psycopg2.connect(role_dsn(isolated, ANALYST_ROLE))
    try:
        with analyst:
            label = queries.record_triage(analyst, "a-e1", "confirmed_fraud", "card stolen; it's 'real'", "ann", NOW)
        with analyst:
            queries.record_triage(analyst, "a-e2", "false_positive", "regular buyer", "ann", NOW)
        with pytest.raises(KeyError), analyst:
            queries.record_triage(analyst, "a-missing", "false_positive", "", "ann", NOW)
        with pytest.raises(ValueError), analyst:
            queries.record_triage(analyst, "a-e4", "open' OR '1'='1", "", "ann", NOW)
    finally:
        analyst.close()
    assert label == {"event_id": "e1", "transaction_id": "t1", "is_fraud": True,
                     "fraud_pattern": queries.ANALYST_FRAUD_PATTERN, "label_time": NOW}  # fmt: skip
    rows, _ = reader.run(queries.alerts_page, queries.AlertFilter(statuses=("confirmed_fraud", "false_positive")))
    by_id = rows.set_index("alert_id")
    assert by_id.loc["a-e1", "status"] == "confirmed_fraud" and by_id.loc["a-e1", "note"] == "card stolen; it's 'real'"
    assert by_id.loc["a-e2", "status"] == "false_positive" and by_id.loc["a-e2", "reviewed_by"] == "ann"
    pr = reader.run(queries.precision_recall, NOW)
    (day,) = pr.to_dict("records")
    # 2 labelled alerts, 1 of them fraud; 1 order labelled fraud (e1), and it alerted
    assert (day["labelled_alerts"], day["true_alerts"], day["fraud_orders"], day["caught"]) == (2, 1, 1, 1)
    assert day["precision"] == 0.5 and day["recall"] == 1.0


def test_the_reader_cannot_record_a_triage(shop, isolated):
    conn = psycopg2.connect(role_dsn(isolated, READER_ROLE))
    try:
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction), conn:
            queries.record_triage(conn, "a-e1", "confirmed_fraud", "", "eve", NOW)
    finally:
        conn.close()


def test_identical_calls_within_a_refresh_share_one_query(shop):
    _, reader = shop
    before = reader.queries_run
    for _ in range(5):
        reader.run(queries.latest_order_time)
    reader.run(queries.alerts_page, queries.AlertFilter(min_score=90))
    reader.run(queries.alerts_page, queries.AlertFilter(min_score=90))
    assert reader.queries_run - before == 2


def test_a_pooled_connection_the_server_dropped_is_replaced(shop):
    dsn, reader = shop
    reader.run(queries.latest_order_time)
    with db.connection(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND datname = "
                    "current_database()", (READER_ROLE,))  # fmt: skip
    reader.cache.clear()
    assert reader.run(queries.latest_order_time) == END - dt.timedelta(minutes=5) + dt.timedelta(seconds=3)


def test_batch_jobs_report_the_latest_run_and_the_latest_success(shop):
    dsn, reader = shop
    conn = db.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO batch_runs (job, as_of, started_at, finished_at, status, rows_written, error) VALUES"
                " ('rfm', '2026-11-24', %(t)s - interval '1 day', %(t)s - interval '23 hours', 'succeeded',"
                "  '{\"pg/customers\": 7}', NULL),"
                " ('rfm', '2026-11-25', %(t)s - interval '1 hour', %(t)s - interval '59 minutes', 'failed', '{}', 'boom'),"
                " ('cohorts', '2026-11-25', %(t)s, NULL, 'running', '{}', NULL)",
                {"t": END},
            )
    finally:
        conn.close()
    jobs = reader.run(queries.batch_jobs).set_index("job")
    assert jobs.loc["rfm", "last_status"] == "failed" and jobs.loc["rfm", "last_error"] == "boom"
    assert jobs.loc["rfm", "last_success_at"] == END - dt.timedelta(hours=23)
    assert jobs.loc["rfm", "last_success_rows"] == '{"pg/customers": 7}'
    assert jobs.loc["cohorts", "last_status"] == "running" and pd.isna(jobs.loc["cohorts", "last_success_at"])
    assert reader.run(queries.gold_version) == END - dt.timedelta(hours=23)


def test_segments_group_customers_by_segment_and_previous_segment(shop):
    dsn, reader = shop
    write(dsn, "customers", ("customer_id", "rfm_segment", "previous_segment", "monetary"), [
        ("K1", "Champions", "Champions", 100.0),
        ("K2", "Champions", "At Risk", 40.0),
        ("K3", "Champions", "At Risk", 60.0),
        ("K4", "Lost", None, 5.0),  # new since the previous run
        ("K5", None, None, 999.0),  # no order in the window: no segment
    ], ("customer_id",))  # fmt: skip
    segments = reader.run(queries.rfm_segments).sort_values(["segment", "previous_segment"], ignore_index=True)
    assert segments.to_dict("records") == [
        {"segment": "Champions", "previous_segment": "At Risk", "customers": 2, "monetary": 100.0},
        {"segment": "Champions", "previous_segment": "Champions", "customers": 1, "monetary": 100.0},
        {"segment": "Lost", "previous_segment": "", "customers": 1, "monetary": 5.0},
    ]
    assert reader.run(queries.rfm_as_of) is None
    conn = db.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO batch_runs (job, as_of, status) VALUES ('rfm', '2026-11-24', 'succeeded'),"
                        " ('rfm', '2026-11-25', 'failed')")  # fmt: skip
    finally:
        conn.close()
    reader.cache.clear()  # a new batch run: what the dashboard sees on its next refresh
    assert reader.run(queries.rfm_as_of) == dt.date(2026, 11, 24)
