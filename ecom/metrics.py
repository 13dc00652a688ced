"""Prometheus metrics of the long-running processes, and the HTTP endpoint that serves them with ``/healthz``.

Layer: ecom core (imports nothing of the layers above). Every metric is defined here once, with its name,
help and labels (the list is in docs/observability.md). A stage updates them through the few helpers below
and starts its process's endpoint with ``serve``; ``serve(settings, process)`` listens on
``metrics.host:metrics.ports.<process>`` and answers:

- ``GET /metrics``: every metric of the process in Prometheus' text format (``prometheus_client``'s default
  registry, so the process's CPU, memory and GC figures come too);
- ``GET /healthz``: the process's checks (``ecom.health.Health``) as JSON, 200 or 503.

Metrics that are read rather than counted are computed when Prometheus scrapes: the consumer lag per partition
(``watch_lag``: ``ecom.health.consumer_lag``, the function the dashboard's health page calls) and the
producer's delivery counts (``watch_producer``). Where no batch function of ours runs (``ecom stream bronze``),
``follow_progress`` counts the query's batches from Spark's progress reports. The end-to-end latency is observed for the orders whose event
time lies within ``LIVE_WINDOW_S`` of the moment they became queryable in PostgreSQL, the window of the
dashboard's latency panel; a backfill's past orders are not latency.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ecom.health import Health, consumer_lag, kafka_consumer, kafka_end_offsets
from ecom.settings import Settings

log = logging.getLogger(__name__)
disable_created_metrics()  # no ``*_created`` series: a counter's start is seen in its resets

LIVE_WINDOW_S = 600.0  # orders older than this when served are history, not latency (the dashboard's 10 minutes)
LAG_TTL_S = 4.0  # a scrape reuses the lag read this recently (Kafka end offsets and the checkpoint)
PROGRESS_POLL_S = 2.0  # ``follow_progress`` reads a query's progress this often
REFUSED_PREFIX = "sink_refused:"

# -- streaming stages (label ``stage``: stream_all, stream_bronze, stream_silver, stream_gold) ----------
RECORDS_IN = Counter("ecom_records_in", "Records a stage's micro-batches read (Kafka records or Delta rows)", ["stage"])
RECORDS_OUT = Counter("ecom_records_out", "Rows a stage wrote, per table", ["stage", "table"])
QUARANTINED = Counter(
    "ecom_quarantined_records",
    "Records routed to silver/quarantine, per reason (a record failing two rules counts under both)",
    ["stage", "reason"],
)
ALERTS = Counter("ecom_fraud_alerts", "Fraud alerts raised (orders scored at or above the alert threshold)", ["stage"])
MICROBATCH_SECONDS = Histogram(
    "ecom_microbatch_duration_seconds",
    "Wall time of one micro-batch, from its start to its last write",
    ["stage"],
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 120),
)
LATENCY_SECONDS = Histogram(
    "ecom_end_to_end_latency_seconds",
    "Order event time to queryable in PostgreSQL, for orders within the live window",
    ["stage"],
    buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 120, 300, 600),
)
LAST_MICROBATCH = Gauge(
    "ecom_last_microbatch_timestamp_seconds", "When the stage's newest micro-batch ended", ["stage"]
)
MODEL_VERSION = Gauge(
    "ecom_model_version", "Registry version of the fraud model the stream scores with (0: none registered)", ["stage"]
)

# -- gold batch jobs (label ``job``: dimensions, rfm, cohorts, recommendations, minutes, summaries) ------
BATCH_JOB_RUNS = Counter("ecom_batch_job_runs", "Gold batch job runs, per outcome", ["job", "status"])
BATCH_JOB_SECONDS = Gauge("ecom_batch_job_duration_seconds", "Wall time of the job's newest run", ["job"])
BATCH_JOB_ROWS = Counter("ecom_batch_job_rows_written", "Rows the job wrote, per table", ["job", "table"])
BATCH_JOB_LAST_SUCCESS = Gauge(
    "ecom_batch_job_last_success_timestamp_seconds", "When the job's newest successful run ended", ["job"]
)

# -- the per-order alert path (``ecom stream alerts``; process ``stream_alerts``) and its agreement -------
FAST_PATH_RECORDS = Counter(
    "ecom_fast_path_records", "Orders-topic records the per-order path read, per outcome", ["outcome"]
)
FAST_PATH_ALERTS = Counter(
    "ecom_fast_path_alerts", "Alerts the per-order path wrote (new) or found written (existing)", ["outcome"]
)
FAST_PATH_LATENCY_SECONDS = Histogram(
    "ecom_fast_path_alert_latency_seconds",
    "Order's Kafka timestamp to its alert committed in PostgreSQL by the per-order path",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5),
)
FAST_PATH_LAST_POLL = Gauge("ecom_fast_path_last_poll_timestamp_seconds", "When the per-order path last polled")
ALERT_PATH_OUTCOMES = Counter(
    "ecom_alert_path_outcomes",
    "The micro-batch's alerts against the per-order path's (confirmed, corrected, withdrawn, micro_batch_only)",
    ["outcome"],
)


def quarantine_reason(reason: str) -> str:
    """A quarantine reason as counted: a rule's name as it is; a sink's refusal without its message
    (``sink_refused:<sink>``), so the label set stays small."""
    if reason.startswith(REFUSED_PREFIX):
        return REFUSED_PREFIX + reason[len(REFUSED_PREFIX) :].split(":", 1)[0]
    return reason


def quarantine_counts(reasons_per_record: Iterable[Sequence[str] | None]) -> dict[str, int]:
    """Records per reason (``quarantine_reason``) from each quarantined record's list of reasons."""
    counts: dict[str, int] = {}
    for reasons in reasons_per_record:
        for reason in set(quarantine_reason(r) for r in reasons or ()):
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def live_latencies(event_times_s: Iterable[float], served_s: float) -> list[float]:
    """Seconds from each event time (epoch seconds) to ``served_s``, for the orders within ``LIVE_WINDOW_S``."""
    return [served_s - t for t in event_times_s if 0 <= served_s - t <= LIVE_WINDOW_S]


