"""The silver stream against faults: records a sink refuses, PostgreSQL stopped and started, a failing alert
producer, kill -9 at many points, a second stream on a checkpoint in use. Real broker, Delta tables, PostgreSQL.

Each check leaves ``ecom reconcile`` exact. The kill -9 points and the longer runs are marked ``chaos``
(``make chaos``); one kill -9 point and the others run in the default suite (``fault``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from ecom.lake import prepare_lake
from ecom.reconcile import reconcile
from ecom.runtime.kafka import ensure_topics
from ecom.runtime.postgres import EmbeddedPostgres
from ecom.runtime.process import wait_until
from ecom.settings import child_environment
from ml.model import INPUT_COLUMNS
from pipelines.silver.checkpoint import sink_id
from pipelines.silver.faults import KILL_AT_ENV, KILL_POINTS
from pipelines.silver.job import QUERY_NAMES, SilverBatch
from pipelines.silver.sinks import AlertSink, LakeSink, Sinks
from serving.db import connection, recreate_database
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from tests.conftest import with_topic
from tests.integration.test_silver_stream import alert_messages
from tests.unit.pipelines.test_silver_faults import Producer

pytestmark = [pytest.mark.integration, pytest.mark.fault]

REFUSED_DEVICE = "refused-by-a-check"  # a value every rule accepts and the test's CHECK constraint refuses


def kafka_records(spark, settings):
    """Every record of the settings' orders topic, as the stream's Kafka source gives them."""
    return (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("subscribe", settings.kafka.transactions_topic)
        .option("startingOffsets", "earliest")
        .load()
    )


def quarantine_reasons(settings) -> dict[int, list[str]]:
    """Kafka offset -> reasons, for every quarantined record (one partition)."""
    rows = DeltaTable(settings.lake.table("silver", "quarantine")).to_pyarrow_table(columns=["kafka_offset", "reasons"])
    return {r["kafka_offset"]: r["reasons"] for r in rows.to_pylist()}


def one_partition(settings):
    """The settings with an orders topic of one partition (so Kafka offsets are the order of sending)."""
    settings = with_topic(settings, "transactions", "p1", partitions=1)
    ensure_topics(settings)
    return settings


class LakeFailingOnce(LakeSink):
    """A lake that fails its first write: a crash after PostgreSQL committed the batch, before the lake."""

    def __init__(self, lake):
        super().__init__(lake)
        self.failed = False

    def write(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            raise OSError("injected: the lake is unreachable")
        return super().write(*args, **kwargs)


def test_a_record_postgres_refuses_is_quarantined_and_the_rest_goes_through(isolated, spark):
    """One order passes every rule but PostgreSQL refuses it (a CHECK constraint stands in for any value a sink
    cannot store). It goes to quarantine naming the sink; the other orders are served; the batch is not retried
    forever. A crash after the PostgreSQL commit and the replay route that record the same way."""
    settings = one_partition(isolated)
    prepare_lake(spark, settings)
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f"ALTER TABLE transactions ADD CONSTRAINT test_refuses CHECK (device_id IS DISTINCT FROM '{REFUSED_DEVICE}')"
        )
    sim = TransactionSimulator(settings.simulator, seed=31)
    events = [g.event for g in sim.events(60, start=datetime.now(UTC), rate_per_s=100)]
    refused = events[17]
    refused["device_id"] = REFUSED_DEVICE
    producer = TransactionProducer(settings)
    for event in events:
        producer.send_raw(event["customer_id"], json.dumps(event).encode())
    producer.send_raw("C-raw", b"{broken")
    producer.close()
    assert producer.stats.failed == 0
    records = kafka_records(spark, settings)

    checkpoint = f"{settings.lake.checkpoints}/refusals"
    serving_only = Sinks.from_settings(settings)
    crashing = SilverBatch(
        settings,
        checkpoint,
        write_bronze=True,
        sinks=Sinks(LakeFailingOnce(settings.lake), serving_only.serving, serving_only.alerts),
    )
    with pytest.raises(OSError, match="injected"):
        crashing(records, 0)  # PostgreSQL committed (without the refused order), then the lake failed
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE event_id = %s) FROM transactions", (refused["event_id"],))
        assert cur.fetchone() == (59, 0)

    restarted = SilverBatch(settings, checkpoint, write_bronze=True)  # the replay, as after a crash
    restarted(records, 0)

    report = reconcile(settings)
    assert report.ok, report.lines()
    assert (report.produced, report.bronze, report.silver, report.quarantine, report.postgres) == (61, 61, 59, 2, 59)
    reasons = quarantine_reasons(settings)
    assert reasons[60] == ["malformed_json"]
    assert len(reasons[17]) == 1 and reasons[17][0].startswith("sink_refused:postgres:transactions:")
    assert "test_refuses" in reasons[17][0]

    restarted(records, 0)  # once more: everything recorded, nothing changes
    assert reconcile(settings).quarantine == 2


# --- the stream as a process: faults that need a real process (PostgreSQL stopped, kill -9, a second stream) ---

STREAM = [sys.executable, "-m", "ecom.cli", "stream", "all"]
BROKEN = [b"{broken", b'{"event_id": 7}', b"\xff\xfe not utf-8"]


def send_orders(settings, count: int, seed: int, resend: int = 0, broken: bool = False) -> int:
    """``count`` orders (plus ``resend`` of them sent again, plus a few broken records); returns records sent."""
    sim = TransactionSimulator(settings.simulator, seed=seed)
    events = [g.event for g in sim.events(count, start=datetime.now(UTC), rate_per_s=2000)]
    producer = TransactionProducer(settings)
    for event in [*events, *events[:resend]]:
        producer.send_raw(event["customer_id"], json.dumps(event).encode())
    for payload in BROKEN if broken else []:
        producer.send_raw("C-raw", payload)
    producer.close()
    assert producer.stats.failed == 0
    return count + resend + (len(BROKEN) if broken else 0)


def pg_count(settings) -> int:
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM transactions")
        return cur.fetchone()[0]


class Stream:
    """``ecom stream all`` as a child process of its own session (a kill takes its JVM and workers too)."""

    def __init__(self, settings, log: Path, once: bool = False, **env: str):
        self.log = log
        environment = {**child_environment(settings), "ECOM_STREAM__RETRY_MAX_S": "2", **env}
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [*STREAM, *(["--once"] if once else [])],
                env=environment,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the stream did not stop within {timeout_s} s:\n{self.tail()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def assert_exact(settings, produced: int, silver: int, quarantine: int, duplicates: int) -> None:
    report = reconcile(settings)
    assert report.ok, report.lines()
    counts = (report.produced, report.bronze, report.silver, report.quarantine, report.duplicates, report.postgres)
    assert counts == (produced, produced, silver, quarantine, duplicates, silver)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_postgres(isolated):
    """A second embedded PostgreSQL of this test's own (data folder, port), to stop and start at will; the
    shared test server is never touched. Yields (settings using it, the server).

    Its data folder is under the test profile's data folder, not pytest's temporary folder: pytest makes that
    one private again whenever a session starts, and the server's user could not reach it for the restart.
    """
    data_dir = Path(isolated.data_dir) / "scratch" / f"pg-{uuid.uuid4().hex[:8]}"
    postgres = isolated.postgres.model_copy(update={"port": free_port()})
    settings = isolated.model_copy(update={"data_dir": str(data_dir), "postgres": postgres})
    server = EmbeddedPostgres(settings)
    try:
        server.start()
        recreate_database(settings.postgres.dsn)
        yield settings, server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _lake_caught_up(settings) -> bool:
    """Every record Kafka holds is in bronze and every layer agrees (as ``ecom reconcile`` counts them)."""
    from ecom.reconcile import reconcile

    report = reconcile(settings, allow_pending=True)
    return report.pending == 0 and report.ok


def test_postgres_stopped_mid_stream_then_started_again_the_stream_waits_and_catches_up(own_postgres, tmp_path):
    """PostgreSQL goes away in the middle of the stream and comes back: the stream waits with backoff (logged,
    with how long it has been), does not die, and then serves everything: no gap, no duplicate."""
    settings, server = own_postgres
    first = send_orders(settings, 3000, seed=41, resend=30, broken=True)
    stream = Stream(
        settings, tmp_path / "stream.log", ECOM_POSTGRES__PORT=str(settings.postgres.port),
        ECOM_STREAM__MAX_OFFSETS_PER_TRIGGER="400",
    )  # fmt: skip
    try:
        assert wait_until(lambda: pg_count(settings) > 0, 300, interval_s=0.1), stream.tail()
        server.stop()  # fast shutdown: the stream's connection is cut, maybe in the middle of a batch
        down_at = time.monotonic()
        second = send_orders(settings, 1000, seed=42)  # orders keep coming while PostgreSQL is away
        time.sleep(max(0.0, 15 - (time.monotonic() - down_at)))
        assert stream.process.poll() is None, f"the stream died while PostgreSQL was down:\n{stream.tail()}"
        server.start()
        back_at = time.monotonic()
        assert wait_until(lambda: pg_count(settings) == 4000, 300, interval_s=0.2), stream.tail()
        caught_up_s = time.monotonic() - back_at
        # A batch commits to PostgreSQL before the lake: let its lake appends land before stopping the stream.
        assert wait_until(lambda: _lake_caught_up(settings), 120, interval_s=0.5), stream.tail()
        assert stream.process.poll() is None
    finally:
        stream.kill()
    log = stream.log.read_text(errors="replace")
    assert "postgres unavailable for" in log and "trying again in" in log, stream.tail()
    assert "done after" in log  # the batch the outage cut off completed on a later try
    print(f"PostgreSQL outage: down {back_at - down_at:.0f} s, caught up {caught_up_s:.1f} s after it came back")
    assert_exact(settings, first + second, silver=4000, quarantine=len(BROKEN), duplicates=30)


@pytest.mark.parametrize(
    "point", [pytest.param(p, marks=() if p == "postgres_committed" else pytest.mark.chaos) for p in KILL_POINTS]
)
def test_kill_9_at_a_point_then_restart_is_exact(isolated, tmp_path, point, record_property):
    """The stream kills itself (kill -9, its whole process group) at ``point`` of its second batch (the first
    for the state restore); the restarted stream completes that batch and the rest, exactly."""
    produced = send_orders(isolated, 2500, seed=43, resend=25, broken=True)
    nth = 1 if point == "state_loaded" else 2
    crashed = Stream(
        isolated, tmp_path / "crashed.log", ECOM_STREAM__MAX_OFFSETS_PER_TRIGGER="600",
        ECOM_STREAM__PROFILES_SNAPSHOT_S="0", **{KILL_AT_ENV: f"{point}@{nth}"},
    )  # fmt: skip
    assert crashed.wait(400) == -signal.SIGKILL, crashed.tail()
    assert f"kill -9 at {point}" in crashed.tail()
    served_at_kill = pg_count(isolated)

    started = time.monotonic()
    restarted = Stream(isolated, tmp_path / "restarted.log", once=True, ECOM_STREAM__MAX_OFFSETS_PER_TRIGGER="600")
    assert restarted.wait(600) == 0, restarted.tail()
    recovery_s = time.monotonic() - started
    record_property("recovery_s", round(recovery_s, 1))
    print(f"kill -9 at {point}: {served_at_kill} served at the kill; restart to exact in {recovery_s:.1f} s")
    assert_exact(isolated, produced, silver=2500, quarantine=len(BROKEN), duplicates=25)


def state_of(settings) -> dict:
    """What a stream writes: the checkpoint's files, each lake table's version, the bookkeeping rows."""
    checkpoints = Path(settings.lake.checkpoints)
    files = {str(p.relative_to(checkpoints)): p.stat().st_mtime_ns for p in checkpoints.rglob("*") if p.is_file()}
    tables = {
        name: DeltaTable(settings.lake.table(*name.split("/"))).version()
        for name in ("bronze/transactions", "silver/transactions", "silver/quarantine", "silver/duplicates")
    }
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT sink, batch_id, state FROM pipeline_batches ORDER BY 1, 2")
        batches = cur.fetchall()
    return {"files": files, "tables": tables, "batches": batches}


def test_a_second_stream_on_a_checkpoint_in_use_is_refused_before_it_writes(isolated, tmp_path):
    """While a stream runs, a second one on its checkpoint stops at once and writes nothing. The bookkeeping
    names the stream by the running query's id. After kill -9 of the first, a restart is not blocked."""
    produced = send_orders(isolated, 300, seed=44)
    first = Stream(isolated, tmp_path / "first.log")
    try:
        assert wait_until(lambda: pg_count(isolated) == 300, 300, interval_s=0.2), first.tail()
        time.sleep(2)  # idle: no new records, no new batch
        before = state_of(isolated)
        second = Stream(isolated, tmp_path / "second.log", once=True)
        assert second.wait(300) != 0
        assert "is in use by another stream" in second.tail()
        assert state_of(isolated) == before
    finally:
        first.kill()  # kill -9: no clean release of anything
    checkpoint = isolated.lake.checkpoint(QUERY_NAMES["ingest"])
    query_id = json.loads(Path(checkpoint, "metadata").read_text().splitlines()[0])["id"]
    assert {sink for sink, _, _ in before["batches"]} == {
        f"{sink_id(checkpoint, query_id)}-pg",
        f"{sink_id(checkpoint, query_id)}-kafka-alerts",
    }

    produced += send_orders(isolated, 100, seed=45)
    third = Stream(isolated, tmp_path / "third.log", once=True)
    assert third.wait(300) == 0, third.tail()
    assert_exact(isolated, produced, silver=400, quarantine=0, duplicates=0)


