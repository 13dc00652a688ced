"""Live minute metrics on tiny inline batches: figures overall and per dimension, FX, late events, replays, restarts.

Expected figures are worked out by hand in the comments. Reporting currency USD:
EUR 0.92 and JPY 150 per USD (ecom/reference.py).
"""

import datetime as dt
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import types as T

from ecom.schemas import MINUTE_METRICS_SCHEMA, SILVER_SCHEMA
from pipelines.gold.live import (
    LIVE_COLUMNS,
    LiveMinutes,
    dimension_rows,
    live_rows,
    minute_metrics,
    reporting_rates,
    with_late_events,
)

M0 = dt.datetime(2026, 11, 20, 10, 0)  # the minute under test
M1 = M0 + dt.timedelta(minutes=1)
M2 = M0 + dt.timedelta(minutes=2)
DELAY = pd.Timedelta("1 minute")

# Silver columns the live stream and the gold orders read.
COLUMNS = (*LIVE_COLUMNS, "customer_email_hash", "event_date", "shipping_country", "fraud_score")
ROWS_SCHEMA = T.StructType([SILVER_SCHEMA[c] for c in COLUMNS])
FIGURES = "window_start timestamp, dimension string, dimension_value string, orders long, revenue double, "
FIGURES += "avg_order_value double, customers long, alerts long, alert_rate double"
FIGURE_NAMES = [f.split()[0] for f in FIGURES.split(", ")]


def line(product, category, quantity, price):
    return (product, category, quantity, Decimal(price))


def order(event_id, customer, at, currency, amount, items, payment="card", channel="web", fraud=False, processed=None):
    """One silver row; ``fraud`` None = not scored. Kafka offsets follow the event ids (e1 -> 1)."""
    processed = processed or at + dt.timedelta(seconds=1)
    score = None if fraud is None else (90.0 if fraud else 10.0)
    return {
        "event_id": event_id, "event_time": at, "processed_time": processed, "customer_id": customer, "items": items,
        "amount": Decimal(amount), "currency": currency, "payment_method": payment, "channel": channel,
        "is_fraud": fraud, "kafka_partition": 0, "kafka_offset": int(event_id[1:]), "customer_email_hash": None,
        "event_date": at.date(), "shipping_country": "US", "fraud_score": score,
    }  # fmt: skip


# Minute M0, by hand (USD):
#   e1 C1 30.00 USD: books 1 x 10.00 = 10, toys 2 x 10.00 = 20; card, web; scored, no alert
#   e2 C2  9.20 EUR = 10: books 1 x 9.20 = 10; paypal, mobile_app; alert
#   e3 C1  1500 JPY = 10: a line without category (-> unknown) = 10, a line without product (no category row); card,
#      web; not scored (the null row)
E1 = order(
    "e1", "C1", M0.replace(second=5), "USD", "30.00", [line("P1", "books", 1, "10.00"), line("P2", "toys", 2, "10.00")]
)
E2 = order(
    "e2", "C2", M0.replace(second=20), "EUR", "9.20", [line("P3", "books", 1, "9.20")], "paypal", "mobile_app", True
)
E3 = order(
    "e3",
    "C1",
    M0.replace(second=40),
    "JPY",
    "1500",
    [line("P4", None, 1, "1500"), line(None, "toys", 1, "1")],
    fraud=None,
)
M0_FIGURES = [
    # dimension, value, orders, revenue, avg, customers, alerts, alert rate
    ("all", "", 3, 50.0, 50 / 3, 2, 1, 1 / 2),
    ("category", "books", 2, 20.0, 10.0, 2, 1, 1 / 2),
    ("category", "toys", 1, 20.0, 20.0, 1, 0, 0.0),
    ("category", "unknown", 1, 10.0, 10.0, 1, 0, None),
    ("payment_method", "card", 2, 40.0, 20.0, 1, 0, 0.0),
    ("payment_method", "paypal", 1, 10.0, 10.0, 1, 1, 1.0),
    ("channel", "web", 2, 40.0, 20.0, 1, 0, 0.0),
    ("channel", "mobile_app", 1, 10.0, 10.0, 1, 1, 1.0),
]  # fmt: skip
# Minute M2: e4 C3 5.00 USD, books; card, web; scored, no alert. With a delay of one minute its arrival moves the
# watermark to M1+30s, past the end of M0.
E4 = order("e4", "C3", M2.replace(second=30), "USD", "5.00", [line("P1", "books", 1, "5.00")])
# Arrives after M0 closed: C4 7.00 USD books, card, web, scored, no alert.
LATE = order("e6", "C4", M0.replace(second=50), "USD", "7.00", [line("P1", "books", 1, "7.00")], processed=M2.replace(second=50))  # fmt: skip


