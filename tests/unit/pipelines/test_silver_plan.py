"""The silver stage's decisions, from a few inline routed rows and a stored state: no Spark, Kafka or PostgreSQL."""

import datetime as dt
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest

from ecom.schemas import BRONZE_SCHEMA, QUARANTINE_SCHEMA, SILVER_BASE_COLUMNS, SILVER_SCHEMA, arrow_schema
from ml.features import Profile, RecentOrders
from ml.model import INPUT_COLUMNS
from pipelines.silver import plan as p
from pipelines.silver.transforms import alert_id

TS = dt.datetime(2026, 11, 25, 12, 0, 0)
NOW = dt.datetime(2026, 11, 25, 12, 5, 0)
UTC = dt.UTC


def _routed_schema() -> pa.Schema:
    silver = arrow_schema(SILVER_SCHEMA)
    fields = list(arrow_schema(BRONZE_SCHEMA))
    fields += [silver.field(c).with_name(f"silver__{c}").with_nullable(True) for c in SILVER_BASE_COLUMNS]
    fields += [f.with_name(f"quarantine__{f.name}").with_nullable(True) for f in arrow_schema(QUARANTINE_SCHEMA)]
    return pa.schema(fields)


def order(event_id: str, customer: str, offset: int, amount: str = "10.00", minute: int = 0) -> dict:
    """A valid record at Kafka (partition 0, ``offset``): its bronze columns and silver row."""
    event_time = (TS + dt.timedelta(minutes=minute)).replace(tzinfo=UTC)
    silver = {
        "event_id": event_id, "transaction_id": f"t-{event_id}", "event_time": event_time, "customer_id": customer,
        "customer_email_hash": None, "items": [], "item_count": 1, "amount": Decimal(amount), "currency": "USD",
        "payment_method": "card", "channel": "web", "device_id": None, "ip_country": "DE", "shipping_country": "DE",
        "schema_version": 1, "event_date": event_time.date(), "kafka_topic": "orders", "kafka_partition": 0,
        "kafka_offset": offset, "kafka_timestamp": event_time, "processed_time": NOW.replace(tzinfo=UTC),
        "pipeline_version": "v",
    }  # fmt: skip
    return {**bronze(offset, f'{{"event_id":"{event_id}"}}'), **{f"silver__{k}": v for k, v in silver.items()}}


def bad(offset: int, payload: str = "{broken") -> dict:
    """A record the rules rejected: its bronze columns and quarantine row."""
    quarantine = {
        "payload": payload, "kafka_topic": "orders", "kafka_partition": 0, "kafka_offset": offset,
        "kafka_timestamp": TS.replace(tzinfo=UTC), "reasons": ["malformed_json"],
        "quarantined_time": NOW.replace(tzinfo=UTC), "pipeline_version": "v",
    }  # fmt: skip
    return {**bronze(offset, payload), **{f"quarantine__{k}": v for k, v in quarantine.items()}}


def bronze(offset: int, payload: str) -> dict:
    return {
        "kafka_key": "k", "payload": payload, "kafka_topic": "orders", "kafka_partition": 0, "kafka_offset": offset,
        "kafka_timestamp": TS.replace(tzinfo=UTC), "ingest_time": NOW.replace(tzinfo=UTC), "ingest_date": NOW.date(),
    }  # fmt: skip


def routed(*records: dict) -> pa.Table:
    return pa.Table.from_pylist(list(records), schema=_routed_schema())


def stored_at(*coordinates: tuple[str, int]) -> pd.DataFrame:
    """What PostgreSQL holds: (event_id, offset on partition 0)."""
    return pd.DataFrame(
        [(e, 0, o) for e, o in coordinates], columns=["event_id", "kafka_partition", "kafka_offset"]
    ).astype({"kafka_partition": "int32", "kafka_offset": "int64"})


def plan_of(rows: pa.Table, stored: pd.DataFrame, attempt: p.Attempt, profiles=None, model=None, bronze=True):
    return p.plan_batch(
        p.batch_rows(rows), stored, attempt, profiles or {}, model,
        alert_threshold=80, write_bronze=bronze, pipeline_version="v", now=NOW,
    )  # fmt: skip


