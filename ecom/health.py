"""Health of the processes and services: what ``/healthz`` answers, what ``ecom status`` asks, and the consumer
lag that the metrics endpoint and the dashboard's Pipeline-health page both read.

Layer: ecom core (imports nothing of the layers above). Three parts:

- **Consumer lag** per partition = the topic's end offset (Kafka) minus the offset a stream has committed (the
  newest ``commits/N`` of its Structured Streaming checkpoint, whose ``offsets/N`` holds the next offset to read
  per partition). ``consumer_lag`` is the one function that computes it: the stream's ``/metrics``
  (``ecom.metrics``) and the dashboard (``dashboard.health``) call it, so both show the same figures.
- **Process health**: ``Health`` holds a process's named checks (a stream: its query is active and no sink is
  away); ``/healthz`` runs them and answers JSON with 200 when all pass, 503 when one fails.
- **Service checks** for ``ecom status``: PostgreSQL answers ``select 1``, Kafka a metadata request, the MLflow
  store is readable, and an HTTP health endpoint answers 200 (``probe``). Each has a short timeout.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROBE_TIMEOUT_S = 2.0  # an HTTP health endpoint, the MLflow server
SERVICE_TIMEOUT_S = 3.0  # PostgreSQL connect, Kafka metadata


# -- consumer lag ---------------------------------------------------------------------------------


def parse_offsets_file(text: str) -> dict[str, dict[int, int]]:
    """A Structured Streaming ``offsets/N`` file -> {topic: {partition: next offset}} (Kafka sources only)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("v"):
        raise ValueError("not a streaming offsets file (no version line)")
    found: dict[str, dict[int, int]] = {}
    for line in lines[2:]:  # version, batch metadata, then one line per source
        try:
            source = json.loads(line)
        except json.JSONDecodeError:
            continue  # a non-Kafka source (e.g. a Delta log position) is not JSON of this shape
        if not isinstance(source, dict):
            continue
        for topic, partitions in source.items():
            if isinstance(partitions, dict) and all(str(p).isdigit() for p in partitions):
                found[topic] = {int(p): int(o) for p, o in partitions.items()}
    return found


def committed_offsets(checkpoint: str) -> tuple[int, dict[str, dict[int, int]]] | None:
    """(batch id, offsets) of the newest committed batch of a checkpoint folder, or None without one."""
    root = Path(checkpoint.removeprefix("file:"))
    commits = root / "commits"
    if not commits.is_dir():
        return None
    batches = sorted((int(p.name) for p in commits.iterdir() if p.name.isdigit()), reverse=True)
    for batch in batches:
        offsets = root / "offsets" / str(batch)
        if offsets.is_file():
            return batch, parse_offsets_file(offsets.read_text())
    return None


def lag_rows(end: dict[int, int], committed: dict[int, int]) -> list[dict[str, int]]:
    """Per partition: end offset, committed offset (0 if none yet) and the lag between them (never negative)."""
    return [
        {
            "partition": p,
            "end_offset": end[p],
            "committed": committed.get(p, 0),
            "lag": max(0, end[p] - committed.get(p, 0)),
        }
        for p in sorted(end)
    ]


def consumer_lag(end_offsets: Callable[[], dict[int, int]], topic: str, checkpoint: str) -> tuple[list[dict], str]:
    """Lag per partition (``lag_rows``) of the stream on ``checkpoint`` reading ``topic``, and a note on where it
    comes from. ``end_offsets``: the topic's end offset per partition (``kafka_end_offsets``), asked only when the
    checkpoint is on this machine's disk."""
    if "://" in checkpoint and not checkpoint.startswith("file:"):
        return [], f"the checkpoint ({checkpoint}) is not on this machine's disk"
    end = end_offsets()
    progress = committed_offsets(checkpoint)
    if progress is None:
        return lag_rows(end, {}), "the stream has not committed a batch yet (`ecom stream`)"
    batch, offsets = progress
    return lag_rows(end, offsets.get(topic, {})), f"stream progress: committed batch {batch} ({Path(checkpoint).name})"


def kafka_consumer(kafka, client_id: str):
    """A kafka-python consumer of the brokers ``kafka`` (``KafkaSettings``: servers and security) names that
    joins no group, for metadata and end offsets, with short timeouts."""
    from kafka import KafkaConsumer

    from ecom.kafka_config import client_kwargs

    return KafkaConsumer(
        **client_kwargs(kafka),
        enable_auto_commit=False,
        session_timeout_ms=6000,  # no group is joined; kafka-python wants request > session timeout
        request_timeout_ms=8000,
        bootstrap_timeout_ms=int(SERVICE_TIMEOUT_S * 1000),
        client_id=client_id,
    )


def kafka_end_offsets(consumer, topic: str) -> dict[int, int]:
    """The topic's end offset per partition (one metadata and one offsets request)."""
    from kafka import TopicPartition

    partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    if not tps:
        return {}
    found = consumer.end_offsets(tps, timeout_ms=int(SERVICE_TIMEOUT_S * 1000))
    return {tp.partition: offset for tp, offset in found.items()}


# -- process health: /healthz ---------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One check's answer."""

    ok: bool
    detail: str = ""


