"""Silver layer: Delta ``bronze/transactions`` -> ``silver/transactions``, ``silver/quarantine``, PostgreSQL.

Input: a Delta stream over bronze (``skipChangeCommits``, so retention deletes
in bronze do not stop it). Each micro-batch is handled by ``SilverBatch``,
a named ``foreachBatch`` function whose replay of the same batch id changes
nothing:

- records failing a quality rule -> ``silver/quarantine`` (idempotent append,
  Delta ``txnAppId``/``txnVersion``), one row per rejected Kafka record;
- valid records, one per ``event_id`` -> ``silver/transactions`` by MERGE
  (insert when the event id is new), so duplicates across batches collapse;
- the same rows -> PostgreSQL ``transactions`` (COPY + ON CONFLICT, batch
  bookkeeping in the same database transaction).

Grain of ``silver/transactions``: one row per valid order event (unique event_id).
Runs as ``ecom stream silver`` or ``spark-submit pipelines/silver/job.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from ecom import __version__
from ecom.lake import prepare_lake
from ecom.secrets import pii_key
from ecom.settings import Settings, get_settings
from pipelines.silver import transforms as t
from serving import db

QUERY_NAME = "silver_transactions"
PG_COLUMNS = (
    "event_id", "transaction_id", "event_time", "customer_id", "customer_email_hash", "amount", "currency",
    "payment_method", "channel", "item_count", "device_id", "ip_country", "shipping_country",
    "kafka_partition", "kafka_offset", "processed_time",
)  # fmt: skip

log = logging.getLogger(__name__)


class SilverBatch:
    """The ``foreachBatch`` function of the silver stream."""

    def __init__(self, settings: Settings, checkpoint: str):
        self.settings = settings
        # Batch ids restart with a new checkpoint, so the idempotency keys
        # (Delta txnAppId, PostgreSQL sink) name the checkpoint too.
        self.sink_id = f"{QUERY_NAME}-{hashlib.sha1(checkpoint.encode()).hexdigest()[:12]}"
        self.key = pii_key(settings)
        self.silver_path = settings.lake.table("silver", "transactions")
        self.quarantine_path = settings.lake.table("silver", "quarantine")
        self.dsn = settings.postgres.dsn

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        spark = batch_df.sparkSession
        checked = batch_df.transform(t.with_parsed_event).transform(t.with_rule_failures).persist()
        try:
            self.write_quarantine(checked, batch_id)
            silver = (
                checked.transform(t.filter_valid)
                .transform(lambda df: t.to_silver(df, self.key, __version__))
                .transform(t.filter_first_per_event)
                .persist()
            )
            try:
                self.merge_silver(spark, silver)
                self.write_postgres(silver, batch_id)
            finally:
                silver.unpersist()
        finally:
            checked.unpersist()

    def write_quarantine(self, checked: DataFrame, batch_id: int) -> None:
        (
            checked.transform(t.filter_invalid)
            .transform(lambda df: t.to_quarantine(df, __version__))
            .write.format("delta")
            .mode("append")
            .option("txnAppId", self.sink_id + "-quarantine")
            .option("txnVersion", batch_id)
            .save(self.quarantine_path)
        )

    def merge_silver(self, spark: SparkSession, silver: DataFrame) -> None:
        (
            DeltaTable.forPath(spark, self.silver_path)
            .alias("s")
            .merge(silver.alias("n"), "s.event_id = n.event_id")
            .whenNotMatchedInsertAll()
            .execute()
        )

    def write_postgres(self, silver: DataFrame, batch_id: int) -> None:
        rows = [tuple(r) for r in silver.select(*PG_COLUMNS).collect()]
        conn = db.connect(self.dsn)
        try:
            db.commit_batch(conn, self.sink_id + "-pg", batch_id, "transactions", PG_COLUMNS, ("event_id",), rows)
        finally:
            conn.close()


def start(spark: SparkSession, settings: Settings, once: bool = False) -> StreamingQuery:
    """Start the silver stream over bronze; ``once`` processes what is available and stops."""
    prepare_lake(spark, settings)
    checkpoint = settings.lake.checkpoint(QUERY_NAME)
    writer = (
        spark.readStream.format("delta")
        .option("skipChangeCommits", "true")
        .option("maxFilesPerTrigger", 1000)
        .load(settings.lake.table("bronze", "transactions"))
        .writeStream.queryName(QUERY_NAME)
        .foreachBatch(SilverBatch(settings, checkpoint))
        .option("checkpointLocation", checkpoint)
    )
    writer = writer.trigger(availableNow=True) if once else writer.trigger(processingTime=settings.stream.trigger_interval)
    return writer.start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Silver stream: bronze -> silver, quarantine, PostgreSQL.")
    parser.add_argument("--once", action="store_true", help="process what is available, then stop")
    parser.add_argument("--profile", help="settings profile (default: $ECOM_PROFILE or local)")
    args = parser.parse_args(argv)
    from ecom.spark import get_spark

    settings = get_settings(args.profile)
    start(get_spark(settings, QUERY_NAME), settings, once=args.once).awaitTermination()


if __name__ == "__main__":
    main()