def model_version_number(version: str | None) -> float:
    """A registry version as the gauge's value: its number, 0 for none (or one that is not a number)."""
    try:
        return float(version) if version else 0.0
    except ValueError:
        return 0.0


def record_microbatch(
    stage: str,
    *,
    records_in: int,
    written: Mapping[str, int],
    duration_s: float,
    quarantine: Mapping[str, int] | None = None,
    alerts: int = 0,
    latencies_s: Iterable[float] = (),
    model_version: str | None = None,
    ended_at: float | None = None,
) -> None:
    """Count one finished micro-batch of ``stage``: records read, rows written per table, quarantine per reason,
    alerts, its duration and the latencies of its live orders; ``model_version`` if the stage scores."""
    RECORDS_IN.labels(stage).inc(records_in)
    for table, rows in written.items():
        RECORDS_OUT.labels(stage, table).inc(rows)
    for reason, records in (quarantine or {}).items():
        QUARANTINED.labels(stage, reason).inc(records)
    if alerts:
        ALERTS.labels(stage).inc(alerts)
    latency = LATENCY_SECONDS.labels(stage)
    for seconds in latencies_s:
        latency.observe(seconds)
    MICROBATCH_SECONDS.labels(stage).observe(duration_s)
    LAST_MICROBATCH.labels(stage).set(time.time() if ended_at is None else ended_at)
    if model_version is not None:
        MODEL_VERSION.labels(stage).set(model_version_number(model_version))


def record_batch_job(job: str, duration_s: float, written: Mapping[str, int] | None) -> None:
    """Count one run of a gold batch job: ``written`` (rows per table) for a success, None for a failure."""
    BATCH_JOB_RUNS.labels(job, "failed" if written is None else "succeeded").inc()
    BATCH_JOB_SECONDS.labels(job).set(duration_s)
    if written is not None:
        for table, rows in written.items():
            BATCH_JOB_ROWS.labels(job, table).inc(rows)
        BATCH_JOB_LAST_SUCCESS.labels(job).set_to_current_time()


