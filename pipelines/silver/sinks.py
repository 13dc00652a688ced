"""Silver stage sinks: the lake, serving (PostgreSQL) and alerts (Kafka), each built from settings, each idempotent
by (stream, batch id).

- ``LakeSink``: Delta appends with delta-rs from Arrow, in parallel threads (one per table). Every commit is
  tagged with (stream, batch id) in its userMetadata; on a retry a table whose recent commits carry the tag
  is not written again. It also looks a retried batch's events up in silver, and old events in the archive.
- ``ServingSink``: PostgreSQL. The batch's bookkeeping (``pipeline_batches``: started, committed), the lookup
  of stored events, and the batch's rows (transactions, customers, alerts; in the ingest stream also the
  quarantined records per reason, ``quarantine_counts``, counted as ``ecom.metrics`` counts them) in one
  transaction that also marks it committed. Also the PostgreSQL side of ``ecom rescore``.
- ``AlertSink``: Kafka ``fraud-alerts``, with a bookkeeping row written only once the broker confirmed every
  message of the batch. A replay sends the same messages (same ``alert_id``).

Beside the per-order path (``pipelines.alerts``, which writes an order's alert first): the micro-batch's alert
values overwrite the fast path's (``ALERT_UPDATE``), the outcome is counted per batch
(``reconcile_alert_paths``, table ``alert_path_agreement``), fast-path alerts of orders the micro-batch scored
below the threshold are withdrawn, and the alerts the fast path sent with the confirmed score are not sent again.

``Sinks`` holds the three; ``SilverBatch`` takes them from settings, tests pass their own (fault injection).
Grain: one write per (sink, stream, micro-batch).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd
import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties
from deltalake.exceptions import CommitFailedError

from ecom.metrics import ALERT_PATH_OUTCOMES, quarantine_counts
from ecom.schemas import ALERT_SCHEMA, DUPLICATES_SCHEMA, SILVER_SCHEMA, arrow_schema
from ecom.settings import LakeSettings, Settings
from ecom.storage import write_delta
from ml import features
from pipelines.silver.faults import AlertsNotConfirmed, kill_point
from pipelines.silver.plan import SILVER_COLUMNS, BatchPlan, BatchRows, Record, driver_frame, records_of
from serving import db

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
# On conflict with a row the per-order path (pipelines.alerts) wrote first, the micro-batch's values win; the
# alert keeps its first ``created_at`` (when it was first raised) and its triage.
ALERT_UPDATE = ("transaction_id", "customer_id", "amount", "fraud_score", "reasons", "model_version", "event_time")
FAST_PATH = "fast-path"  # fraud_alerts.source of the rows the per-order path wrote
AGREEMENT_OUTCOMES = ("confirmed", "corrected", "withdrawn", "micro_batch_only")
RESCORE_COLUMNS = ("event_id", "fraud_score", "is_fraud", "model_version")
PROGRESS_COLUMNS = ("sink", "batch_id", "progress")
QUARANTINE_COUNT_COLUMNS = ("minute", "reason", "records")
# SQLSTATE classes of errors about the rows, not the server: data exception (a value PostgreSQL cannot store),
# integrity constraint violation (NOT NULL, CHECK), program limit exceeded (e.g. an index row too big).
REFUSAL_CLASSES = ("22", "23", "54")
REASON_CHARS = 160  # a refusal reason keeps this much of the sink's message

log = logging.getLogger(__name__)


class SinkRefused(Exception):
    """A sink cannot store some records of a batch (and wrote none of it): Kafka coordinates -> reason."""

    def __init__(self, records: dict[Record, str]):
        super().__init__(f"{len(records)} records refused: {next(iter(records.values()), '')}")
        self.records = records


def refusal_reason(sink: str, message: str) -> str:
    """A quarantine reason naming the sink: ``sink_refused:<sink>:<first words of its message>``."""
    return f"sink_refused:{sink}:{' '.join(message.split())[:REASON_CHARS]}"


def refused_by_postgres(exc: BaseException) -> bool:
    """True for a PostgreSQL error about the rows written (``REFUSAL_CLASSES``), not the server or connection."""
    code = getattr(exc, "pgcode", None)
    return isinstance(exc, psycopg2.Error) and code is not None and code[:2] in REFUSAL_CLASSES


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


def committed_with_tag(path: str, tag: str, depth: int = 200) -> bool:
    """True if one of the table's last ``depth`` commits carries ``tag`` as its userMetadata (read with delta-rs)."""
    from ecom.storage import delta_table

    return any(c.get("userMetadata") == tag for c in delta_table(path).history(depth))


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


