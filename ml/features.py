"""Per-order features from the customer's history: one module for streaming and training.

The silver stream calls ``apply_history(orders, profiles)`` on each micro-batch
with the running profiles of the batch's customers (kept in the stream's
driver, see ``pipelines.silver.state``) and stores the features with each
silver row; model training reads those stored features, and the fraud
benchmark calls ``with_history_features`` on a whole history with no
profiles. Both paths run the same code, so training and scoring cannot drift.

Every history feature of an order uses only the customer's orders strictly
before it (ordered by ``event_time``, then ``event_id``), never the order
itself or later ones. The work is a single pass in customer/time order over a
micro-batch (pandas, in the driver): a few milliseconds for thousands of
orders, against a Spark job per step that a DataFrame version costs.

Grain of ``silver/customer_profiles``: one row per customer (``Profile``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
FEATURE_COLUMNS = ("amount_value", *HISTORY_COLUMNS)

# What an order needs for its features and for its customer's profile.
ORDER_COLUMNS = (
    "event_id", "customer_id", "event_time", "amount", "device_id", "ip_country", "shipping_country",
    "customer_email_hash",
)  # fmt: skip
_ORDER = ("customer_id", "event_time", "event_id")


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


class History(NamedTuple):
    features: pd.DataFrame  # the orders with FEATURE_COLUMNS added, in their original row order
    profiles: dict[str, Profile]  # the touched customers' profiles after these orders (new objects)


def _value(v):
    """pandas' missing values (NaN, NaT, None) -> None."""
    return None if v is None or (not isinstance(v, str | list) and pd.isna(v)) else v


def apply_history(
    orders: pd.DataFrame, profiles: Mapping[str, Profile] | None = None, now: dt.datetime | None = None
) -> History:
    """Features of each order from the history before it, and the profiles after all of them.

    ``orders`` has ``ORDER_COLUMNS`` (event_time naive UTC). ``profiles`` (customer_id -> Profile) is the
    history before these orders; it is not changed: the touched customers come back as new objects.
    """
    profiles = profiles or {}
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    updated: dict[str, Profile] = {}
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
        amount, event_time = float(o.amount), pd.Timestamp(o.event_time).to_pydatetime()
        device, country, shipping = _value(o.device_id), _value(o.ip_country), _value(o.shipping_country)
        rows[idx] = {
            "amount_value": amount,
            "hour_of_day": event_time.hour,
            "day_of_week": event_time.weekday(),  # 0 = Monday ... 6 = Sunday
            **profile.features(amount, event_time, device, country),
            "is_country_mismatch": country is not None and shipping is not None and country != shipping,
        }
        profile.add(amount, event_time, device, country, _value(o.customer_email_hash))
        profile.updated_time = now
    feats = pd.DataFrame.from_dict(rows, orient="index", columns=list(FEATURE_COLUMNS)).reindex(orders.index)
    feats = feats.astype({"hour_of_day": "Int32", "day_of_week": "Int32", "prior_tx_count": "Int64"})
    return History(pd.concat([orders.drop(columns=list(FEATURE_COLUMNS), errors="ignore"), feats], axis=1), updated)


def with_history_features(orders: pd.DataFrame, profiles: Mapping[str, Profile] | None = None) -> pd.DataFrame:
    """Adds ``FEATURE_COLUMNS`` to one row per order (history before each order only)."""
    if "customer_email_hash" not in orders.columns:
        orders = orders.assign(customer_email_hash=None)
    return apply_history(orders, profiles).features


def profiles_frame(profiles: Mapping[str, Profile] | list[Profile]) -> pd.DataFrame:
    """Profiles -> a pandas frame with ``PROFILE_SCHEMA`` columns."""
    values = profiles.values() if isinstance(profiles, Mapping) else profiles
    return pd.DataFrame([p.as_row() for p in values], columns=PROFILE_SCHEMA.fieldNames())
