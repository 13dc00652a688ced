"""Per-order features from the customer's and the device's history: one module for streaming and training.

The silver stream calls ``apply_history(orders, profiles, recent=...)`` on
each micro-batch with the running profiles of the batch's customers and the
window of recent orders (both kept in the stream's driver, see
``pipelines.silver.state``) and stores the features with each silver row; the
per-order path (``pipelines.alerts.step``) calls it on each poll with the same
state; model training reads the stored features, and the fraud benchmark
calls ``with_history_features`` on a whole history with no state. All of them
run the same code, so training and scoring cannot drift.

Every history feature of an order uses only orders strictly before it (ordered
by ``event_time``, then ``event_id``), never the order itself or later ones;
the one exception, ``device_payment_methods_1h``, says so. Two kinds:

- the customer's profile (``Profile``, ``HISTORY_COLUMNS``): counts, amounts,
  last order, devices and countries over the customer's whole history;
- velocity (``RecentOrders``, ``VELOCITY_COLUMNS``): orders by the customer and
  from the device in the 10 minutes and the hour before the order, and the
  payment methods used from the device in that hour. A window is half open:
  an order exactly 10 minutes (an hour) earlier is outside it.

The work is a single pass in time order over a micro-batch (pandas, in the
driver, sorted lists per customer and per device searched by bisection): a few
milliseconds for thousands of orders, against a Spark job per step that a
DataFrame version costs.

Grain of ``silver/customer_profiles``: one row per customer (``Profile``).
The window of recent orders is not a table: it holds the last ``RETAINED`` of
orders and is rebuilt from silver on start.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import NamedTuple

import pandas as pd

from ecom.schemas import PROFILE_SCHEMA

MAX_REMEMBERED = 20  # devices / countries kept per customer (the most recently used)

# Columns added to each order, in order. ``ml`` trains on FEATURE_COLUMNS.
HISTORY_COLUMNS = (
    "hour_of_day",
    "day_of_week",
    "prior_tx_count",
    "prior_avg_amount",
    "amount_to_avg_ratio",
    "amount_zscore",
    "seconds_since_last_order",
    "is_new_device",
    "is_new_ip_country",
    "is_country_mismatch",
)
VELOCITY_COLUMNS = (
    "customer_orders_10m",  # the customer's orders in the 10 minutes before this one
    "customer_orders_1h",
    "device_orders_10m",  # orders from this device, by any customer (null without a device)
    "device_orders_1h",
    "device_payment_methods_1h",  # distinct payment methods from this device in the hour, this order's included
)
FEATURE_COLUMNS = ("amount_value", *HISTORY_COLUMNS, *VELOCITY_COLUMNS)

# What an order needs for its features, its customer's profile and the window of recent orders.
ORDER_COLUMNS = (
    "event_id", "customer_id", "event_time", "amount", "device_id", "ip_country", "shipping_country",
    "customer_email_hash", "payment_method",
)  # fmt: skip
_ORDER = ("event_time", "event_id")

SHORT_WINDOW = dt.timedelta(minutes=10)
LONG_WINDOW = dt.timedelta(hours=1)
# The window of recent orders keeps this much before the newest order: the long window plus a margin, so that
# an order up to LATE_MARGIN older than the newest one seen still finds its whole hour.
LATE_MARGIN = dt.timedelta(minutes=10)
RETAINED = LONG_WINDOW + LATE_MARGIN
SWEEP_EVERY = dt.timedelta(minutes=5)  # how far the horizon moves before older orders are dropped


@dataclass(slots=True)
class Profile:
    """One customer's running history (a row of ``silver/customer_profiles``)."""

    customer_id: str
    tx_count: int = 0
    amount_sum: float = 0.0
    amount_sumsq: float = 0.0
    first_order_time: dt.datetime | None = None
    last_order_time: dt.datetime | None = None
    devices: list[str] = field(default_factory=list)
    ip_countries: list[str] = field(default_factory=list)
    customer_email_hash: str | None = None
    updated_time: dt.datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping) -> Profile:
        return cls(**{name: row[name] for name in PROFILE_SCHEMA.fieldNames()}).normalised()

    def normalised(self) -> Profile:
        """Lists for the arrays, naive UTC for the times (as Spark hands them to pandas)."""
        self.devices, self.ip_countries = list(self.devices), list(self.ip_countries)
        for name in ("first_order_time", "last_order_time", "updated_time"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is not None:
                setattr(self, name, value.astimezone(dt.UTC).replace(tzinfo=None))
        return self

    def as_row(self) -> dict:
        return {name: getattr(self, name) for name in PROFILE_SCHEMA.fieldNames()}

    def features(self, amount: float, event_time: dt.datetime, device, ip_country) -> dict:
        """This customer's features for an order, from the history so far (the order itself not included)."""
        n = self.tx_count
        mean = self.amount_sum / n if n else None
        return {
            "prior_tx_count": n,
            "prior_avg_amount": mean,
            "amount_to_avg_ratio": amount / mean if mean else None,
            "amount_zscore": zscore(amount, n, self.amount_sum, self.amount_sumsq),
            "seconds_since_last_order": (
                (event_time - self.last_order_time).total_seconds() if self.last_order_time is not None else None
            ),
            "is_new_device": device is None or device not in self.devices,
            "is_new_ip_country": ip_country is None or ip_country not in self.ip_countries,
        }

    def add(self, amount: float, event_time: dt.datetime, device, ip_country, email_hash) -> None:
        """Folds one order into the history."""
        self.tx_count += 1
        self.amount_sum += amount
        self.amount_sumsq += amount * amount
        if self.first_order_time is None or event_time < self.first_order_time:
            self.first_order_time = event_time
        if self.last_order_time is None or event_time >= self.last_order_time:
            self.last_order_time = event_time
            self.customer_email_hash = email_hash if email_hash is not None else self.customer_email_hash
        remember(self.devices, device)
        remember(self.ip_countries, ip_country)


def remember(recent: list[str], value) -> None:
    """Moves ``value`` to the end of ``recent`` (most recent last), keeping at most ``MAX_REMEMBERED``."""
    if value is None:
        return
    if value in recent:
        recent.remove(value)
    recent.append(value)
    del recent[:-MAX_REMEMBERED]


def zscore(value: float, count: int, total: float, total_sq: float) -> float | None:
    """(value - mean) / sample std of the prior amounts; None with fewer than two, 0 when they are all equal."""
    if count < 2:
        return None
    mean = total / count
    std = math.sqrt(max((total_sq - count * mean * mean) / (count - 1), 0.0))
    return 0.0 if std < 1e-9 else (value - mean) / std


Recent = tuple[dt.datetime, str, str | None]  # one order in the window: event_time, event_id, payment_method
_TIME = itemgetter(0)
_KEY = itemgetter(0, 1)


class RecentOrders:
    """The orders of the last ``RETAINED`` before the newest one, by customer and by device (velocity's state).

    Each list is in (event_time, event_id) order. An order is one tuple shared by its customer's and its device's
    list. Memory: about 300 bytes per order in the window, its event id included. ``base``: the window this one
    takes its lists from on first use (``apply_history`` copies only the customers and devices a batch touches).

    An order more than ``LATE_MARGIN`` older than the newest order seen (or than a later order of its customer
    or device) may find the start of its hour dropped already: its counts can be short.
    """

    __slots__ = ("customers", "devices", "newest", "swept", "base")

    def __init__(self, base: RecentOrders | None = None):
        self.customers: dict[str, list[Recent]] = {}
        self.devices: dict[str, list[Recent]] = {}
        self.newest: dt.datetime | None = base.newest if base is not None else None  # the newest event_time
        self.swept: dt.datetime | None = None  # the horizon of the last sweep
        self.base = base

    def __len__(self) -> int:
        return sum(len(orders) for orders in self.customers.values())

    def _lists(self, customer_id: str, device_id) -> tuple[list[Recent], list[Recent] | None]:
        """The customer's and the device's lists, this window's own (copied from ``base`` on first use)."""
        customer = self.customers.get(customer_id)
        if customer is None:
            prior = self.base.customers.get(customer_id, ()) if self.base is not None else ()
            customer = self.customers[customer_id] = list(prior)
        if device_id is None:
            return customer, None
        device = self.devices.get(device_id)
        if device is None:
            prior = self.base.devices.get(device_id, ()) if self.base is not None else ()
            device = self.devices[device_id] = list(prior)
        return customer, device

    def take(self, customer_id: str, device_id, payment_method, event_time: dt.datetime, event_id: str) -> dict:
        """The velocity features of an order from the orders before it (by event_time, then event_id); then the
        order joins the window."""
        customer, device = self._lists(customer_id, device_id)
        before, short, long = (event_time, event_id), event_time - SHORT_WINDOW, event_time - LONG_WINDOW
        end = bisect_left(customer, before, key=_KEY)
        out = {
            "customer_orders_10m": end - bisect_right(customer, short, hi=end, key=_TIME),
            "customer_orders_1h": end - bisect_right(customer, long, hi=end, key=_TIME),
            "device_orders_10m": None,
            "device_orders_1h": None,
            "device_payment_methods_1h": None,
        }
        if device is not None:
            end = bisect_left(device, before, key=_KEY)
            start = bisect_right(device, long, hi=end, key=_TIME)
            methods = {method for _, _, method in device[start:end]}
            methods.add(payment_method)
            methods.discard(None)
            out["device_orders_10m"] = end - bisect_right(device, short, lo=start, hi=end, key=_TIME)
            out["device_orders_1h"] = end - start
            out["device_payment_methods_1h"] = len(methods)
        self._add(customer, device, payment_method, event_time, event_id)
        return out

    def add(self, customer_id: str, device_id, payment_method, event_time: dt.datetime, event_id: str) -> None:
        """Puts one order into its customer's and its device's lists."""
        self._add(*self._lists(customer_id, device_id), payment_method, event_time, event_id)

    def _add(self, customer: list, device: list | None, payment_method, event_time: dt.datetime, event_id: str):
        entry = (event_time, event_id, sys.intern(payment_method) if isinstance(payment_method, str) else None)
        _insert(customer, entry)
        if device is not None:
            _insert(device, entry)
        if self.newest is None or event_time > self.newest:
            self.newest = event_time

    def update(self, later: RecentOrders, now: dt.datetime | None = None) -> None:
        """Takes the lists ``later`` changed (made from this window by ``apply_history``), then drops old orders."""
        self.customers.update(later.customers)
        self.devices.update(later.devices)
        if later.newest is not None and (self.newest is None or later.newest > self.newest):
            self.newest = later.newest
        self.prune(now)

    def prune(self, now: dt.datetime | None = None) -> int:
        """Drops the orders at or before ``RETAINED`` before the newest order (an order dated after ``now``, the
        wall clock, moves the horizon only up to ``now``); sweeps once the horizon has moved ``SWEEP_EVERY``.
        Returns how many orders were dropped."""
        if self.newest is None:
            return 0
        now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        horizon = min(self.newest, now) - RETAINED
        if self.swept is not None and horizon - self.swept < SWEEP_EVERY:
            return 0
        self.swept = horizon
        dropped = 0
        for lists in (self.customers, self.devices):
            for key in list(lists):
                orders = lists[key]
                cut = bisect_right(orders, horizon, key=_TIME)
                if cut == len(orders):
                    del lists[key]
                elif cut:
                    lists[key] = orders[cut:]  # a new list: another window may hold this one
                dropped += cut if lists is self.customers else 0
        return dropped

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, now: dt.datetime | None = None) -> RecentOrders:
        """A window of ``rows`` (``ORDER_COLUMNS``, event_time naive UTC), e.g. silver's last ``RETAINED``."""
        window = cls()
        columns = ["customer_id", "device_id", "payment_method", "event_time", "event_id"]
        for o in rows.sort_values(list(_ORDER), kind="stable")[columns].itertuples(index=False):
            window.add(o.customer_id, _value(o.device_id), _value(o.payment_method), _time(o.event_time), o.event_id)
        window.prune(now)
        return window