def _arrow(rows: pd.DataFrame, schema) -> Callable[[], pa.Table]:
    return lambda: pa.Table.from_pandas(rows, schema=arrow_schema(schema), preserve_index=False)


class LakeSink:
    """The batch's Delta appends, written with delta-rs from Arrow, in parallel threads (different tables, so they
    cannot conflict).

    A Spark append cost 250-700 ms per table and batch on two cores (planning, a job, the post-commit
    snapshot), delta-rs 30-200 ms. Spark computed what goes in; the tables are the same Delta tables.
    """

    name = "lake"

    def __init__(self, lake: LakeSettings):
        self.lake = lake
        self._writers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="silver-lake")

    @classmethod
    def from_settings(cls, settings: Settings) -> LakeSink:
        return cls(settings.lake)

    @staticmethod
    def tag(stream: str, batch_id: int) -> str:
        """The userMetadata of every Delta commit of this batch."""
        return f"{stream}:{batch_id}"

    def stored(self, rows: BatchRows) -> pd.DataFrame:
        """The silver rows of the batch's events (a retry, or the rebuild from bronze), read with delta-rs,
        pruned to the events' dates (a Spark job here took seconds, up to half a minute on a busy machine)."""
        from ecom.storage import delta_table

        if not len(rows.firsts):
            return pd.DataFrame(columns=SILVER_COLUMNS)
        silver = delta_table(self.lake.table("silver", "transactions")).to_pyarrow_dataset()
        wanted = pc.field("event_date").isin(rows.event_dates) & pc.field("event_id").isin(rows.event_ids)
        return driver_frame(silver.to_table(filter=wanted))

    def archived(self, rows: BatchRows, event_dates: Sequence[dt.date]) -> pd.DataFrame:
        """The archived silver rows (``archive/silver/transactions``) of the batch's events dated ``event_dates``:
        events older than the hot horizon are looked up there too (docs/lifecycle.md, de-duplication)."""
        from deltalake.exceptions import TableNotFoundError

        from ecom.storage import delta_table

        events = rows.firsts[rows.firsts["event_date"].isin(list(event_dates))]
        if not len(events):
            return pd.DataFrame(columns=SILVER_COLUMNS)
        try:
            archive = delta_table(self.lake.archive("silver", "transactions")).to_pyarrow_dataset()
        except TableNotFoundError:  # nothing archived yet
            return pd.DataFrame(columns=SILVER_COLUMNS)
        dates = pc.field("event_month").isin(sorted({d.replace(day=1) for d in event_dates})) & pc.field(
            "event_date"
        ).isin(list(event_dates))
        found = archive.to_table(columns=SILVER_COLUMNS, filter=dates)
        # the ids are matched after the read: the archive's strings may come as string_view, which a dataset
        # filter cannot compare with a list of str
        ids = pa.array(events["event_id"].tolist(), pa.string())
        return driver_frame(found.filter(pc.is_in(pc.cast(found["event_id"], pa.string()), value_set=ids)))

    def encode(self, plan: BatchPlan) -> pa.Table:
        """The plan's silver rows in the table's Arrow schema, before anything is written anywhere.

        Raises ``SinkRefused`` naming the records whose rows the schema cannot hold (found row by row).
        """
        try:
            return _arrow(plan.silver, SILVER_SCHEMA)()
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
        refused = {}
        for i in range(len(plan.silver)):
            row = plan.silver.iloc[[i]]
            try:
                _arrow(row, SILVER_SCHEMA)()
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                refused[records_of(row)[0]] = refusal_reason(self.name, str(exc))
        raise SinkRefused(refused)

    def write(self, stream: str, batch_id: int, plan: BatchPlan, silver: pa.Table) -> None:
        """Append the plan's lake rows (``silver`` as ``encode`` gave it); on a retry, only to tables whose
        commits do not carry the batch's tag."""
        jobs = [
            (lambda: plan.quarantine, "silver", "quarantine"),
            (lambda: silver, "silver", "transactions"),
            (_arrow(plan.duplicates, DUPLICATES_SCHEMA), "silver", "duplicates"),
            (_arrow(plan.alerts, ALERT_SCHEMA), "silver", "fraud_alerts"),
        ]
        if plan.bronze is not None:
            jobs.insert(0, (lambda: plan.bronze, "bronze", "transactions"))
        tag = self.tag(stream, batch_id)
        futures = [
            self._writers.submit(self.append, rows, layer, table, tag, plan.retry) for rows, layer, table in jobs
        ]
        for future in futures:
            future.result()  # the first failure is raised here: the batch fails and is replayed

    def append(self, rows: Callable[[], pa.Table], layer: str, table: str, tag: str, retry: bool) -> None:
        """Append ``rows()`` to a lake table, its commit tagged; on a retry, only if not tagged yet."""
        path = self.lake.table(layer, table)
        if retry and committed_with_tag(path, tag):
            return
        data = rows()
        if data.num_rows:
            append_retrying(path, data, tag)
        if table == "transactions":
            kill_point(f"lake_{layer}_committed")


