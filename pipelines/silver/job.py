"""Silver layer: bronze records -> ``silver/transactions`` (+ quarantine, duplicates, alerts) and PostgreSQL.

Each micro-batch is handled by ``SilverBatch``, a named ``foreachBatch``
function whose replay of the same batch id changes nothing. The work is split
so that an order is queryable in PostgreSQL as early as possible:

1. the batch is marked started in PostgreSQL (``pipeline_batches``): ``new``,
   ``retry`` (started before, never served) or ``done`` (served; a batch whose
   alerts reached Kafka too is skipped);
2. one Spark job runs the plan ``prepare`` built into the query once (parse,
   quality rules, pseudonymisation, routing each record to its silver or
   quarantine row: ``transforms``) and brings the batch to the driver as Arrow;
3. in the driver (pandas, milliseconds): repeats within the batch are ranked;
   each event is classified against what is stored before (``new``,
   ``written``: this very record is stored, a retry; ``duplicate``); new
   events get their history features from the customer profiles the stream
   holds (``pipelines.silver.state``, ``ml.features``) and are scored by the
   champion model (if any); alerts are the orders at or above the threshold;
4. events, customers' running totals and alerts -> PostgreSQL in one database
   transaction that also marks the batch served;
5. the Delta appends, in parallel threads, with delta-rs from Arrow: bronze
   (ingest mode), quarantine, silver, duplicates, fraud alerts;
6. the profiles are updated in memory and, at most every
   ``stream.profiles_snapshot_s``, snapshotted to ``silver/customer_profiles``;
7. alerts -> Kafka ``fraud-alerts``; its bookkeeping row ends the batch.

De-duplication looks events up where that is cheapest and still exact. On a
first attempt of the ingest stream that is PostgreSQL ``transactions``, whose
primary key every earlier batch filled in the same transaction as its
bookkeeping (a lookup of thousands of ids takes milliseconds, where a silver
scan took 1.4 s). A retry, and the rebuild of silver from bronze (where
PostgreSQL already holds everything), look in silver itself.

Every Delta commit is tagged with (checkpoint, batch id) in its userMetadata.
A first attempt just writes; a retry skips each table whose last commits
already carry the tag. Every Kafka record thus ends in exactly one of silver,
quarantine or duplicates, and a crash at any point is repaired by the replay.

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
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from delta.tables import DeltaTable
from deltalake import CommitProperties, write_deltalake
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StructType

from ecom import __version__
from ecom.lake import prepare_lake
from ecom.schemas import (
    ALERT_SCHEMA,
    BRONZE_SCHEMA,
    DUPLICATES_SCHEMA,
    QUARANTINE_SCHEMA,
    SILVER_BASE_COLUMNS,
    SILVER_SCHEMA,
    arrow_schema,
)
from ecom.secrets import pii_key
from ecom.settings import Settings, get_settings
from ml import features
from ml.scoring import ChampionTracker, score_frame
from pipelines.bronze.job import read_kafka, with_bronze_columns
from pipelines.silver import transforms as t
from pipelines.silver.state import CustomerState
from serving import db

QUERY_NAMES = {"ingest": "ingest_transactions", "silver": "silver_transactions"}
ROUTED = "quarantine__pipeline_version"  # the last column ``SilverBatch.prepare`` adds
SILVER_COLUMNS = SILVER_SCHEMA.fieldNames()

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


def rows_of(df: pd.DataFrame, columns: Sequence[str]) -> list[tuple]:
    """A pandas frame's rows as tuples for PostgreSQL: missing values (NaN, NaT, None) -> None."""
    values = df[list(columns)].astype(object)
    return list(values.where(values.notna(), None).itertuples(index=False, name=None))


