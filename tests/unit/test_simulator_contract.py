"""The simulator's output against the event contract (ecom.schemas, shared/ARCHITECTURE.md)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ecom.schemas import CHANNELS, CURRENCIES, EVENT_FIELDS, EVENT_SCHEMA, ITEM_SCHEMA, PAYMENT_METHODS, SCHEMA_VERSION
from simulator.generator import TransactionSimulator
from simulator.producer import encode

EVENT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ALPHA2 = re.compile(r"^[A-Z]{2}$")
END = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.fixture(scope="module")
def events(settings) -> list[dict]:
    """Thousands of events through JSON and back, as a consumer sees them; fraud included."""
    sim = TransactionSimulator(settings.simulator.model_copy(update={"fraud_rate": 0.05}), seed=42)
    return [json.loads(encode(g.event)) for g in sim.backfill(6000, days=30, end=END)]


def _check_type(value, dtype: T.DataType, where: str) -> None:
    """One JSON value against a Spark type of the contract."""
    assert value is not None, f"{where} is null"
    if isinstance(dtype, T.StringType):
        assert isinstance(value, str) and value, f"{where}: {value!r} is not a non-empty string"
    elif isinstance(dtype, T.IntegerType):
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an int"
        assert -(2**31) <= value < 2**31, f"{where}: {value} does not fit an int"
    elif isinstance(dtype, T.DecimalType):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r} is not a number"
        d = Decimal(repr(value))
        assert d == d.quantize(Decimal("0.01")), f"{where}: {value!r} has more than 2 decimals"
        assert abs(d) < Decimal(10) ** (dtype.precision - dtype.scale), f"{where}: {value} too large"
    elif isinstance(dtype, T.ArrayType):
        assert isinstance(value, list) and value, f"{where}: {value!r} is not a non-empty list"
        for i, element in enumerate(value):
            _check_type(element, dtype.elementType, f"{where}[{i}]")
    elif isinstance(dtype, T.StructType):
        assert isinstance(value, dict), f"{where}: not an object"
        assert set(value) == set(dtype.fieldNames()), f"{where}: fields {sorted(value)} != {sorted(dtype.fieldNames())}"
        for f in dtype.fields:
            _check_type(value[f.name], f.dataType, f"{where}.{f.name}")
    else:  # pragma: no cover - a new type in the contract needs a rule here
        raise AssertionError(f"no rule for {dtype}")


def test_every_field_of_every_event_follows_the_schema(events):
    assert len(events) == 6000
    for n, event in enumerate(events):
        assert tuple(event) == EVENT_FIELDS, f"event {n}: field order/names {tuple(event)}"
        _check_type(event, EVENT_SCHEMA, f"event[{n}]")


def test_every_field_follows_the_contract_rules(events):
    seen_ids = set()
    for event in events:
        assert str(uuid.UUID(event["event_id"])) == event["event_id"]
        assert event["event_id"] not in seen_ids
        seen_ids.add(event["event_id"])
        assert EVENT_TIME.match(event["event_time"]), event["event_time"]
        assert event["currency"] in CURRENCIES
        assert event["payment_method"] in PAYMENT_METHODS
        assert event["channel"] in CHANNELS
        assert ALPHA2.match(event["ip_country"]) and ALPHA2.match(event["shipping_country"])
        assert event["schema_version"] == SCHEMA_VERSION
        assert "@" in event["customer_email"]
        for item in event["items"]:
            assert item["quantity"] >= 1
            assert item["unit_price"] > 0
            assert tuple(item) == tuple(ITEM_SCHEMA.fieldNames())


def test_amount_is_exactly_the_sum_of_the_lines(events):
    for event in events:
        total = sum(Decimal(repr(i["unit_price"])) * i["quantity"] for i in event["items"])
        assert Decimal(repr(event["amount"])) == total, event


def test_event_times_lie_in_the_backfill_window(events):
    times = [datetime.fromisoformat(e["event_time"].replace("Z", "+00:00")) for e in events]
    assert min(times) >= datetime(2026, 10, 26, tzinfo=UTC)
    assert max(times) < END


def test_spark_parses_every_event_with_the_contract_schema(spark, events):
    """``from_json`` with EVENT_SCHEMA (as bronze->silver does) leaves no field null."""
    payloads = [(encode(e).decode(),) for e in events[:2000]]
    df = spark.createDataFrame(payloads, "payload string").select(F.from_json("payload", EVENT_SCHEMA).alias("e"))
    nulls = [F.sum(F.col(f"e.{name}").isNull().cast("int")).alias(name) for name in EVENT_FIELDS]
    row = df.agg(
        *nulls, F.sum(F.expr("size(filter(e.items, i -> i.unit_price is null or i.quantity < 1))")).alias("bad_items")
    ).first()
    assert row.asDict() == {**dict.fromkeys(EVENT_FIELDS, 0), "bad_items": 0}
    first = df.select("e.amount").first()[0]
    assert first == Decimal(repr(events[0]["amount"])).quantize(Decimal("0.01"))
