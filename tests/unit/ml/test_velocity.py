"""Velocity features: orders by the customer and from the device in the 10 minutes and the hour before an order."""

import datetime as dt

import pandas as pd
from pandas.testing import assert_frame_equal

from ml.features import ORDER_COLUMNS, VELOCITY_COLUMNS, RecentOrders, apply_history

T0 = dt.datetime(2026, 11, 23, 3, 0)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def orders(*rows) -> pd.DataFrame:
    """(event_id, customer_id, minutes after T0, device_id, payment_method) -> ``ORDER_COLUMNS`` rows."""
    return pd.DataFrame(
        [(e, c, at(m), 10.0, d, "DE", "DE", None, p) for e, c, m, d, p in rows], columns=list(ORDER_COLUMNS)
    )


def velocity(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("event_id")[list(VELOCITY_COLUMNS)].sort_index().astype("Int32")


def expected(rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(VELOCITY_COLUMNS)).rename_axis("event_id")
    return frame.sort_index().astype("Int32")


def test_an_order_exactly_a_window_earlier_is_outside_it():
    got = apply_history(
        orders(
            ("a1", "A", 0, "d1", "card"),
            ("a2", "A", 10 - 1 / 60, "d1", "card"),  # 9:59 after a1
            ("a3", "A", 10, "d1", "card"),  # exactly 10 minutes after a1
            ("a4", "A", 60, "d1", "card"),  # exactly an hour after a1
            ("a5", "A", 70 - 1 / 60, "d1", "card"),  # exactly an hour after a2
        )
    ).features
    want = expected(
        {
            "a1": (0, 0, 0, 0, 1),
            "a2": (1, 1, 1, 1, 1),
            "a3": (1, 2, 1, 2, 1),  # a1 is out of the 10 minutes, a2 in
            "a4": (0, 2, 0, 2, 1),  # a1 is out of the hour
            "a5": (1, 2, 1, 2, 1),  # a2 is out of the hour, a4 in the 10 minutes
        }
    )
    assert_frame_equal(velocity(got), want)


def test_orders_at_the_same_time_are_ordered_by_event_id():
    got = apply_history(orders(("b", "A", 5, "d1", "card"), ("a", "A", 5, "d1", "paypal"))).features
    # "a" comes first: it sees nothing; "b" sees "a" and its payment method besides its own
    assert_frame_equal(velocity(got), expected({"a": (0, 0, 0, 0, 1), "b": (1, 1, 1, 1, 2)}))


def test_a_device_counts_the_orders_of_every_customer_and_their_payment_methods():
    got = apply_history(
        orders(
            ("x1", "X", 0, "shared", "card"),
            ("y1", "Y", 2, "shared", "gift_card"),
            ("z1", "Z", 30, "shared", "card"),
            ("y2", "Y", 31, "own", "paypal"),  # Y's own device: Y's orders count, the shared device's do not
            ("x2", "X", 35, "shared", "apple_pay"),
            ("w1", "W", 36, None, "card"),  # no device: no device counts
        )
    ).features
    want = expected(
        {
            "w1": (0, 0, None, None, None),
            "x1": (0, 0, 0, 0, 1),
            "x2": (0, 1, 1, 3, 3),  # card, gift_card and its own apple_pay
            "y1": (0, 0, 1, 1, 2),
            "y2": (0, 1, 0, 0, 1),
            "z1": (0, 0, 0, 2, 2),
        }
    )
    assert_frame_equal(velocity(got), want)


def test_batches_with_the_window_carried_give_the_features_of_one_pass():
    all_orders = orders(
        ("e1", "A", 0, "d1", "card"),
        ("e2", "B", 3, "d1", "paypal"),
        ("e3", "A", 8, "d2", "card"),
        ("e4", "A", 9, "d1", "card"),
        ("e5", "B", 9, "d1", "card"),
        ("e6", "A", 65, "d1", "gift_card"),
    )
    whole = velocity(apply_history(all_orders).features)
    window = RecentOrders()
    parts = []
    for ids in (["e1", "e2"], ["e3"], ["e4", "e5"], ["e6"]):
        before = {c: list(o) for c, o in window.customers.items()}
        history = apply_history(all_orders[all_orders["event_id"].isin(ids)], recent=window)
        assert {c: list(o) for c, o in window.customers.items()} == before  # the window handed in is not changed
        window.update(history.recent, now=at(120))
        parts.append(history.features)
    assert_frame_equal(velocity(pd.concat(parts)), whole)
    assert whole.loc["e6"].tolist() == [0, 2, 0, 2, 2]  # the hour before e6: e3, e4 of A; e4, e5 on d1 (card)


def test_old_orders_are_dropped_and_a_future_order_does_not_move_the_horizon_past_now():
    window = RecentOrders()
    window.update(apply_history(orders(("a", "A", 0, "d1", "card"), ("b", "B", 30, "d2", "card"))).recent, at(40))
    assert len(window) == 2
    late = apply_history(orders(("c", "C", 100, "d3", "card")), recent=window).recent
    window.update(late, now=at(100))  # the horizon is now 100 - 70 = 30 minutes after T0: "a" goes, "b" (30) too
    assert (len(window), set(window.customers), set(window.devices)) == (1, {"C"}, {"d3"})
    future = apply_history(orders(("f", "F", 60 * 48, "d4", "card")), recent=window).recent
    window.update(future, now=at(110))  # dated two days ahead: the horizon stops at 110 - 70, so "c" (100) stays
    assert window.newest == at(60 * 48) and set(window.customers) == {"C", "F"}


def test_a_window_built_from_rows_equals_the_carried_one():
    rows = orders(
        ("e1", "A", 0, "d1", "card"),
        ("e2", "B", 50, "d1", "paypal"),
        ("e3", "A", 55, "d2", "card"),
        ("e4", "C", 100, "d1", "card"),
    )
    carried = RecentOrders()
    carried.update(apply_history(rows).recent, now=at(200))
    rebuilt = RecentOrders.from_rows(rows, now=at(200))
    assert (rebuilt.customers, rebuilt.devices, rebuilt.newest) == (carried.customers, carried.devices, at(100))
    assert set(rebuilt.customers) == {"B", "A", "C"} and "e1" not in {e for _, e, _ in rebuilt.customers["A"]}