def customer_rows(profiles: Sequence[features.Profile]) -> list[tuple]:
    """``customers`` rows (CUSTOMER_COLUMNS) from profiles."""
    return [
        (
            p.customer_id,
            p.customer_email_hash,
            p.first_order_time,
            p.last_order_time,
            p.tx_count,
            round(p.amount_sum, 2),
            round(p.amount_sum / p.tx_count, 2),
            p.updated_time,
        )  # fmt: skip
        for p in profiles
    ]


class SilverBatch:
    """The ``foreachBatch`` function of the silver (and ingest) stream."""

    def __init__(self, settings: Settings, checkpoint: str, write_bronze: bool):
        self.settings = settings
        self.write_bronze = write_bronze
        # Batch ids restart with a new checkpoint, so the idempotency keys (Delta commit tags, PostgreSQL
        # sinks) name the checkpoint too: its path and the query id Spark keeps in it, read at the first
        # batch (a checkpoint deleted and started again is a new query whose batch 0 is not the old one's).
        self.checkpoint = checkpoint
        self.sink_id = ""
        self.key = pii_key(settings)
        self.lake = settings.lake
        self.dsn = settings.postgres.dsn
        self.champion = ChampionTracker(settings)
        self.state: CustomerState | None = None  # loaded at the first batch
        self.last_timings: dict[str, float] = {}
        self._conn = None
        self._producer = None
        self._writers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="silver-lake")

    def prepare(self, records: DataFrame) -> DataFrame:
        """Kafka source rows (ingest) or bronze rows (rebuild) -> bronze columns + ``silver`` + ``quarantine``.

        ``start`` builds this into the streaming plan once; each micro-batch then only executes it.
        """
        bronze = records.transform(with_bronze_columns) if self.write_bronze else records
        return (
            bronze.transform(t.with_parsed_event)
            .transform(t.with_rule_failures)
            .transform(lambda df: t.with_routed_records(df, self.key, __version__))
            # flat columns: Arrow collects nested nullable structs badly
            .select(
                *BRONZE_SCHEMA.fieldNames(),
                *[F.col(f"silver.{c}").alias(f"silver__{c}") for c in SILVER_BASE_COLUMNS],
                *[F.col(f"quarantine.{c}").alias(f"quarantine__{c}") for c in QUARANTINE_SCHEMA.fieldNames()],
            )
        )

    def _tag(self, batch_id: int) -> str:
        """The userMetadata of every Delta commit of this batch."""
        return f"{self.sink_id}:{batch_id}"

    def _append(self, rows: Callable[[], pa.Table], layer: str, table: str, batch_id: int, retry: bool) -> None:
        """Append ``rows()`` to a lake table, its commit tagged with the batch; on a retry, only if not tagged yet."""
        path = self.lake.table(layer, table)
        tag = self._tag(batch_id)
        if retry and committed_with_tag(path, tag):
            return
        data = rows()
        if data.num_rows:
            write_deltalake(
                path, data, mode="append", commit_properties=CommitProperties(custom_metadata={"userMetadata": tag})
            )

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        spark = batch_df.sparkSession
        timer = StepTimer()
        if not self.sink_id:
            self.sink_id = sink_id(self.checkpoint)
        if self.state is None:
            self.state = CustomerState.load(
                self.lake.table("silver", "customer_profiles"), self.lake.table("silver", "transactions")
            )
            timer.mark("state")
        attempt = self._begin(batch_id)
        if attempt == "done" and self._alerts_published(batch_id):
            log.info("batch %d was committed before; skipped", batch_id)
            return
        retry = attempt != "new"
        model = self.champion.refresh()  # a moved registry alias takes over here, at the batch boundary
        timer.mark("model")
        try:
            if ROUTED not in batch_df.columns:  # called on raw records (tests, tools), not by the stream
                batch_df = self.prepare(batch_df)
            routed = batch_df.toArrow()  # the batch's one Spark job: Kafka/bronze -> parsed, checked, routed
            valid = driver_frame(struct_rows(routed, "silver"))
            timer.mark("parse")

            ranked = t.with_event_rank(valid)
            firsts = ranked[ranked["event_rank"] == 1].drop(columns="event_rank")
            in_silver = retry or not self.write_bronze
            stored = self._stored(spark, firsts, in_silver)
            firsts = t.with_duplicate_status(firsts, stored)
            timer.mark("classify")

            fresh = firsts[firsts["status"] == "new"].drop(columns="status")
            history = features.apply_history(fresh, self.state.profiles)
            new_rows = t.with_unscored_columns(history.features)
            if model is not None:
                new_rows = score_frame(new_rows, *model, self.settings.fraud.alert_threshold)
            new_rows = new_rows[SILVER_COLUMNS]
            # On a retry, the events a first attempt stored in silver are served again as silver holds them.
            # (Found in PostgreSQL, such a record was served before and needs nothing more.)
            again = firsts.loc[firsts["status"] == "written", "event_id"] if in_silver else pd.Series(dtype=object)
            served = pd.concat([new_rows, stored[stored["event_id"].isin(again)]]) if len(again) else new_rows
            alerts = t.alerts_frame(served)
            alert_rows = rows_of(alerts, ALERT_COLUMNS)
            repeats = pd.concat(
                [ranked[ranked["event_rank"] > 1], firsts[firsts["status"] == "duplicate"]], ignore_index=True
            )
            timer.mark("features")

            if attempt != "done":
                customers = served["customer_id"].unique()
                self._serve(
                    batch_id,
                    rows_of(served, TX_COLUMNS),
                    customer_rows([history.profiles.get(c) or self.state.profiles[c] for c in customers]),
                    alert_rows,
                )
                timer.mark("postgres")

            self._write_lake(batch_id, retry, routed, new_rows, repeats, alerts)
            timer.mark("lake")
            self.state.apply(history.profiles, new_rows)
            if self.state.snapshot_due(self.settings.stream.profiles_snapshot_s):
                self.state.snapshot(self.lake.table("silver", "customer_profiles"))
                timer.mark("profiles")
            self._publish_alerts(batch_id, alert_rows)
            timer.mark("kafka_alerts")
        finally:
            self.last_timings = timer.steps
            log.info("batch %d%s: %s ms", batch_id, " (retry)" if retry else "", timer.summary())

    def _write_lake(
        self,
        batch_id: int,
        retry: bool,
        routed: pa.Table,
        new_rows: pd.DataFrame,
        repeats: pd.DataFrame,
        alerts: pd.DataFrame,
    ) -> None:
        """The batch's Delta appends, in parallel threads (different tables, so they cannot conflict).

        Written with delta-rs from Arrow: a Spark append cost 250-700 ms per table and batch on two cores
        (planning, a job, the post-commit snapshot), delta-rs 30-200 ms. Spark computed what goes in
        (``routed``: bronze columns, silver and quarantine rows); the tables are the same Delta tables.
        """
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)

        def arrow(rows: pd.DataFrame, schema: StructType) -> Callable[[], pa.Table]:
            return lambda: pa.Table.from_pandas(rows, schema=arrow_schema(schema), preserve_index=False)

        jobs = [
            (lambda: struct_rows(routed, "quarantine"), "silver", "quarantine"),
            (arrow(new_rows, SILVER_SCHEMA), "silver", "transactions"),
            (arrow(t.duplicates_frame(repeats, __version__, now), DUPLICATES_SCHEMA), "silver", "duplicates"),
            (arrow(alerts, ALERT_SCHEMA), "silver", "fraud_alerts"),
        ]
        if self.write_bronze:
            jobs.insert(0, (lambda: routed.select(BRONZE_SCHEMA.fieldNames()), "bronze", "transactions"))
        futures = [
            self._writers.submit(self._append, rows, layer, table, batch_id, retry) for rows, layer, table in jobs
        ]
        for future in futures:
            future.result()  # the first failure is raised here: the batch fails and is replayed

    def _db(self):
        """The stream's PostgreSQL connection, reopened when it was lost."""
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.dsn)
        return self._conn

    def _begin(self, batch_id: int) -> str:
        return db.begin_batch(self._db(), f"{self.sink_id}-pg", batch_id)

    def _stored(self, spark: SparkSession, firsts: pd.DataFrame, in_silver: bool) -> pd.DataFrame:
        """What is stored already for the batch's events: event_id and Kafka coordinates (all columns from silver)."""
        ids = firsts["event_id"].tolist()
        if not ids:
            return pd.DataFrame(columns=SILVER_COLUMNS)
        if in_silver:
            dates = sorted(set(firsts["event_date"]))
            table = DeltaTable.forPath(spark, self.lake.table("silver", "transactions")).toDF()
            return table.filter(F.col("event_date").isin(dates) & F.col("event_id").isin(ids)).toPandas()
        with self._db() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT event_id, kafka_partition, kafka_offset FROM transactions WHERE event_id = ANY(%s)", (ids,)
            )
            return pd.DataFrame(cur.fetchall(), columns=["event_id", "kafka_partition", "kafka_offset"])

    def _serve(self, batch_id: int, tx_rows: list[tuple], customer_rows: list[tuple], alert_rows: list[tuple]) -> None:
        db.commit_batch_writes(
            self._db(),
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

    def _alerts_published(self, batch_id: int) -> bool:
        with self._db() as conn, conn.cursor() as cur:
            return db.batch_seen(cur, f"{self.sink_id}-kafka-alerts", batch_id)

    def _publish_alerts(self, batch_id: int, alert_rows: list[tuple]) -> None:
        """Alerts -> Kafka ``fraud-alerts``, once per batch (bookkeeping row after the broker confirmed)."""
        if self._alerts_published(batch_id):
            return
        messages = [alert_message(dict(zip(ALERT_COLUMNS, row, strict=True))) for row in alert_rows]
        if messages:
            producer = self._alert_producer()
            for key, value in messages:
                producer.send(self.settings.kafka.alerts_topic, key=key, value=value)
            producer.flush()
        with self._db() as conn, conn.cursor() as cur:
            db.mark_committed(cur, f"{self.sink_id}-kafka-alerts", batch_id, len(messages))

    def _alert_producer(self):
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                bootstrap_servers=self.settings.kafka.bootstrap_servers.split(","), acks="all", linger_ms=5
            )
        return self._producer


