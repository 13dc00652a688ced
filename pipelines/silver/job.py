"""Silver layer: bronze records -> ``silver/transactions`` (+ quarantine, duplicates, alerts) and PostgreSQL.

Each micro-batch is handled by ``SilverBatch``, a named ``foreachBatch``
function whose replay of the same batch id changes nothing. It is a short
orchestrator: the decisions are a pure plan (``pipelines.silver.plan``), the
writing is done by named sinks built from settings (``pipelines.silver.sinks``:
lake, serving, alerts). The steps, so that an order is queryable in PostgreSQL
as early as possible:

1. the batch is marked started in PostgreSQL (``pipeline_batches``): ``new``,
   ``retry`` (started before, never served) or ``done`` (served; a batch whose
   alerts reached Kafka too is skipped);
2. one Spark job runs the plan ``prepare`` built into the query once (parse,
   quality rules, pseudonymisation, routing each record to its silver or
   quarantine row: ``transforms``) and brings the batch to the driver as Arrow;
3. the batch's events are looked up where they may be stored already
   (PostgreSQL on a first attempt, silver on a retry; the archive too for
   events older than the hot horizon, docs/lifecycle.md);
4. the plan (pandas, milliseconds): repeats ranked, each event classified
   (``new``, ``written``, ``duplicate``), history and velocity features from
   the customer profiles and the recent orders the stream holds
   (``pipelines.silver.state``, ``ml.features``), scores from the champion
   model (if any), alerts;
5. serving: events, customers' running totals and alerts -> PostgreSQL in one
   database transaction that also marks the batch served;
6. lake: the Delta appends, in parallel threads, with delta-rs from Arrow:
   bronze (ingest mode), quarantine, silver, duplicates, fraud alerts; each
   commit tagged with (stream, batch id), a retry skips tagged tables;
7. the profiles and recent orders are updated in memory and, at most every
   ``stream.profiles_snapshot_s``, the profiles snapshotted to
   ``silver/customer_profiles``;
8. alerts -> Kafka ``fraud-alerts``; its bookkeeping row ends the batch.

Every Kafka record thus ends in exactly one of silver, quarantine or
duplicates, and a crash at any point is repaired by the replay. Faults:

- a record a sink still refuses (``sinks.SinkRefused``: a PostgreSQL data,
  constraint or limit error; a silver row Arrow cannot encode) goes to
  quarantine as ``sink_refused:<sink>:<message>`` and the batch is planned
  again without it; the refusals are committed with the batch, so a replay
  routes them the same way;
- a sink that is unavailable (PostgreSQL stopped, Kafka not confirming the
  alerts: ``faults.unavailable``), or a broker away while the batch reads
  the Kafka source, makes the batch wait and run again (``faults.Backoff``,
  logged), up to ``stream.outage_max_s``; a query that fails planning its
  next batch on a broker away is restarted from its checkpoint
  (``pipelines.supervisor``);
- ``start`` takes the checkpoint's lock (``checkpoint.CheckpointLock``) before
  anything is written: a second stream on a checkpoint in use is refused;
- ``faults.kill_point`` marks where the fault suite kills the stream (kill -9).

Two ways to run it (see docs/architecture.md for why ingest is the default):
- ``ingest`` (``ecom stream all``): one query reads Kafka and writes bronze and
  silver in the same micro-batch: lowest latency, and no stream reads bronze,
  so retention deletes in bronze cannot break anything;
- ``silver`` (``ecom stream silver``): a Delta stream over bronze
  (``skipChangeCommits``), to rebuild silver from bronze.

Each finished batch is counted in the stage's Prometheus metrics (``ecom.metrics``: records in and out,
quarantine per reason, alerts, duration, end-to-end latency, the model version); a stream that runs on (not
``once``) serves them with ``/healthz``: the query runs and no sink is away (docs/observability.md).

Grain of ``silver/transactions``: one row per valid order event (unique event_id).
Runs as ``ecom stream ...`` or ``spark-submit pipelines/silver/job.py [--mode ingest|silver]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping

import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StringType, StructField, StructType

from ecom import __version__
from ecom import metrics as m
from ecom.health import Check, query_check
from ecom.lake import prepare_lake
from ecom.schemas import BRONZE_SCHEMA, QUARANTINE_SCHEMA, SILVER_BASE_COLUMNS
from ecom.secrets import pii_key
from ecom.settings import Settings, get_settings
from ml.scoring import ChampionTracker
from pipelines.bronze.job import read_kafka, with_bronze_columns
from pipelines.lifecycle.policy import archive_lookup_dates
from pipelines.silver import plan as p
from pipelines.silver import transforms as t
from pipelines.silver.checkpoint import CheckpointInUse, CheckpointLock, sink_id
from pipelines.silver.faults import Backoff, kill_point, unavailable
from pipelines.silver.sinks import SinkRefused, Sinks
from pipelines.silver.state import CustomerState

QUERY_NAMES = {"ingest": "ingest_transactions", "silver": "silver_transactions"}
STAGES = {"ingest": "stream_all", "silver": "stream_silver"}  # the process names of metrics.ports and /healthz
BIND_TIMEOUT_S = 300  # the first batch waits this long at most for ``start`` to name the stream (it takes ms)
_HELD: dict[str, tuple[CheckpointLock, StreamingQuery | None]] = {}  # checkpoint -> its lock and query, this process

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
    """The ``foreachBatch`` function of the silver (and ingest) stream: the orchestrator of one micro-batch.

    The decisions are ``plan.plan_batch``'s, the writing is the sinks' (``sinks.Sinks``); this runs the steps
    in order, times them, and runs the batch again while a sink is unavailable.
    """

    def __init__(
        self,
        settings: Settings,
        checkpoint: str,
        write_bronze: bool,
        sinks: Sinks | None = None,
        expects_query: bool = False,
    ):
        self.settings = settings
        self.write_bronze = write_bronze
        # Batch ids restart with a new checkpoint, so the idempotency keys (Delta commit tags, PostgreSQL
        # sinks) name the checkpoint too: its location and the id of the query running on it, which ``start``
        # hands over with ``bind`` (a checkpoint deleted and started again is a new query whose batch 0 is not
        # the old one's). Called without a query (tests, tools), the location alone names it.
        self.checkpoint = checkpoint
        self.sink_id = "" if expects_query else sink_id(checkpoint)
        self._bound = threading.Event()
        if not expects_query:
            self._bound.set()
        self.key = pii_key(settings)
        self.lake = settings.lake
        self.sinks = sinks or Sinks.from_settings(settings)
        self.champion = ChampionTracker(settings)
        self.state: CustomerState | None = None  # loaded at the first batch
        self.last_timings: dict[str, float] = {}
        self.stage = STAGES["ingest" if write_bronze else "silver"]
        self.waiting: tuple[str, float, int] | None = None  # (sink, since (monotonic), batch id) while a sink is away

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

    def bind(self, query_id: str) -> None:
        """Name the stream after the query now running on the checkpoint (``start`` calls it)."""
        self.sink_id = sink_id(self.checkpoint, query_id)
        self._bound.set()

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        """Run the batch; while a sink is unavailable, wait (``faults.Backoff``) and run it again: every step is
        idempotent by batch id, so a try cut off anywhere is completed by the next."""
        if not self._bound.wait(BIND_TIMEOUT_S):
            raise RuntimeError(f"no query id for the stream on {self.checkpoint}: was it started with start()?")
        backoff = Backoff(self.settings.stream, f"batch {batch_id}")
        collected: dict[str, pa.Table] = {}  # the batch's Spark job runs once, whatever the tries
        started = time.perf_counter()
        while True:
            try:
                done = self._run(batch_df, batch_id, collected)
            except Exception as exc:
                sink = unavailable(exc)
                if sink is None:
                    raise
                if self.waiting is None:
                    self.waiting = (sink, time.monotonic(), batch_id)
                wait_s = backoff.wait_s(sink, exc)
                self.sinks.serving.close()  # a fresh connection for the next try
                time.sleep(wait_s)
            else:
                backoff.recovered()
                self.waiting = None
                if done is not None:
                    self._count(collected["routed"].num_rows, *done, time.perf_counter() - started)
                return

    def _count(self, records_in: int, plan: p.BatchPlan, model: p.Model | None, served_s: float, took_s: float) -> None:
        """The finished batch in the stage's metrics (``ecom.metrics``)."""
        written = {
            "silver.transactions": len(plan.silver),
            "silver.quarantine": plan.quarantine.num_rows,
            "silver.duplicates": len(plan.duplicates),
            "silver.fraud_alerts": len(plan.alerts),
        }
        if plan.bronze is not None:
            written["bronze.transactions"] = plan.bronze.num_rows
        if plan.writes_postgres:
            written["postgres.transactions"] = len(plan.served)
        event_s = (pd.to_datetime(plan.served["event_time"], utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        m.record_microbatch(
            self.stage,
            records_in=records_in,
            written=written,
            duration_s=took_s,
            quarantine=m.quarantine_counts(plan.quarantine.column("reasons").to_pylist()),
            alerts=len(plan.alerts),
            latencies_s=m.live_latencies(event_s, served_s) if plan.writes_postgres else (),
            model_version=model[1] if model is not None else "",
        )

    def sinks_check(self) -> Check:
        """``/healthz``: no sink is away (while one is, the batch waits and runs again)."""
        if self.waiting is None:
            return Check(True, "every sink answers")
        sink, since, batch_id = self.waiting
        return Check(False, f"batch {batch_id} waits for {sink}, away for {time.monotonic() - since:.0f} s")

    def _run(
        self, batch_df: DataFrame, batch_id: int, collected: dict[str, pa.Table]
    ) -> tuple[p.BatchPlan, p.Model | None, float] | None:
        """One try of the batch: (its plan, the model it scored with, when PostgreSQL served it (epoch s)), or
        None for a batch committed before (skipped)."""
        timer = StepTimer()
        served_s = time.time()
        if self.state is None:
            self.state = CustomerState.load(
                self.lake.table("silver", "customer_profiles"), self.lake.table("silver", "transactions")
            )
            timer.mark("state")
            kill_point("state_loaded")
        stream, lake, serving, alerts = self.sink_id, self.sinks.lake, self.sinks.serving, self.sinks.alerts
        begun = serving.begin(stream, batch_id)
        kill_point("batch_begun")
        attempt = p.Attempt(begun, begun == "done" and alerts.published(stream, batch_id))
        if attempt.skip:
            log.info("batch %d was committed before; skipped", batch_id)
            return None
        model = self.champion.refresh()  # a moved registry alias takes over here, at the batch boundary
        timer.mark("model")
        try:
            if p.ROUTED not in batch_df.columns:  # called on raw records (tests, tools), not by the stream
                batch_df = self.prepare(batch_df)
            if "routed" not in collected:
                collected["routed"] = batch_df.toArrow()  # the batch's one Spark job: parsed, checked, routed
            routed = collected["routed"]
            timer.mark("parse")
            kill_point("batch_collected")
            # Records a sink refused in an earlier attempt go the same way again (they are committed with the batch).
            refused = serving.refusals(stream, batch_id) if attempt.retry else {}
            rows = p.batch_rows(routed, self._refused_rows(batch_df.sparkSession, routed, refused))
            stored = lake.stored(rows) if p.looks_up_silver(attempt, self.write_bronze) else serving.stored(rows)
            old_dates = archive_lookup_dates(rows.event_dates, dt.datetime.now(dt.UTC).date(), self.settings.retention)
            if old_dates:  # events the lifecycle may have moved out of the hot tables (none in live traffic)
                stored = p.with_archived(stored, lake.archived(rows, old_dates))
            timer.mark("classify")
            while True:
                plan = p.plan_batch(
                    rows,
                    stored,
                    attempt,
                    self.state.profiles,
                    model,
                    alert_threshold=self.settings.fraud.alert_threshold,
                    write_bronze=self.write_bronze,
                    pipeline_version=__version__,
                    now=dt.datetime.now(dt.UTC).replace(tzinfo=None),
                    recent=self.state.recent,
                )
                timer.mark("features")
                try:
                    silver = lake.encode(plan)
                    if plan.writes_postgres:
                        kill_point("postgres_committing")
                        serving.commit(stream, batch_id, plan, refused)
                        served_s = time.time()
                        timer.mark("postgres")
                        kill_point("postgres_committed")
                    break
                except SinkRefused as refusal:  # the last line: those records to quarantine, the batch again
                    refused = self._with_refused(batch_id, plan, refused, refusal)
                    rows = p.batch_rows(routed, self._refused_rows(batch_df.sparkSession, routed, refused))
            try:
                lake.write(stream, batch_id, plan, silver)
            except BaseException:
                self.state = None  # silver may hold part of the batch now: the next try rebuilds the state from it
                raise
            timer.mark("lake")
            kill_point("lake_committed")
            self.state.apply(plan.profiles, plan.silver, plan.recent)
            if self.state.snapshot_due(self.settings.stream.profiles_snapshot_s):
                self.state.snapshot(self.lake.table("silver", "customer_profiles"))
                timer.mark("profiles")
            alerts.publish(stream, batch_id, plan.alerts)
            timer.mark("kafka_alerts")
            kill_point("batch_done")
            return plan, model, served_s
        finally:
            self.last_timings = timer.steps
            log.info("batch %d%s: %s ms", batch_id, " (retry)" if attempt.retry else "", timer.summary())

    @staticmethod
    def _with_refused(
        batch_id: int, plan: p.BatchPlan, refused: Mapping[p.Record, str], refusal: SinkRefused
    ) -> dict[p.Record, str]:
        """``refused`` plus the records a sink just refused; each round quarantines at least one more record,
        so a batch is never retried forever."""
        again = set(refusal.records) & set(refused)
        if again or not refusal.records:
            raise RuntimeError(f"batch {batch_id}: a sink refuses records already quarantined: {sorted(again)}")
        stored = set(refusal.records) - set(p.records_of(plan.silver))
        if stored:  # rows silver holds already (a retry's or the rebuild's): they cannot move to quarantine
            raise RuntimeError(f"batch {batch_id}: a sink refuses records silver holds already: {sorted(stored)}")
        log.warning(
            "batch %d: %d records refused by a sink go to quarantine (%s)",
            batch_id,
            len(refusal.records),
            next(iter(refusal.records.values())),
        )
        return {**refused, **refusal.records}

    def _refused_rows(self, spark: SparkSession, routed: pa.Table, refused: Mapping[p.Record, str]) -> pa.Table | None:
        """The quarantine rows of the ``refused`` records, with their reasons: made by the same routing as the
        rules' rejects (so the payload is stored as quarantine stores it), in a small Spark job of its own."""
        if not refused:
            return None
        records = routed.select(BRONZE_SCHEMA.fieldNames()).to_pandas()
        records = records[p.record_keys(records).isin(list(refused))]
        records["refused_reason"] = [refused[r] for r in p.records_of(records)]
        schema = StructType([*BRONZE_SCHEMA.fields, StructField("refused_reason", StringType(), False)])
        checked = (
            spark.createDataFrame(records, schema)
            .transform(t.with_parsed_event)
            .withColumn("failed_rules", F.array(F.col("refused_reason")))
        )
        quarantine = [F.col(f"quarantine.{c}").alias(c) for c in QUARANTINE_SCHEMA.fieldNames()]
        return t.with_routed_records(checked, self.key, __version__).select(*quarantine).toArrow()


def start(spark: SparkSession, settings: Settings, once: bool = False, mode: str = "ingest") -> StreamingQuery:
    """Start the stream. ``mode``: ``ingest`` (Kafka -> bronze + silver) or ``silver`` (bronze -> silver).

    Refused (``CheckpointInUse``) before anything is written when another stream runs on the checkpoint.
    """
    name = QUERY_NAMES[mode]
    checkpoint = settings.lake.checkpoint(name)
    lock = hold_checkpoint(checkpoint, settings)
    try:
        prepare_lake(spark, settings)
        if mode == "ingest":
            source = read_kafka(spark, settings)
        else:
            source = (
                spark.readStream.format("delta")
                .option("skipChangeCommits", "true")
                .option("maxFilesPerTrigger", 1000)
                # a soft limit on the files' bytes: the driver holds about twice a record, Arrow about four
                # times its Parquet bytes (measured on simulated bronze: 3.95x)
                .option("maxBytesPerTrigger", settings.stream.max_batch_bytes // 8)
                .load(settings.lake.table("bronze", "transactions"))
                .select(*BRONZE_SCHEMA.fieldNames())
            )
        batch = SilverBatch(settings, checkpoint, write_bronze=mode == "ingest", expects_query=True)
        writer = (
            batch.prepare(source)
            .writeStream.queryName(name)
            .foreachBatch(batch)
            .option("checkpointLocation", checkpoint)
        )
        writer = (
            writer.trigger(availableNow=True)
            if once
            else writer.trigger(processingTime=settings.stream.trigger_interval)
        )
        query = writer.start()
    except BaseException:
        _HELD.pop(checkpoint, None)
        lock.release()
        raise
    batch.bind(str(query.id))
    _HELD[checkpoint] = (lock, query)
    if not once:  # a long-running stream: /metrics and /healthz (a run that stops by itself is not scraped)
        health = m.serve(settings, batch.stage)
        health.add("query", query_check(query))
        health.add("sinks", batch.sinks_check)
        if mode == "ingest":
            m.watch_lag(batch.stage, settings.kafka, settings.kafka.transactions_topic, checkpoint)
    return query


def hold_checkpoint(checkpoint: str, settings: Settings) -> CheckpointLock:
    """The checkpoint's lock for a new query: this process's own if its last query there has ended."""
    held = _HELD.get(checkpoint)
    if held is not None:
        lock, query = held
        if query is not None and query.isActive:
            raise CheckpointInUse(f"checkpoint {checkpoint} is in use by query {query.name} of this process")
        return lock
    lock = CheckpointLock(checkpoint, settings.postgres.dsn)
    _HELD[checkpoint] = (lock, None)
    return lock


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
    from pipelines import supervisor

    settings = get_settings(args.profile)
    spark = get_spark(settings, QUERY_NAMES[args.mode])
    supervisor.run(
        lambda: start(spark, settings, once=args.once, mode=args.mode), settings.stream, QUERY_NAMES[args.mode]
    )


if __name__ == "__main__":
    main()
