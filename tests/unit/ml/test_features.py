"""History features: only earlier orders of the same customer count, never the order itself or later ones."""

import datetime as dt

import pytest
from chispa import assert_approx_df_equality

from ecom.schemas import PROFILE_SCHEMA
from ml.features import updated_profiles, with_history_features

ORDERS = "event_id string, customer_id string, event_time timestamp, amount double, device_id string, ip_country string, shipping_country string, customer_email_hash string"


def t(minute: int) -> dt.datetime:
    return dt.datetime(2026, 11, 23, 3, minute)  # a Monday, 03:xx


@pytest.fixture
def orders(spark):
    return spark.createDataFrame(
        [
            ("e3", "A", t(30), 100.00, "d2", "FR", "DE", "h"),
            ("e1", "A", t(10), 10.00, "d1", "DE", "DE", "h"),
            ("e2", "A", t(20), 20.00, "d1", "DE", "DE", "h"),
            ("x1", "B", t(5), 7.00, None, None, "US", None),  # first order, nulls
        ],
        ORDERS,
    )


def test_features_use_only_earlier_orders(spark, orders):
    got = with_history_features(orders).select(
        "event_id", "prior_tx_count", "prior_avg_amount", "amount_to_avg_ratio", "amount_zscore",
        "seconds_since_last_order", "is_new_device", "is_new_ip_country", "is_country_mismatch", "hour_of_day", "day_of_week",
    )  # fmt: skip
    expected = spark.createDataFrame(
        [
            ("e1", 0, None, None, None, None, True, True, False, 3, 0),
            ("e2", 1, 10.0, 2.0, None, 600.0, False, False, False, 3, 0),
            ("e3", 2, 15.0, 100 / 15, (100 - 15) / 7.0710678, 600.0, True, True, True, 3, 0),
            ("x1", 0, None, None, None, None, True, True, False, 3, 0),  # unknown IP country: no mismatch
        ],
        "event_id string, prior_tx_count long, prior_avg_amount double, amount_to_avg_ratio double, amount_zscore double, "
        "seconds_since_last_order double, is_new_device boolean, is_new_ip_country boolean, is_country_mismatch boolean, "
        "hour_of_day int, day_of_week int",
    )
    assert_approx_df_equality(got, expected, precision=1e-4, ignore_row_order=True, ignore_nullable=True)


def test_streaming_in_batches_gives_the_same_features_as_all_at_once(spark, orders):
    """Profiles carried between micro-batches reproduce the features of one pass over the history."""
    cols = [
        "event_id",
        "prior_tx_count",
        "prior_avg_amount",
        "amount_zscore",
        "seconds_since_last_order",
        "is_new_device",
    ]
    whole = with_history_features(orders).select(*cols)
    first = orders.filter("event_id IN ('e1', 'x1')")
    second = orders.filter("event_id IN ('e2', 'e3')")
    profiles = updated_profiles(first).select(*PROFILE_SCHEMA.fieldNames())
    batched = (
        with_history_features(first).select(*cols).unionByName(with_history_features(second, profiles).select(*cols))
    )
    assert_approx_df_equality(batched, whole, precision=1e-9, ignore_row_order=True, ignore_nullable=True)


def test_updated_profiles_accumulate_and_remember_devices(spark, orders):
    p1 = updated_profiles(orders.filter("event_id IN ('e1', 'e2')"))
    p2 = updated_profiles(orders.filter("event_id = 'e3'"), p1).collect()[0]
    assert (p2.customer_id, p2.tx_count, p2.amount_sum, p2.amount_sumsq) == ("A", 3, 130.0, 10500.0)
    assert p2.first_order_time == t(10) and p2.last_order_time == t(30)
    assert sorted(p2.devices) == ["d1", "d2"] and sorted(p2.ip_countries) == ["DE", "FR"]