def frame(spark, rows):
    return spark.createDataFrame([tuple(r[c] for c in COLUMNS) for r in rows], ROWS_SCHEMA)


def batch(spark, rows) -> pa.Table:
    return frame(spark, rows).select(*LIVE_COLUMNS).toArrow()


def figures(spark, minute, rows):
    return spark.createDataFrame([(minute, *r) for r in rows], FIGURES)


def as_spark(spark, pdf: pd.DataFrame):
    return spark.createDataFrame(pdf[FIGURE_NAMES], FIGURES)


def assert_figures(got, expected):
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


@pytest.fixture
def live():
    return LiveMinutes(reporting_rates("USD"), DELAY)


def test_a_minute_overall_and_per_dimension(spark, live):
    changes = live.fold(batch(spark, [E1, E2, E3]))
    assert_figures(as_spark(spark, changes.figures), figures(spark, M0, M0_FIGURES))
    assert changes.closed.empty and changes.late.empty
    assert changes.watermark == pd.Timestamp(E3["event_time"]) - DELAY


def test_the_stream_and_the_batch_count_the_same(spark):
    """The stream's fold and the batch's recomputation give the same figures for the same silver rows."""
    dims = dimension_rows(batch(spark, [E1, E2, E3, E4]), reporting_rates("USD"))
    got = spark.createDataFrame(minute_metrics(dims)).select(*FIGURE_NAMES)
    e4 = [(M2, d, v, 1, 5.0, 5.0, 1, 0, 0.0) for d, v in [("all", ""), ("category", "books"), ("payment_method", "card"), ("channel", "web")]]  # fmt: skip
    assert_figures(got, figures(spark, M0, M0_FIGURES).unionByName(spark.createDataFrame(e4, FIGURES)))


def test_a_minute_closes_when_the_watermark_passes_its_end(spark, live):
    live.fold(batch(spark, [E1, E2, E3]))
    # e4 at M2+30s -> watermark M1+30s, past M0's end (M1): M0 closes with its final figures; e4's minute stays open.
    changes = live.fold(batch(spark, [E4]))
    final = changes.closed
    assert_figures(as_spark(spark, final), figures(spark, M0, M0_FIGURES))
    assert (final["source"] == "stream").all() and (final["late_events"] == 0).all()
    assert set(final["event_date"]) == {M0.date()}
    assert list(live.minutes) == [pd.Timestamp(M2)]
    assert changes.figures["window_start"].eq(pd.Timestamp(M2)).all()


def test_a_late_event_is_counted_not_added_and_the_recomputation_includes_it(spark, live):
    live.fold(batch(spark, [E1, E2, E3]))
    live.fold(batch(spark, [E4]))  # M0 closed
    changes = live.fold(batch(spark, [LATE]))
    assert changes.figures.empty and changes.closed.empty  # nothing of M0's figures moves
    assert changes.late.to_dict("list") == {"window_start": [pd.Timestamp(M0)], "late_events": [1]}
    late_rows = changes.late_rows(dt.datetime(2026, 11, 20, 10, 3))
    assert late_rows[["dimension", "orders", "late_events"]].values.tolist() == [["all", 0, 1]]

    # The daily batch recomputes M0 from silver: e6 is in the figures now, and its late count is kept.
    dims = dimension_rows(batch(spark, [E1, E2, E3, LATE]), reporting_rates("USD"))
    late = spark.createDataFrame([(M0, "all", "", 1)], "window_start timestamp, dimension string, dimension_value string, late_events long").toArrow()  # fmt: skip
    got = spark.createDataFrame(with_late_events(minute_metrics(dims), late))
    # With e6 (C4, 7 USD, books, card, web, scored): overall 4 orders, 57 USD, 3 customers, 1 alert of 3 scored.
    expected = [
        ("all", "", 4, 57.0, 57 / 4, 3, 1, 1 / 3, 1),
        ("category", "books", 3, 27.0, 9.0, 3, 1, 1 / 3, 0),
        ("category", "toys", 1, 20.0, 20.0, 1, 0, 0.0, 0),
        ("category", "unknown", 1, 10.0, 10.0, 1, 0, None, 0),
        ("payment_method", "card", 3, 47.0, 47 / 3, 2, 0, 0.0, 0),
        ("payment_method", "paypal", 1, 10.0, 10.0, 1, 1, 1.0, 0),
        ("channel", "web", 3, 47.0, 47 / 3, 2, 0, 0.0, 0),
        ("channel", "mobile_app", 1, 10.0, 10.0, 1, 1, 1.0, 0),
    ]
    assert_figures(
        got.select(*FIGURE_NAMES, "late_events"),
        spark.createDataFrame([(M0, *r) for r in expected], FIGURES + ", late_events long"),
    )


