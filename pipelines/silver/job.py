"""Silver layer: bronze records -> ``silver/transactions`` (+ quarantine, duplicates, customer profiles) and PostgreSQL.

Each micro-batch is handled by ``SilverBatch``, a named ``foreachBatch``
function whose replay of the same batch id changes nothing. In order:

1. (ingest mode) the raw records -> ``bronze/transactions``, idempotent append;
2. records failing a quality rule -> ``silver/quarantine`` with their reasons;
3. valid records are ranked per ``event_id``; each event is classified
   against silver by (event_date, event_id): ``new``, ``written`` (this very
   Kafka record is already there: a replay) or ``duplicate``;
4. new events, with history features (``ml.features``) computed from the
   customer profiles before this batch -> ``silver/transactions``;
5. repeated records -> ``silver/duplicates``;
6. the customers' profiles -> ``silver/customer_profiles`` (MERGE);
7. the events and the customers' running totals -> PostgreSQL ``transactions``
   and ``customers`` in one database transaction with the batch bookkeeping.

Delta writes carry ``txnAppId``/``txnVersion`` (the MERGE through the session
confs), so a batch replayed after a crash skips what it already committed.
Every Kafka record thus ends in exactly one of silver, quarantine or duplicates.

Two ways to run it (see docs/architecture.md for why ingest is the default):
- ``ingest`` (``ecom stream all``): one query reads Kafka and writes bronze and
  silver in the same micro-batch: lowest latency, and no stream reads bronze,
  so retention deletes in bronze cannot break anything;
- ``silver`` (``ecom stream silver``): a Delta stream over bronze
  (``skipChangeCommits``), to rebuild silver from bronze.

Grain of ``silver/transactions``: one row per valid order event (unique event_id).
Runs as ``ecom stream ...`` or ``spark-submit pipelines/silver/job.py [--mode ingest|silver]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from contextlib import contextmanager

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from ecom import __version__
from ecom.lake import prepare_lake
from ecom.schemas import BRONZE_SCHEMA, PROFILE_SCHEMA, SILVER_SCHEMA
from ecom.secrets import pii_key
from ecom.settings import Settings, get_settings
from ml import features
from ml.scoring import ChampionTracker, with_fraud_scores
from pipelines.bronze.job import read_kafka, with_bronze_columns
from pipelines.silver import transforms as t
from serving import db

QUERY_NAMES = {"ingest": "ingest_transactions", "silver": "silver_transactions"}

TX_COLUMNS = (
    "event_id", "transaction_id", "event_time", "customer_id", "customer_email_hash", "amount", "currency",
    "payment_method", "channel", "item_count", "device_id", "ip_country", "shipping_country",
    "fraud_score", "is_fraud", "model_version", "kafka_partition", "kafka_offset", "processed_time",
)  # fmt: skip
ALERT_COLUMNS = (
    "alert_id", "event_id", "transaction_id", "customer_id", "amount", "fraud_score", "reasons", "model_version",
    "event_time", "created_at",
)  # fmt: skip
CUSTOMER_COLUMNS = (
    "customer_id", "customer_email_hash", "first_order_time", "last_order_time", "order_count", "total_amount",
    "avg_amount", "updated_at",
)  # fmt: skip

log = logging.getLogger(__name__)


@contextmanager
def idempotent_dml(spark: SparkSession, app_id: str, version: int):
    """Delta's session confs that make a MERGE/UPDATE/DELETE a no-op when (app_id, version) was committed."""
    spark.conf.set("spark.databricks.delta.write.txnAppId", app_id)
    spark.conf.set("spark.databricks.delta.write.txnVersion", str(version))
    try:
        yield
    finally:
        spark.conf.unset("spark.databricks.delta.write.txnAppId")
        spark.conf.unset("spark.databricks.delta.write.txnVersion")


