"""Silver transformations: pure ``DataFrame -> DataFrame`` and ``Column -> Column`` functions.

Input rows are bronze rows (``ecom.schemas.BRONZE_SCHEMA``). The quality
rules are data (``QUALITY_RULES``: rule name -> SQL predicate that a good
record satisfies); ``with_rule_failures`` applies them all and lists the names
of the rules a record fails, and ``with_routed_records`` gives each record its
silver row (``silver_columns``) or its quarantine row (``quarantine_columns``).
The rules hold every record to the contract's bounds (``ecom.schemas``), so
any silver row can be stored by every sink. No clear e-mail address leaves
bronze: silver keeps an HMAC of it, quarantine the payload with every address
pseudonymised; the HMAC key enters Spark plans as data, never as a literal.
The second half holds the pandas steps the stream runs on a batch in its
driver: ranking repeats, classifying against stored events, alerts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ecom.schemas import (
    ALERT_SCHEMA,
    CHANNELS,
    COUNTRY_PATTERN,
    CURRENCIES,
    DUPLICATES_SCHEMA,
    EVENT_SCHEMA,
    KAFKA_COORDINATES,
    MAX_EMAIL_CHARS,
    MAX_ID_CHARS,
    MAX_ITEMS,
    MAX_PAYLOAD_BYTES,
    MAX_QUANTITY,
    MIN_EVENT_TIME,
    PAYMENT_METHODS,
    SCHEMA_VERSION,
    SCORE_COLUMNS,
)


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# The event's text fields (top level; items' product_id and category are checked per line).
ID_FIELDS = ("event_id", "transaction_id", "customer_id", "device_id")
TEXT_FIELDS = (*ID_FIELDS, "customer_email", "currency", "payment_method", "channel", "ip_country", "shipping_country")
REPLACEMENT_CHARACTER = "\ufffd"  # what bronze keeps in place of bytes that are not UTF-8


def _all_text() -> str:
    """Every text value of the event, joined (nulls skipped): one regex scan looks at all of them."""
    top = ", ".join(f"event.{f}" for f in TEXT_FIELDS)
    return f"concat_ws('', {top}, array_join(transform(event.items, i -> concat_ws('', i.product_id, i.category)), ''))"


# Rule name -> predicate over the parsed record (column ``event``) that a good record satisfies. NULL counts
# as a failure, and no predicate can raise, whatever the input (ANSI mode is on): the rules decide, never an
# error. Together with the bounds in ``ecom.schemas`` they make every silver row storable in every sink.
PAYLOAD_RULES: dict[str, str] = {
    # bronze cuts a bigger Kafka value to MAX_PAYLOAD_BYTES and appends a note, so it stays longer than that
    "payload_too_large": f"coalesce(octet_length(payload), 0) <= {MAX_PAYLOAD_BYTES}",
    "invalid_utf8": f"NOT coalesce(contains(payload, '{REPLACEMENT_CHARACTER}'), false)",
    # try_parse_json also refuses duplicate keys and lone surrogates (from_json would take them)
    "malformed_json": "payload IS NOT NULL AND try_parse_json(payload) IS NOT NULL",
}
FIELD_RULES: dict[str, str] = {
    "unknown_schema_version": f"event.schema_version = {SCHEMA_VERSION}",
    "missing_event_id": "event.event_id IS NOT NULL AND event.event_id != ''",
    "missing_transaction_id": "event.transaction_id IS NOT NULL",
    "missing_customer_id": "event.customer_id IS NOT NULL AND event.customer_id != ''",
    "control_characters": f"NOT ({_all_text()} rlike '\\\\p{{Cc}}')",
    "text_too_long": (
        f"coalesce(greatest({', '.join(f'char_length(event.{f})' for f in ID_FIELDS)}), 0) <= {MAX_ID_CHARS}"
        f" AND coalesce(char_length(event.customer_email), 0) <= {MAX_EMAIL_CHARS}"
        f" AND NOT exists(event.items, i -> coalesce(greatest(char_length(i.product_id), char_length(i.category)),"
        f" 0) > {MAX_ID_CHARS})"
    ),
    "bad_event_time": "try_to_timestamp(event.event_time) IS NOT NULL",
    "event_time_in_future": "try_to_timestamp(event.event_time) <= current_timestamp() + INTERVAL 1 DAY",
    "event_time_too_old": f"try_to_timestamp(event.event_time) >= TIMESTAMP '{MIN_EVENT_TIME}'",
    "no_items": "size(event.items) > 0",
    "too_many_items": f"size(event.items) <= {MAX_ITEMS}",
    "missing_product": "NOT exists(event.items, i -> coalesce(i.product_id, '') = '' OR coalesce(i.category, '') = '')",
    "bad_quantity": f"NOT exists(event.items, i -> i.quantity IS NULL OR i.quantity NOT BETWEEN 1 AND {MAX_QUANTITY})",
    "bad_unit_price": "NOT exists(event.items, i -> i.unit_price IS NULL OR i.unit_price <= 0)",
    "amount_not_positive": "event.amount > 0",
    # DECIMAL(38,2) holds any basket's total (quantity x DECIMAL(12,2) price x lines), so the sum cannot overflow
    "amount_mismatch": (
        "abs(event.amount - aggregate(event.items, CAST(0 AS DECIMAL(38,2)),"
        " (acc, i) -> CAST(acc + i.quantity * i.unit_price AS DECIMAL(38,2)))) <= 0.01"
    ),
    "unknown_currency": f"event.currency IN {_in(CURRENCIES)}",
    "unknown_payment_method": f"event.payment_method IN {_in(PAYMENT_METHODS)}",
    "unknown_channel": f"event.channel IN {_in(CHANNELS)}",
    "bad_country": (
        f"coalesce(event.ip_country rlike '{COUNTRY_PATTERN}', true)"
        f" AND coalesce(event.shipping_country rlike '{COUNTRY_PATTERN}', true)"
    ),
}
QUALITY_RULES: dict[str, str] = {**PAYLOAD_RULES, **FIELD_RULES}


def with_parsed_event(bronze_df: DataFrame) -> DataFrame:
    """Adds ``event``: the payload parsed with the event schema (nulls where it does not fit)."""
    return bronze_df.withColumn("event", F.from_json(F.col("payload"), EVENT_SCHEMA))


def rule_failures(rules: dict[str, str] = QUALITY_RULES) -> Column:
    """Array of the names of the rules a row fails (empty when it passes all)."""
    checks = [F.when(~F.coalesce(F.expr(predicate), F.lit(False)), F.lit(name)) for name, predicate in rules.items()]
    return F.filter(F.array(*checks), lambda name: name.isNotNull())


def with_rule_failures(parsed_df: DataFrame, rules: dict[str, str] = QUALITY_RULES) -> DataFrame:
    """Adds ``failed_rules``. A payload failing a payload rule (too large, not UTF-8, not JSON) reports only the
    first of those: its fields mean nothing."""
    # The payload rules are checked once, in front: a payload passing them adds nothing to the list (and
    # try_parse_json, the dearest predicate, runs once per record).
    failures = rule_failures({name: rule for name, rule in rules.items() if name not in PAYLOAD_RULES})
    for name in reversed([n for n in PAYLOAD_RULES if n in rules]):
        failed = ~F.coalesce(F.expr(rules[name]), F.lit(False))
        failures = F.when(failed, F.array(F.lit(name))).otherwise(failures)
    return parsed_df.withColumn("failed_rules", failures)


@dataclass(frozen=True, repr=False)
class HmacKey:
    """An HMAC-SHA256 key as Spark uses it: its two padded forms, read by scalar subqueries from a one-row
    local relation. The key material is data of the plan, never a literal in its text (a literal prints as
    ``X'...'``), so no query plan, explain output, log line or error message shows it."""

    ipad: Column
    opad: Column

    @classmethod
    def of(cls, key: bytes, spark: SparkSession | None = None) -> HmacKey:
        block = 64
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        pads = pa.table(
            {
                "ipad": pa.array([bytes(b ^ 0x36 for b in key)], pa.binary()),
                "opad": pa.array([bytes(b ^ 0x5C for b in key)], pa.binary()),
            }
        )
        relation = (spark or SparkSession.active()).createDataFrame(pads)
        return cls(relation.select("ipad").scalar(), relation.select("opad").scalar())

    def __repr__(self) -> str:
        return "HmacKey(<hidden>)"


def hmac_sha256_hex(value: Column, key: bytes | HmacKey) -> Column:
    """HMAC-SHA256 of a string column as lower-case hex, computed in the JVM (no UDF).

    HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)) with a 64-byte block.
    """
    key = key if isinstance(key, HmacKey) else HmacKey.of(key)
    inner = F.unhex(F.sha2(F.concat(key.ipad, F.encode(value, "UTF-8")), 256))
    return F.when(value.isNotNull(), F.sha2(F.concat(key.opad, inner), 256))


def hmac_sha256_hex_py(value: str, key: bytes) -> str:
    """The same keyed hash in plain Python (for tests and lookups by analysts)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def normalise_email(email: Column) -> Column:
    return F.lower(F.trim(email))