def test_a_minute_known_only_by_late_events_keeps_its_count(spark):
    figures_ = spark.createDataFrame([], FIGURES).toArrow()
    late = spark.createDataFrame([(M0, "all", "", 2)], "window_start timestamp, dimension string, dimension_value string, late_events long").toArrow()  # fmt: skip
    got = spark.createDataFrame(with_late_events(figures_, late)).select(*FIGURE_NAMES, "late_events")
    expected = spark.createDataFrame([(M0, "all", "", 0, 0.0, None, 0, 0, None, 2)], FIGURES + ", late_events long")
    assert_figures(got, expected)


def test_a_row_folded_twice_counts_once(spark, live):
    live.fold(batch(spark, [E1, E2]))
    again = live.fold(batch(spark, [E1, E2, E3]))  # e1 and e2 again (a replay overlapping a rebuild), e3 new
    # Only what e3 touched is written again: overall, unknown category, card, web.
    touched = [r for r in M0_FIGURES if (r[0], r[1]) in {("all", ""), ("category", "unknown"), ("payment_method", "card"), ("channel", "web")}]  # fmt: skip
    assert_figures(as_spark(spark, again.figures), figures(spark, M0, touched))
    closed = live.fold(batch(spark, [E2, E4])).closed  # e2 once more, then M0 closes
    assert_figures(as_spark(spark, closed), figures(spark, M0, M0_FIGURES))


def test_an_order_stamped_in_the_future_cannot_close_the_present(spark, live):
    live.fold(batch(spark, [E1, E2, E3]))
    # Stamped a day ahead but processed at M1+10s: the watermark moves to M0+0:10 at most, M0 stays open.
    future = order("e9", "C9", M0 + dt.timedelta(days=1), "USD", "1.00", [line("P1", "books", 1, "1.00")], processed=M1.replace(second=10))  # fmt: skip
    changes = live.fold(batch(spark, [future]))
    assert changes.watermark == pd.Timestamp(M1.replace(second=10)) - DELAY
    assert changes.closed.empty
    assert pd.Timestamp(M0) in live.minutes


def test_a_currency_without_rate_is_a_clear_error(spark, live):
    bad = order("e5", "C5", M0, "XXX", "1.00", [line("P1", "books", 1, "1.00")])
    with pytest.raises(ValueError, match="no FX rate for currency XXX"):
        live.fold(batch(spark, [E1, bad]))


def test_a_restart_continues_exactly_where_the_last_batch_left(spark, live):
    live.fold(batch(spark, [E1, E2]))
    progress = live.progress()
    # Silver also holds e3 and e4, written after that batch (past its offsets): the restart must not count them
    # as folded, the replayed batch brings them.
    resumed = LiveMinutes(reporting_rates("USD"), DELAY)
    resumed.resume(progress, batch(spark, [E1, E2, E3, E4]))
    assert resumed.watermark == live.watermark and resumed.offsets == {0: 2}
    expected = live.fold(batch(spark, [E3, E4]))
    got = resumed.fold(batch(spark, [E3, E4]))
    assert_figures(as_spark(spark, got.figures), as_spark(spark, expected.figures))
    assert_figures(as_spark(spark, got.closed), as_spark(spark, expected.closed))
    assert got.watermark == expected.watermark


def test_minute_rows_have_the_declared_columns(spark, live):
    changes = live.fold(batch(spark, [E1]))
    assert list(changes.figures.columns) == MINUTE_METRICS_SCHEMA.fieldNames()
    spark.createDataFrame(changes.figures, MINUTE_METRICS_SCHEMA)  # types fit the table's schema


def test_rows_held_as_pandas_fold_the_same(spark, live):
    """The ingest micro-batch holds its new silver rows as pandas (naive UTC times, Decimal amounts, item dicts)."""
    frame = batch(spark, [E1, E2, E3]).to_pandas()
    frame["event_time"] = frame["event_time"].dt.tz_convert(None)
    changes = live.fold(live_rows(frame))
    assert_figures(as_spark(spark, changes.figures), figures(spark, M0, M0_FIGURES))
