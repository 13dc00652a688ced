"""Every schema of the project, declared once.

The event contract (topic ``ecommerce-transactions``, ``schema_version`` 1) is
described in shared/ARCHITECTURE.md and docs/architecture.md. Spark's
``from_json``, the Delta tables, the simulator's contract test and the unit
tests all take their columns from here; nothing infers a schema from data.
"""

from __future__ import annotations

import functools

import pyarrow as pa
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

SCHEMA_VERSION = 1

CURRENCIES = ("USD", "EUR", "GBP", "CAD", "AUD", "JPY", "BRL", "INR")
PAYMENT_METHODS = ("card", "paypal", "apple_pay", "gift_card", "bank_transfer")
CHANNELS = ("web", "mobile_app")

# Bounds of the event contract. Every value inside them can be stored by every sink (PostgreSQL text, its
# btree indexes and NUMERIC columns, Delta through Arrow, Python datetimes, the alert JSON); the silver
# quality rules (pipelines/silver/transforms.QUALITY_RULES) quarantine a record outside them, with the
# rule's name as the reason. docs/architecture.md "Quality rules and limits" has the whole list.
MAX_PAYLOAD_BYTES = 16_384  # one event's JSON in UTF-8; bronze keeps a bigger Kafka value cut to this, noted
MAX_KEY_BYTES = 256  # the Kafka key bronze keeps (cut like the payload)
MAX_ID_CHARS = 64  # event_id, transaction_id, customer_id, device_id, items[].product_id, items[].category
MAX_EMAIL_CHARS = 254  # customer_email (the SMTP path limit)
MAX_ITEMS = 100  # lines of one order
MAX_QUANTITY = 100_000  # per line; at least 1
# amount and items[].unit_price: DECIMAL(12,2) and > 0 (a larger number does not parse and fails its rule).
MIN_EVENT_TIME = "2000-01-01 00:00:00"  # UTC; event_time lies in [MIN_EVENT_TIME, now + 1 day]
COUNTRY_PATTERN = "^[A-Z]{2}$"  # ip_country, shipping_country when present (ISO-3166 alpha-2)
# Text holds no control character (Unicode Cc: U+0000-U+001F, U+007F-U+009F): PostgreSQL text cannot store
# U+0000, and the others in an id are corruption, not data. Text is otherwise stored as received (no Unicode
# normalisation: two spellings of an id are two ids).

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
SILVER_BASE_COLUMNS = (
    "event_id", "transaction_id", "event_time", "customer_id", "customer_email_hash", "items", "item_count",
    "amount", "currency", "payment_method", "channel", "device_id", "ip_country", "shipping_country",
    "schema_version", "event_date", "kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
    "processed_time", "pipeline_version",
)  # fmt: skip
SCORE_COLUMNS = ("fraud_score", "is_fraud", "model_version", "fraud_reasons")
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
        # history features (ml.features; only orders before this one)
        T.StructField("amount_value", T.DoubleType(), True),
        T.StructField("hour_of_day", T.IntegerType(), True),
        T.StructField("day_of_week", T.IntegerType(), True),
        T.StructField("prior_tx_count", T.LongType(), True),
        T.StructField("prior_avg_amount", T.DoubleType(), True),
        T.StructField("amount_to_avg_ratio", T.DoubleType(), True),
        T.StructField("amount_zscore", T.DoubleType(), True),
        T.StructField("seconds_since_last_order", T.DoubleType(), True),
        T.StructField("is_new_device", T.BooleanType(), True),
        T.StructField("is_new_ip_country", T.BooleanType(), True),
        T.StructField("is_country_mismatch", T.BooleanType(), True),
        # velocity features (ml.features.RecentOrders; orders before this one in the last 10 minutes / hour)
        T.StructField("customer_orders_10m", T.IntegerType(), True),
        T.StructField("customer_orders_1h", T.IntegerType(), True),
        T.StructField("device_orders_10m", T.IntegerType(), True),
        T.StructField("device_orders_1h", T.IntegerType(), True),
        T.StructField("device_payment_methods_1h", T.IntegerType(), True),
        # fraud scoring (null until a model is registered)
        T.StructField("fraud_score", T.DoubleType(), True),
        T.StructField("is_fraud", T.BooleanType(), True),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("fraud_reasons", T.ArrayType(T.StringType()), True),
        # lineage
        *KAFKA_COORDINATES.fields,
        T.StructField("processed_time", T.TimestampType(), False),
        T.StructField("pipeline_version", T.StringType(), False),
    ]
)

