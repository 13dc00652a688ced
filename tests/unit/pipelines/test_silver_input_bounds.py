"""The contract's bounds as quality rules, e-mail pseudonymisation in quarantine, and the HMAC key kept out of plans.

Every case below is a value some sink cannot store (or that used to stop the stream); each must be quarantined
with its rule's name, never raise, and values just inside the bounds must pass.
"""

import contextlib
import hashlib
import hmac
import io
import json

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from ecom.schemas import MAX_PAYLOAD_BYTES
from pipelines.silver import transforms as t
from tests.unit.pipelines.test_silver_transforms import GOOD as TWO_LINES
from tests.unit.pipelines.test_silver_transforms import bronze

KEY = b"unit-test-key"
ITEM = TWO_LINES["items"][0]  # 2 x 10.25
GOOD = {**TWO_LINES, "customer_email": "alice@example.com", "items": [ITEM], "amount": 20.50}


def variant(**changes) -> str:
    """GOOD with fields changed (``...`` drops a field), as JSON."""
    return json.dumps({k: v for k, v in {**GOOD, **changes}.items() if v is not ...})


def items(n: int, **line) -> list[dict]:
    return [{**ITEM, "product_id": f"P{i}", **line} for i in range(n)]


def reasons(spark, payloads) -> list[list[str]]:
    df = bronze(spark, payloads).transform(t.with_parsed_event).transform(t.with_rule_failures)
    got = {r.kafka_offset: list(r.failed_rules) for r in df.select("kafka_offset", "failed_rules").collect()}
    return [got[i] for i in range(len(payloads))]


def padded_to(size: int) -> str:
    """GOOD with an extra field that makes the payload exactly ``size`` bytes of UTF-8."""
    base = json.dumps({**GOOD, "pad": ""})
    return json.dumps({**GOOD, "pad": "x" * (size - len(base.encode()))})


OUTSIDE = [
    # text PostgreSQL cannot hold (NUL) and other control characters, in any text field
    (variant(device_id="D\u00001"), "control_characters"),
    (variant(transaction_id="t-1\n"), "control_characters"),
    (variant(customer_email="alice\u0085@example.com"), "control_characters"),
    (variant(items=[{**ITEM, "product_id": "P\u007f1"}]), "control_characters"),
    # lengths: ids feed btree indexes (at most ~2.7 kB an entry)
    (variant(event_id="e" * 65), "text_too_long"),
    (variant(customer_id="\U0001f600" * 65), "text_too_long"),
    (variant(items=[{**ITEM, "category": "c" * 65}]), "text_too_long"),
    (variant(customer_email="a" * 243 + "@example.com"), "text_too_long"),
    (variant(items=items(101, quantity=1, unit_price=1.0), amount=101.0), "too_many_items"),
    # numbers: quantity x price used to overflow DECIMAL(20,2) under ANSI mode and stop the stream
    (
        variant(items=[{**ITEM, "quantity": 2147483647, "unit_price": 9999999999.99}], amount=1.0),
        "bad_quantity+amount_mismatch",
    ),
    (variant(items=[{**ITEM, "quantity": 100_001, "unit_price": 1.0}], amount=100001.0), "bad_quantity"),
    # times Python, pandas or the features cannot hold (year 0, negative years) or that predate the shop
    (variant(event_time="0000-01-01T00:00:00Z"), "event_time_too_old"),
    (variant(event_time="-0100-01-01T00:00:00Z"), "event_time_too_old"),
    (variant(event_time="1999-12-31T23:59:59.999Z"), "event_time_too_old"),
    # what gold needs of an item line, and country codes (they are also worded into alert reasons)
    (variant(items=[{**ITEM, "product_id": None}]), "missing_product"),
    (variant(items=[{**ITEM, "category": ""}]), "missing_product"),
    (variant(ip_country="de"), "bad_country"),
    (variant(shipping_country="DEU"), "bad_country"),
    # the payload as a whole
    (padded_to(MAX_PAYLOAD_BYTES + 1), "payload_too_large"),
    (variant(device_id="D\ufffd").replace("\\ufffd", "\ufffd"), "invalid_utf8"),  # bronze's mark of non-UTF-8
    ('{"event_id": "a", "event_id": "b"}', "malformed_json"),  # duplicate keys: which one is meant?
    (variant(device_id="\ud800"), "malformed_json"),  # a lone surrogate (JSON-escaped)
    ('{"amount": NaN}', "malformed_json"),
    ("[" * 5000 + "]" * 5000, "malformed_json"),  # deeper than the JSON parser goes
]


@pytest.mark.parametrize("payload, rule", OUTSIDE, ids=[f"{i}-{rule}" for i, (_, rule) in enumerate(OUTSIDE)])
def test_each_value_outside_the_contract_fails_exactly_its_rule(spark, payload, rule):
    assert reasons(spark, [payload]) == [rule.split("+")]


