"""How the silver stage meets faults: which errors are an unavailable sink, how a batch waits for one, and the
kill points the fault suite uses.

- ``unavailable(exc)``: the service behind an error that goes away by itself (PostgreSQL down or restarting,
  the connection lost, Kafka not confirming alerts, the Kafka source's broker away), or None for errors about
  the data or the code.
- ``Backoff``: the waits between tries of a batch (or restarts of a query) while a service is unavailable
  (doubling, bounded by ``stream.retry_max_s``), logged with how long the outage lasts; past
  ``stream.outage_max_s`` it gives up and the stream stops, its place kept in the checkpoint.
- ``kill_point(name)``: the fault suite's kill -9 hook. ``ECOM_FAULT_KILL_AT=<point>[@<n>]`` (read once, when
  the module is imported, i.e. when the stream starts) makes the process SIGKILL itself (its whole process
  group when it leads one, as a crash of the machine would) the n-th time (default 1) it reaches ``<point>``.
  Unset, a point costs one comparison. ``KILL_POINTS`` lists the points in the order a batch meets them.

Input: exceptions and settings; output: decisions and waits. No I/O of its own but the log and the kill.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import psycopg2

from ecom.settings import StreamSettings

log = logging.getLogger(__name__)

# SQLSTATE classes of a PostgreSQL that is away, not of a statement's rows: connection exception, insufficient
# resources, operator intervention (shutdown, starting up), transaction rollback (deadlock, serialization).
UNAVAILABLE_CLASSES = ("08", "53", "57", "40")

KILL_POINTS = (
    "state_loaded",  # the customer state restored at the first batch
    "batch_begun",  # marked started in PostgreSQL
    "batch_collected",  # the batch's Spark job done
    "postgres_committing",  # planned, PostgreSQL not committed yet
    "postgres_committed",  # PostgreSQL committed, no lake commit yet
    "lake_bronze_committed",  # bronze committed, other tables maybe not
    "lake_silver_committed",  # silver committed, other tables maybe not
    "lake_committed",  # every lake table committed, profiles not updated
    "snapshot_writing",  # during a profile snapshot: the MERGE about to commit
    "snapshot_committed",  # the snapshot committed, not yet recorded in memory
    "alerts_sent",  # alerts confirmed by Kafka, not yet recorded
    "batch_done",  # the batch recorded everywhere, Spark's checkpoint commit to come
)
FAST_PATH_KILL_POINTS = (  # the per-order alert path (pipelines.alerts.job)
    "fast_path_inserted",  # alerts inserted in PostgreSQL, not yet sent to Kafka
    "fast_path_sent",  # alerts sent to Kafka, not yet marked sent
)
KILL_AT_ENV = "ECOM_FAULT_KILL_AT"

# The Kafka client's errors that go away by themselves (the broker stopped or restarting, a partition's leader
# moving), as the JVM names them in a failed Spark job or query: reading the source is tried again.
KAFKA_SOURCE_UNAVAILABLE = (
    "org.apache.kafka.common.errors.TimeoutException",
    "org.apache.kafka.common.errors.NetworkException",
    "org.apache.kafka.common.errors.DisconnectException",
    "org.apache.kafka.common.errors.NotLeaderOrFollowerException",
    "org.apache.kafka.common.errors.LeaderNotAvailableException",
    "org.apache.kafka.common.errors.BrokerNotAvailableException",
)


class AlertsNotConfirmed(Exception):
    """Kafka did not confirm every alert of a batch: the batch's alerts are not recorded as published."""


def _jvm_text(exc: BaseException) -> str:
    """An error's text with the JVM stack trace and causes PySpark keeps beside it, down its chain of causes."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        desc = getattr(exc, "_desc", None)  # pyspark.errors' CapturedException: its message and JVM stack trace
        parts += [str(exc) if desc is None else desc, str(getattr(exc, "_stackTrace", None) or "")]
        exc = getattr(exc, "_cause", None) or exc.__cause__ or exc.__context__
    return "\n".join(parts)


def summary(exc: BaseException) -> str:
    """One line saying what went wrong: the Kafka client's error when there is one (a Spark job's own message
    is only "Job aborted"), else the error's first line."""
    lines = [line.strip() for line in _jvm_text(exc).splitlines()]
    kafka_lines = [line for line in lines if "org.apache.kafka.common.errors" in line]
    kafka_lines.sort(key=lambda line: line.index("org.apache.kafka.common.errors"))  # the Kafka error's own line
    return (kafka_lines or [line for line in lines if line] or [type(exc).__name__])[0]


def unavailable(exc: BaseException) -> str | None:
    """The service an error says is unavailable for now (``postgres``, ``alerts``, ``kafka``: the source), or
    None."""
    from kafka.errors import KafkaError

    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        code = getattr(exc, "pgcode", None)
        if code is None or code[:2] in UNAVAILABLE_CLASSES:
            return "postgres"
    if isinstance(exc, AlertsNotConfirmed | KafkaError):
        return "alerts"
    if type(exc).__module__.startswith(("py4j", "pyspark")):
        text = _jvm_text(exc)
        if any(name in text for name in KAFKA_SOURCE_UNAVAILABLE):
            return "kafka"
    return None


class Backoff:
    """The waits of one micro-batch (or one query's restarts) while a service is unavailable. ``label`` names
    what waits in the log: ``batch 12``, ``query silver-ingest``."""

    def __init__(self, stream: StreamSettings, label: str, clock=time.monotonic):
        self.initial_s, self.max_s, self.outage_max_s = stream.retry_initial_s, stream.retry_max_s, stream.outage_max_s
        self.label = label
        self.clock = clock
        self.since: float | None = None  # when the first try failed
        self.tries = 0

    def wait_s(self, sink: str, exc: BaseException) -> float:
        """How long to wait before the next try; raises (from ``exc``) once the outage lasts too long."""
        self.tries += 1
        if self.since is None:
            self.since = self.clock()
        down_s = self.clock() - self.since
        if down_s >= self.outage_max_s:
            raise RuntimeError(
                f"{self.label}: {sink} unavailable for {down_s:.0f} s (stream.outage_max_s); stopping"
            ) from exc
        wait = min(self.initial_s * 2 ** (self.tries - 1), self.max_s, self.outage_max_s - down_s)
        first_line = summary(exc)
        log.warning(
            "%s: %s unavailable for %.0f s (try %d: %s); trying again in %.1f s",
            self.label, sink, down_s, self.tries, first_line, wait,
        )  # fmt: skip
        return wait

    def recovered(self) -> None:
        if self.since is not None:
            log.warning(
                "%s: done after %d tries, %.0f s after the outage began",
                self.label, self.tries, self.clock() - self.since,
            )  # fmt: skip


def _kill_spec(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, nth = value.partition("@")
    if point not in KILL_POINTS + FAST_PATH_KILL_POINTS:
        known = ", ".join(KILL_POINTS + FAST_PATH_KILL_POINTS)
        raise ValueError(f"{KILL_AT_ENV}={value!r}: unknown point; known: {known}")
    return point, int(nth or 1)


_KILL_AT = _kill_spec(os.environ.get(KILL_AT_ENV))
_kill_hits = 0


def kill_point(name: str) -> None:
    """SIGKILL this process here if ``ECOM_FAULT_KILL_AT`` names this point (the n-th time it is reached)."""
    global _kill_hits
    if _KILL_AT is None or _KILL_AT[0] != name:
        return
    _kill_hits += 1
    if _kill_hits == _KILL_AT[1]:
        log.warning("fault injection: kill -9 at %s", name)
        if os.getpgid(0) == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
