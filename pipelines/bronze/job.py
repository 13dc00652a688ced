"""Bronze layer: Kafka ``ecommerce-transactions`` -> Delta ``bronze/transactions``.

Input: the Kafka topic. Output: one row per Kafka record, as received (key and
payload as text) with its topic/partition/offset/timestamp and the ingest
time, partitioned by ingest date. Append only; exactly-once through the
streaming checkpoint; ``failOnDataLoss`` stays on.

Runs as ``ecom stream bronze`` or ``spark-submit pipelines/bronze/job.py``.
"""

from __future__ import annotations

import argparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from ecom.lake import prepare_lake
from ecom.schemas import BRONZE_SCHEMA
from ecom.settings import Settings, get_settings

QUERY_NAME = "bronze_transactions"


def with_bronze_columns(kafka_df: DataFrame) -> DataFrame:
    """Kafka source rows -> bronze rows (columns and order of ``BRONZE_SCHEMA``)."""
    return kafka_df.select(
        F.col("key").cast("string").alias("kafka_key"),
        F.col("value").cast("string").alias("payload"),
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
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("subscribe", settings.kafka.transactions_topic)
        .option("startingOffsets", settings.stream.starting_offsets)
        .option("maxOffsetsPerTrigger", settings.stream.max_offsets_per_trigger)
        .option("failOnDataLoss", "true")
        .load()
    )


def start(spark: SparkSession, settings: Settings, once: bool = False) -> StreamingQuery:
    """Start the bronze stream; ``once`` processes what is available and stops."""
    prepare_lake(spark, settings)
    writer = (
        read_kafka(spark, settings)
        .transform(with_bronze_columns)
        .writeStream.format("delta")
        .queryName(QUERY_NAME)
        .outputMode("append")
        .partitionBy("ingest_date")
        .option("checkpointLocation", settings.lake.checkpoint(QUERY_NAME))
    )
    writer = (
        writer.trigger(availableNow=True) if once else writer.trigger(processingTime=settings.stream.trigger_interval)
    )
    return writer.start(settings.lake.table("bronze", "transactions"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Bronze stream: Kafka -> bronze/transactions (Delta).")
    parser.add_argument("--once", action="store_true", help="process what is available, then stop")
    parser.add_argument("--profile", help="settings profile (default: $ECOM_PROFILE or local)")
    args = parser.parse_args(argv)
    from ecom.spark import get_spark

    settings = get_settings(args.profile)
    start(get_spark(settings, QUERY_NAME), settings, once=args.once).awaitTermination()


if __name__ == "__main__":
    main()
