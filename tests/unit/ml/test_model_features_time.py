"""Features of an order never depend on later orders (the streaming feature code the model trains on)."""

import datetime as dt

from chispa import assert_approx_df_equality

from ml.features import FEATURE_COLUMNS, with_history_features

ORDERS = "event_id string, customer_id string, event_time timestamp, amount double, device_id string, ip_country string, shipping_country string"


def t(minute: int) -> dt.datetime:
    return dt.datetime(2026, 11, 23, 3, minute)


def test_changing_a_later_order_does_not_change_earlier_features(spark):
    rows = [
        ("e1", "A", t(10), 10.0, "d1", "DE", "DE"),
        ("e2", "A", t(20), 20.0, "d1", "DE", "DE"),
        ("e3", "A", t(30), 30.0, "d1", "DE", "DE"),
        ("x1", "B", t(5), 7.0, None, None, "US"),  # nulls
    ]
    changed = rows[:2] + [("e3", "A", t(30), 9999.0, "d9", "NG", "FR")] + rows[3:]
    cols = ["event_id", *FEATURE_COLUMNS]
    before = with_history_features(spark.createDataFrame(rows, ORDERS)).filter("event_id != 'e3'").select(*cols)
    after = with_history_features(spark.createDataFrame(changed, ORDERS)).filter("event_id != 'e3'").select(*cols)
    assert_approx_df_equality(after, before, precision=1e-9, ignore_row_order=True, ignore_nullable=True)
    # ...and the changed order's own features see only the earlier ones
    e3 = with_history_features(spark.createDataFrame(changed, ORDERS)).filter("event_id = 'e3'").first()
    assert (e3.prior_tx_count, e3.prior_avg_amount, e3.is_new_device, e3.is_new_ip_country) == (2, 15.0, True, True)
