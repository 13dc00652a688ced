"""Features of an order never depend on later orders (the streaming feature code the model trains on)."""

import datetime as dt

import pandas as pd
from pandas.testing import assert_frame_equal

from ml.features import FEATURE_COLUMNS, with_history_features

COLUMNS = [
    "event_id", "customer_id", "event_time", "amount", "device_id", "ip_country", "shipping_country", "payment_method",
]  # fmt: skip


def t(minute: int) -> dt.datetime:
    return dt.datetime(2026, 11, 23, 3, minute)


def test_changing_a_later_order_does_not_change_earlier_features():
    rows = [
        ("e1", "A", t(10), 10.0, "d1", "DE", "DE", "card"),
        ("e2", "A", t(20), 20.0, "d1", "DE", "DE", "card"),
        ("e3", "A", t(30), 30.0, "d1", "DE", "DE", "card"),
        ("x1", "B", t(5), 7.0, None, None, "US", None),  # nulls
        ("y1", "C", t(25), 5.0, "d1", "DE", "DE", "paypal"),  # another customer on e3's device, before e3
    ]
    changed = rows[:2] + [("e3", "A", t(30), 9999.0, "d1", "NG", "FR", "gift_card")] + rows[3:]
    cols = ["event_id", *FEATURE_COLUMNS]
    before = with_history_features(pd.DataFrame(rows, columns=COLUMNS))[cols]
    after = with_history_features(pd.DataFrame(changed, columns=COLUMNS))[cols]
    assert_frame_equal(after[after["event_id"] != "e3"], before[before["event_id"] != "e3"])
    # ...and the changed order's own features see only the earlier ones
    e3 = after[after["event_id"] == "e3"].iloc[0]
    assert (e3.prior_tx_count, e3.prior_avg_amount, e3.is_new_device, e3.is_new_ip_country) == (2, 15.0, False, True)
    assert e3.amount_value == 9999.0
    assert (e3.customer_orders_10m, e3.customer_orders_1h) == (0, 2)  # e2, exactly 10 minutes before, is outside
    assert (e3.device_orders_10m, e3.device_orders_1h, e3.device_payment_methods_1h) == (1, 3, 3)
