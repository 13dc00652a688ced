"""How the silver stage meets faults: which errors are an unavailable sink, how a batch waits for one, and the
kill points the fault suite uses.

- ``unavailable(exc)``: the sink behind an error that goes away by itself (PostgreSQL down or restarting, the
  connection lost, Kafka not confirming alerts), or None for errors about the data or the code.
- ``Backoff``: the waits between tries of a batch while a sink is unavailable (doubling, bounded by
  ``stream.retry_max_s``), logged with how long the outage lasts; past ``stream.outage_max_s`` it gives up and
  the stream stops, its place kept in the checkpoint.
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
KILL_AT_ENV = "ECOM_FAULT_KILL_AT"


class AlertsNotConfirmed(Exception):
    """Kafka did not confirm every alert of a batch: the batch's alerts are not recorded as published."""


def unavailable(exc: BaseException) -> str | None:
    """The sink an error says is unavailable for now (``postgres``, ``alerts``), or None."""
    from kafka.errors import KafkaError

    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        code = getattr(exc, "pgcode", None)
        if code is None or code[:2] in UNAVAILABLE_CLASSES:
            return "postgres"
    if isinstance(exc, AlertsNotConfirmed | KafkaError):
        return "alerts"
    return None


class Backoff:
    """The waits of one micro-batch while a sink is unavailable."""

    def __init__(self, stream: StreamSettings, batch_id: int, clock=time.monotonic):
        self.initial_s, self.max_s, self.outage_max_s = stream.retry_initial_s, stream.retry_max_s, stream.outage_max_s
        self.batch_id = batch_id
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
                f"batch {self.batch_id}: {sink} unavailable for {down_s:.0f} s (stream.outage_max_s); stopping"
            ) from exc
        wait = min(self.initial_s * 2 ** (self.tries - 1), self.max_s, self.outage_max_s - down_s)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning(
            "batch %d: %s unavailable for %.0f s (try %d: %s); trying again in %.1f s",
            self.batch_id, sink, down_s, self.tries, first_line, wait,
        )  # fmt: skip
        return wait

    def recovered(self) -> None:
        if self.since is not None:
            log.warning(
                "batch %d: done after %d tries, %.0f s after the outage began",
                self.batch_id, self.tries, self.clock() - self.since,
            )  # fmt: skip


def _kill_spec(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, nth = value.partition("@")
    if point not in KILL_POINTS:
        raise ValueError(f"{KILL_AT_ENV}={value!r}: unknown point; known: {', '.join(KILL_POINTS)}")
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