def test_all_of_them_together_are_routed_without_an_error(spark):
    """ANSI mode is on: one predicate raising would fail the whole micro-batch. All rows, one job."""
    payloads = [p for p, _ in OUTSIDE] + [json.dumps(GOOD)]
    assert reasons(spark, payloads) == [rule.split("+") for _, rule in OUTSIDE] + [[]]


def test_values_just_inside_the_bounds_pass(spark):
    inside = [
        variant(event_id="e" * 64, customer_id="\U0001f600" * 64, device_id="\u2028" * 64),
        variant(transaction_id="\\N", device_id="\\N"),  # COPY's NULL marker is data like any other text
        variant(device_id=None, ip_country=None, shipping_country=...),
        variant(customer_email="a" * 242 + "@example.com"),
        variant(items=items(100, quantity=1, unit_price=1.0), amount=100.0),
        variant(items=[{**ITEM, "quantity": 100_000, "unit_price": 99999.99}], amount=9999999000.0),
        variant(event_time="2000-01-01T00:00:00Z"),
        variant(items=[{**ITEM, "product_id": '\u00e9\u0301 "quoted" {a,b} \\ NULL'}]),
        padded_to(MAX_PAYLOAD_BYTES),
    ]
    assert len(padded_to(MAX_PAYLOAD_BYTES).encode()) == MAX_PAYLOAD_BYTES
    assert reasons(spark, inside) == [[]] * len(inside)


def expected_hash(email: str, key: bytes = KEY) -> str:
    return hmac.new(key, email.encode(), hashlib.sha256).hexdigest()


def routed(spark, payloads, key: bytes = KEY):
    checked = bronze(spark, payloads).transform(t.with_parsed_event).transform(t.with_rule_failures)
    return t.with_routed_records(checked, key, "test")


def test_quarantine_keeps_no_clear_email_address_anywhere_in_the_payload(spark):
    own = variant(customer_email="Bob@Example.com", amount=-1.0, device_id="from carol@shop.example")
    escaped = '{"customer_email": "dave\\u0040example.com", "note": "x%40y.org", "oops"'
    broken = "customer_email=erin.o+tag@mail.example.co.uk; schema_version=1"
    fullwidth = "\uff46\uff52\uff41\uff4e\uff4b\uff20example.com"
    got = routed(spark, [own, escaped, broken, fullwidth, json.dumps(GOOD)]).select(
        "kafka_offset", F.col("quarantine.payload").alias("payload")
    )
    expected = spark.createDataFrame(
        [
            (
                0,
                own.replace("Bob@Example.com", "email-hmac:" + expected_hash("bob@example.com")).replace(
                    "carol@shop.example", "<email>"
                ),
            ),  # fmt: skip
            (1, '{"customer_email": "<email>", "note": "<email>", "oops"'),
            (2, "customer_email=<email>; schema_version=1"),
            (3, "<email>"),
            (4, None),  # valid: no quarantine row
        ],
        "kafka_offset long, payload string",
    )
    assert_df_equality(got, expected, ignore_nullable=True, ignore_row_order=True)


def captured_plans(df) -> str:
    """Every form in which Spark prints the plan: all explain modes and the query execution string."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for mode in ("simple", "extended", "codegen", "cost", "formatted"):
            df.explain(mode)
    return out.getvalue() + df._jdf.queryExecution().toString()


def test_hmac_key_material_never_appears_in_the_routing_plan(spark):
    key = b"plan-secret-0123456789"
    df = routed(spark, [json.dumps(GOOD), "{oops alice@example.com"], key=key)
    df.collect()  # executed: the final adaptive plan is printed too
    plans = captured_plans(df)
    padded = key.ljust(64, b"\0")
    ipad, opad = bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)
    needles = [key.decode(), key.hex(), ipad.hex(), opad.hex(), padded.hex()]
    assert "scalar-subquery" in plans.lower() or "subquery" in plans.lower()  # the key is read as data
    for needle in needles:
        assert needle.lower() not in plans.lower()
    assert key.decode() not in repr(t.HmacKey.of(key, spark))


def test_email_hash_is_stable_for_a_key_and_changes_with_the_key(spark):
    emails = spark.createDataFrame([("  Alice@Example.COM ",), ("bob@example.com",), (None,)], "email string")

    def hashes(key: bytes) -> list:
        return [
            r.h for r in emails.select(t.hmac_sha256_hex(t.normalise_email(F.col("email")), key).alias("h")).collect()
        ]

    first, again, other = hashes(b"key-one"), hashes(b"key-one"), hashes(b"key-two")
    assert (
        first
        == again
        == [expected_hash("alice@example.com", b"key-one"), expected_hash("bob@example.com", b"key-one"), None]
    )
    assert other[:2] == [expected_hash("alice@example.com", b"key-two"), expected_hash("bob@example.com", b"key-two")]
    assert set(first[:2]).isdisjoint(other[:2])
