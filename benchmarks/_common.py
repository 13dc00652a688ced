"""Helpers shared by the benchmarks: settings, the machine, services, scratch topics and streams, the result line.

Every benchmark prints one JSON object as its last line. ``services`` starts
the embedded stack only when Kafka is not running and stops only what it
started; ``scratch_topics`` gives a benchmark its own topics and deletes them;
``scratch_stream`` runs ``ecom stream all`` as a child process on its own
topics, lake folder and database (optionally its own MLflow registry), all
removed at the end.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from ecom.runtime.process import ManagedProcess
from ecom.settings import Settings, child_environment, load_settings
from serving.db import connection, drop_database, recreate_database
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from simulator.runner import RunResult, run_live


def bench_settings() -> Settings:
    """Settings of ``$ECOM_PROFILE`` (default ``local``)."""
    return load_settings(os.environ.get("ECOM_PROFILE", "local"))


def machine_info() -> dict:
    """What the numbers were measured on (load averages, since the machine may be shared)."""
    info = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    for package in ("kafka-python", "pyspark"):
        with suppress(metadata.PackageNotFoundError):
            info[package] = metadata.version(package)
    if hasattr(os, "getloadavg"):
        info["load_avg_1m_at_start"] = round(os.getloadavg()[0], 2)
    return info


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None if unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    """Progress for people, on stderr, so stdout ends with the JSON line."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def services(settings: Settings) -> Iterator[bool]:
    """The embedded stack, started here only if Kafka is not running; yields whether it was started here."""
    from ecom.runtime import stack
    from ecom.runtime.kafka import EmbeddedKafka

    started = False
    if settings.kafka.embedded and not EmbeddedKafka(settings).is_running():
        log(f"starting the embedded stack of profile {settings.profile} ...")
        stack.up(settings, log=log)
        started = True
    try:
        yield started
    finally:
        if started:
            log("stopping the embedded stack this benchmark started ...")
            stack.down(settings, log=log)


