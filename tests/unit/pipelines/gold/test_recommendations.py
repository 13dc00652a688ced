"""Recommendations: cosine, FBT, per-customer lists, cold start and product pages, checked by hand.

Every frame holds a bad line (no product id, or no customer id) that must
count for nothing.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import functions as F

from ecom.schemas import FBT_SCHEMA, RECOMMENDATION_SCHEMA, SIMILARITY_SCHEMA
from pipelines.gold import recommendations as rec

LINES = (
    "event_id string, customer_id string, event_time timestamp, product_id string, category string,"
    " quantity int, line_revenue double"
)
PRECISION = 1e-9


def at(hour: int) -> dt.datetime:
    return dt.datetime(2026, 11, 20, hour, tzinfo=dt.UTC)


def lines_frame(spark, rows):
    """Rows ``(order, customer, hour, product, category)`` as order lines (quantity 1, revenue 10.0)."""
    return spark.createDataFrame(
        [(order, customer, at(hour), product, category, 1, 10.0) for order, customer, hour, product, category in rows],
        LINES,
    )


def purchases(spark, rows):
    """The lines of ``rows`` as the recommendations take them (Arrow, from Spark)."""
    return rec.Purchases.from_lines(lines_frame(spark, rows).toArrow())


def frame(spark, table):
    """An Arrow result as a Spark DataFrame, for chispa."""
    return spark.createDataFrame(table)


# -- item-item cosine -----------------------------------------------------------------------------

# The binary customer x product matrix (1 = bought in the window):
#        A  B  C
#   c1   1  1  0
#   c2   1  1  1
#   c3   0  1  1
# |CA| = 2, |CB| = 3, |CC| = 2; A∩B = {c1, c2}, A∩C = {c2}, B∩C = {c2, c3}.
MATRIX = [
    ("o1", "c1", 1, "A", "books"),
    ("o2", "c1", 2, "B", "books"),
    ("o3", "c1", 3, "A", "books"),  # bought again: still a 1 in the matrix
    ("o4", "c2", 1, "A", "books"),
    ("o4", "c2", 1, "B", "books"),
    ("o5", "c2", 2, "C", "toys"),
    ("o6", "c3", 1, "B", "books"),
    ("o7", "c3", 2, "C", "toys"),
    ("o8", "c1", 4, None, "toys"),  # bad: no product
    ("o9", "", 4, "C", "toys"),  # bad: no customer (would make |CC| = 3)
]


def test_is_recommendable_line_needs_a_customer_and_a_product(spark):
    df = lines_frame(
        spark,
        [("o1", "c1", 1, "A", "x"), ("o2", "c1", 1, None, "x"), ("o3", "", 1, "A", "x"), ("o4", None, 1, "", "x")],
    )
    lines = df.toArrow()
    got = dict(zip(lines["event_id"].to_pylist(), rec.recommendable(lines).to_pylist(), strict=True))
    assert got == {"o1": True, "o2": False, "o3": False, "o4": False}


def test_cosine_on_a_three_by_three_matrix(spark):
    ab, ac, bc = 2 / math.sqrt(2 * 3), 1 / math.sqrt(2 * 2), 2 / math.sqrt(3 * 2)
    expected = spark.createDataFrame(
        [
            ("A", "B", 2, ab, 1),
            ("A", "C", 1, ac, 2),
            ("B", "A", 2, ab, 1),  # A and C tie on similarity and common customers: the smaller id first
            ("B", "C", 2, bc, 2),
            ("C", "B", 2, bc, 1),
            ("C", "A", 1, ac, 2),
        ],
        SIMILARITY_SCHEMA,
    )
    got = frame(spark, rec.product_similarity(purchases(spark, MATRIX), top_n=2))
    assert_approx_df_equality(got, expected, PRECISION, ignore_nullable=True, ignore_row_order=True)


def test_similarity_keeps_the_top_n_per_product(spark):
    got = frame(spark, rec.product_similarity(purchases(spark, MATRIX), top_n=1))
    pairs = sorted((r.product_id, r.similar_product_id, r.rank) for r in got.collect())
    assert pairs == [("A", "B", 1), ("B", "A", 1), ("C", "B", 1)]


def test_similarity_counts_each_customers_most_recent_products_only_when_capped(spark):
    # Last two distinct products bought: c1 {A (hour 3), B}, c2 {C, then A and B at hour 1: B wins the tie
    # on the larger id}, c3 {C, B}. So |CA| = 1, |CB| = 3, |CC| = 2; A∩B = {c1}, B∩C = {c2, c3}, A∩C = {}.
    expected = spark.createDataFrame(
        [
            ("A", "B", 1, 1 / math.sqrt(1 * 3), 1),
            ("B", "C", 2, 2 / math.sqrt(3 * 2), 1),
            ("B", "A", 1, 1 / math.sqrt(3 * 1), 2),
            ("C", "B", 2, 2 / math.sqrt(2 * 3), 1),
        ],
        SIMILARITY_SCHEMA,
    )
    got = frame(spark, rec.product_similarity(purchases(spark, MATRIX), top_n=5, max_products_per_customer=2))
    assert_approx_df_equality(got, expected, PRECISION, ignore_nullable=True, ignore_row_order=True)


# -- frequently bought together -------------------------------------------------------------------

# Three baskets: o1 {A, B, C}, o2 {A, B} (B on two lines: counted once), o3 {B} (plus a line with no product).
# All orders 3; orders with A 2, with B 3, with C 1; with A and B 2, A and C 1, B and C 1.
BASKETS = [
    ("o1", "c1", 1, "A", "books"),
    ("o1", "c1", 1, "B", "books"),
    ("o1", "c1", 1, "C", "toys"),
    ("o2", "c2", 1, "A", "books"),
    ("o2", "c2", 1, "B", "books"),
    ("o2", "c2", 1, "B", "books"),
    ("o3", "c3", 1, "B", "books"),
    ("o3", "c3", 1, None, "toys"),
]
# antecedent, consequent, both, support, confidence = both / with antecedent, lift = confidence / (with consequent / 3)
FBT_BY_HAND = {
    ("A", "B"): (2, 2 / 3, 2 / 2, (2 / 2) / (3 / 3)),
    ("B", "A"): (2, 2 / 3, 2 / 3, (2 / 3) / (2 / 3)),
    ("A", "C"): (1, 1 / 3, 1 / 2, (1 / 2) / (1 / 3)),
    ("C", "A"): (1, 1 / 3, 1 / 1, (1 / 1) / (2 / 3)),
    ("B", "C"): (1, 1 / 3, 1 / 3, (1 / 3) / (1 / 3)),
    ("C", "B"): (1, 1 / 3, 1 / 1, (1 / 1) / (3 / 3)),
}


@pytest.mark.parametrize(
    "min_support_count, min_confidence, kept",
    [
        (1, 0.0, ["AB", "BA", "AC", "CA", "BC", "CB"]),
        (2, 0.0, ["AB", "BA"]),  # only A and B are together in two orders
        (1, 0.5, ["AB", "BA", "AC", "CA", "CB"]),  # B -> C has 1/3; A -> C has exactly 0.5: kept
        (1, 0.7, ["AB", "CA", "CB"]),
        (3, 0.0, []),
    ],
)
def test_fbt_support_confidence_and_lift_on_three_baskets(spark, min_support_count, min_confidence, kept):
    expected = spark.createDataFrame([(p[0], p[1], *FBT_BY_HAND[(p[0], p[1])]) for p in kept], FBT_SCHEMA)
    got = frame(spark, rec.frequently_bought_together(purchases(spark, BASKETS), min_support_count, min_confidence))
    assert_approx_df_equality(got, expected, PRECISION, ignore_nullable=True, ignore_row_order=True)


def test_fbt_counts_single_line_orders_among_all_orders(spark):
    # Two more one-line orders: support of A and B falls from 2/3 to 2/5; lift of A -> B = 1 / (3/5).
    more = BASKETS + [("o4", "c4", 1, "D", "toys"), ("o5", "c4", 2, "D", "toys")]
    got = frame(spark, rec.frequently_bought_together(purchases(spark, more), 2, 0.0)).where(F.col("antecedent") == "A")
    expected = spark.createDataFrame([("A", "B", 2, 2 / 5, 1.0, 1.0 / (3 / 5))], FBT_SCHEMA)
    assert_approx_df_equality(got, expected, PRECISION, ignore_nullable=True)


# -- per-customer lists, cold start, product pages ------------------------------------------------

# A hand-made similarity table (rank within each product), so the per-customer step is checked alone.
SIMILARITY = [
    ("A", "B", 3, 0.9, 1),
    ("A", "C", 2, 0.5, 2),
    ("A", "D", 1, 0.4, 3),
    ("B", "A", 3, 0.9, 1),
    ("B", "C", 2, 0.6, 2),
]
# Categories: A, C, E, F books; B grocery (repeat purchase); D toys. Purchases (lines): C 3, E 2, A 1, B 1, D 1, F 1.
SHOP = [
    ("o0", "c1", 0, "B", "grocery"),
    ("o1", "c1", 1, "A", "books"),
    ("o1", "c1", 1, None, "books"),  # bad: no product
    ("o2", "c2", 1, "E", "books"),
    ("o3", "c2", 2, "E", "books"),
    ("o3", "c2", 2, "F", "books"),
    ("o4", "c3", 1, "C", "books"),
    ("o5", "c3", 2, "C", "books"),
    ("o6", "c3", 3, "C", "books"),
    ("o7", "", 3, "D", "toys"),  # bad: no customer
    ("o8", "c4", 4, "D", "toys"),  # c4 bought D only: nothing is similar to D, no other toy to fill with
]


def similarity_table(spark):
    return spark.createDataFrame(SIMILARITY, SIMILARITY_SCHEMA).toArrow()


def customer_lists(spark, top_n, seed_products=None):
    lists = rec.customer_recommendations(
        purchases(spark, SHOP), similarity_table(spark), top_n, ["grocery"], seed_products
    )
    return frame(spark, lists)


def recommendations(spark, rows):
    return spark.createDataFrame(rows, RECOMMENDATION_SCHEMA)


def test_customer_lists_leave_out_bought_products_except_repeat_categories_then_fill(spark):
    expected = recommendations(
        spark,
        [
            # c1 bought A (books) and B (grocery). Seeds A and B: C 0.5 + 0.6, B 0.9 (bought, but grocery
            # is bought again), A 0.9 (bought books: left out), D 0.4. Then popular books: C is listed,
            # E (2 purchases), A left out, F (1).
            ("customer", "c1", "C", 1, 1.1, "item_similarity"),
            ("customer", "c1", "B", 2, 0.9, "item_similarity"),
            ("customer", "c1", "D", 3, 0.4, "item_similarity"),
            ("customer", "c1", "E", 4, 2.0, "popular_in_category"),
            ("customer", "c1", "F", 5, 1.0, "popular_in_category"),
            # c2 bought E and F, which nothing is similar to: popular books not bought; only two are left.
            ("customer", "c2", "C", 1, 3.0, "popular_in_category"),
            ("customer", "c2", "A", 2, 1.0, "popular_in_category"),
            # c3 bought only C: E, then A and F (one purchase each: the smaller id first).
            ("customer", "c3", "E", 1, 2.0, "popular_in_category"),
            ("customer", "c3", "A", 2, 1.0, "popular_in_category"),
            ("customer", "c3", "F", 3, 1.0, "popular_in_category"),
        ],
    )
    assert_approx_df_equality(
        customer_lists(spark, 5), expected, PRECISION, ignore_nullable=True, ignore_row_order=True
    )


def test_customer_lists_stop_at_top_n(spark):
    got = customer_lists(spark, 2).where(F.col("subject_id") == "c1")
    expected = recommendations(
        spark,
        [("customer", "c1", "C", 1, 1.1, "item_similarity"), ("customer", "c1", "B", 2, 0.9, "item_similarity")],
    )
    assert_approx_df_equality(got, expected, PRECISION, ignore_nullable=True, ignore_row_order=True)


def test_customer_lists_start_from_the_most_recent_products_when_seeds_are_capped(spark):
    # c1 bought A last (hour 1, B at hour 0): A's similar products only; B stays (grocery), C and D follow.
    got = customer_lists(spark, 3, seed_products=1).where(F.col("subject_id") == "c1")
    expected = recommendations(
        spark,
        [
            ("customer", "c1", "B", 1, 0.9, "item_similarity"),
            ("customer", "c1", "C", 2, 0.5, "item_similarity"),
            ("customer", "c1", "D", 3, 0.4, "item_similarity"),
        ],
    )
    assert_approx_df_equality(got, expected, PRECISION, ignore_nullable=True, ignore_row_order=True)


def test_a_similarity_of_zero_still_makes_a_candidate(spark):
    # c4 bought D only; E is similar to D with similarity 0: listed with score 0, nothing to fill with (D is left out).
    similarity = spark.createDataFrame([("D", "E", 1, 0.0, 1)], SIMILARITY_SCHEMA).toArrow()
    lists = rec.customer_recommendations(purchases(spark, SHOP), similarity, 5, ["grocery"])
    got = frame(spark, lists).where(F.col("subject_id") == "c4")
    expected = recommendations(spark, [("customer", "c4", "E", 1, 0.0, "item_similarity")])
    assert_df_equality(got, expected, ignore_nullable=True)


def test_scores_round_half_up_as_spark_does(spark):
    # Around a half in the tenth decimal the double's binary value and its shortest decimal form disagree:
    # Spark rounds the decimal form.
    values = [1.0000000005, -1.0000000005, 0.1234567895, 2.5e-9, 0.30000000000000004, 4.9999999999e-10, 1.1]
    spark_rounded = spark.createDataFrame([(v,) for v in values], "x double").select(F.round("x", 9).alias("r"))
    assert list(rec.round_half_up(np.array(values), rec.SCORE_DECIMALS)) == [r.r for r in spark_rounded.collect()]


def test_cold_start_lists_per_category_and_overall(spark):
    expected = recommendations(
        spark,
        [
            ("category", "books", "C", 1, 3.0, "popular_in_category"),
            ("category", "books", "E", 2, 2.0, "popular_in_category"),
            ("category", "books", "A", 3, 1.0, "popular_in_category"),  # A and F tie: the smaller id
            ("category", "grocery", "B", 1, 1.0, "popular_in_category"),
            (
                "category",
                "toys",
                "D",
                1,
                1.0,
                "popular_in_category",
            ),  # one line: the one without a customer is not counted
            ("category", "all", "C", 1, 3.0, "popular"),
            ("category", "all", "E", 2, 2.0, "popular"),
            ("category", "all", "A", 3, 1.0, "popular"),  # A, B, D and F tie: the smallest id
        ],
    )
    got = frame(spark, rec.popular_by_category(purchases(spark, SHOP), top_n=3))
    assert_df_equality(got, expected, ignore_nullable=True, ignore_row_order=True)


def test_product_pages_show_the_similar_products(spark):
    similarity = similarity_table(spark)
    expected = recommendations(
        spark,
        [
            ("product", "A", "B", 1, 0.9, "item_similarity"),
            ("product", "A", "C", 2, 0.5, "item_similarity"),
            ("product", "B", "A", 1, 0.9, "item_similarity"),
            ("product", "B", "C", 2, 0.6, "item_similarity"),
        ],
    )
    got = frame(spark, rec.product_recommendations(similarity, top_n=2))
    assert_df_equality(got, expected, ignore_nullable=True, ignore_row_order=True)


def test_ranks_do_not_depend_on_the_order_or_partitioning_of_lines(spark):
    similarity = similarity_table(spark)
    shop = rec.Purchases.from_lines(lines_frame(spark, SHOP).toArrow())
    shuffled = rec.Purchases.from_lines(lines_frame(spark, list(reversed(SHOP))).repartition(3).toArrow())
    for build in (
        lambda lines: rec.customer_recommendations(lines, similarity, 5, ["grocery"]),
        lambda lines: rec.popular_by_category(lines, 3),
        lambda lines: rec.product_similarity(lines, 3),
    ):
        assert_df_equality(frame(spark, build(shuffled)), frame(spark, build(shop)), ignore_row_order=True)