def progress_batches(progresses: Iterable[Mapping], after: int) -> list[tuple[int, int, float]]:
    """(batch id, input rows, seconds) of each Structured Streaming progress report of a batch after ``after``,
    once per batch (Spark repeats the last batch's id in its idle reports)."""
    found: dict[int, tuple[int, int, float]] = {}
    for progress in progresses:
        batch_id = int(progress["batchId"])
        if batch_id > after and batch_id not in found:
            seconds = (progress.get("durationMs") or {}).get("triggerExecution", 0) / 1000
            found[batch_id] = (batch_id, int(progress.get("numInputRows") or 0), seconds)
    return [found[b] for b in sorted(found)]


def follow_progress(stage: str, query, table: str) -> threading.Thread:
    """Count the micro-batches of a query without a ``foreachBatch`` of ours (``ecom stream bronze``) from Spark's
    progress reports, read every ``PROGRESS_POLL_S`` until the query ends: each batch's input rows as read and
    as written to ``table``, and its duration."""

    def follow() -> None:
        last = -1
        while True:
            active = query.isActive
            for batch_id, rows, seconds in progress_batches(query.recentProgress, last):
                record_microbatch(stage, records_in=rows, written={table: rows}, duration_s=seconds)
                last = batch_id
            if not active:
                return
            time.sleep(PROGRESS_POLL_S)

    thread = threading.Thread(target=follow, name=f"progress-{stage}", daemon=True)
    thread.start()
    return thread


# -- read at scrape time --------------------------------------------------------------------------


class LagCollector:
    """``ecom_consumer_lag_records{stage, topic, partition}``: ``ecom.health.consumer_lag`` for the stages that
    read Kafka, read at most every ``LAG_TTL_S``. A source that does not answer gives no samples and
    ``ecom_consumer_lag_up`` 0."""

    def __init__(self, kafka):
        self.kafka = kafka  # KafkaSettings: servers and security
        self._lock = threading.Lock()
        self._consumer = None
        self._stages: dict[str, tuple[str, str]] = {}  # stage -> (topic, checkpoint)
        self._cached: tuple[float, list[tuple[str, str, list[dict] | None]]] | None = None

    def watch(self, stage: str, topic: str, checkpoint: str) -> None:
        with self._lock:
            self._stages[stage] = (topic, checkpoint)
            self._cached = None

    def _end_offsets(self, topic: str) -> dict[int, int]:
        if self._consumer is None:
            self._consumer = kafka_consumer(self.kafka, "ecom-metrics")
        return kafka_end_offsets(self._consumer, topic)

    def read(self) -> list[tuple[str, str, list[dict] | None]]:
        """(stage, topic, lag rows or None if Kafka or the checkpoint did not answer) per watched stage."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < LAG_TTL_S:
                return self._cached[1]
            found = []
            for stage, (topic, checkpoint) in self._stages.items():
                try:
                    rows, _ = consumer_lag(lambda t=topic: self._end_offsets(t), topic, checkpoint)
                except Exception as exc:  # noqa: BLE001 - a scrape must answer even when Kafka does not
                    log.debug("consumer lag of %s not read: %r", stage, exc)
                    self._close()
                    rows = None
                found.append((stage, topic, rows))
            self._cached = (time.monotonic(), found)
            return found

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            finally:
                self._consumer = None

    def collect(self):
        lag = GaugeMetricFamily(
            "ecom_consumer_lag_records",
            "Kafka end offset minus the offset the stage's checkpoint has committed, per partition",
            labels=["stage", "topic", "partition"],
        )
        up = GaugeMetricFamily(
            "ecom_consumer_lag_up", "1 if the lag could be read (Kafka and the checkpoint answered)", labels=["stage"]
        )
        for stage, topic, rows in self.read():
            up.add_metric([stage], 0 if rows is None else 1)
            for row in rows or ():
                lag.add_metric([stage, topic, str(row["partition"])], row["lag"])
        yield lag
        yield up


class ProducerCollector:
    """The producer's delivery counts (``simulator.producer.DeliveryStats``), read when Prometheus scrapes."""

    def __init__(self):
        self.stats: Callable[[], object] | None = None

    def collect(self):
        stats = self.stats() if self.stats is not None else None
        if stats is None:
            return
        for name, help_text, value in (
            ("ecom_producer_sent", "Orders and labels handed to the Kafka client", stats.sent),
            ("ecom_producer_delivered", "Sends the broker acknowledged", stats.delivered),
            ("ecom_producer_failed", "Sends that failed or had no outcome when their client closed", stats.failed),
            ("ecom_producer_client_restarts", "Stalled Kafka clients replaced by a fresh one", stats.client_restarts),
        ):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], value)
            yield family
        pending = GaugeMetricFamily("ecom_producer_pending", "Sends without an outcome yet")
        pending.add_metric([], stats.pending)
        yield pending


