"""Every schema of the project, declared once.

The event contract (topic ``ecommerce-transactions``, ``schema_version`` 1) is
described in shared/ARCHITECTURE.md and docs/architecture.md. Spark's
``from_json``, the Delta tables, the simulator's contract test and the unit
tests all take their columns from here; nothing infers a schema from data.
"""

from __future__ import annotations

from pyspark.sql import types as T

SCHEMA_VERSION = 1

CURRENCIES = ("USD", "EUR", "GBP", "CAD", "AUD", "JPY", "BRL", "INR")
PAYMENT_METHODS = ("card", "paypal", "apple_pay", "gift_card", "bank_transfer")
CHANNELS = ("web", "mobile_app")

ITEM_SCHEMA = T.StructType(
    [
        T.StructField("product_id", T.StringType()),
        T.StructField("category", T.StringType()),
        T.StructField("quantity", T.IntegerType()),
        T.StructField("unit_price", T.DecimalType(12, 2)),
    ]
)

# The JSON payload of one order event. Every field is nullable here on
# purpose: the quality rules in silver decide what is missing, so a bad
# record is quarantined with a reason instead of failing the parse.
EVENT_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType()),
        T.StructField("transaction_id", T.StringType()),
        T.StructField("event_time", T.StringType()),
        T.StructField("customer_id", T.StringType()),
        T.StructField("customer_email", T.StringType()),
        T.StructField("items", T.ArrayType(ITEM_SCHEMA)),
        T.StructField("amount", T.DecimalType(12, 2)),
        T.StructField("currency", T.StringType()),
        T.StructField("payment_method", T.StringType()),
        T.StructField("channel", T.StringType()),
        T.StructField("device_id", T.StringType()),
        T.StructField("ip_country", T.StringType()),
        T.StructField("shipping_country", T.StringType()),
        T.StructField("schema_version", T.IntegerType()),
    ]
)

EVENT_FIELDS = tuple(EVENT_SCHEMA.fieldNames())

# Kafka coordinates kept with every raw record (bronze) and carried as lineage.
KAFKA_COORDINATES = T.StructType(
    [
        T.StructField("kafka_topic", T.StringType(), False),
        T.StructField("kafka_partition", T.IntegerType(), False),
        T.StructField("kafka_offset", T.LongType(), False),
        T.StructField("kafka_timestamp", T.TimestampType(), True),
    ]
)

# bronze/transactions: one row per Kafka record, as received.
BRONZE_SCHEMA = T.StructType(
    [
        T.StructField("kafka_key", T.StringType(), True),
        T.StructField("payload", T.StringType(), True),
        *KAFKA_COORDINATES.fields,
        T.StructField("ingest_time", T.TimestampType(), False),
        T.StructField("ingest_date", T.DateType(), False),
    ]
)

# silver/transactions: one row per valid order event (unique event_id).
SILVER_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType(), False),
        T.StructField("transaction_id", T.StringType(), False),
        T.StructField("event_time", T.TimestampType(), False),
        T.StructField("customer_id", T.StringType(), False),
        T.StructField("customer_email_hash", T.StringType(), True),
        T.StructField("items", T.ArrayType(ITEM_SCHEMA), False),
        T.StructField("item_count", T.IntegerType(), False),
        T.StructField("amount", T.DecimalType(12, 2), False),
        T.StructField("currency", T.StringType(), False),
        T.StructField("payment_method", T.StringType(), False),
        T.StructField("channel", T.StringType(), False),
        T.StructField("device_id", T.StringType(), True),
        T.StructField("ip_country", T.StringType(), True),
        T.StructField("shipping_country", T.StringType(), True),
        T.StructField("schema_version", T.IntegerType(), False),
        T.StructField("event_date", T.DateType(), False),
        *KAFKA_COORDINATES.fields,
        T.StructField("processed_time", T.TimestampType(), False),
        T.StructField("pipeline_version", T.StringType(), False),
    ]
)

# silver/quarantine: one row per rejected Kafka record, with the reasons.
QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("payload", T.StringType(), True),
        *KAFKA_COORDINATES.fields,
        T.StructField("reasons", T.ArrayType(T.StringType()), False),
        T.StructField("quarantined_time", T.TimestampType(), False),
        T.StructField("pipeline_version", T.StringType(), False),
    ]
)
