"""How the silver stage meets faults, without services: which errors mean "wait", how long it waits, the alert
sink's bookkeeping when Kafka does not confirm, the checkpoint lock."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import psycopg2.errors
import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from ecom.settings import load_settings
from pipelines.silver import faults
from pipelines.silver.checkpoint import CheckpointInUse, CheckpointLock
from pipelines.silver.sinks import ALERT_COLUMNS, AlertSink

STREAM = load_settings("test").stream.model_copy(update={"retry_initial_s": 0.5, "retry_max_s": 4, "outage_max_s": 20})


class AdminShutdown(psycopg2.errors.AdminShutdown):
    pgcode = "57P01"  # as the server sends it when stopped


class NulInText(psycopg2.errors.CharacterNotInRepertoire):
    pgcode = "22021"


class IndexRowTooBig(psycopg2.errors.ProgramLimitExceeded):  # an OperationalError too, but about a row
    pgcode = "54000"


@pytest.mark.parametrize(
    ("error", "sink"),
    [
        (psycopg2.OperationalError("connection to server at 127.0.0.1 refused"), "postgres"),  # no SQLSTATE
        (psycopg2.InterfaceError("connection already closed"), "postgres"),
        (AdminShutdown("terminating connection due to administrator command"), "postgres"),
        (NulInText('invalid byte sequence for encoding "UTF8": 0x00'), None),  # the data: the last line
        (IndexRowTooBig("index row size exceeds maximum"), None),
        (faults.AlertsNotConfirmed("1 of 1 alerts not confirmed"), "alerts"),
        (KafkaTimeoutError("Failed to update metadata after 60.0 secs"), "alerts"),
        (ValueError("a bug"), None),
    ],
)
def test_only_an_unavailable_sink_makes_the_batch_wait(error, sink):
    assert faults.unavailable(error) == sink


def test_waits_double_up_to_the_bound_and_the_stream_stops_after_the_longest_outage():
    now = [0.0]
    backoff = faults.Backoff(STREAM, "batch 3", clock=lambda: now[0])
    now[0] = 100.0  # the batch ran 100 s before its first try failed: the outage starts there
    waits = []
    for _ in range(6):
        waits.append(backoff.wait_s("postgres", psycopg2.OperationalError("down")))
        now[0] += waits[-1]
    assert waits == [0.5, 1, 2, 4, 4, 4]  # retry_initial_s doubling, at most retry_max_s
    now[0] = 118.0
    assert backoff.wait_s("postgres", psycopg2.OperationalError("down")) == 2  # not past outage_max_s
    now[0] = 120.0
    with pytest.raises(RuntimeError, match="postgres unavailable for 20 s"):
        backoff.wait_s("postgres", psycopg2.OperationalError("down"))


def test_kill_points_are_named_and_counted():
    assert faults._kill_spec("lake_committed@3") == ("lake_committed", 3)
    assert faults._kill_spec("batch_done") == ("batch_done", 1)
    assert faults._kill_spec("") is None
    with pytest.raises(ValueError, match="unknown point"):
        faults._kill_spec("nowhere")


class Bookkeeping:
    """PostgreSQL's pipeline_batches, in memory."""

    def __init__(self):
        self.rows: dict[tuple[str, int], int] = {}

    def recorded(self, sink, batch_id):
        return (sink, batch_id) in self.rows

    def record(self, sink, batch_id, row_count):
        self.rows[(sink, batch_id)] = row_count

    def sent_by_fast_path(self, event_ids):
        return set()  # no per-order path here


class Producer:
    """A kafka-python producer stand-in: each send fails (``failing``) or is confirmed; flush never raises."""

    def __init__(self, failing: bool):
        self.failing = failing
        self.sent: list[bytes] = []
        self.closed = False

    def send(self, topic, key, value):
        future = Future()
        if self.failing:
            future.failure(KafkaTimeoutError("injected: delivery timed out"))
        else:
            self.sent.append(value)
            future.success(None)
        return future

    def flush(self):
        pass

    def close(self, timeout=None):
        self.closed = True


def alerts(*event_ids: str) -> pd.DataFrame:
    ts = pd.Timestamp("2026-11-25 12:00:00")
    rows = [(f"a-{e}", e, f"t-{e}", "C1", 120.0, 91.0, ["new_device"], "3", ts, ts) for e in event_ids]
    return pd.DataFrame(rows, columns=list(ALERT_COLUMNS))


def test_alerts_kafka_did_not_confirm_are_not_recorded_as_published_and_go_again():
    settings = load_settings("test")
    producers = [Producer(failing=True), Producer(failing=False)]
    sink = AlertSink(settings, Bookkeeping())
    sink.make_producer = lambda: producers.pop(0)

    with pytest.raises(faults.AlertsNotConfirmed, match="2 of 2 alerts of batch 4"):
        sink.publish("s", 4, alerts("e1", "e2"))
    assert not sink.published("s", 4)
    sink.publish("s", 4, alerts("e1", "e2"))  # the batch's next try: a new producer
    assert sink.published("s", 4) and sink.bookkeeping.rows == {("s-kafka-alerts", 4): 2}
    sink.publish("s", 4, alerts("e1", "e2"))  # recorded: not sent again
    assert producers == [] and len(sink.producer().sent) == 2


