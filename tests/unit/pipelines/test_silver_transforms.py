import copy
import datetime as dt
import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from ecom.schemas import ALERT_SCHEMA, BRONZE_SCHEMA, QUARANTINE_SCHEMA, SILVER_BASE_COLUMNS
from pipelines.silver import transforms as t

TS = dt.datetime(2026, 11, 25, 12, 0, 0)
KEY = b"test-key"

GOOD = {
    "event_id": "e-1",
    "transaction_id": "t-1",
    "event_time": "2026-11-25T10:15:30.123Z",
    "customer_id": "C000001",
    "customer_email": "  Alice@Example.COM ",
    "items": [
        {"product_id": "P1", "category": "books", "quantity": 2, "unit_price": 10.25},
        {"product_id": "P2", "category": "toys", "quantity": 1, "unit_price": 5.00},
    ],
    "amount": 25.50,
    "currency": "EUR",
    "payment_method": "card",
    "channel": "web",
    "device_id": "D1",
    "ip_country": "DE",
    "shipping_country": "DE",
    "schema_version": 1,
}


def variant(**changes):
    event = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is ...:
            event.pop(key)
        else:
            event[key] = value
    return json.dumps(event)


def bronze(spark, payloads):
    rows = [("C1", p, "ecommerce-transactions", 0, i, TS, TS, TS.date()) for i, p in enumerate(payloads)]
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


def failures(spark, payloads):
    df = bronze(spark, payloads).transform(t.with_parsed_event).transform(t.with_rule_failures)
    return {r.kafka_offset: sorted(r.failed_rules) for r in df.select("kafka_offset", "failed_rules").collect()}


def test_good_event_passes_every_rule(spark):
    assert failures(spark, [json.dumps(GOOD)]) == {0: []}


@pytest.mark.parametrize(
    "payload, rule",
    [
        ("{not json", "malformed_json"),
        ('{"event_id": "e-1", "items": [', "malformed_json"),  # truncated
        (None, "malformed_json"),
        (variant(schema_version=2), "unknown_schema_version"),
        (variant(event_id=...), "missing_event_id"),
        (variant(customer_id=""), "missing_customer_id"),
        (variant(event_time="yesterday"), "bad_event_time"),
        (variant(event_time="2099-01-01T00:00:00.000Z"), "event_time_in_future"),
        (variant(items=[], amount=1.0), "no_items"),
        (variant(amount=99.99), "amount_mismatch"),
        (variant(amount=-25.5), "amount_not_positive"),
        (variant(currency="XXX"), "unknown_currency"),
        (variant(payment_method="cash"), "unknown_payment_method"),
        (variant(channel="fax"), "unknown_channel"),
        (variant(amount="twenty"), "amount_not_positive"),  # wrong type parses to null
    ],
)
def test_each_bad_input_fails_its_rule(spark, payload, rule):
    assert rule in failures(spark, [payload])[0]


def test_bad_quantity_is_caught_and_listed_with_other_failures(spark):
    items = [{"product_id": "P1", "category": "books", "quantity": 0, "unit_price": 10.0}]
    got = failures(spark, [variant(items=items, amount=0.0, currency="XXX")])[0]
    assert got == ["amount_not_positive", "bad_quantity", "unknown_currency"]


def test_malformed_payload_reports_only_malformed_json(spark):
    assert failures(spark, ["]]]"]) == {0: ["malformed_json"]}


def routed(spark, payloads):
    checked = bronze(spark, payloads).transform(t.with_parsed_event).transform(t.with_rule_failures)
    return t.with_routed_records(checked, KEY, "test")


def test_silver_rows_pseudonymise_email_with_hmac_and_derive_columns(spark):
    silver = routed(spark, [json.dumps(GOOD)]).select("silver.*")
    assert tuple(silver.columns) == SILVER_BASE_COLUMNS
    row = silver.collect()[0]
    assert row.customer_email_hash == t.hmac_sha256_hex_py("alice@example.com", KEY)
    assert "alice" not in str(row.asDict()).lower()
    assert row.item_count == 2
    assert row.event_time == dt.datetime(2026, 11, 25, 10, 15, 30, 123000)
    assert row.event_date == dt.date(2026, 11, 25)
    assert row.kafka_offset == 0


def test_hmac_in_spark_matches_python_for_long_keys_and_null(spark):
    long_key = b"k" * 100
    df = spark.createDataFrame([("bob@example.com",), (None,)], "email string")
    got = [r.h for r in df.select(t.hmac_sha256_hex(df.email, long_key).alias("h")).collect()]
    assert got == [t.hmac_sha256_hex_py("bob@example.com", long_key), None]