class SilverBatch:
    """The ``foreachBatch`` function of the silver (and ingest) stream."""

    def __init__(self, settings: Settings, checkpoint: str, write_bronze: bool):
        self.settings = settings
        self.write_bronze = write_bronze
        # Batch ids restart with a new checkpoint, so the idempotency keys
        # (Delta txnAppId, PostgreSQL sink) name the checkpoint too.
        self.sink_id = f"silver-{hashlib.sha1(checkpoint.encode()).hexdigest()[:12]}"
        self.key = pii_key(settings)
        self.lake = settings.lake
        self.dsn = settings.postgres.dsn
        self.champion = ChampionTracker(settings)
        self._producer = None

    def _append(self, df: DataFrame, layer: str, table: str, batch_id: int) -> None:
        (
            df.write.format("delta")
            .mode("append")
            .option("txnAppId", f"{self.sink_id}-{layer}-{table}")
            .option("txnVersion", batch_id)
            .save(self.lake.table(layer, table))
        )

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        spark = batch_df.sparkSession
        model = self.champion.refresh(spark)  # a moved registry alias takes over here, at the batch boundary
        records = batch_df.transform(with_bronze_columns) if self.write_bronze else batch_df
        records = records.persist()
        cached = [records]
        try:
            if self.write_bronze:
                self._append(records, "bronze", "transactions", batch_id)
            checked = records.transform(t.with_parsed_event).transform(t.with_rule_failures).persist()
            cached.append(checked)
            self._append(t.to_quarantine(t.filter_invalid(checked), __version__), "silver", "quarantine", batch_id)

            ranked = t.with_event_rank(t.to_silver(t.filter_valid(checked), self.key, __version__)).persist()
            cached.append(ranked)
            dates = [r.event_date for r in ranked.select("event_date").distinct().collect()]
            if not dates:
                self._serve(batch_id, [], [], [])
                return
            existing = self._silver(spark, dates).select("event_date", "event_id", "kafka_partition", "kafka_offset")
            firsts = t.with_duplicate_status(ranked.filter("event_rank = 1").drop("event_rank"), existing).persist()
            cached.append(firsts)

            profiles_path = self.lake.table("silver", "customer_profiles")
            customers = firsts.filter("status != 'duplicate'").select("customer_id").distinct()
            prior = (
                DeltaTable.forPath(spark, profiles_path).toDF().join(F.broadcast(customers), "customer_id", "left_semi")
            )
            new_rows = (
                firsts.filter("status = 'new'")
                .drop("status")
                .transform(lambda df: features.with_history_features(df, prior))
                .transform(t.with_unscored_columns)
                .select(*SILVER_SCHEMA.fieldNames())
            )
            if model is not None:
                new_rows = with_fraud_scores(new_rows, *model, self.settings.fraud.alert_threshold)
            self._append(new_rows, "silver", "transactions", batch_id)

            repeats = (
                ranked.filter("event_rank > 1")
                .drop("event_rank")
                .unionByName(firsts.filter("status = 'duplicate'").drop("status"))
            )
            self._append(t.to_duplicates(repeats, __version__), "silver", "duplicates", batch_id)

            # Everything downstream reads back what silver holds for this batch's events, so a
            # replayed batch serves exactly what the first attempt wrote (scores included).
            keys = firsts.filter("status != 'duplicate'").select("event_date", "event_id")
            served = (
                self._silver(spark, dates).join(F.broadcast(keys), ["event_date", "event_id"], "left_semi").persist()
            )
            cached.append(served)
            alerts = t.to_alerts(served).persist()
            cached.append(alerts)
            self._append(alerts, "silver", "fraud_alerts", batch_id)

            updated = features.updated_profiles(served, prior).select(*PROFILE_SCHEMA.fieldNames())
            with idempotent_dml(spark, f"{self.sink_id}-profiles", batch_id):
                (
                    DeltaTable.forPath(spark, profiles_path)
                    .alias("p")
                    .merge(updated.alias("u"), "p.customer_id = u.customer_id")
                    .whenMatchedUpdateAll()
                    .whenNotMatchedInsertAll()
                    .execute()
                )
            # Read the profiles back: right whether or not the MERGE was a replay no-op.
            after = (
                DeltaTable.forPath(spark, profiles_path).toDF().join(F.broadcast(customers), "customer_id", "left_semi")
            )
            alert_rows = [tuple(r) for r in alerts.select(*ALERT_COLUMNS).collect()]
            self._serve(batch_id, self._tx_rows(served), self._customer_rows(after), alert_rows)
            self._publish_alerts(batch_id, alerts)
        finally:
            for df in cached:
                df.unpersist()

    def _silver(self, spark: SparkSession, dates: list) -> DataFrame:
        """Silver rows of the given event dates (partition pruned)."""
        table = DeltaTable.forPath(spark, self.lake.table("silver", "transactions")).toDF()
        return table.filter(F.col("event_date").isin(dates))

    @staticmethod
    def _tx_rows(served: DataFrame) -> list[tuple]:
        return [tuple(r) for r in served.select(*TX_COLUMNS).collect()]

    @staticmethod
    def _customer_rows(profiles: DataFrame) -> list[tuple]:
        rows = profiles.select(
            "customer_id",
            "customer_email_hash",
            "first_order_time",
            "last_order_time",
            F.col("tx_count").alias("order_count"),
            F.round("amount_sum", 2).alias("total_amount"),
            F.round(F.col("amount_sum") / F.col("tx_count"), 2).alias("avg_amount"),
            F.col("updated_time").alias("updated_at"),
        ).collect()
        return [tuple(r) for r in rows]

    def _serve(self, batch_id: int, tx_rows: list[tuple], customer_rows: list[tuple], alert_rows: list[tuple]) -> None:
        conn = db.connect(self.dsn)
        try:
            db.commit_batch_writes(
                conn,
                f"{self.sink_id}-pg",
                batch_id,
                [
                    db.TableWrite("transactions", TX_COLUMNS, ("event_id",), tx_rows),
                    db.TableWrite(
                        "customers", CUSTOMER_COLUMNS, ("customer_id",), customer_rows, update=CUSTOMER_COLUMNS[1:]
                    ),
                    db.TableWrite("fraud_alerts", ALERT_COLUMNS, ("event_id",), alert_rows),
                ],
            )
        finally:
            conn.close()

    def _publish_alerts(self, batch_id: int, alerts: DataFrame) -> None:
        """Alerts -> Kafka ``fraud-alerts``, once per batch (bookkeeping row after the broker confirmed)."""
        sink = f"{self.sink_id}-kafka-alerts"
        conn = db.connect(self.dsn)
        try:
            with conn, conn.cursor() as cur:
                if db.batch_seen(cur, sink, batch_id):
                    return
            messages = [alert_message(r.asDict()) for r in alerts.collect()]
            if messages:
                producer = self._alert_producer()
                for key, value in messages:
                    producer.send(self.settings.kafka.alerts_topic, key=key, value=value)
                producer.flush()
            with conn, conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO pipeline_batches (sink, batch_id, row_count) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (sink, batch_id, len(messages)),
                )
        finally:
            conn.close()

    def _alert_producer(self):
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                bootstrap_servers=self.settings.kafka.bootstrap_servers.split(","), acks="all", linger_ms=5
            )
        return self._producer