APPEND_ATTEMPTS = 6


def append_retrying(path: str, data: pa.Table, tag: str, attempts: int = APPEND_ATTEMPTS) -> None:
    """Append ``data`` as one commit tagged ``tag``; a commit refused because another writer committed first
    (the lifecycle's delete, a compaction) is tried again on the newer version, with a short backoff.

    A refused commit wrote nothing to the log (its files are left for VACUUM), so trying again cannot append
    twice. Without this, a delete landing between an append's read and its commit stopped the stream.
    """
    for attempt in range(attempts):
        try:
            write_delta(
                path, data, mode="append", commit_properties=CommitProperties(custom_metadata={"userMetadata": tag})
            )
            return
        except CommitFailedError:
            if attempt == attempts - 1:
                raise
            log.info("append to %s lost a commit race (attempt %d); trying again", path, attempt + 1)
            time.sleep(0.05 * 2**attempt)


class ServingSink:
    """PostgreSQL: the batch bookkeeping, the stored-event lookup and the batch's rows, on one connection."""

    name = "postgres"

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._conn = None
        self.last_agreement: dict[str, int] = {}  # the newest committed batch's (reconcile_alert_paths)

    @classmethod
    def from_settings(cls, settings: Settings) -> ServingSink:
        return cls(settings.postgres.dsn)

    @staticmethod
    def bookkeeping(stream: str) -> str:
        return f"{stream}-pg"

    def connection(self):
        """The stream's PostgreSQL connection, reopened when it was lost."""
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.dsn)
        return self._conn

    def begin(self, stream: str, batch_id: int) -> str:
        """Mark the batch started: ``new``, ``retry`` (started before, never committed) or ``done`` (committed)."""
        return db.begin_batch(self.connection(), self.bookkeeping(stream), batch_id)

    def recorded(self, sink: str, batch_id: int) -> bool:
        with self.connection() as conn, conn.cursor() as cur:
            return db.batch_seen(cur, sink, batch_id)

    def record(self, sink: str, batch_id: int, row_count: int) -> None:
        with self.connection() as conn, conn.cursor() as cur:
            db.mark_committed(cur, sink, batch_id, row_count)

    def stored(self, rows: BatchRows) -> pd.DataFrame:
        """event_id and Kafka coordinates of the batch's events that ``transactions`` holds already."""
        columns = ["event_id", "kafka_partition", "kafka_offset"]
        if not len(rows.firsts):
            return pd.DataFrame(columns=columns)
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT event_id, kafka_partition, kafka_offset FROM transactions WHERE event_id = ANY(%s)",
                (rows.event_ids,),
            )
            return pd.DataFrame(cur.fetchall(), columns=columns)

    @staticmethod
    def refusals_sink(stream: str) -> str:
        return f"{stream}-refused"

    def commit(self, stream: str, batch_id: int, plan: BatchPlan, refused: Mapping[Record, str]) -> None:
        """The plan's transactions, customers and alerts, the batch's ``refused`` records (``stream_progress``,
        so a replay routes them the same way) and the batch marked committed, in one transaction.

        When PostgreSQL refuses rows (``refused_by_postgres``) nothing is committed and ``SinkRefused`` names
        the records behind them, found by bisection in a transaction that is rolled back.
        """
        writes = [
            db.TableWrite("transactions", TX_COLUMNS, ("event_id",), rows_of(plan.served, TX_COLUMNS)),
            db.TableWrite(
                "customers",
                CUSTOMER_COLUMNS,
                ("customer_id",),
                customer_rows(plan.customers),
                update=CUSTOMER_COLUMNS[1:],
            ),  # fmt: skip
            db.TableWrite(
                "fraud_alerts", ALERT_COLUMNS, ("event_id",), rows_of(plan.alerts, ALERT_COLUMNS), update=ALERT_UPDATE
            ),
        ]
        if plan.bronze is not None:  # records arriving from Kafka (the rebuild from bronze counted them before)
            writes.append(quarantine_write(plan, dt.datetime.now(dt.UTC)))
        if refused:
            progress = json.dumps({"refused": [[*record, reason] for record, reason in sorted(refused.items())]})
            row = (self.refusals_sink(stream), batch_id, progress)
            writes.append(db.TableWrite("stream_progress", PROGRESS_COLUMNS, ("sink", "batch_id"), [row]))
        agreement: dict[str, int] = {}

        def reconcile(cur) -> None:
            agreement.update(reconcile_alert_paths(cur, self.bookkeeping(stream), batch_id, plan))

        try:
            db.commit_batch_writes(self.connection(), self.bookkeeping(stream), batch_id, writes, after=reconcile)
        except psycopg2.Error as exc:
            if not refused_by_postgres(exc):
                raise
            found = self._refused_rows(writes[:3])
            if not found:
                raise  # not a matter of some rows: the batch fails as before
            raise SinkRefused(self._records(plan, found)) from exc
        self.last_agreement = agreement
        for outcome, n in agreement.items():
            if n:
                ALERT_PATH_OUTCOMES.labels(outcome).inc(n)

    def sent_by_fast_path(self, event_ids: Sequence[str]) -> set[str]:
        """The events among ``event_ids`` whose alert the per-order path wrote, and sent to Kafka, with the
        score and model version the micro-batch confirmed: their message needs no second send."""
        if not event_ids:
            return set()
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                f"SELECT event_id FROM fraud_alerts WHERE event_id = ANY(%s) AND {CONFIRMED} AND {SENT}",
                (list(event_ids),),
            )
            return {r[0] for r in cur.fetchall()}

    def refusals(self, stream: str, batch_id: int) -> dict[Record, str]:
        """The records an earlier attempt of the batch found refused (committed with its rows)."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT progress FROM stream_progress WHERE sink = %s AND batch_id = %s",
                (self.refusals_sink(stream), batch_id),
            )
            row = cur.fetchone()
        return {(t, int(p), int(o)): reason for t, p, o, reason in (row[0]["refused"] if row else [])}

    def _refused_rows(self, writes: Sequence[db.TableWrite]) -> dict[tuple[str, int], str]:
        """(table, row index) -> PostgreSQL's message, for each row refused on its own; by bisection under
        savepoints, in a transaction rolled back at the end."""
        found: dict[tuple[str, int], str] = {}
        conn = self.connection()
        try:
            with conn.cursor() as cur:
                for write in writes:
                    self._bisect(cur, write, list(range(len(write.rows))), found)
        finally:
            conn.rollback()
        return found

    def _bisect(self, cur, write: db.TableWrite, indexes: list[int], found: dict) -> None:
        if not indexes:
            return
        cur.execute("SAVEPOINT refusal_probe")
        try:
            rows = [write.rows[i] for i in indexes]
            db.upsert_rows(cur, write.table, write.columns, write.key, rows, write.update, write.accumulate)
        except psycopg2.Error as exc:
            cur.execute("ROLLBACK TO SAVEPOINT refusal_probe")
            if not refused_by_postgres(exc):
                raise
            if len(indexes) == 1:
                found[(write.table, indexes[0])] = f"{write.table}: {exc.diag.message_primary or exc}"
                return
            half = len(indexes) // 2
            self._bisect(cur, write, indexes[:half], found)
            self._bisect(cur, write, indexes[half:], found)
        else:
            cur.execute("ROLLBACK TO SAVEPOINT refusal_probe")

    def _records(self, plan: BatchPlan, found: Mapping[tuple[str, int], str]) -> dict[Record, str]:
        """The records behind refused rows: a transaction's own; an alert's event; a customer's orders."""
        served = plan.served.reset_index(drop=True)
        records: dict[Record, str] = {}
        for (table, i), message in sorted(found.items()):
            if table == "transactions":
                behind = served.iloc[[i]]
            elif table == "fraud_alerts":
                behind = served[served["event_id"] == plan.alerts["event_id"].iloc[i]]
            else:
                behind = served[served["customer_id"] == plan.customers[i].customer_id]
            for record in records_of(behind):
                records.setdefault(record, refusal_reason(self.name, message))
        return records

    def rescore(self, score_rows: Sequence[tuple], alert_rows: Sequence[tuple]) -> None:
        """``ecom rescore``: new scores (RESCORE_COLUMNS) onto ``transactions`` and alerts upserted, in one
        transaction; the same rows twice change nothing."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE rescored (event_id TEXT, fraud_score DOUBLE PRECISION, is_fraud BOOLEAN,"
                " model_version TEXT) ON COMMIT DROP"
            )
            db.copy_rows(cur, "rescored", RESCORE_COLUMNS, score_rows)
            cur.execute(
                "UPDATE transactions t SET fraud_score = r.fraud_score, is_fraud = r.is_fraud,"
                " model_version = r.model_version FROM rescored r WHERE t.event_id = r.event_id"
            )
            db.upsert_rows(
                cur, "fraud_alerts", ALERT_COLUMNS, ("event_id",), alert_rows,
                update=("fraud_score", "reasons", "model_version"),
            )  # fmt: skip

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def quarantine_write(plan: BatchPlan, now: dt.datetime) -> db.TableWrite:
    """The batch's quarantined records per reason (``ecom.metrics.quarantine_counts``, as the stream's
    ``ecom_quarantined_records_total`` counts them), added to ``quarantine_counts`` for ``now``'s minute."""
    minute = now.replace(second=0, microsecond=0)
    counts = quarantine_counts(plan.quarantine.column("reasons").to_pylist())
    rows = [(minute, reason, records) for reason, records in sorted(counts.items())]
    return db.TableWrite(
        "quarantine_counts", QUARANTINE_COUNT_COLUMNS, ("minute", "reason"), rows, accumulate=("records",)
    )


