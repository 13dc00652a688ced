"""Silver layer: bronze records -> ``silver/transactions`` (+ quarantine, duplicates, customer profiles) and PostgreSQL.

Each micro-batch is handled by ``SilverBatch``, a named ``foreachBatch``
function whose replay of the same batch id changes nothing. In order:

1. the batch is marked started in PostgreSQL (``pipeline_batches``); a batch
   already committed is skipped, one started but never committed is a retry;
2. (ingest mode) the raw records -> ``bronze/transactions``;
3. records failing a quality rule -> ``silver/quarantine`` with their reasons;
4. valid records are ranked per ``event_id``; each event is classified
   against silver by (event_date, event_id): ``new``, ``written`` (this very
   Kafka record is already there: a retry) or ``duplicate``;
5. new events get their history features (``ml.features``) from the customer
   profiles before this batch, are scored by the champion model (if any) and
   go to ``silver/transactions``; repeated records -> ``silver/duplicates``;
   orders at or above the threshold -> ``silver/fraud_alerts``;
6. the customers' profiles -> ``silver/customer_profiles`` (MERGE);
7. events, customers' running totals and alerts -> PostgreSQL in one database
   transaction that also marks the batch committed; then alerts -> Kafka.

Every Delta commit is tagged with (checkpoint, batch id) in its userMetadata.
A first attempt just writes; a retry skips each table whose last commits
already carry the tag (Delta's own txnAppId check costs a Spark job per write,
about a second each on two cores, so it is kept off the common path). Every
Kafka record thus ends in exactly one of silver, quarantine or duplicates.

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
import time

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


class StepTimer:
    """Wall-clock milliseconds per step of one micro-batch (logged, and kept for benchmarks)."""

    def __init__(self):
        self.steps: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.steps[step] = round(1000 * (now - self._last), 1)
        self._last = now

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.0f}" for k, v in self.steps.items())


class SilverBatch:
    """The ``foreachBatch`` function of the silver (and ingest) stream."""

    def __init__(self, settings: Settings, checkpoint: str, write_bronze: bool):
        self.settings = settings
        self.write_bronze = write_bronze
        # Batch ids restart with a new checkpoint, so the idempotency keys
        # (Delta commit tags, PostgreSQL sinks) name the checkpoint too.
        self.sink_id = f"silver-{hashlib.sha1(checkpoint.encode()).hexdigest()[:12]}"
        self.key = pii_key(settings)
        self.lake = settings.lake
        self.dsn = settings.postgres.dsn
        self.champion = ChampionTracker(settings)
        self.last_timings: dict[str, float] = {}
        self._producer = None

    def _tag(self, batch_id: int) -> str:
        """The userMetadata of every Delta commit of this batch."""
        return f"{self.sink_id}:{batch_id}"

    def _append(self, df: DataFrame, layer: str, table: str, batch_id: int, retry: bool) -> None:
        """Append ``df`` to a lake table, its commit tagged with the batch; on a retry, only if not tagged yet."""
        path = self.lake.table(layer, table)
        tag = self._tag(batch_id)
        if retry and committed_with_tag(path, tag):
            return
        df.write.format("delta").mode("append").option("userMetadata", tag).save(path)

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        spark = batch_df.sparkSession
        timer = StepTimer()
        attempt = self._begin(batch_id)
        if attempt == "done":  # replayed after everything was committed: nothing to do
            log.info("batch %d was committed before; skipped", batch_id)
            return
        retry = attempt == "retry"
        model = self.champion.refresh(spark)  # a moved registry alias takes over here, at the batch boundary
        timer.mark("model")
        records = batch_df.transform(with_bronze_columns) if self.write_bronze else batch_df
        records = records.persist()
        cached = [records]
        try:
            if self.write_bronze:
                self._append(records, "bronze", "transactions", batch_id, retry)
                timer.mark("bronze")
            checked = records.transform(t.with_parsed_event).transform(t.with_rule_failures).persist()
            cached.append(checked)
            invalid = t.filter_invalid(checked)
            if not invalid.isEmpty():
                self._append(t.to_quarantine(invalid, __version__), "silver", "quarantine", batch_id, retry)
            timer.mark("quarantine")

            ranked = t.with_event_rank(t.to_silver(t.filter_valid(checked), self.key, __version__)).persist()
            cached.append(ranked)
            dates = [r.event_date for r in ranked.select("event_date").distinct().collect()]
            timer.mark("parse")
            if not dates:
                self._serve(batch_id, [], [], [])
                return
            existing = self._silver(spark, dates).select("event_date", "event_id", "kafka_partition", "kafka_offset")
            # localCheckpoint, not persist: writing to a table drops the cached plans that read it, and
            # recomputing these after the writes below would see this batch's own rows.
            firsts = t.with_duplicate_status(
                ranked.filter("event_rank = 1").drop("event_rank"), existing
            ).localCheckpoint()
            timer.mark("classify")

            profiles_path = self.lake.table("silver", "customer_profiles")
            customers = firsts.filter("status != 'duplicate'").select("customer_id").distinct()
            prior = (
                DeltaTable.forPath(spark, profiles_path).toDF().join(F.broadcast(customers), "customer_id", "left_semi")
            )
            prior = prior.localCheckpoint()
            timer.mark("prior")
            new_rows = (
                firsts.filter("status = 'new'")
                .drop("status")
                .transform(lambda df: features.with_history_features(df, prior))
                .transform(t.with_unscored_columns)
                .select(*SILVER_SCHEMA.fieldNames())
            )
            if model is not None:
                new_rows = with_fraud_scores(new_rows, *model, self.settings.fraud.alert_threshold)
            new_rows = new_rows.localCheckpoint()
            timer.mark("features")
            self._append(new_rows, "silver", "transactions", batch_id, retry)
            timer.mark("silver")

            repeats = (
                ranked.filter("event_rank > 1")
                .drop("event_rank")
                .unionByName(firsts.filter("status = 'duplicate'").drop("status"))
            )
            if not repeats.isEmpty():
                self._append(t.to_duplicates(repeats, __version__), "silver", "duplicates", batch_id, retry)
            timer.mark("duplicates")

            if retry:
                # What the first attempt wrote is in silver already: serve what silver holds for these events.
                keys = firsts.filter("status != 'duplicate'").select("event_date", "event_id")
                served = self._silver(spark, dates).join(F.broadcast(keys), ["event_date", "event_id"], "left_semi")
                served = served.localCheckpoint()
            else:
                served = new_rows
            alerts = t.to_alerts(served).persist()
            cached.append(alerts)
            alert_rows = [tuple(r) for r in alerts.select(*ALERT_COLUMNS).collect()]
            if alert_rows:
                self._append(alerts, "silver", "fraud_alerts", batch_id, retry)
            timer.mark("alerts")

            updated = features.updated_profiles(served, prior).select(*PROFILE_SCHEMA.fieldNames()).localCheckpoint()
            tag = self._tag(batch_id)
            if not (retry and committed_with_tag(profiles_path, tag)):
                spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", tag)
                try:
                    (
                        DeltaTable.forPath(spark, profiles_path)
                        .alias("p")
                        .merge(updated.alias("u"), "p.customer_id = u.customer_id")
                        .whenMatchedUpdateAll()
                        .whenNotMatchedInsertAll()
                        .execute()
                    )
                finally:
                    spark.conf.unset("spark.databricks.delta.commitInfo.userMetadata")
            timer.mark("profiles")
            if retry:  # the MERGE may have been the first attempt's: read the profiles as they are now
                updated = (
                    DeltaTable.forPath(spark, profiles_path)
                    .toDF()
                    .join(F.broadcast(customers), "customer_id", "left_semi")
                )
            tx_rows, customer_rows = self._tx_rows(served), self._customer_rows(updated)
            timer.mark("collect")
            self._serve(batch_id, tx_rows, customer_rows, alert_rows)
            timer.mark("postgres")
            self._publish_alerts(batch_id, alert_rows)
            timer.mark("kafka_alerts")
        finally:
            for df in cached:
                df.unpersist()
            self.last_timings = timer.steps
            log.info("batch %d%s: %s ms", batch_id, " (retry)" if retry else "", timer.summary())

    def _begin(self, batch_id: int) -> str:
        conn = db.connect(self.dsn)
        try:
            return db.begin_batch(conn, f"{self.sink_id}-pg", batch_id)
        finally:
            conn.close()

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

    def _publish_alerts(self, batch_id: int, alert_rows: list[tuple]) -> None:
        """Alerts -> Kafka ``fraud-alerts``, once per batch (bookkeeping row after the broker confirmed)."""
        sink = f"{self.sink_id}-kafka-alerts"
        conn = db.connect(self.dsn)
        try:
            with conn, conn.cursor() as cur:
                if db.batch_seen(cur, sink, batch_id):
                    return
            messages = [alert_message(dict(zip(ALERT_COLUMNS, row, strict=True))) for row in alert_rows]
            if messages:
                producer = self._alert_producer()
                for key, value in messages:
                    producer.send(self.settings.kafka.alerts_topic, key=key, value=value)
                producer.flush()
            with conn, conn.cursor() as cur:
                db.mark_committed(cur, sink, batch_id, len(messages))
        finally:
            conn.close()

    def _alert_producer(self):
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                bootstrap_servers=self.settings.kafka.bootstrap_servers.split(","), acks="all", linger_ms=5
            )
        return self._producer


def committed_with_tag(path: str, tag: str, depth: int = 200) -> bool:
    """True if one of the table's last ``depth`` commits carries ``tag`` as its userMetadata (read with delta-rs)."""
    from deltalake import DeltaTable as RsDeltaTable

    return any(c.get("userMetadata") == tag for c in RsDeltaTable(path).history(depth))


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
