"""RFM: window bounds, exact monetary sums, tie-fair scores, segments in table order, previous segment.

Every expected value is worked out by hand in the comments next to it.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from ecom.schemas import RFM_SCHEMA
from pipelines.gold import rfm

UTC = dt.UTC
ORDERS = "customer_id string, event_time timestamp, revenue double"
VALUES = "customer_id string, recency_days int, frequency long, monetary double"
SCORES = "r_score int, f_score int, m_score int"


def at(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


# -- the score formula --------------------------------------------------------


def test_score_is_one_plus_floor_of_five_worse_over_n_at_its_boundaries(spark):
    rows = [
        # worse, customers, 1 + min(4, floor(5 * worse / customers))
        (0, 1, 1),  # a single customer: 0 / 1
        (0, 10, 1),
        (1, 10, 1),  # 0.5
        (2, 10, 2),  # exactly 1.0: the boundary goes up
        (3, 10, 2),  # 1.5
        (4, 10, 3),  # 2.0
        (7, 10, 4),  # 3.5
        (8, 10, 5),  # 4.0
        (9, 10, 5),  # 4.5: the best of 10
        (1, 3, 2),  # 1.67
        (2, 3, 4),  # 3.33: with 3 customers the scores are 1, 2, 4
        (1, 2, 3),  # 2.5
        (10, 10, 5),  # 5.0 would be 6: min(4, .) caps it (w < N with real data, so the cap is a guard)
        (None, 10, None),  # no value, no score
    ]
    df = spark.createDataFrame(rows, "worse long, customers long, expected int")
    got = df.select("worse", "customers", rfm.score(F.col("worse"), F.col("customers")).alias("expected"))
    assert_df_equality(got, df, ignore_nullable=True, ignore_row_order=True)


def test_scores_give_ties_the_same_score_and_compare_money_exactly(spark):
    values = spark.createDataFrame(
        [
            ("c1", 0, 5, 100.0),
            ("c2", 0, 3, 40.0),
            ("c3", 10, 3, 40.0),
            ("c4", 30, 1, 0.1 + 0.2),  # 0.30000000000000004: one ulp above c5, so better, not tied
            ("c5", 30, 1, 0.3),
        ],
        VALUES,
    )
    # N = 5, score = 1 + floor(5w / 5) = 1 + w.
    # R (more days is worse): c1, c2 have 3 worse (10, 30, 30) -> 4; c3 has 2 -> 3; c4, c5 none -> 1.
    # F (fewer is worse): c1 4 worse -> 5; c2, c3 2 worse (the 1s) -> 3; c4, c5 -> 1.
    # M (less is worse): c1 4 -> 5; c2, c3 2 -> 3; c4 1 (c5) -> 2; c5 -> 1.
    expected = spark.createDataFrame(
        [
            ("c1", 0, 5, 100.0, 4, 5, 5, "455"),
            ("c2", 0, 3, 40.0, 4, 3, 3, "433"),
            ("c3", 10, 3, 40.0, 3, 3, 3, "333"),
            ("c4", 30, 1, 0.1 + 0.2, 1, 1, 2, "112"),
            ("c5", 30, 1, 0.3, 1, 1, 1, "111"),
        ],
        f"{VALUES}, {SCORES}, rfm_score string",
    )
    got = rfm.with_rfm_scores(values)
    assert_df_equality(got, expected, ignore_nullable=True, ignore_row_order=True)


def test_all_customers_tied_all_score_one(spark):
    values = spark.createDataFrame([(c, 7, 2, 9.5) for c in ("a", "b", "c", "d")], VALUES)
    got = rfm.with_rfm_scores(values).select("customer_id", "rfm_score")
    expected = spark.createDataFrame([(c, "111") for c in ("a", "b", "c", "d")], "customer_id string, rfm_score string")
    assert_df_equality(got, expected, ignore_nullable=True, ignore_row_order=True)


# -- segments -----------------------------------------------------------------

# Issue 9, item 3, copied by hand: (segment, R, F, M), first match wins.
ISSUE_TABLE = [
    ("Champions", (4, 5), (4, 5), (4, 5)),
    ("Can't Lose Them", (1, 1), (4, 5), (4, 5)),
    ("Loyal Customers", (2, 5), (3, 5), (3, 5)),
    ("New Customers", (4, 5), (1, 1), (1, 1)),
    ("Promising", (3, 4), (1, 1), (1, 1)),
    ("Potential Loyalist", (3, 5), (1, 3), (1, 3)),
    ("Lost", (1, 1), (1, 1), (1, 1)),
    ("Need Attention", (2, 3), (2, 3), (2, 3)),
    ("At Risk", (1, 2), (2, 5), (2, 5)),
    ("About To Sleep", (2, 3), (1, 2), (1, 2)),
    ("Hibernating", (1, 2), (1, 2), (1, 2)),
]

# One customer per segment: its scores, and the segment a later rule would give
# them if this rule were missing (None: no later rule covers them).
HAND_PICKED = {
    "Champions": ((5, 5, 5), "Loyal Customers"),
    "Can't Lose Them": ((1, 5, 5), "At Risk"),
    "Loyal Customers": ((5, 3, 3), "Potential Loyalist"),
    "New Customers": ((5, 1, 1), "Potential Loyalist"),
    "Promising": ((3, 1, 1), "Potential Loyalist"),
    "Potential Loyalist": ((3, 2, 2), "Need Attention"),
    "Lost": ((1, 1, 1), "Hibernating"),
    "Need Attention": ((2, 2, 2), "At Risk"),
    "At Risk": ((1, 2, 2), "Hibernating"),
    "About To Sleep": ((2, 1, 2), "Hibernating"),
    "Hibernating": ((1, 2, 1), None),
}


def test_segment_rules_are_the_issue_table_in_its_order():
    assert [(r.segment, r.r, r.f, r.m) for r in rfm.SEGMENT_RULES] == ISSUE_TABLE


def segments_of(spark, triples, rules=rfm.SEGMENT_RULES):
    df = spark.createDataFrame(triples, SCORES)
    return df.withColumn("segment", rfm.segment(F.col("r_score"), F.col("f_score"), F.col("m_score"), rules))


@pytest.mark.parametrize("rule", rfm.SEGMENT_RULES, ids=lambda rule: rule.segment)
def test_a_customer_lands_in_each_segment_by_the_first_matching_rule(spark, rule):
    triple, later = HAND_PICKED[rule.segment]
    expected = spark.createDataFrame([(*triple, rule.segment)], f"{SCORES}, segment string")
    assert_df_equality(segments_of(spark, [triple]), expected, ignore_nullable=True)
    # The same scores without this rule fall to the later rule (or Others): the order decided it.
    without = tuple(r for r in rfm.SEGMENT_RULES if r is not rule)
    assert segments_of(spark, [triple], without).first()["segment"] == (later or "Others")


def test_scores_no_rule_covers_are_others(spark):
    triples = [(1, 1, 3), (5, 1, 5), (3, 4, 1)]  # e.g. 1/1/3: F=1 and M=3 fit no rule
    expected = spark.createDataFrame([(*t, "Others") for t in triples], f"{SCORES}, segment string")
    assert_df_equality(segments_of(spark, triples), expected, ignore_nullable=True, ignore_row_order=True)


def test_every_segment_is_reachable_from_some_scores(spark):
    all_triples = list(itertools.product(range(1, 6), repeat=3))
    reached = {row["segment"] for row in segments_of(spark, all_triples).select("segment").distinct().collect()}
    assert reached == {name for name, *_ in ISSUE_TABLE} | {"Others"}


# -- window, recency, monetary ------------------------------------------------

AS_OF = dt.date(2026, 3, 31)


def test_window_holds_window_days_dates_ending_with_as_of(spark):
    orders = spark.createDataFrame(
        [
            # window_days = 30: dates 2026-03-02 .. 2026-03-31, both included
            ("first_day", at(2026, 3, 2, 0, 0, 0), 1.0),  # first instant in: recency 29
            ("before", at(2026, 3, 1, 23, 59, 59, 999000), 1.0),  # last instant before: out
            ("on_as_of", at(2026, 3, 31, 23, 59, 59, 999000), 2.0),  # last instant in: recency 0
            ("after", at(2026, 4, 1, 0, 0, 0), 1.0),  # the day after as_of: out
            ("mixed", at(2026, 2, 1, 12), 50.0),  # out
            ("mixed", at(2026, 3, 10, 12), 5.0),  # in: recency 21
            ("mixed", at(2026, 4, 1, 12), 100.0),  # out
            ("mixed", at(2026, 3, 5, 12), 4.0),  # in, earlier than the 10th
            ("x", at(2026, 3, 20, 8), 0.1),
            ("x", at(2026, 3, 20, 9), 0.2),  # 0.1 + 0.2 summed exactly: 0.3
            ("y", at(2026, 3, 20, 10), 0.3),
        ],
        ORDERS,
    )
    expected = spark.createDataFrame(
        [
            ("first_day", 29, 1, 1.0),
            ("on_as_of", 0, 1, 2.0),
            ("mixed", 21, 2, 9.0),
            ("x", 11, 2, 0.3),
            ("y", 11, 1, 0.3),
        ],
        VALUES,
    )
    got = rfm.rfm_values(orders, AS_OF, 30)
    assert_df_equality(got, expected, ignore_nullable=True, ignore_row_order=True)


def test_a_one_day_window_is_the_as_of_date(spark):
    orders = spark.createDataFrame(
        [("today", at(2026, 3, 31, 0, 0), 3.0), ("yesterday", at(2026, 3, 30, 23, 59), 3.0)], ORDERS
    )
    expected = spark.createDataFrame([("today", 0, 1, 3.0)], VALUES)
    assert_df_equality(rfm.rfm_values(orders, AS_OF, 1), expected, ignore_nullable=True)


def test_a_window_without_days_is_refused():
    with pytest.raises(ValueError, match="at least one day"):
        rfm.window_bounds(AS_OF, 0)


@pytest.mark.parametrize(
    "row, column",
    [
        ((None, at(2026, 3, 20), 1.0), "customer_id"),
        (("c", None, 1.0), "event_time"),
        (("c", at(2026, 3, 20), None), "revenue"),
    ],
)
def test_a_null_in_an_order_stops_the_job_naming_the_column(spark, row, column):
    orders = spark.createDataFrame([("ok", at(2026, 3, 20), 1.0), row], ORDERS)
    with pytest.raises(Exception, match=f"gold orders: null {column}"):
        rfm.rfm_table(orders, AS_OF, 30).collect()


# -- previous segment and the whole table --------------------------------------

PREVIOUS = "as_of date, customer_id string, segment string"


def test_previous_segment_is_the_latest_earlier_one(spark):
    current = spark.createDataFrame([("c1",), ("c2",), ("c3",)], "customer_id string")
    previous = spark.createDataFrame(
        [
            (dt.date(2026, 3, 1), "c1", "Lost"),
            (dt.date(2026, 3, 15), "c1", "At Risk"),  # c1's latest before as_of
            (dt.date(2026, 3, 31), "c2", "Champions"),  # as_of itself: a rerun, not a previous run
            (dt.date(2026, 4, 5), "c2", "Lost"),  # later than as_of
            (dt.date(2026, 3, 15), "c4", "Promising"),  # not in the current run: no row
        ],
        PREVIOUS,
    )
    expected = spark.createDataFrame(
        [("c1", "At Risk"), ("c2", None), ("c3", None)], "customer_id string, previous_segment string"
    )
    got = rfm.with_previous_segment(current, previous, AS_OF)
    assert_df_equality(got, expected, ignore_nullable=True, ignore_row_order=True)


@pytest.mark.parametrize("previous", ["none", "empty"])
def test_without_previous_runs_previous_segment_is_null(spark, previous):
    current = spark.createDataFrame([("c1",)], "customer_id string")
    prev = None if previous == "none" else spark.createDataFrame([], PREVIOUS)
    expected = spark.createDataFrame([("c1", None)], "customer_id string, previous_segment string")
    assert_df_equality(rfm.with_previous_segment(current, prev, AS_OF), expected, ignore_nullable=True)


def test_rfm_table_end_to_end(spark):
    as_of = dt.date(2026, 4, 2)  # window_days 365: 2025-04-03 .. 2026-04-02
    orders = spark.createDataFrame(
        [
            ("a", at(2026, 1, 5, 10), 10.0),
            ("a", at(2026, 3, 1, 0), 5.0),  # a: last 2026-03-01 -> 32 days, 2 orders, 15.0
            ("b", at(2026, 1, 31, 23, 59), 7.5),  # b: 2026-01-31 -> 61 days, 1 order, 7.5
            ("c", at(2026, 2, 2), 1.0),
            ("c", at(2026, 4, 2, 18), 1.0),  # c: on as_of -> 0 days, 2 orders, 2.0
            ("old", at(2025, 4, 2, 23, 59), 99.0),  # one day before the window: no row
        ],
        ORDERS,
    )
    previous = spark.createDataFrame(
        [(dt.date(2026, 3, 1), "b", "Lost"), (dt.date(2026, 3, 1), "old", "Hibernating")], PREVIOUS
    )
    # N = 3, score = 1 + floor(5w / 3): w = 0 -> 1, 1 -> 2, 2 -> 4.
    # R: c (0 d) w=2 -> 4, a (32 d) w=1 -> 2, b (61 d) -> 1.  F: a, c w=1 -> 2, b -> 1.
    # M: a (15) -> 4, b (7.5) -> 2, c (2) -> 1.
    # 421: Potential Loyalist (not Loyal: F < 3); 224: At Risk (R 1-2, F/M 2-5; Need Attention wants M <= 3);
    # 112: Hibernating (Lost wants M = 1).
    expected = spark.createDataFrame(
        [
            (as_of, "a", 32, 2, 15.0, 2, 2, 4, "224", "At Risk", None),
            (as_of, "b", 61, 1, 7.5, 1, 1, 2, "112", "Hibernating", "Lost"),
            (as_of, "c", 0, 2, 2.0, 4, 2, 1, "421", "Potential Loyalist", None),
        ],
        RFM_SCHEMA,
    )
    got = rfm.rfm_table(orders, as_of, 365, previous)
    assert_df_equality(got, expected, ignore_nullable=True, ignore_row_order=True)