# A fast-path row whose score and model version the micro-batch's own equal (scores to 1e-9).
CONFIRMED = (
    f"source = '{FAST_PATH}' AND abs(fast_path_score - fraud_score) < 1e-9"
    " AND fast_path_model_version IS NOT DISTINCT FROM model_version"
)
SENT = "fast_path_sent_at IS NOT NULL"  # Kafka confirmed the fast path's message


def reconcile_alert_paths(cur, sink: str, batch_id: int, plan: BatchPlan) -> dict[str, int]:
    """In the micro-batch's transaction, after its alerts were upserted: how its alerts compare with the rows
    the per-order path wrote first (``AGREEMENT_OUTCOMES``), recorded in ``alert_path_agreement`` when there
    is anything to compare. The fast path's alerts of the batch's other scored orders (the micro-batch scored
    them below the threshold) are withdrawn: deleted unless an analyst has triaged them."""
    alert_ids = {str(e) for e in plan.alerts["event_id"]}
    scored = plan.served[plan.served["fraud_score"].notna()]  # unscored (no model yet): nothing to withdraw
    ids = sorted(alert_ids | set(map(str, scored["event_id"])))
    counts = dict.fromkeys(AGREEMENT_OUTCOMES, 0)
    if not ids:
        return counts
    # One lookup of the batch's fast-path rows (none when the fast path does not run); the rest only if found.
    cur.execute(
        f"SELECT event_id, {CONFIRMED} FROM fraud_alerts WHERE event_id = ANY(%s) AND source = '{FAST_PATH}'", (ids,)
    )
    fast = dict(cur.fetchall())
    alerted = [e for e in fast if e in alert_ids]
    withdrawn = [e for e in fast if e not in alert_ids]
    counts["confirmed"] = sum(1 for e in alerted if fast[e])
    counts["corrected"] = len(alerted) - counts["confirmed"]
    counts["withdrawn"] = len(withdrawn)
    counts["micro_batch_only"] = len(alert_ids) - len(alerted)
    if alerted:
        cur.execute(
            "UPDATE fraud_alerts SET reconciled_at = now() WHERE event_id = ANY(%s) AND reconciled_at IS NULL",
            (alerted,),
        )
    if withdrawn:
        cur.execute("DELETE FROM fraud_alerts WHERE event_id = ANY(%s) AND status = 'open'", (withdrawn,))
    if any(counts[k] for k in ("confirmed", "corrected", "withdrawn")):
        cur.execute(
            "INSERT INTO alert_path_agreement (sink, batch_id, confirmed, corrected, withdrawn, micro_batch_only)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (sink, batch_id) DO NOTHING",
            (sink, batch_id, *(counts[k] for k in AGREEMENT_OUTCOMES)),
        )
    return counts