# silver/duplicates: one row per Kafka record whose event_id was already in
# silver (or earlier in the same micro-batch), so that
# bronze = silver + quarantine + duplicates can be checked at any time.
DUPLICATES_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType(), False),
        T.StructField("event_date", T.DateType(), False),
        *KAFKA_COORDINATES.fields,
        T.StructField("detected_time", T.TimestampType(), False),
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

# silver/customer_profiles: one row per customer, the running history that the
# features of the customer's next order are computed from (ml.features).
PROFILE_SCHEMA = T.StructType(
    [
        T.StructField("customer_id", T.StringType(), False),
        T.StructField("tx_count", T.LongType(), False),
        T.StructField("amount_sum", T.DoubleType(), False),
        T.StructField("amount_sumsq", T.DoubleType(), False),
        T.StructField("first_order_time", T.TimestampType(), True),
        T.StructField("last_order_time", T.TimestampType(), True),
        T.StructField("devices", T.ArrayType(T.StringType()), False),
        T.StructField("ip_countries", T.ArrayType(T.StringType()), False),
        T.StructField("customer_email_hash", T.StringType(), True),
        T.StructField("updated_time", T.TimestampType(), False),
    ]
)

# silver/fraud_alerts: one row per order scored at or above the alert threshold
# (alert_id is derived from event_id, so a replay cannot make a second alert).
ALERT_SCHEMA = T.StructType(
    [
        T.StructField("alert_id", T.StringType(), False),
        T.StructField("event_id", T.StringType(), False),
        T.StructField("transaction_id", T.StringType(), False),
        T.StructField("customer_id", T.StringType(), False),
        T.StructField("amount", T.DecimalType(12, 2), False),
        T.StructField("fraud_score", T.DoubleType(), False),
        T.StructField("reasons", T.ArrayType(T.StringType()), False),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("event_time", T.TimestampType(), False),
        T.StructField("event_date", T.DateType(), False),
        T.StructField("created_at", T.TimestampType(), False),
    ]
)


@functools.cache
def arrow_schema(schema: T.StructType) -> pa.Schema:
    """A table's schema in Arrow terms, for writing it from the driver (timestamps in UTC, as Delta stores them)."""
    return to_arrow_schema(schema, timezone="UTC")


# ---------------------------------------------------------------------------
# Gold. Every figure is in the reporting currency (gold.reporting_currency,
# USD by default), converted with gold/fx_rates. Grain stated above each table.
# ---------------------------------------------------------------------------