def alert_message(alert: dict) -> tuple[bytes, bytes]:
    """(key, value) of one ``fraud-alerts`` message: the architecture's alert contract, keyed by customer."""
    payload = {
        "alert_id": alert["alert_id"],
        "event_id": alert["event_id"],
        "transaction_id": alert["transaction_id"],
        "customer_id": alert["customer_id"],
        "amount": float(alert["amount"]),
        "fraud_score": alert["fraud_score"],
        "reasons": list(alert["reasons"]),
        "model_version": alert["model_version"],
        "created_at": alert["created_at"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }
    return alert["customer_id"].encode(), json.dumps(payload, separators=(",", ":")).encode()


def start(spark: SparkSession, settings: Settings, once: bool = False, mode: str = "ingest") -> StreamingQuery:
    """Start the stream. ``mode``: ``ingest`` (Kafka -> bronze + silver) or ``silver`` (bronze -> silver)."""
    prepare_lake(spark, settings)
    name = QUERY_NAMES[mode]
    checkpoint = settings.lake.checkpoint(name)
    if mode == "ingest":
        source = read_kafka(spark, settings)
    else:
        source = (
            spark.readStream.format("delta")
            .option("skipChangeCommits", "true")
            .option("maxFilesPerTrigger", 1000)
            .load(settings.lake.table("bronze", "transactions"))
            .select(*BRONZE_SCHEMA.fieldNames())
        )
    writer = (
        source.writeStream.queryName(name)
        .foreachBatch(SilverBatch(settings, checkpoint, write_bronze=mode == "ingest"))
        .option("checkpointLocation", checkpoint)
    )
    writer = (
        writer.trigger(availableNow=True) if once else writer.trigger(processingTime=settings.stream.trigger_interval)
    )
    return writer.start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Silver stream: Kafka or bronze -> silver, quarantine, PostgreSQL.")
    parser.add_argument(
        "--mode",
        choices=sorted(QUERY_NAMES),
        default="ingest",
        help="ingest: Kafka -> bronze + silver (default); silver: bronze -> silver",
    )
    parser.add_argument("--once", action="store_true", help="process what is available, then stop")
    parser.add_argument("--profile", help="settings profile (default: $ECOM_PROFILE or local)")
    args = parser.parse_args(argv)
    from ecom.spark import get_spark

    settings = get_settings(args.profile)
    start(get_spark(settings, QUERY_NAMES[args.mode]), settings, once=args.once, mode=args.mode).awaitTermination()


if __name__ == "__main__":
    main()