# Anything shaped like an e-mail address, in any text (broken JSON too): the at sign as such, JSON-escaped
# (\u0040), URL-encoded (%40) or full width; local part and domain may hold JSON escapes (backslashes).
EMAIL_PATTERN = (
    r"[\p{L}\p{N}._%+\-\\]+"
    r"(?:@|(?i:\\u0040|%40)|\x{FF20})"
    r"[\p{L}\p{N}\-\\]+(?:\.[\p{L}\p{N}\-\\]+)*"
)
EMAIL_TOKEN = "email-hmac:"  # the record's own address becomes this prefix + its HMAC (as customer_email_hash)
EMAIL_MASK = "<email>"  # any other e-mail-shaped text


def pseudonymised_emails(text: Column, email: Column, key: bytes | HmacKey) -> Column:
    """``text`` without clear e-mail addresses: the record's own address (``email``, where it is one) becomes
    ``EMAIL_TOKEN`` + the hash silver keeps as ``customer_email_hash`` (so an operator can still find the
    customer); any other e-mail-shaped substring, escaped or in broken JSON, becomes ``EMAIL_MASK``."""
    key = key if isinstance(key, HmacKey) else HmacKey.of(key)
    is_address = email.rlike(rf"^\s*{EMAIL_PATTERN}\s*$")
    token = F.concat(F.lit(EMAIL_TOKEN), hmac_sha256_hex(normalise_email(email), key))
    own_hashed = F.when(is_address, F.replace(text, email, token)).otherwise(text)
    return F.regexp_replace(own_hashed, EMAIL_PATTERN, EMAIL_MASK)