def test_quarantine_rows_keep_payload_coordinates_and_reasons(spark):
    q = routed(spark, [json.dumps(GOOD), "{oops"]).filter("quarantine IS NOT NULL").select("quarantine.*")
    assert q.columns == QUARANTINE_SCHEMA.fieldNames()
    got = q.select("payload", "kafka_offset", "reasons")
    expected = spark.createDataFrame(
        [("{oops", 1, ["malformed_json"])], "payload string, kafka_offset long, reasons array<string>"
    )
    assert_df_equality(got, expected, ignore_nullable=True)


def pseudonymised(payload: str) -> str:
    """The payload as quarantine keeps it: GOOD's address replaced by its keyed hash (computed in Python)."""
    return payload.replace(GOOD["customer_email"], "email-hmac:" + t.hmac_sha256_hex_py("alice@example.com", KEY))


def test_each_record_is_routed_to_silver_or_quarantine_never_both(spark):
    payloads = [json.dumps(GOOD), "{oops", None, json.dumps({**GOOD, "amount": -1})]
    got = routed(spark, payloads).select(
        "kafka_offset",
        F.col("silver.event_id").alias("silver_event_id"),
        F.col("silver.customer_email_hash").alias("silver_email_hash"),
        F.col("quarantine.reasons").alias("quarantine_reasons"),
        F.col("quarantine.payload").alias("quarantine_payload"),
    )
    expected = spark.createDataFrame(
        [
            (0, "e-1", t.hmac_sha256_hex_py("alice@example.com", KEY), None, None),
            (1, None, None, ["malformed_json"], "{oops"),
            (2, None, None, ["malformed_json"], None),  # a null payload (tombstone)
            (
                3,
                None,
                None,
                ["amount_not_positive", "amount_mismatch"],
                pseudonymised(json.dumps({**GOOD, "amount": -1})),
            ),
        ],
        "kafka_offset long, silver_event_id string, silver_email_hash string, quarantine_reasons array<string>, "
        "quarantine_payload string",
    )
    assert_df_equality(got, expected, ignore_nullable=True, ignore_row_order=True)


def test_event_rank_orders_repeats_by_kafka_position():
    df = pd.DataFrame(
        [("e1", 0, 5, "late"), ("e1", 0, 3, "early"), ("e2", 1, 9, "only"), (None, 2, 1, "null id")],
        columns=["event_id", "kafka_partition", "kafka_offset", "tag"],
    )
    assert t.with_event_rank(df)["event_rank"].tolist() == [2, 1, 1, 1]


def test_duplicate_status_tells_new_replayed_and_repeated_records():
    firsts = pd.DataFrame(
        [("new", 0, 1), ("replayed", 0, 2), ("repeat", 1, 7), ("same-partition-other-offset", 0, 3)],
        columns=["event_id", "kafka_partition", "kafka_offset"],
    )
    existing = pd.DataFrame(
        [("replayed", 0, 2), ("repeat", 2, 4), ("same-partition-other-offset", 0, 9), ("unrelated", 0, 0)],
        columns=["event_id", "kafka_partition", "kafka_offset"],
    )
    got = dict(zip(firsts["event_id"], t.with_duplicate_status(firsts, existing)["status"], strict=True))
    assert got == {
        "new": "new",
        "replayed": "written",
        "repeat": "duplicate",
        "same-partition-other-offset": "duplicate",
    }
    empty = existing.iloc[:0]
    assert set(t.with_duplicate_status(firsts, empty)["status"]) == {"new"}


def test_alerts_are_the_flagged_orders_with_ids_derived_as_in_spark(spark):
    scored = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "transaction_id": ["t1", "t2", "t3"],
            "customer_id": ["A", "B", "C"],
            "amount": [Decimal("10.00"), Decimal("999.99"), Decimal("5.00")],
            "fraud_score": [12.0, 91.5, None],
            "is_fraud": [False, True, None],  # None: unscored
            "fraud_reasons": [None, np.array(["amount 40x the customer's average"]), None],
            "model_version": ["3", "3", None],
            "event_time": [TS, TS, TS],
            "event_date": [TS.date()] * 3,
            "processed_time": [TS, TS, TS],
        }
    )
    alerts = t.alerts_frame(scored)
    assert alerts["event_id"].tolist() == ["e2"]
    assert alerts.iloc[0]["reasons"] == ["amount 40x the customer's average"]
    assert list(alerts.columns) == ALERT_SCHEMA.fieldNames()
    in_spark = t.to_alerts(spark.createDataFrame(scored.assign(fraud_reasons=[None, ["x"], None]))).first()
    assert alerts.iloc[0]["alert_id"] == in_spark.alert_id == t.alert_id("e2")
    assert t.alert_id("e1") != t.alert_id("e2")