def _insert(orders: list[Recent], entry: Recent) -> None:
    """Puts ``entry`` in its place, dropping the orders ``RETAINED`` or more before it (so that a pass over a long
    history keeps the lists short)."""
    if not orders or _KEY(orders[-1]) < _KEY(entry):
        orders.append(entry)  # the usual case: orders arrive in time order
    else:
        insort(orders, entry, key=_KEY)
    if _TIME(orders[0]) <= _TIME(entry) - RETAINED:
        del orders[: bisect_right(orders, _TIME(entry) - RETAINED, key=_TIME)]


def _time(value) -> dt.datetime:
    return pd.Timestamp(value).to_pydatetime()


class History(NamedTuple):
    features: pd.DataFrame  # the orders with FEATURE_COLUMNS added, in their original row order
    profiles: dict[str, Profile]  # the touched customers' profiles after these orders (new objects)
    recent: RecentOrders  # the touched customers' and devices' lists after these orders (new lists)


# pandas dtypes of the integer features (nullable: a missing device has no device counts).
FEATURE_DTYPES = {
    "hour_of_day": "Int32",
    "day_of_week": "Int32",
    "prior_tx_count": "Int64",
    **dict.fromkeys(VELOCITY_COLUMNS, "Int32"),
}


def _value(v):
    """pandas' missing values (NaN, NaT, None) -> None."""
    return None if v is None or (not isinstance(v, str | list) and pd.isna(v)) else v


