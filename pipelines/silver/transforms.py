"""Silver transformations: pure ``DataFrame -> DataFrame`` and ``Column -> Column`` functions.

Input rows are bronze rows (``ecom.schemas.BRONZE_SCHEMA``). The quality
rules are data (``QUALITY_RULES``: rule name -> SQL predicate that a good
record satisfies); ``with_rule_failures`` applies them all and lists the names
of the rules a record fails, and ``with_routed_records`` gives each record its
silver row (``silver_columns``) or its quarantine row (``quarantine_columns``).
The second half holds the pandas steps the stream runs on a batch in its
driver: ranking repeats, classifying against stored events, alerts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ecom.schemas import (
    ALERT_SCHEMA,
    CHANNELS,
    CURRENCIES,
    DUPLICATES_SCHEMA,
    EVENT_SCHEMA,
    KAFKA_COORDINATES,
    PAYMENT_METHODS,
    SCHEMA_VERSION,
    SCORE_COLUMNS,
)


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# Rule name -> predicate over the parsed record (column ``event``) that a good
# record satisfies. NULL counts as a failure.
QUALITY_RULES: dict[str, str] = {
    "malformed_json": "payload IS NOT NULL AND try_parse_json(payload) IS NOT NULL",
    "unknown_schema_version": f"event.schema_version = {SCHEMA_VERSION}",
    "missing_event_id": "event.event_id IS NOT NULL AND event.event_id != ''",
    "missing_transaction_id": "event.transaction_id IS NOT NULL",
    "missing_customer_id": "event.customer_id IS NOT NULL AND event.customer_id != ''",
    "bad_event_time": "try_to_timestamp(event.event_time) IS NOT NULL",
    "event_time_in_future": "try_to_timestamp(event.event_time) <= current_timestamp() + INTERVAL 1 DAY",
    "no_items": "size(event.items) > 0",
    "bad_quantity": "NOT exists(event.items, i -> i.quantity IS NULL OR i.quantity < 1)",
    "bad_unit_price": "NOT exists(event.items, i -> i.unit_price IS NULL OR i.unit_price <= 0)",
    "amount_not_positive": "event.amount > 0",
    "amount_mismatch": (
        "abs(event.amount - aggregate(event.items, CAST(0 AS DECIMAL(20,2)),"
        " (acc, i) -> CAST(acc + i.quantity * i.unit_price AS DECIMAL(20,2)))) <= 0.01"
    ),
    "unknown_currency": f"event.currency IN {_in(CURRENCIES)}",
    "unknown_payment_method": f"event.payment_method IN {_in(PAYMENT_METHODS)}",
    "unknown_channel": f"event.channel IN {_in(CHANNELS)}",
}


def with_parsed_event(bronze_df: DataFrame) -> DataFrame:
    """Adds ``event``: the payload parsed with the event schema (nulls where it does not fit)."""
    return bronze_df.withColumn("event", F.from_json(F.col("payload"), EVENT_SCHEMA))


def rule_failures(rules: dict[str, str] = QUALITY_RULES) -> Column:
    """Array of the names of the rules a row fails (empty when it passes all)."""
    checks = [F.when(~F.coalesce(F.expr(predicate), F.lit(False)), F.lit(name)) for name, predicate in rules.items()]
    return F.filter(F.array(*checks), lambda name: name.isNotNull())


def with_rule_failures(parsed_df: DataFrame, rules: dict[str, str] = QUALITY_RULES) -> DataFrame:
    """Adds ``failed_rules``. A malformed payload reports only ``malformed_json``."""
    failures = rule_failures(rules)
    malformed = F.expr(f"NOT coalesce({rules['malformed_json']}, false)") if "malformed_json" in rules else F.lit(False)
    return parsed_df.withColumn("failed_rules", F.when(malformed, F.array(F.lit("malformed_json"))).otherwise(failures))


def hmac_sha256_hex(value: Column, key: bytes) -> Column:
    """HMAC-SHA256 of a string column as lower-case hex, computed in the JVM (no UDF).

    HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)) with a 64-byte block.
    """
    block = 64
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    inner = F.unhex(F.sha2(F.concat(F.lit(bytearray(ipad)), F.encode(value, "UTF-8")), 256))
    return F.when(value.isNotNull(), F.sha2(F.concat(F.lit(bytearray(opad)), inner), 256))


def hmac_sha256_hex_py(value: str, key: bytes) -> str:
    """The same keyed hash in plain Python (for tests and lookups by analysts)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def normalise_email(email: Column) -> Column:
    return F.lower(F.trim(email))


def silver_columns(pii_key: bytes, pipeline_version: str) -> list[Column]:
    """The silver columns (``SILVER_BASE_COLUMNS``) of a valid parsed row, email pseudonymised.

    History features (``ml.features``) and scores are added afterwards.
    """
    e = "event."
    event_time = F.to_timestamp(F.col(e + "event_time"))
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


def quarantine_columns(pipeline_version: str) -> list[Column]:
    """The quarantine columns (``QUARANTINE_SCHEMA``) of a rejected row: raw payload, coordinates, reasons, when."""
    return [
        F.col("payload"),
        *[F.col(f.name) for f in KAFKA_COORDINATES.fields],
        F.col("failed_rules").alias("reasons"),
        F.current_timestamp().alias("quarantined_time"),
        F.lit(pipeline_version).alias("pipeline_version"),
    ]


def with_routed_records(checked_df: DataFrame, pii_key: bytes, pipeline_version: str) -> DataFrame:
    """Adds ``silver`` (the silver row of a valid record, else null) and ``quarantine`` (the quarantine row of
    a rejected one, else null): each record goes exactly one way.

    The silver stream builds this into its streaming plan once, so a micro-batch is a single Spark job
    (building the same DataFrames again in every batch cost ~200 ms of Python-side planning).
    """
    valid = F.size("failed_rules") == 0
    return checked_df.withColumn(
        "silver", F.when(valid, F.struct(*silver_columns(pii_key, pipeline_version)))
    ).withColumn("quarantine", F.when(~valid, F.struct(*quarantine_columns(pipeline_version))))


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