# gold/fx_rates: one row per currency: units of it per one unit of the
# reporting currency, with where the rate comes from and the date it holds for.
FX_RATE_SCHEMA = T.StructType(
    [
        T.StructField("currency", T.StringType(), False),
        T.StructField("reporting_currency", T.StringType(), False),
        T.StructField("units_per_reporting_unit", T.DoubleType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("as_of", T.DateType(), False),
    ]
)

# gold/minute_metrics: one row per (event-time minute, dimension, dimension
# value). dimension is "all" (dimension_value ""), "category" (from item lines:
# an order counts once in each category it has lines in, revenue is that
# category's lines), "payment_method" or "channel". late_events counts records
# of that minute that arrived after the watermark had closed it (dimension
# "all" only; 0 elsewhere). source is "stream" or "batch" (recomputed from
# silver by the daily batch, late events included).
MINUTE_METRICS_SCHEMA = T.StructType(
    [
        T.StructField("window_start", T.TimestampType(), False),
        T.StructField("dimension", T.StringType(), False),
        T.StructField("dimension_value", T.StringType(), False),
        T.StructField("orders", T.LongType(), False),
        T.StructField("revenue", T.DoubleType(), False),
        T.StructField("avg_order_value", T.DoubleType(), True),
        T.StructField("customers", T.LongType(), False),
        T.StructField("alerts", T.LongType(), False),
        T.StructField("alert_rate", T.DoubleType(), True),
        T.StructField("late_events", T.LongType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("event_date", T.DateType(), False),
        T.StructField("updated_at", T.TimestampType(), False),
    ]
)

# gold/rfm: one row per (as_of date, customer with an order in the window).
RFM_SCHEMA = T.StructType(
    [
        T.StructField("as_of", T.DateType(), False),
        T.StructField("customer_id", T.StringType(), False),
        T.StructField("recency_days", T.IntegerType(), False),
        T.StructField("frequency", T.LongType(), False),
        T.StructField("monetary", T.DoubleType(), False),
        T.StructField("r_score", T.IntegerType(), False),
        T.StructField("f_score", T.IntegerType(), False),
        T.StructField("m_score", T.IntegerType(), False),
        T.StructField("rfm_score", T.StringType(), False),
        T.StructField("segment", T.StringType(), False),
        T.StructField("previous_segment", T.StringType(), True),
    ]
)

# gold/cohorts: one row per (cohort month, months since the first order).
COHORT_SCHEMA = T.StructType(
    [
        T.StructField("cohort_month", T.DateType(), False),
        T.StructField("months_since_first", T.IntegerType(), False),
        T.StructField("cohort_size", T.LongType(), False),
        T.StructField("active_customers", T.LongType(), False),
        T.StructField("retention_rate", T.DoubleType(), False),
        T.StructField("orders", T.LongType(), False),
        T.StructField("revenue", T.DoubleType(), False),
        T.StructField("avg_order_value", T.DoubleType(), True),
        T.StructField("orders_per_active_customer", T.DoubleType(), True),
    ]
)

# gold/product_similarity: one row per (product, similar product), the top N
# by cosine similarity over the binary customer x product matrix.
SIMILARITY_SCHEMA = T.StructType(
    [
        T.StructField("product_id", T.StringType(), False),
        T.StructField("similar_product_id", T.StringType(), False),
        T.StructField("common_customers", T.LongType(), False),
        T.StructField("similarity", T.DoubleType(), False),
        T.StructField("rank", T.IntegerType(), False),
    ]
)

# gold/frequently_bought_together: one row per ordered pair (antecedent ->
# consequent) of products in the same order that meets the support and
# confidence minimums.
FBT_SCHEMA = T.StructType(
    [
        T.StructField("antecedent", T.StringType(), False),
        T.StructField("consequent", T.StringType(), False),
        T.StructField("orders_with_both", T.LongType(), False),
        T.StructField("support", T.DoubleType(), False),
        T.StructField("confidence", T.DoubleType(), False),
        T.StructField("lift", T.DoubleType(), False),
    ]
)

# gold/recommendations: one row per (subject, recommended product), where the
# subject is a customer or a product; strategy names what produced the row
# (item_similarity, frequently_bought_together, popular_in_category).
RECOMMENDATION_SCHEMA = T.StructType(
    [
        T.StructField("subject_type", T.StringType(), False),
        T.StructField("subject_id", T.StringType(), False),
        T.StructField("product_id", T.StringType(), False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("score", T.DoubleType(), False),
        T.StructField("strategy", T.StringType(), False),
    ]
)

# gold/products: one row per product seen in silver: catalogue attributes
# (category, latest unit price) plus sales over all of silver.
PRODUCT_SCHEMA = T.StructType(
    [
        T.StructField("product_id", T.StringType(), False),
        T.StructField("category", T.StringType(), False),
        T.StructField("list_price", T.DoubleType(), True),
        T.StructField("order_count", T.LongType(), False),
        T.StructField("units_sold", T.LongType(), False),
        T.StructField("revenue", T.DoubleType(), False),
        T.StructField("avg_unit_price", T.DoubleType(), True),
        T.StructField("customers", T.LongType(), False),
        T.StructField("first_sold_at", T.TimestampType(), True),
        T.StructField("last_sold_at", T.TimestampType(), True),
    ]
)

# gold/customers: one row per customer seen in silver: lifetime figures,
# cohort, and the latest RFM segment (null before the first RFM run).
CUSTOMER_SCHEMA = T.StructType(
    [
        T.StructField("customer_id", T.StringType(), False),
        T.StructField("customer_email_hash", T.StringType(), True),
        T.StructField("first_order_time", T.TimestampType(), False),
        T.StructField("last_order_time", T.TimestampType(), False),
        T.StructField("order_count", T.LongType(), False),
        T.StructField("total_revenue", T.DoubleType(), False),
        T.StructField("avg_order_value", T.DoubleType(), False),
        T.StructField("cohort_month", T.DateType(), False),
        T.StructField("home_country", T.StringType(), True),
    ]
)
