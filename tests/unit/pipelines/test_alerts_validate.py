"""The per-order path's Python rules against silver's Spark rules, on the same Kafka values.

Sound: every value ``validate.order`` accepts passes every Spark rule, with the same amount, lines and event
time. Complete on the contract's form: every simulated order Spark accepts, it accepts. Generated values (the
whole-path fuzzer's strategies) and hand-picked edges of Spark's permissive parsing go through both.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from ecom.schemas import MAX_PAYLOAD_BYTES
from pipelines.alerts import validate
from pipelines.bronze.job import kept_text
from pipelines.silver import transforms as t
from tests.integration.test_fuzz_path import kafka_value
from tests.unit.pipelines.test_silver_transforms import GOOD

NOW = dt.datetime.now(dt.UTC)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def order_json(**changes) -> dict:
    return {**copy.deepcopy(GOOD), **changes}


def raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# Values at the edges of Spark's permissive parsing: Spark takes some of them, rounds or coerces others.
EDGES: list[bytes] = [
    raw(json.dumps(order_json())),
    raw(json.dumps(order_json(event_id=123))),  # a number for text: Spark keeps "123"
    raw(json.dumps(order_json(amount="25.50"))),  # a string for money: Spark parses it
    raw(json.dumps(order_json(amount=25.505))),  # Spark rounds half up to 25.51 (and the lines disagree)
    raw(json.dumps(order_json(amount=25.495))),  # rounds to 25.50: Spark passes it
    raw(json.dumps(order_json(schema_version=1.0))),
    raw(json.dumps(order_json(event_time="2026-11-25 10:15:30"))),  # no zone: Spark reads it as UTC
    raw(json.dumps(order_json(event_time="2026-1-5T1:2:3Z"))),
    raw(json.dumps(order_json(event_time="2026-11-25T10:15:30 UTC"))),
    raw(json.dumps(order_json(event_time="2026-11-25T10:15:30.1234567Z"))),
    raw(json.dumps(order_json(event_time="2026-11-25T10:15:30+01:00"))),
    raw(json.dumps(order_json(event_time="2026-11-25"))),
    raw(json.dumps(order_json(event_time="1999-12-31T23:59:59Z"))),
    raw(json.dumps(order_json(event_time=(NOW + dt.timedelta(hours=23)).strftime("%Y-%m-%dT%H:%M:%SZ")))),
    raw(json.dumps(order_json(event_time=(NOW + dt.timedelta(hours=25)).strftime("%Y-%m-%dT%H:%M:%SZ")))),
    raw(json.dumps(order_json(ip_country="US\n"))),
    raw(json.dumps(order_json(ip_country="us"))),
    raw(json.dumps(order_json(device_id=None, ip_country=None, customer_email=None))),
    raw(json.dumps(order_json(transaction_id=""))),
    raw(json.dumps(order_json(customer_id="\\N"))),
    raw(json.dumps(order_json(device_id="\ud800"))),  # a lone surrogate escape
    raw(json.dumps(order_json(device_id="\U0001f600"))),  # a pair: fine
    raw(json.dumps(order_json(device_id="x\u0085y"))),  # C1 control
    raw(json.dumps(order_json(items=[{"product_id": "P1", "category": "b", "quantity": "2", "unit_price": 12.75}]))),
    raw(json.dumps(order_json(extra={"deep": [[[[[[]]]]]]}))),
    raw(json.dumps(order_json()) + " trailing"),  # Spark's parser stops at the first value
    raw(json.dumps(order_json())[:-1] + ', "EVENT_ID": "other"}'),
    raw(json.dumps(order_json())[:-1] + ', "event_id": "again"}'),  # a duplicate key
    raw(json.dumps(order_json())[:-1] + ', "pad": "' + "x" * (MAX_PAYLOAD_BYTES - 400) + '"}'),
    raw(json.dumps(order_json())[:-1] + ', "pad": "' + "x" * MAX_PAYLOAD_BYTES + '"}'),
    raw(json.dumps(order_json())[:-1] + ', "deep": ' + "[" * 600 + "]" * 600 + "}"),
    raw(json.dumps(order_json())[:-1] + ', "deep": ' + "[" * 1200 + "]" * 1200 + "}"),
    raw(
        json.dumps(
            order_json(amount=1e2, items=[{"product_id": "P", "category": "c", "quantity": 1, "unit_price": 100}])
        )
    ),
    b'{"event_id": "x"',
    b"\xff\xfe" + raw(json.dumps(order_json())),
    b"[]",
    b"null",
]


def spark_verdicts(spark, values: list[bytes | None]) -> list[dict]:
    """Each value through bronze's text and silver's rules: the failed rules and the parsed fields."""
    rows = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, value binary")
    checked = (
        rows.select("i", kept_text(F.col("value"), MAX_PAYLOAD_BYTES).alias("payload"))
        .transform(t.with_parsed_event)
        .transform(t.with_rule_failures)
        .select(
            "i",
            "failed_rules",
            F.col("event.amount").alias("amount"),
            F.col("event.items").alias("items"),
            # as microseconds: a far-off year Spark parses has no Python datetime (the rules refuse it)
            F.expr("unix_micros(try_to_timestamp(event.event_time))").alias("event_time"),
            F.col("event.event_id").alias("event_id"),
            F.col("event.device_id").alias("device_id"),
        )
        .orderBy("i")
    )
    return [r.asDict(recursive=True) for r in checked.collect()]


def assert_agree(spark, values: list[bytes | None]) -> tuple[int, int]:
    """Soundness for every value; returns (taken by both, taken by Spark only)."""
    both = spark_only = 0
    for value, verdict in zip(values, spark_verdicts(spark, values), strict=True):
        taken = validate.checked(value, NOW)
        if taken is None:
            spark_only += not verdict["failed_rules"]
            continue
        assert verdict["failed_rules"] == [], (value[:300], verdict["failed_rules"])
        assert taken.amount == verdict["amount"]
        assert [(x.product_id, x.category, x.quantity, x.unit_price) for x in taken.items] == [
            (x["product_id"], x["category"], x["quantity"], x["unit_price"]) for x in verdict["items"]
        ]
        assert taken.event_time == EPOCH + dt.timedelta(microseconds=verdict["event_time"])
        assert (taken.event_id, taken.device_id) == (verdict["event_id"], verdict["device_id"])
        both += 1
    return both, spark_only


# The edges taken here (by index in EDGES): the order; an offset; 23 h ahead; its nullable fields empty; an
# empty transaction id; \N; a surrogate pair; shallow nesting; a differently-cased key Spark ignores too; 1e2.
TAKEN = {0, 10, 13, 17, 18, 19, 21, 24, 26, 32}


def test_the_edges_of_sparks_parsing_are_left_to_the_micro_batch(spark):
    assert {i for i, v in enumerate(EDGES) if validate.checked(v, NOW) is not None} == TAKEN
    both, spark_only = assert_agree(spark, EDGES)
    assert both == len(TAKEN)
    assert spark_only >= 6  # coercions Spark makes: text from numbers, money from strings, other time forms


def test_every_simulated_order_is_taken_by_both(spark, settings):
    from simulator.generator import TransactionSimulator

    sim = TransactionSimulator(settings.simulator, seed=8)
    start = NOW - dt.timedelta(days=2)
    values = [json.dumps(g.event).encode() for g in sim.events(2000, start=start, rate_per_s=50)]
    values += [json.dumps(g.event, ensure_ascii=False).encode() for g in sim.events(200, start=start, rate_per_s=50)]
    assert assert_agree(spark, values) == (len(values), 0)


def test_generated_values_taken_here_pass_every_spark_rule(spark):
    """Generated values, a few per example (a long list per example overruns Hypothesis's choice budget, and most
    attempts are thrown away), all checked in one Spark job."""
    values: list[bytes | None] = []

    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(kafka_value(), min_size=8, max_size=8))
    def draw(drawn):
        values.extend(drawn)

    draw()
    assert len(values) >= 200  # Hypothesis ran (it may stop early where its search space is used up)
    both, _ = assert_agree(spark, values)
    assert both >= len(values) // 10, (both, len(values))  # about 5 in 11 are drawn valid


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 25.48),  # the lines disagree by more than a cent
        ("amount", 0),
        ("currency", "XXX"),
        ("schema_version", 2),
        ("items", []),
        ("event_id", ""),
        ("customer_id", "C" * 65),
        ("ip_country", "DEU"),
    ],
)
def test_a_broken_order_is_refused_with_a_reason(field, value):
    with pytest.raises(validate.Refused):
        validate.order(raw(json.dumps(order_json(**{field: value}))), NOW)
    assert validate.order(raw(json.dumps(order_json())), NOW).amount == Decimal("25.50")
