"""History features: only earlier orders of the same customer count, never the order itself or later ones."""

import datetime as dt

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from ml.features import MAX_REMEMBERED, Profile, apply_history, remember, with_history_features

COLUMNS = [
    "event_id", "customer_id", "event_time", "amount", "device_id", "ip_country", "shipping_country",
    "customer_email_hash", "payment_method",
]  # fmt: skip


def t(minute: int) -> dt.datetime:
    return dt.datetime(2026, 11, 23, 3, minute)  # a Monday, 03:xx


@pytest.fixture
def orders() -> pd.DataFrame:
    return pd.DataFrame(
        [
            ("e3", "A", t(30), 100.00, "d2", "FR", "DE", "h2", "card"),
            ("e1", "A", t(10), 10.00, "d1", "DE", "DE", "h", "card"),
            ("e2", "A", t(20), 20.00, "d1", "DE", "DE", "h", "paypal"),
            ("x1", "B", t(5), 7.00, None, None, "US", None, "card"),  # first order, nulls
        ],
        columns=COLUMNS,
    )


FEATURES = [
    "event_id", "prior_tx_count", "prior_avg_amount", "amount_to_avg_ratio", "amount_zscore",
    "seconds_since_last_order", "is_new_device", "is_new_ip_country", "is_country_mismatch", "hour_of_day",
    "day_of_week",
]  # fmt: skip


def test_features_use_only_earlier_orders(orders):
    got = with_history_features(orders)[FEATURES].sort_values("event_id").reset_index(drop=True)
    expected = pd.DataFrame(
        [
            ("e1", 0, None, None, None, None, True, True, False, 3, 0),
            ("e2", 1, 10.0, 2.0, None, 600.0, False, False, False, 3, 0),
            ("e3", 2, 15.0, 100 / 15, (100 - 15) / 7.0710678, 600.0, True, True, True, 3, 0),
            ("x1", 0, None, None, None, None, True, True, False, 3, 0),  # unknown IP country: no mismatch
        ],
        columns=FEATURES,
    ).astype({"prior_tx_count": "Int64", "hour_of_day": "Int32", "day_of_week": "Int32"})
    for c in ("prior_avg_amount", "amount_to_avg_ratio", "amount_zscore", "seconds_since_last_order"):
        expected[c] = expected[c].astype("float64")
        got[c] = got[c].astype("float64")
    assert_frame_equal(got, expected, check_dtype=False, atol=1e-4)


def test_features_keep_the_input_row_order(orders):
    assert with_history_features(orders)["event_id"].tolist() == ["e3", "e1", "e2", "x1"]


def test_streaming_in_batches_gives_the_same_features_as_all_at_once(orders):
    """Profiles carried between micro-batches reproduce the features of one pass over the history."""
    cols = [
        "event_id",
        "prior_tx_count",
        "prior_avg_amount",
        "amount_zscore",
        "seconds_since_last_order",
        "is_new_device",
    ]
    whole = with_history_features(orders)[cols].set_index("event_id").sort_index()
    first = orders[orders["event_id"].isin(["e1", "x1"])]
    second = orders[orders["event_id"].isin(["e2", "e3"])]
    one = apply_history(first)
    two = apply_history(second, one.profiles)
    batched = pd.concat([one.features, two.features])[cols].set_index("event_id").sort_index()
    assert_frame_equal(batched.astype(object), whole.astype(object))


def test_profiles_accumulate_without_changing_the_input(orders):
    one = apply_history(orders[orders["event_id"].isin(["e1", "e2"])])
    before = Profile(**one.profiles["A"].as_row())
    two = apply_history(orders[orders["event_id"] == "e3"], one.profiles)
    p = two.profiles["A"]
    assert (p.tx_count, p.amount_sum, p.amount_sumsq) == (3, 130.0, 10500.0)
    assert (p.first_order_time, p.last_order_time) == (t(10), t(30))
    assert (p.devices, p.ip_countries, p.customer_email_hash) == (["d1", "d2"], ["DE", "FR"], "h2")
    assert one.profiles["A"] == before  # the profiles handed in are not touched
    assert two.profiles["A"] is not one.profiles["A"]
    assert "B" not in two.profiles  # only the batch's customers come back


def test_a_customer_remembers_only_the_most_recent_devices():
    recent: list[str] = []
    for i in range(MAX_REMEMBERED + 5):
        remember(recent, f"d{i}")
    remember(recent, "d10")  # used again: most recent now
    remember(recent, None)
    assert len(recent) == MAX_REMEMBERED
    assert recent[-1] == "d10" and "d0" not in recent and recent[0] == "d5"