class Health:
    """The named checks of one long-running process; ``report`` runs them for ``/healthz``."""

    def __init__(self, process: str, clock: Callable[[], float] = time.time):
        self.process = process
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._checks: dict[str, Callable[[], Check]] = {}

    def add(self, name: str, check: Callable[[], Check]) -> None:
        """Add (or replace, for a stage started again in the same process) the check ``name``."""
        with self._lock:
            self._checks[name] = check

    def report(self) -> tuple[int, dict]:
        """(HTTP status, JSON body): 200 and ``"ok"`` when every check passes, else 503 and ``"down"``. A check
        that raises fails with the exception's type and message."""
        with self._lock:
            checks = dict(self._checks)
        answers: dict[str, dict] = {}
        for name, check in checks.items():
            try:
                answer = check()
            except Exception as exc:  # noqa: BLE001 - a broken check is a failed check, not a broken endpoint
                answer = Check(False, f"{type(exc).__name__}: {exc}")
            answers[name] = {"ok": answer.ok, "detail": answer.detail}
        ok = all(a["ok"] for a in answers.values())
        body = {
            "process": self.process,
            "status": "ok" if ok else "down",
            "pid": os.getpid(),
            "uptime_s": round(self.clock() - self.started, 1),
            "checks": answers,
        }
        return (200 if ok else 503), body


def query_check(query) -> Callable[[], Check]:
    """A stream's check: its Structured Streaming query is active and has not failed."""

    def check() -> Check:
        if query.isActive:
            return Check(True, f"query {query.name} active")
        error = query.exception()
        return Check(False, f"query {query.name} {'failed: ' + str(error)[:300] if error else 'stopped'}")

    return check


# -- service checks: ecom status ------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What an HTTP health endpoint answered: ``up`` (200), ``down`` (another status, a timeout, a bad answer) or
    ``absent`` (nothing listens: the process does not run)."""

    state: str
    detail: str = ""
    pid: int | None = None  # the process's own, from a ``/healthz`` answer


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> Probe:
    """GET ``url``: 200 is up; a JSON body's failing checks (``/healthz``) become the detail."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - our own configured URL
            return Probe("up", *_health_detail(response.read()))
    except urllib.error.HTTPError as exc:
        detail, pid = _health_detail(exc.read())
        return Probe("down", f"HTTP {exc.code}: {detail or exc.reason}", pid)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return Probe("absent", "nothing listens")
        return Probe("down", f"no answer: {exc.reason}")
    except (TimeoutError, OSError) as exc:
        return Probe("down", f"no answer: {type(exc).__name__}")


def _health_detail(body: bytes) -> tuple[str, int | None]:
    """A ``/healthz`` JSON body -> (its failing checks' details, all checks' when none fails; its pid); other
    bodies -> ('', None)."""
    try:
        report = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", None
    if not isinstance(report, dict) or not isinstance(report.get("checks"), dict):
        return "", None
    checks = report["checks"]
    failing = [c.get("detail", "") for c in checks.values() if not c.get("ok")]
    pid = report.get("pid")
    return "; ".join(failing or [c.get("detail", "") for c in checks.values()]), pid if isinstance(pid, int) else None


def check_postgres(dsn: str, timeout_s: float = SERVICE_TIMEOUT_S) -> Check:
    """PostgreSQL answers ``select 1`` on ``dsn``."""
    import psycopg2

    try:
        conn = psycopg2.connect(dsn, connect_timeout=max(1, round(timeout_s)))
    except psycopg2.Error as exc:
        return Check(False, _first_line(exc))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
            return Check(True, f"select 1 answered (server {conn.server_version // 10000})")
    except psycopg2.Error as exc:
        return Check(False, _first_line(exc))
    finally:
        conn.close()


def check_kafka(kafka, topic: str) -> Check:
    """Kafka answers a metadata request; the detail names ``topic``'s partitions."""
    from kafka.errors import KafkaError

    try:
        consumer = kafka_consumer(kafka, "ecom-status")
    except KafkaError as exc:
        return Check(False, f"no metadata answer: {type(exc).__name__}")
    try:
        topics = consumer.topics()
        partitions = consumer.partitions_for_topic(topic) if topic in topics else None
    except KafkaError as exc:
        return Check(False, f"no metadata answer: {type(exc).__name__}")
    finally:
        consumer.close()
    where = f"{topic}: {len(partitions)} partitions" if partitions else f"topic {topic} missing"
    return Check(True, f"metadata: {len(topics)} topics, {where}")


def check_mlflow(tracking_uri: str) -> Check:
    """The MLflow store is reachable: a local SQLite store is opened read-only and queried, a tracking server's
    ``/health`` answers; any other store is asked for one experiment through MLflow's client."""
    if tracking_uri.startswith("sqlite:///"):
        import sqlite3

        path = tracking_uri[len("sqlite:///") :]
        if not Path(path).is_file():
            return Check(False, f"no store at {path} (`ecom up` makes it)")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=SERVICE_TIMEOUT_S)
            try:
                (count,) = conn.execute("SELECT count(*) FROM experiments").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return Check(False, f"store unreadable: {exc}")
        return Check(True, f"local store, {count} experiments")
    if tracking_uri.startswith(("http://", "https://")):
        answer = probe(tracking_uri.rstrip("/") + "/health")
        return Check(answer.state == "up", "tracking server answers" if answer.state == "up" else answer.detail)
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - whatever the store's client raises, it is not reachable
        return Check(False, f"{type(exc).__name__}: {_first_line(exc)}")
    return Check(True, "store answers")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