_collectors_lock = threading.Lock()
_lag: dict[str, LagCollector] = {}  # bootstrap servers -> its collector
_producer: ProducerCollector | None = None


def watch_lag(stage: str, kafka, topic: str, checkpoint: str) -> None:
    """Expose the consumer lag of the stream on ``checkpoint`` reading ``topic`` of the brokers ``kafka``
    (``KafkaSettings``) names."""
    bootstrap = kafka.bootstrap_servers
    with _collectors_lock:
        if bootstrap not in _lag:
            _lag[bootstrap] = LagCollector(kafka)
            REGISTRY.register(_lag[bootstrap])
        _lag[bootstrap].watch(stage, topic, checkpoint)


def watch_producer(stats: Callable[[], object]) -> None:
    """Expose the delivery counts ``stats()`` returns (a ``DeliveryStats``; the newest producer's)."""
    global _producer
    with _collectors_lock:
        if _producer is None:
            _producer = ProducerCollector()
            REGISTRY.register(_producer)
        _producer.stats = stats


# -- the endpoint ---------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
        elif path == "/healthz":
            status, body = self.server.health.report()
            self._answer(status, "application/json", json.dumps(body).encode())
        else:
            self._answer(404, "text/plain; charset=utf-8", b"/metrics or /healthz\n")

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:  # no access log line per scrape
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], health: Health):
        self.health = health
        super().__init__(address, _Handler)


_servers_lock = threading.Lock()
_servers: dict[str, _Server] = {}  # process -> its endpoint, in this Python process
_health: dict[str, Health] = {}


def serve(settings: Settings, process: str) -> Health:
    """Serve ``/metrics`` and ``/healthz`` of ``process`` on its configured port (once per Python process; a
    stage started again reuses it) and return its ``Health`` to add checks to. With ``metrics.enabled`` false,
    or the port taken, nothing listens (logged) and the process runs on."""
    with _servers_lock:
        health = _health.setdefault(process, Health(process))
        if process in _servers or not settings.metrics.enabled:
            return health
        address = (settings.metrics.host, settings.metrics.port(process))
        try:
            server = _Server(address, health)
        except OSError as exc:
            log.warning("metrics and /healthz of %s not served on %s:%d: %s", process, *address, exc)
            return health
        threading.Thread(target=server.serve_forever, name=f"metrics-{process}", daemon=True).start()
        _servers[process] = server
        log.info("metrics on http://%s:%d/metrics, health on /healthz (%s)", *address, process)
        return health


def serving_address(process: str) -> tuple[str, int] | None:
    """(host, port) ``process``'s endpoint listens on in this Python process, None if it does not."""
    with _servers_lock:
        server = _servers.get(process)
    return None if server is None else server.server_address[:2]


def stop_serving(process: str) -> None:
    """Stop ``process``'s endpoint in this Python process (tests)."""
    with _servers_lock:
        server = _servers.pop(process, None)
    if server is not None:
        server.shutdown()
        server.server_close()