@contextmanager
def scratch_topics(
    settings: Settings, prefix: str, partitions: dict[str, int], configs: dict[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """Fresh topics ``<prefix>-<timestamp>-<suffix>`` (suffix -> partitions, optional topic configs), deleted afterwards."""
    from kafka.admin import KafkaAdminClient, NewTopic

    from ecom.kafka_config import client_kwargs

    stamp = time.strftime("%Y%m%d%H%M%S")
    names = {suffix: f"{prefix}-{stamp}-{suffix}" for suffix in partitions}
    admin = KafkaAdminClient(**client_kwargs(settings))
    try:
        admin.create_topics(
            [
                NewTopic(names[s], n, settings.kafka.topic_replication_factor, topic_configs=configs or {})
                for s, n in partitions.items()
            ]
        )
        deadline = time.monotonic() + 30
        while not set(names.values()) <= set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.2)
        yield names
    finally:
        try:
            admin.delete_topics(list(names.values()))
        finally:
            admin.close()


def epoch(iso: str) -> float:
    """Seconds since the epoch of an ISO-8601 event time (``...Z``)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: int) -> float | None:
    """The ``q``-th percentile (inclusive method), rounded to 0.1; None without values."""
    if not values:
        return None
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1) if len(values) > 1 else values[0]


BATCH_LINE = re.compile(r"batch (\d+): (.*) ms$")


def step_medians(log_text: str) -> dict:
    """Median milliseconds per micro-batch step, from the stream's 'batch N: step ms, ...' log lines."""
    steps: dict[str, list[float]] = {}
    batches = 0
    for line in log_text.splitlines():
        match = BATCH_LINE.search(line.strip())
        if not match:
            continue
        batches += 1
        for part in match.group(2).split(", "):
            name, _, value = part.rpartition(" ")
            steps.setdefault(name, []).append(float(value))
    medians = {name: round(statistics.median(values), 1) for name, values in steps.items()}
    return {"batches": batches, "median_ms": medians, "median_total_ms": round(sum(medians.values()), 1)}


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants (the stream's JVM, Spark's
    Python workers), from /proc; 0 for no process."""
    total, stack, tick = 0, [pid] if pid else [], os.sysconf("SC_CLK_TCK")
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
            for task in os.listdir(f"/proc/{p}/task"):
                stack += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    return total / tick


@dataclass
class ScratchStream:
    """A running ``ecom stream all`` child process and the scratch settings it runs with."""

    settings: Settings
    process: ManagedProcess
    sent: int = 0  # orders sent to its topic through ``drive``
    fast_path: ManagedProcess | None = None  # ``ecom stream alerts`` beside it, when asked for
    seed: int = 1  # of the one simulated shop every order sent to this stream comes from
    shop: TransactionSimulator | None = None  # made by the first ``backfill`` or ``drive``, continued after

    @property
    def dsn(self) -> str:
        return self.settings.postgres.dsn

    def served(self) -> int:
        """Orders queryable in PostgreSQL ``transactions``."""
        with connection(self.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM transactions")
            return cur.fetchone()[0]

    def drive(self, rate: float, seconds: float, on_event: Callable[[dict], None] | None = None) -> RunResult:
        """Send live orders of this stream's shop at ``rate`` per second for ``seconds`` from this process.

        One shop for every call: customer ids are the simulator's, so orders of two independently seeded shops
        would give one customer id two unrelated histories (other devices, other countries) and half of the
        orders would look like account takeovers."""
        if self.shop is None:
            self.shop = TransactionSimulator(self.settings.simulator, seed=self.seed)
        producer = TransactionProducer(self.settings)
        run = run_live(self.settings, producer, self.shop, rate, duration=seconds, progress=False, on_event=on_event)
        self.sent += run.transactions
        return run

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by the stream's process tree and by the fast path's."""
        out = {"stream": tree_cpu_seconds(self.process.pid())}
        if self.fast_path is not None:
            out["fast_path"] = tree_cpu_seconds(self.fast_path.pid())
        return out

    def cpu_since(self, before: dict[str, float]) -> dict[str, float]:
        """CPU seconds used since ``before`` (an earlier ``cpu_seconds``), per process tree."""
        return {k: round(v - before[k], 1) for k, v in self.cpu_seconds().items()}

    def backfill(self, count: int, days: float) -> None:
        """``count`` orders of ``days`` of history before now, as ``ecom generate --backfill-days`` sends them;
        the live orders of later ``drive`` calls continue this shop, so its fraud hits customers with history.
        Only before any live order."""
        if self.shop is not None:
            raise RuntimeError("a backfill comes before the stream's first live order")
        self.shop = TransactionSimulator(self.settings.simulator, seed=self.seed, expected_orders=count)
        producer = TransactionProducer(self.settings)
        try:
            stats = producer.send_all(self.shop.backfill(count, days=days, end=datetime.now(UTC)))
        finally:
            producer.close()
        if stats.failed:
            raise RuntimeError(f"{stats.failed:,} of {count:,} history orders were not acknowledged")
        self.sent += count

    def wait_for_first_orders(self, timeout_s: float = 180) -> float:
        """Send a few warm-up orders and wait until they are served; returns the seconds it took."""
        started = time.monotonic()
        self.drive(50, 2)
        while time.monotonic() - started < timeout_s:
            if self.served() > 0:
                return time.monotonic() - started
            time.sleep(0.5)
        raise RuntimeError(f"the stream served nothing within the timeout; see {self.process.log_file}")

    def warm_up(self, rate: float, seconds: float, timeout_s: float = 300) -> float:
        """Orders at ``rate`` for ``seconds``, then wait until all are served: the JVM's JIT, Spark's first jobs and
        the model's first calls are behind the stream before anything is measured (its first 20-30 s of batches
        at 1,000/s take two to five times the steady state's). Returns the seconds it took."""
        started = time.monotonic()
        if seconds > 0:
            self.drive(rate, seconds)
            if not self.wait_until_all_served(timeout_s):
                raise RuntimeError(f"the stream did not catch up after its warm-up; see {self.process.log_file}")
        return time.monotonic() - started

    def wait_for_fast_path(self, timeout_s: float = 120) -> float:
        """Wait until the fast path reads the orders topic (its log says so); returns the seconds it took."""
        started = time.monotonic()
        if self.fast_path is None:
            return 0.0
        while time.monotonic() - started < timeout_s:
            if "fast path: reading" in self.fast_path.log_tail(200):
                return time.monotonic() - started
            if not self.fast_path.is_running():
                break
            time.sleep(0.5)
        raise RuntimeError(f"the fast path did not start reading; see {self.fast_path.log_file}")

    def wait_until_all_served(self, timeout_s: float) -> bool:
        """Wait until every order sent through ``drive`` is in PostgreSQL; False if the timeout came first."""
        deadline = time.monotonic() + timeout_s
        while self.served() < self.sent:
            if time.monotonic() > deadline:
                return False
            time.sleep(1)
        return True


@contextmanager
def scratch_stream(
    base: Settings,
    name: str,
    trigger: str = "0 seconds",
    own_registry: bool = False,
    prepare: Callable[[Settings], None] | None = None,
    partitions: int = 3,
    fast_path: bool = False,
) -> Iterator[ScratchStream]:
    """``ecom stream all`` in a child process on its own topics, lake folder and database, all removed afterwards.

    ``own_registry`` gives it an empty MLflow store of its own (otherwise it
    scores with the profile's champion, if any); ``prepare`` is called with
    the scratch settings before the stream starts (e.g. to register a model).
    The stream's log stays at ``process.log_file``. ``partitions``: of its orders topic. ``fast_path``: the
    per-order alert path (``ecom stream alerts``) runs beside it, on the same topics, lake and database.
    """
    stamp = time.strftime("%Y%m%d%H%M%S")
    root = f"{base.data_dir}/bench/{name}-{stamp}"
    with scratch_topics(base, f"bench-{name}", {"tx": partitions, "alerts": 1}) as topics:
        kafka_topics = {**base.kafka.topics, "transactions": topics["tx"], "alerts": topics["alerts"]}
        update = {
            "postgres": base.postgres.model_copy(update={"database": f"bench_{name}_{stamp}"}),
            "kafka": base.kafka.model_copy(update={"topics": kafka_topics}),
            "lake": base.lake.model_copy(update={"root": f"{root}/lake", "checkpoints": f"{root}/checkpoints"}),
        }
        if own_registry:
            update["mlflow"] = base.mlflow.model_copy(
                update={
                    "tracking_uri": f"sqlite:///{root}/mlflow/mlflow.db",
                    "artifact_root": f"{root}/mlflow/artifacts",
                }
            )
        settings = base.model_copy(update=update)
        recreate_database(settings.postgres.dsn)
        process = ManagedProcess(f"bench-{name}-stream-{stamp}", settings.run_dir)
        alerts = ManagedProcess(f"bench-{name}-alerts-{stamp}", settings.run_dir) if fast_path else None
        try:
            if prepare is not None:
                prepare(settings)
            env = {**child_environment(settings, base={}), "ECOM_STREAM__TRIGGER_INTERVAL": trigger}
            process.start([sys.executable, "-m", "ecom.cli", "stream", "all"], env=env)
            if alerts is not None:
                alerts.start([sys.executable, "-m", "ecom.cli", "stream", "alerts"], env=env)
            yield ScratchStream(settings, process, fast_path=alerts)
        finally:
            if alerts is not None:
                alerts.stop()
            process.stop()
            drop_database(settings.postgres.dsn)
            shutil.rmtree(root, ignore_errors=True)


def emit(result: dict) -> None:
    """The benchmark's result: one JSON object on the last line of stdout."""
    print(json.dumps(result, sort_keys=False), flush=True)