class AlertSink:
    """Kafka ``fraud-alerts``, once per batch: the bookkeeping row is written after the broker confirmed."""

    name = "alerts"

    def __init__(self, settings: Settings, bookkeeping: ServingSink):
        self.settings = settings
        self.topic = settings.kafka.alerts_topic
        self.bookkeeping = bookkeeping
        self._producer = None

    @staticmethod
    def sink(stream: str) -> str:
        return f"{stream}-kafka-alerts"

    def published(self, stream: str, batch_id: int) -> bool:
        return self.bookkeeping.recorded(self.sink(stream), batch_id)

    def publish(self, stream: str, batch_id: int, alerts: pd.DataFrame) -> None:
        """The batch's alerts -> Kafka, unless recorded as published; recorded only once the broker confirmed
        every one of them. Otherwise ``AlertsNotConfirmed`` (or the client's error): the batch tries again."""
        if self.published(stream, batch_id):
            return
        sent = self.bookkeeping.sent_by_fast_path(list(alerts["event_id"])) if len(alerts) else set()
        rows = [row for row in rows_of(alerts, ALERT_COLUMNS) if row[1] not in sent]
        messages = [alert_message(dict(zip(ALERT_COLUMNS, row, strict=True))) for row in rows]
        if messages:
            producer = self.producer()
            try:
                sends = [producer.send(self.topic, key=key, value=value) for key, value in messages]
                producer.flush()
            except Exception:
                self.close()  # a new producer for the next try
                raise
            failed = [send for send in sends if not (send.is_done and send.succeeded())]
            if failed:
                self.close()
                raise AlertsNotConfirmed(
                    f"{len(failed)} of {len(sends)} alerts of batch {batch_id} not confirmed by Kafka: "
                    f"{failed[0].exception!r}"
                )
        kill_point("alerts_sent")
        self.bookkeeping.record(self.sink(stream), batch_id, len(messages))

    def producer(self):
        if self._producer is None:
            self._producer = self.make_producer()
        return self._producer

    def make_producer(self):
        """A producer configured from ``settings.producer`` (acks, idempotence, batching, timeouts) and the
        brokers' security (``ecom.kafka_config``)."""
        from kafka import KafkaProducer

        from ecom.kafka_config import producer_kwargs

        return KafkaProducer(**producer_kwargs(self.settings))

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=0)
            self._producer = None


@dataclass(frozen=True)
class Sinks:
    """The silver stage's three sinks."""

    lake: LakeSink
    serving: ServingSink
    alerts: AlertSink

    @classmethod
    def from_settings(cls, settings: Settings) -> Sinks:
        serving = ServingSink.from_settings(settings)
        return cls(LakeSink.from_settings(settings), serving, AlertSink(settings, serving))