def sink_id(checkpoint: str) -> str:
    """The stream's name in the bookkeeping: its checkpoint path and the query id stored there (if any yet)."""
    try:
        with open(f"{checkpoint}/metadata") as f:
            query_id = json.loads(f.readline())["id"]
    except (OSError, ValueError, KeyError):  # no query has run here (tests, tools) or not a local path
        query_id = ""
    return f"silver-{hashlib.sha1(f'{checkpoint}#{query_id}'.encode()).hexdigest()[:12]}"


def struct_rows(routed: pa.Table, route: str) -> pa.Table:
    """The rows routed to ``route`` (``silver`` or ``quarantine``), with that route's columns."""
    prefix = f"{route}__"
    names = [n for n in routed.column_names if n.startswith(prefix)]
    rows = routed.select(names).filter(pc.is_valid(routed.column(prefix + "pipeline_version")))
    return rows.rename_columns([n[len(prefix) :] for n in names])


def driver_frame(rows: pa.Table) -> pd.DataFrame:
    """Arrow rows -> pandas as the driver steps use them: timestamps naive UTC, decimals as ``Decimal``."""
    frame = rows.to_pandas()
    for name, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.DatetimeTZDtype):
            frame[name] = frame[name].dt.tz_convert(None)
    return frame


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
    batch = SilverBatch(settings, checkpoint, write_bronze=mode == "ingest")
    writer = (
        batch.prepare(source).writeStream.queryName(name).foreachBatch(batch).option("checkpointLocation", checkpoint)
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