# --- the alert producer: Kafka does not confirm, the batch waits and sends again ---


class ConfirmsAfter(AlertSink):
    """Alerts whose first ``failures`` producers have every send fail (as when the broker does not answer)."""

    def __init__(self, settings, bookkeeping, failures: int):
        super().__init__(settings, bookkeeping)
        self.failures = failures
        self.producers = 0

    def make_producer(self):
        self.producers += 1
        return Producer(failing=True) if self.producers <= self.failures else super().make_producer()


class Champion:
    """A registered model stand-in: orders above 400 (in their currency) score 95, the others 5."""

    input_columns = INPUT_COLUMNS

    def refresh(self):
        return self, "test-1"

    def score(self, pdf: pd.DataFrame) -> pd.DataFrame:
        scores = [95.0 if a > 400 else 5.0 for a in pdf["amount_value"]]
        reasons = [["amount"] if s > 50 else [] for s in scores]
        return pd.DataFrame({"fraud_score": scores, "fraud_reasons": reasons}, index=pdf.index)


def test_alerts_kafka_does_not_confirm_are_sent_again_and_recorded_once(isolated, spark):
    settings = with_topic(isolated, "alerts", uuid.uuid4().hex[:8])
    settings = settings.model_copy(update={"stream": settings.stream.model_copy(update={"retry_initial_s": 0.1})})
    ensure_topics(settings)
    prepare_lake(spark, settings)
    send_orders(settings, 200, seed=46)
    records = kafka_records(spark, settings)
    sinks = Sinks.from_settings(settings)
    alerts = ConfirmsAfter(settings, sinks.serving, failures=2)
    batch = SilverBatch(settings, f"{settings.lake.checkpoints}/alerts", True, Sinks(sinks.lake, sinks.serving, alerts))
    batch.champion = Champion()

    batch(records, 0)  # returns: the third try's producer is confirmed

    flagged = DeltaTable(settings.lake.table("silver", "transactions")).to_pandas(columns=["event_id", "is_fraud"])
    flagged = set(flagged.loc[flagged["is_fraud"], "event_id"])
    assert flagged and alerts.producers == 3
    assert Counter(value["event_id"] for _, value in alert_messages(settings)) == Counter(flagged)
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT sink, row_count FROM pipeline_batches WHERE sink LIKE '%%-kafka-alerts'")
        assert cur.fetchall() == [(f"{batch.sink_id}-kafka-alerts", len(flagged))]