def coordinates(rows) -> list[int]:
    offsets = rows.column("kafka_offset").to_pylist() if isinstance(rows, pa.Table) else rows["kafka_offset"]
    return sorted(int(o) for o in offsets)


def test_a_first_attempt_routes_each_record_one_way():
    """e1 new; e1 again later in the batch; e2 stored from another record; e3 new; a broken record."""
    rows = routed(order("e1", "A", 0), order("e2", "B", 1), order("e1", "A", 2), bad(3), order("e3", "A", 4))
    plan = plan_of(rows, stored_at(("e2", 99)), p.Attempt("new"))

    assert plan.silver["event_id"].tolist() == ["e1", "e3"]
    assert coordinates(plan.duplicates) == [1, 2]  # e2 (stored before) and e1's repeat
    assert coordinates(plan.quarantine) == [3]
    assert coordinates(plan.bronze) == [0, 1, 2, 3, 4]
    assert sorted(plan.served["event_id"]) == ["e1", "e3"]
    assert plan.alerts.empty  # no model: unscored rows
    assert plan.writes_postgres and not plan.retry
    # The history before e3 is e1 (same customer, earlier); A's profile after the batch holds both.
    assert plan.silver.set_index("event_id").loc["e3", "prior_tx_count"] == 1
    assert [(c.customer_id, c.tx_count) for c in plan.customers] == [("A", 2)]
    assert set(plan.profiles) == {"A"}


def test_velocity_counts_the_recent_orders_the_stream_holds_and_the_batchs_earlier_ones():
    """The stream's window holds A's order of 5 minutes before the batch; e2 (3 minutes after e1) counts both."""
    window = RecentOrders()
    window.add("A", None, "card", TS - dt.timedelta(minutes=5), "e0")
    rows = routed(order("e1", "A", 0), order("e2", "A", 1, minute=3), order("e3", "B", 2, minute=3))
    plan = p.plan_batch(
        p.batch_rows(rows), stored_at(), p.Attempt("new"), {}, None,
        alert_threshold=80, write_bronze=True, pipeline_version="v", now=NOW, recent=window,
    )  # fmt: skip
    counts = plan.silver.set_index("event_id")["customer_orders_10m"].to_dict()
    assert counts == {"e1": 1, "e2": 2, "e3": 0}
    assert [e for _, e, _ in plan.recent.customers["A"]] == ["e0", "e1", "e2"]  # the state takes these lists
    assert [e for _, e, _ in window.customers["A"]] == ["e0"]  # the window handed in is not changed


def test_an_empty_batch_plans_nothing_but_a_broken_record():
    plan = plan_of(routed(bad(7)), stored_at(), p.Attempt("new"), bronze=False)
    assert plan.silver.empty and plan.duplicates.empty and plan.served.empty and plan.customers == []
    assert coordinates(plan.quarantine) == [7] and plan.bronze is None


def test_a_retry_serves_again_what_the_first_attempt_wrote_to_silver():
    """The first attempt stored e1 in silver (this very record) and then crashed: e1 is not written to silver again
    but served again, with its customer's profile as the stream holds it; e2 is new."""
    rows = routed(order("e1", "A", 0), order("e2", "B", 1))
    first = p.plan_batch(
        p.batch_rows(routed(order("e1", "A", 0))), stored_at(), p.Attempt("new"), {}, None,
        alert_threshold=80, write_bronze=True, pipeline_version="v", now=NOW,
    )  # fmt: skip
    in_silver = first.silver.assign(kafka_partition=0).astype({"kafka_partition": "int32"})
    profiles = {"A": Profile("A", tx_count=1, amount_sum=10.0, amount_sumsq=100.0)}

    plan = plan_of(rows, in_silver, p.Attempt("retry"), profiles)
    assert plan.silver["event_id"].tolist() == ["e2"]
    assert sorted(plan.served["event_id"]) == ["e1", "e2"]
    assert plan.duplicates.empty and plan.retry and plan.writes_postgres
    assert sorted((c.customer_id, c.tx_count) for c in plan.customers) == [("A", 1), ("B", 1)]


