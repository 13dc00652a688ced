"""Cohorts: a matrix small enough to check by hand, with empty months filled for the heatmap."""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality

from ecom.schemas import COHORT_SCHEMA
from pipelines.gold.cohorts import cohort_table

ORDERS = "customer_id string, event_time timestamp, revenue double"


def at(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def month(year: int, number: int) -> dt.date:
    return dt.date(year, number, 1)


def test_cohort_matrix_by_hand(spark):
    orders = spark.createDataFrame(
        [
            ("e", at(2025, 12, 31, 23, 59, 59), 3.0),  # e: cohort 2025-12
            ("e", at(2026, 1, 1, 0, 0, 0), 2.0),  # next second, next month (and year): month 1
            ("a", at(2026, 1, 5, 10), 10.0),  # a: cohort 2026-01
            ("a", at(2026, 1, 20, 10), 20.0),
            ("a", at(2026, 3, 1, 0), 5.0),  # month 2
            ("b", at(2026, 1, 31, 23, 59, 59), 7.5),  # b: cohort 2026-01 (last second of January)
            ("b", at(2026, 2, 1, 0, 0, 0), 2.5),  # month 1
            ("c", at(2026, 2, 15), 4.0),  # c: cohort 2026-02
            ("c", at(2026, 4, 30, 23), 6.0),  # month 2
            ("d", at(2026, 4, 10), 1.0),  # d: cohort 2026-04, the latest month of the data
        ],
        ORDERS,
    )
    # Every cohort gets months 0 .. (2026-04 - cohort); months without orders are zero rows.
    # (cohort, m, size, active, retention, orders, revenue, avg order value, orders per active)
    expected = spark.createDataFrame(
        [
            (month(2025, 12), 0, 1, 1, 1.0, 1, 3.0, 3.0, 1.0),
            (month(2025, 12), 1, 1, 1, 1.0, 1, 2.0, 2.0, 1.0),
            (month(2025, 12), 2, 1, 0, 0.0, 0, 0.0, None, None),
            (month(2025, 12), 3, 1, 0, 0.0, 0, 0.0, None, None),
            (month(2025, 12), 4, 1, 0, 0.0, 0, 0.0, None, None),
            # January: a (2 orders, 30.0) and b (1 order, 7.5) -> 3 orders, 37.5
            (month(2026, 1), 0, 2, 2, 1.0, 3, 37.5, 12.5, 1.5),
            (month(2026, 1), 1, 2, 1, 0.5, 1, 2.5, 2.5, 1.0),  # b in February
            (month(2026, 1), 2, 2, 1, 0.5, 1, 5.0, 5.0, 1.0),  # a in March
            (month(2026, 1), 3, 2, 0, 0.0, 0, 0.0, None, None),
            (month(2026, 2), 0, 1, 1, 1.0, 1, 4.0, 4.0, 1.0),
            (month(2026, 2), 1, 1, 0, 0.0, 0, 0.0, None, None),
            (month(2026, 2), 2, 1, 1, 1.0, 1, 6.0, 6.0, 1.0),
            (month(2026, 4), 0, 1, 1, 1.0, 1, 1.0, 1.0, 1.0),
        ],
        COHORT_SCHEMA,
    )
    assert_df_equality(cohort_table(orders), expected, ignore_nullable=True, ignore_row_order=True)


def test_revenue_is_summed_exactly(spark):
    orders = spark.createDataFrame(
        [("a", at(2026, 5, 1), 0.1), ("a", at(2026, 5, 2), 0.2), ("b", at(2026, 5, 3), 0.3)], ORDERS
    )
    # In millionths 100000 + 200000 + 300000 = 600000 -> 0.6, whatever the order of addition
    # (as doubles, (0.1 + 0.2) + 0.3 is 0.6000000000000001 but 0.1 + (0.2 + 0.3) is 0.6).
    expected = spark.createDataFrame([(month(2026, 5), 0, 2, 2, 1.0, 3, 0.6, 0.6 / 3, 1.5)], COHORT_SCHEMA)
    assert_df_equality(cohort_table(orders), expected, ignore_nullable=True)


@pytest.mark.parametrize(
    "row, column",
    [
        ((None, at(2026, 1, 2), 1.0), "customer_id"),
        (("c", None, 1.0), "event_time"),
        (("c", at(2026, 1, 2), None), "revenue"),
    ],
)
def test_a_null_in_an_order_stops_the_job_naming_the_column(spark, row, column):
    orders = spark.createDataFrame([("ok", at(2026, 1, 1), 1.0), row], ORDERS)
    with pytest.raises(Exception, match=f"gold orders: null {column}"):
        cohort_table(orders).collect()