def test_a_second_holder_of_a_checkpoint_is_refused_until_the_first_dies(tmp_path):
    checkpoint = str(tmp_path / "checkpoints" / "ingest_transactions")
    code = (
        "import sys, time; from pipelines.silver.checkpoint import CheckpointLock; "
        "lock = CheckpointLock(sys.argv[1], ''); print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, checkpoint], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointInUse, match=f"pid {holder.pid}"):
            CheckpointLock(checkpoint, "")
        assert not os.path.exists(checkpoint)  # refused before anything was written there
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    started = time.monotonic()
    lock = CheckpointLock(checkpoint, "")  # the holder died by kill -9: its lock went with it
    assert time.monotonic() - started < 1
    with pytest.raises(CheckpointInUse):
        CheckpointLock(checkpoint, "")  # one holder at a time, in the same process too
    lock.release()
    CheckpointLock(checkpoint, "").release()


def spark_error(kind, desc: str, stack: str):
    """A PySpark error as a failed query or job raises it (its JVM message and stack trace), built without a JVM."""
    error = kind.__new__(kind)
    error._desc, error._stackTrace, error._cause, error._origin = desc, stack, None, None
    return error


KAFKA_AWAY = (
    "org.apache.spark.SparkException: Job aborted due to stage failure\n"
    "Caused by: org.apache.kafka.common.errors.TimeoutException: Timeout of 60000ms expired before the position "
    "for partition ecommerce-transactions-1 could be determined"
)


@pytest.mark.parametrize(
    ("stack", "service"),
    [
        (KAFKA_AWAY, "kafka"),  # the broker away while the batch reads the source
        ("Caused by: org.apache.kafka.common.errors.DisconnectException: null", "kafka"),
        ("org.apache.spark.SparkArithmeticException: [ARITHMETIC_OVERFLOW]", None),  # the data
        ("Caused by: org.apache.kafka.common.errors.TopicAuthorizationException: no", None),  # not by itself
    ],
)
def test_a_broker_away_from_the_kafka_source_makes_the_batch_wait(stack, service):
    from pyspark.errors.exceptions.captured import StreamingQueryException

    error = spark_error(StreamingQueryException, "Query silver-ingest terminated with exception", stack)
    assert faults.unavailable(error) == service
    wrapped = RuntimeError("foreachBatch failed")  # the Python side of a failed foreachBatch
    wrapped.__cause__ = error
    assert faults.unavailable(wrapped) is None  # only PySpark's and py4j's errors carry the JVM's text


class FakeQuery:
    """A streaming query that ends as told: ``failure`` (or None), after ``batches`` batches."""

    def __init__(self, failure=None, batches=0):
        self.isActive = False
        self._failure = failure
        self.lastProgress = {"batchId": batches - 1} if batches else None

    def exception(self):
        return self._failure


def test_a_query_failing_on_a_broker_away_is_restarted_until_it_stops_cleanly():
    from pyspark.errors.exceptions.captured import StreamingQueryException

    from pipelines import supervisor

    away = spark_error(StreamingQueryException, "terminated", KAFKA_AWAY)
    queries = iter([FakeQuery(away), FakeQuery(away, batches=3), FakeQuery(away), FakeQuery()])
    started, waits = [], []
    last = supervisor.run(lambda: next(queries), STREAM, "silver-ingest", on_start=started.append, sleep=waits.append)
    assert len(started) == 4 and last is started[-1]
    assert waits == [0.5, 0.5, 1]  # the query that ran batches between outages starts the waits afresh


def test_a_query_failing_on_the_data_or_past_the_longest_outage_is_not_restarted():
    from pyspark.errors.exceptions.captured import StreamingQueryException

    from pipelines import supervisor

    bug = spark_error(StreamingQueryException, "terminated", "org.apache.spark.SparkArithmeticException: overflow")
    with pytest.raises(supervisor.QueryFailed, match="query silver-ingest failed"):
        supervisor.run(lambda: FakeQuery(bug), STREAM, "silver-ingest", sleep=lambda s: None)

    away = spark_error(StreamingQueryException, "terminated", KAFKA_AWAY)
    now = [0.0]
    restarts = []

    def sleep(seconds):
        now[0] += seconds

    def start():
        restarts.append(now[0])
        return FakeQuery(away)

    with pytest.raises(supervisor.QueryFailed, match="kafka unavailable for 20 s"):
        supervisor.run(start, STREAM, "silver-ingest", sleep=sleep, clock=lambda: now[0])
    # the waits double up to retry_max_s, the last one is cut at the bound
    assert restarts[1:] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 20]