class FlagsBigOrders:
    """A stand-in model: 95 for orders above 1,000, else 5."""

    input_columns = INPUT_COLUMNS

    def score(self, pdf: pd.DataFrame) -> pd.DataFrame:
        scores = [95.0 if a > 1000 else 5.0 for a in pdf["amount_value"]]
        reasons = [["big"] if s > 50 else [] for s in scores]
        return pd.DataFrame({"fraud_score": scores, "fraud_reasons": reasons}, index=pdf.index)


def test_new_orders_are_scored_and_alerts_are_those_at_the_threshold():
    rows = routed(order("e1", "A", 0, "25.00"), order("e2", "B", 1, "4999.00"))
    plan = plan_of(rows, stored_at(), p.Attempt("new"), model=(FlagsBigOrders(), "7"))
    assert plan.silver.set_index("event_id")["is_fraud"].to_dict() == {"e1": False, "e2": True}
    assert plan.alerts[["alert_id", "event_id", "fraud_score", "model_version"]].to_dict("records") == [
        {"alert_id": alert_id("e2"), "event_id": "e2", "fraud_score": 95.0, "model_version": "7"}
    ]
    assert plan.alerts["reasons"].tolist() == [["big"]]


@pytest.mark.parametrize(
    ("postgres", "published", "skip", "retry", "writes_postgres"),
    [
        ("new", False, False, False, True),
        ("retry", False, False, True, True),
        ("done", False, False, True, False),  # served, alerts not confirmed: lake and alerts again
        ("done", True, True, True, False),
    ],
)
def test_what_an_attempt_writes(postgres, published, skip, retry, writes_postgres):
    attempt = p.Attempt(postgres, published)
    assert (attempt.skip, attempt.retry, attempt.writes_postgres) == (skip, retry, writes_postgres)
    assert p.looks_up_silver(attempt, write_bronze=True) == retry
    assert p.looks_up_silver(attempt, write_bronze=False)  # the rebuild from bronze: PostgreSQL holds everything


def refused(offset: int, reason: str) -> pa.Table:
    """The quarantine row of a valid record a sink refused (as ``SilverBatch`` builds it)."""
    row = {k.removeprefix("quarantine__"): v for k, v in bad(offset, f'{{"event_id":"at-{offset}"}}').items()}
    quarantine = {name: row[name] for name in QUARANTINE_SCHEMA.fieldNames()}
    return pa.Table.from_pylist([{**quarantine, "reasons": [reason]}], schema=arrow_schema(QUARANTINE_SCHEMA))


def test_a_refused_record_goes_to_quarantine_and_a_later_repeat_takes_its_place():
    """e2's first record is refused by a sink: it is quarantined with that reason, e2's repeat is its first record
    now (served, not a duplicate), and nothing of the refused record reaches the profiles."""
    rows = routed(order("e1", "A", 0), order("e2", "B", 1, "70.00"), order("e2", "B", 2, "9.00"), bad(3))
    reason = "sink_refused:postgres:transactions: value too long"
    plan = p.plan_batch(
        p.batch_rows(rows, refused(1, reason)), stored_at(), p.Attempt("new"), {}, None,
        alert_threshold=80, write_bronze=True, pipeline_version="v", now=NOW,
    )  # fmt: skip
    assert plan.silver[["event_id", "kafka_offset"]].values.tolist() == [["e1", 0], ["e2", 2]]
    assert plan.duplicates.empty
    quarantine = plan.quarantine.select(["kafka_offset", "reasons"]).to_pylist()
    assert sorted(quarantine, key=lambda r: r["kafka_offset"]) == [
        {"kafka_offset": 1, "reasons": [reason]},
        {"kafka_offset": 3, "reasons": ["malformed_json"]},
    ]
    assert {c.customer_id: c.amount_sum for c in plan.customers} == {"A": 10.0, "B": 9.0}
    assert coordinates(plan.bronze) == [0, 1, 2, 3]  # bronze keeps every record as received
