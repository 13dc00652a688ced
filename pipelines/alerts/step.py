"""One step of the per-order scoring path: the orders a poll brought -> their silver rows, scores and alerts.

Pure, no I/O. The step uses the micro-batch's own functions on the same columns, so the two paths agree by
construction where their inputs agree:

- ``order_rows``: checked orders (``validate.Order``) and their Kafka coordinates -> rows with silver's
  columns as the driver holds them (``plan.driver_frame``: naive UTC times, ``Decimal`` money), the e-mail
  address replaced by silver's keyed hash of its normalised form;
- ``score_step``: ``ml.features.apply_history`` over the customers' profiles and the recent orders,
  ``ml.scoring.score_frame`` with the champion, ``transforms.alerts_frame``: the same steps ``plan.plan_batch``
  takes for a batch's new events. It returns the scored rows, the alerts, the changed profiles and recent
  orders (the caller's state takes them).

Where the paths can still differ is in what each has seen: the micro-batch orders the orders of one batch by
event time, this path takes them as they arrive (an order that arrives after a later one of its customer, or
of its device, is not counted in that one's features here); a restarted path folds what it missed first.
The device counts see every order of the device only where one process reads every partition (orders are
keyed by customer, so a path sharded by customer sees its own customers' orders from a shared device).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from ecom.schemas import SILVER_BASE_COLUMNS, SILVER_SCHEMA
from ml import features
from ml.scoring import score_frame
from pipelines.alerts.validate import Order
from pipelines.silver import transforms as t
from pipelines.silver.plan import Model

Coordinates = tuple[str, int, int, dt.datetime]  # Kafka topic, partition, offset, timestamp (aware)


@dataclass(frozen=True)
class Step:
    rows: pd.DataFrame  # silver columns of the rows to score (all, or the mask's), scored when a model was given
    alerts: pd.DataFrame  # ALERT_SCHEMA rows of the orders at or above the threshold
    profiles: dict[str, features.Profile]  # the profiles these orders changed
    recent: features.RecentOrders  # the recent orders these orders changed


def email_hash(email: str | None, key: bytes) -> str | None:
    """Silver's ``customer_email_hash``: HMAC-SHA256 of the trimmed, lower-cased address."""
    return None if email is None else t.hmac_sha256_hex_py(email.strip().lower(), key)


def _naive(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(tzinfo=None)


def order_rows(
    orders: Sequence[tuple[Order, Coordinates]], key: bytes, pipeline_version: str, now: dt.datetime
) -> pd.DataFrame:
    """Silver rows of checked orders (``SILVER_SCHEMA`` columns; features and scores not yet filled)."""
    rows = []
    for order, (topic, partition, offset, timestamp) in orders:
        event_time = _naive(order.event_time)
        rows.append(
            {
                "event_id": order.event_id,
                "transaction_id": order.transaction_id,
                "event_time": event_time,
                "customer_id": order.customer_id,
                "customer_email_hash": email_hash(order.customer_email, key),
                "items": [
                    {
                        "product_id": x.product_id,
                        "category": x.category,
                        "quantity": x.quantity,
                        "unit_price": x.unit_price,
                    }
                    for x in order.items
                ],  # fmt: skip
                "item_count": len(order.items),
                "amount": order.amount,
                "currency": order.currency,
                "payment_method": order.payment_method,
                "channel": order.channel,
                "device_id": order.device_id,
                "ip_country": order.ip_country,
                "shipping_country": order.shipping_country,
                "schema_version": 1,
                "event_date": event_time.date(),
                "kafka_topic": topic,
                "kafka_partition": partition,
                "kafka_offset": offset,
                "kafka_timestamp": _naive(timestamp),
                "processed_time": _naive(now),
                "pipeline_version": pipeline_version,
            }
        )
    return pd.DataFrame(rows, columns=list(SILVER_BASE_COLUMNS))


def score_step(
    rows: pd.DataFrame,
    profiles: Mapping[str, features.Profile],
    model: Model | None,
    threshold: float,
    recent: features.RecentOrders | None = None,
    score: pd.Series | None = None,
) -> Step:
    """Features from the profiles and the recent orders before these orders, scores, alerts (as
    ``plan.plan_batch`` for new events). ``score``: a mask of the rows to score (the others keep null scores and
    cannot alert; every row still goes into the profiles and recent orders); None: all."""
    history = features.apply_history(rows, profiles, recent=recent)
    scored = t.with_unscored_columns(history.features)
    if score is not None:
        scored = scored[score.reindex(scored.index, fill_value=False).to_numpy(dtype=bool)]
    if model is not None and len(scored):
        scored = score_frame(scored, *model, threshold)
    scored = scored[SILVER_SCHEMA.fieldNames()]
    return Step(scored, t.alerts_frame(scored), history.profiles, history.recent)