def silver_columns(pii_key: bytes | HmacKey, pipeline_version: str) -> list[Column]:
    """The silver columns (``SILVER_BASE_COLUMNS``) of a valid parsed row, email pseudonymised.

    History features (``ml.features``) and scores are added afterwards.
    """
    e = "event."
    event_time = F.try_to_timestamp(F.col(e + "event_time"))  # never raises (the rules checked it)
    return [
        F.col(e + "event_id").alias("event_id"),
        F.col(e + "transaction_id").alias("transaction_id"),
        event_time.alias("event_time"),
        F.col(e + "customer_id").alias("customer_id"),
        hmac_sha256_hex(normalise_email(F.col(e + "customer_email")), pii_key).alias("customer_email_hash"),
        F.col(e + "items").alias("items"),
        F.size(F.col(e + "items")).alias("item_count"),
        F.col(e + "amount").alias("amount"),
        F.col(e + "currency").alias("currency"),
        F.col(e + "payment_method").alias("payment_method"),
        F.col(e + "channel").alias("channel"),
        F.col(e + "device_id").alias("device_id"),
        F.col(e + "ip_country").alias("ip_country"),
        F.col(e + "shipping_country").alias("shipping_country"),
        F.col(e + "schema_version").alias("schema_version"),
        F.to_date(event_time).alias("event_date"),
        *[F.col(f.name) for f in KAFKA_COORDINATES.fields],
        F.current_timestamp().alias("processed_time"),
        F.lit(pipeline_version).alias("pipeline_version"),
    ]


def quarantine_columns(pii_key: bytes | HmacKey, pipeline_version: str) -> list[Column]:
    """The quarantine columns (``QUARANTINE_SCHEMA``) of a rejected row: the payload with its e-mail addresses
    pseudonymised (bronze alone keeps it as received), coordinates, reasons, when."""
    return [
        pseudonymised_emails(F.col("payload"), F.col("event.customer_email"), pii_key).alias("payload"),
        *[F.col(f.name) for f in KAFKA_COORDINATES.fields],
        F.col("failed_rules").alias("reasons"),
        F.current_timestamp().alias("quarantined_time"),
        F.lit(pipeline_version).alias("pipeline_version"),
    ]