def apply_history(
    orders: pd.DataFrame,
    profiles: Mapping[str, Profile] | None = None,
    now: dt.datetime | None = None,
    recent: RecentOrders | None = None,
) -> History:
    """Features of each order from the history before it, and the profiles and recent orders after all of them.

    ``orders`` has ``ORDER_COLUMNS`` (event_time naive UTC). ``profiles`` (customer_id -> Profile) and ``recent``
    are the history before these orders; they are not changed: the touched customers come back as new objects,
    and the touched customers' and devices' recent orders as new lists (``RecentOrders.update`` takes them).
    """
    profiles = profiles or {}
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    updated: dict[str, Profile] = {}
    window = RecentOrders(base=recent)
    rows: dict = {}
    ordered = orders.sort_values(list(_ORDER), kind="stable")
    for idx, o in zip(ordered.index, ordered[list(ORDER_COLUMNS)].itertuples(index=False), strict=True):
        profile = updated.get(o.customer_id)
        if profile is None:
            prior = profiles.get(o.customer_id)
            profile = (
                replace(prior, devices=list(prior.devices), ip_countries=list(prior.ip_countries))
                if prior is not None
                else Profile(o.customer_id)
            )
            updated[o.customer_id] = profile
        amount, event_time = float(o.amount), _time(o.event_time)
        device, country, shipping = _value(o.device_id), _value(o.ip_country), _value(o.shipping_country)
        method = _value(o.payment_method)
        rows[idx] = {
            "amount_value": amount,
            "hour_of_day": event_time.hour,
            "day_of_week": event_time.weekday(),  # 0 = Monday ... 6 = Sunday
            **profile.features(amount, event_time, device, country),
            "is_country_mismatch": country is not None and shipping is not None and country != shipping,
            **window.take(o.customer_id, device, method, event_time, o.event_id),
        }
        profile.add(amount, event_time, device, country, _value(o.customer_email_hash))
        profile.updated_time = now
    window.base = None
    feats = pd.DataFrame.from_dict(rows, orient="index", columns=list(FEATURE_COLUMNS)).reindex(orders.index)
    feats = feats.astype(FEATURE_DTYPES)
    features = pd.concat([orders.drop(columns=list(FEATURE_COLUMNS), errors="ignore"), feats], axis=1)
    return History(features, updated, window)


def with_history_features(orders: pd.DataFrame, profiles: Mapping[str, Profile] | None = None) -> pd.DataFrame:
    """Adds ``FEATURE_COLUMNS`` to one row per order (history before each order only)."""
    if "customer_email_hash" not in orders.columns:
        orders = orders.assign(customer_email_hash=None)
    return apply_history(orders, profiles).features


def profiles_frame(profiles: Mapping[str, Profile] | list[Profile]) -> pd.DataFrame:
    """Profiles -> a pandas frame with ``PROFILE_SCHEMA`` columns."""
    values = profiles.values() if isinstance(profiles, Mapping) else profiles
    return pd.DataFrame([p.as_row() for p in values], columns=PROFILE_SCHEMA.fieldNames())
