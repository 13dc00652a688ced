"""Bronze layer: Kafka ``ecommerce-transactions`` -> Delta ``bronze/transactions``.

Input: the Kafka topic. Output: one row per Kafka record, as received (key and
payload as text) with its topic/partition/offset/timestamp and the ingest
time, partitioned by ingest date. Append only; exactly-once through the
streaming checkpoint; ``failOnDataLoss`` stays on.

Two exceptions to "as received", both outside the event contract and both
quarantined by silver: bytes that are not UTF-8 are kept as U+FFFD (Delta
strings are UTF-8), and a value longer than ``MAX_PAYLOAD_BYTES`` (a key
longer than ``MAX_KEY_BYTES``) is kept cut to that length with a note of its
size, so a micro-batch's memory is bounded by bytes (``records_per_trigger``).
The record itself stays in Kafka for the topic's retention.

Runs as ``ecom stream bronze`` or ``spark-submit pipelines/bronze/job.py``.
"""

from __future__ import annotations

import argparse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from ecom import metrics
from ecom.health import query_check
from ecom.kafka_config import spark_options
from ecom.lake import prepare_lake
from ecom.schemas import BRONZE_SCHEMA, MAX_KEY_BYTES, MAX_PAYLOAD_BYTES
from ecom.settings import Settings, StreamSettings, get_settings

QUERY_NAME = "bronze_transactions"
STAGE = "stream_bronze"  # the process name of metrics.ports and /healthz


def kept_text(data: Column, max_bytes: int) -> Column:
    """Kafka bytes -> the text bronze keeps: UTF-8 as is, other bytes as U+FFFD; a text longer than
    ``max_bytes`` is cut to about that many bytes and ends with ``" [cut from N bytes]"`` (N: the bytes
    received), so it stays longer than ``max_bytes`` and silver can tell."""
    text = F.make_valid_utf8(data.cast("string"))
    head = F.make_valid_utf8(F.substring(F.encode(text, "UTF-8"), 1, max_bytes).cast("string"))
    cut = F.concat(head, F.lit(" [cut from "), F.octet_length(data).cast("string"), F.lit(" bytes]"))
    return F.when(F.octet_length(text) > max_bytes, cut).otherwise(text)


def records_per_trigger(stream: StreamSettings) -> int:
    """Kafka records per micro-batch: ``max_offsets_per_trigger``, fewer if ``max_batch_bytes`` says so.

    The Kafka source limits a batch by record count only (Spark 4.2 has no byte limit for it), and bronze
    keeps at most MAX_PAYLOAD_BYTES + MAX_KEY_BYTES of a record; the driver holds a record's payload about
    twice at most (bronze and its silver or quarantine row), so this many records fit ``max_batch_bytes``.
    """
    per_record = 2 * (MAX_PAYLOAD_BYTES + MAX_KEY_BYTES)
    return max(1, min(stream.max_offsets_per_trigger, stream.max_batch_bytes // per_record))


def with_bronze_columns(kafka_df: DataFrame) -> DataFrame:
    """Kafka source rows -> bronze rows (columns and order of ``BRONZE_SCHEMA``)."""
    return kafka_df.select(
        kept_text(F.col("key"), MAX_KEY_BYTES).alias("kafka_key"),
        kept_text(F.col("value"), MAX_PAYLOAD_BYTES).alias("payload"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingest_time"),
        F.current_date().alias("ingest_date"),
    ).select(*BRONZE_SCHEMA.fieldNames())


def read_kafka(spark: SparkSession, settings: Settings) -> DataFrame:
    return (
        spark.readStream.format("kafka")
        .options(**spark_options(settings))  # brokers and security (SASL, TLS) from settings.kafka
        .option("subscribe", settings.kafka.transactions_topic)
        .option("startingOffsets", settings.stream.starting_offsets)
        .option("maxOffsetsPerTrigger", records_per_trigger(settings.stream))
        .option("failOnDataLoss", "true")
        .load()
    )


def start(spark: SparkSession, settings: Settings, once: bool = False) -> StreamingQuery:
    """Start the bronze stream; ``once`` processes what is available and stops. Running on, its process serves
    metrics and ``/healthz`` (``ecom.metrics``, stage ``stream_bronze``)."""
    prepare_lake(spark, settings)
    checkpoint = settings.lake.checkpoint(QUERY_NAME)
    writer = (
        read_kafka(spark, settings)
        .transform(with_bronze_columns)
        .writeStream.format("delta")
        .queryName(QUERY_NAME)
        .outputMode("append")
        .partitionBy("ingest_date")
        .option("checkpointLocation", checkpoint)
    )
    writer = (
        writer.trigger(availableNow=True) if once else writer.trigger(processingTime=settings.stream.trigger_interval)
    )
    query = writer.start(settings.lake.table("bronze", "transactions"))
    if not once:  # a long-running stream: /metrics and /healthz (a run that stops by itself is not scraped)
        metrics.serve(settings, STAGE).add("query", query_check(query))
        metrics.watch_lag(STAGE, settings.kafka, settings.kafka.transactions_topic, checkpoint)
        metrics.follow_progress(STAGE, query, "bronze.transactions")
    return query


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Bronze stream: Kafka -> bronze/transactions (Delta).")
    parser.add_argument("--once", action="store_true", help="process what is available, then stop")
    parser.add_argument("--profile", help="settings profile (default: $ECOM_PROFILE or local)")
    args = parser.parse_args(argv)
    from ecom.spark import get_spark
    from pipelines import supervisor

    settings = get_settings(args.profile)
    spark = get_spark(settings, QUERY_NAME)
    supervisor.run(lambda: start(spark, settings, once=args.once), settings.stream, QUERY_NAME)


if __name__ == "__main__":
    main()