def with_routed_records(checked_df: DataFrame, pii_key: bytes, pipeline_version: str) -> DataFrame:
    """Adds ``silver`` (the silver row of a valid record, else null) and ``quarantine`` (the quarantine row of
    a rejected one, else null): each record goes exactly one way.

    The silver stream builds this into its streaming plan once, so a micro-batch is a single Spark job
    (building the same DataFrames again in every batch cost ~200 ms of Python-side planning). The key
    enters the plan as data (``HmacKey``), not as a literal.
    """
    valid = F.size("failed_rules") == 0
    key = HmacKey.of(pii_key, checked_df.sparkSession)
    return checked_df.withColumn("silver", F.when(valid, F.struct(*silver_columns(key, pipeline_version)))).withColumn(
        "quarantine", F.when(~valid, F.struct(*quarantine_columns(key, pipeline_version)))
    )


# Driver-side steps of a micro-batch (pandas): the batch's valid rows are in
# the driver anyway for scoring and PostgreSQL, and these take milliseconds
# there against a Spark job each.


def with_event_rank(silver: pd.DataFrame) -> pd.DataFrame:
    """Adds ``event_rank``: 1 for the earliest Kafka record of each event_id in the batch, 2, 3... for repeats."""
    order = silver.sort_values(["kafka_partition", "kafka_offset"], kind="stable")
    rank = order.groupby("event_id", sort=False, dropna=False).cumcount() + 1
    return silver.assign(event_rank=rank.reindex(silver.index).astype("int32"))


def with_duplicate_status(firsts: pd.DataFrame, existing: pd.DataFrame) -> pd.DataFrame:
    """Adds ``status`` to one row per event: ``new``, ``written`` (this very record is stored already:
    a replayed batch) or ``duplicate`` (the event is stored from another record).

    ``existing`` has event_id, kafka_partition, kafka_offset of the events stored before.
    """
    seen = existing.drop_duplicates("event_id").set_index("event_id")[["kafka_partition", "kafka_offset"]]
    at = seen.reindex(firsts["event_id"])
    same = (at["kafka_partition"].to_numpy() == firsts["kafka_partition"].to_numpy()) & (
        at["kafka_offset"].to_numpy() == firsts["kafka_offset"].to_numpy()
    )
    status = np.where(at["kafka_offset"].isna().to_numpy(), "new", np.where(same, "written", "duplicate"))
    return firsts.assign(status=status)


def with_unscored_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """Adds the fraud-score columns as nulls: the rows are not scored (no model yet)."""
    return rows.assign(**{name: None for name in SCORE_COLUMNS})


def duplicates_frame(repeats: pd.DataFrame, pipeline_version: str, now: dt.datetime) -> pd.DataFrame:
    """Repeated records -> ``DUPLICATES_SCHEMA`` rows."""
    return repeats.assign(detected_time=now, pipeline_version=pipeline_version)[list(DUPLICATES_SCHEMA.fieldNames())]


def alert_id(event_id: str) -> str:
    """The alert's id: a UUID-shaped digest of the event id (the same as ``to_alerts`` computes in Spark)."""
    d = hashlib.sha256(f"fraud-alert:{event_id}".encode()).hexdigest()
    return f"{d[:8]}-{d[8:12]}-{d[12:16]}-{d[16:20]}-{d[20:32]}"


def alerts_frame(scored: pd.DataFrame) -> pd.DataFrame:
    """Orders flagged ``is_fraud`` -> ``ALERT_SCHEMA`` rows (pandas)."""
    flagged = scored[scored["is_fraud"].eq(True)]
    return flagged.assign(
        alert_id=flagged["event_id"].map(alert_id),
        reasons=flagged["fraud_reasons"].map(lambda r: list(r) if r is not None else []),
        created_at=flagged["processed_time"],
    )[list(ALERT_SCHEMA.fieldNames())]


def to_alerts(scored_df: DataFrame) -> DataFrame:
    """Orders flagged ``is_fraud`` -> ``ALERT_SCHEMA`` rows; alert_id is a UUID derived from event_id."""
    digest = F.sha2(F.concat(F.lit("fraud-alert:"), F.col("event_id")), 256)
    alert_id = F.concat_ws(
        "-", F.substring(digest, 1, 8), F.substring(digest, 9, 4), F.substring(digest, 13, 4),
        F.substring(digest, 17, 4), F.substring(digest, 21, 12),
    )  # fmt: skip
    return (
        scored_df.filter(F.col("is_fraud"))
        .select(
            alert_id.alias("alert_id"),
            "event_id",
            "transaction_id",
            "customer_id",
            "amount",
            "fraud_score",
            F.coalesce(F.col("fraud_reasons"), F.array().cast("array<string>")).alias("reasons"),
            "model_version",
            "event_time",
            "event_date",
            F.col("processed_time").alias("created_at"),
        )
        .select(*ALERT_SCHEMA.fieldNames())
    )
