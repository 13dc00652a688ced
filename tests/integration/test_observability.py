"""Metrics, /healthz and `ecom status` against the real broker, PostgreSQL and a real `ecom stream all`."""

import json
import os
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dashboard import health as page
from ecom import metrics
from ecom.health import Check
from ecom.runtime.postgres import EmbeddedPostgres
from ecom.runtime.process import wait_until
from serving.db import connection
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from tests.conftest import shop_environment
from tests.faults import free_port

pytestmark = pytest.mark.integration

STAGE = "stream_all"


def with_port(settings, process: str, port: int):
    """Settings whose ``process`` serves on ``port``, and the environment variable a child ``ecom`` needs for it."""
    ports = settings.metrics.ports.model_copy(update={process: port})
    moved = settings.model_copy(update={"metrics": settings.metrics.model_copy(update={"ports": ports})})
    return moved, {f"ECOM_METRICS__PORTS__{process.upper()}": str(port)}


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """/metrics of the process on ``port``: (sample name, sorted labels) -> value; {} while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def stage_value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted({"stage": STAGE, **labels}.items()))), 0.0)


def by_label(samples: dict, name: str, label: str) -> dict[str, float]:
    return {dict(key)[label]: v for (n, key), v in samples.items() if n == name and dict(key).get("stage") == STAGE}


def send_orders(settings, seed: int, count: int, bad: int) -> None:
    """``count`` orders stamped now (a rate far above the sending one: no event time in the future) and ``bad``
    records that are not JSON, all broker-confirmed."""
    producer = TransactionProducer(settings)
    for g in TransactionSimulator(settings.simulator, seed=seed).events(
        count, start=datetime.now(UTC), rate_per_s=100_000
    ):
        producer.send(g)
    for i in range(bad):
        producer.send_raw(f"bad-{seed}-{i}", b"{not json")
    producer.close()
    assert producer.stats.failed == 0


def test_metrics_move_as_orders_flow_and_agree_with_the_health_page(isolated):
    port = free_port()
    settings, env = with_port(isolated, STAGE, port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecom.cli", "stream", "all"],
        env=shop_environment(settings, **env),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        send_orders(settings, seed=31, count=300, bad=2)
        assert wait_until(lambda: stage_value(scrape(port), "ecom_records_in_total") >= 302, 240), "no batches"
        first = scrape(port)

        send_orders(settings, seed=32, count=400, bad=3)
        assert wait_until(lambda: stage_value(scrape(port), "ecom_records_in_total") >= 705, 120)

        def caught_up() -> bool:  # every partition has its gauge, and the checkpoint has committed the last batch
            lag = by_label(scrape(port), "ecom_consumer_lag_records", "partition")
            return sorted(lag) == ["0", "1", "2"] and sum(lag.values()) == 0

        assert wait_until(caught_up, 60)
        second = scrape(port)

        for name, labels in [
            ("ecom_records_in_total", {}),
            ("ecom_records_out_total", {"table": "bronze.transactions"}),
            ("ecom_records_out_total", {"table": "silver.transactions"}),
            ("ecom_records_out_total", {"table": "postgres.transactions"}),
            ("ecom_quarantined_records_total", {"reason": "malformed_json"}),
            ("ecom_microbatch_duration_seconds_count", {}),
            ("ecom_end_to_end_latency_seconds_count", {}),
        ]:
            assert stage_value(second, name, **labels) > stage_value(first, name, **labels), (name, labels)
        assert stage_value(second, "ecom_records_out_total", table="silver.transactions") == 700
        assert stage_value(second, "ecom_quarantined_records_total", reason="malformed_json") == 5
        assert stage_value(second, "ecom_end_to_end_latency_seconds_count") == 700  # every order was live
        assert ("ecom_model_version", (("stage", STAGE),)) in second

        lag = by_label(second, "ecom_consumer_lag_records", "partition")
        assert sorted(lag) == ["0", "1", "2"]  # one gauge per partition of the topic
        assert stage_value(second, "ecom_consumer_lag_up") == 1
        # The dashboard's health page reads the same figures.
        frame, _ = page.consumer_lag(settings)
        assert dict(zip(frame["partition"].astype(str), frame["lag"].astype(float), strict=True)) == lag
        with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT reason, sum(records)::float8 FROM quarantine_counts GROUP BY reason")
            assert dict(cur.fetchall()) == by_label(second, "ecom_quarantined_records_total", "reason")

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            body = json.loads(response.read())
        assert response.status == 200 and body["process"] == STAGE and body["checks"]["query"]["ok"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def ecom_status(settings, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "ecom.cli", "status"],
        env=shop_environment(settings, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done


def status_lines(done: subprocess.CompletedProcess) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in done.stdout.splitlines() if line.strip()}


def test_status_exits_0_when_all_answer_and_3_with_postgres_stopped(stack):
    settings = stack
    done = ecom_status(settings)
    assert done.returncode == 0, done.stdout + done.stderr
    states = status_lines(done)
    assert states["kafka"] == states["postgres"] == states["mlflow"] == "running"

    pg = EmbeddedPostgres(settings)
    pg.stop()
    try:
        done = ecom_status(settings)
        assert done.returncode == 3, done.stdout + done.stderr
        states = status_lines(done)
        assert states["postgres"] == "down" and states["kafka"] == "running"
        assert "refused" in next(line for line in done.stdout.splitlines() if line.startswith("postgres"))
    finally:
        pg.start()
    assert wait_until(lambda: ecom_status(settings).returncode == 0, 60)


def test_status_exits_3_when_a_running_stage_reports_itself_down(stack):
    process = "stream_gold"
    settings, env = with_port(stack, process, free_port())
    metrics.stop_serving(process)
    health = metrics.serve(settings, process)
    try:
        health.add("query", lambda: Check(True, "query gold_minute_metrics active"))
        assert ecom_status(settings, **env).returncode == 0
        health.add("query", lambda: Check(False, "query gold_minute_metrics failed: boom"))
        done = ecom_status(settings, **env)
        assert done.returncode == 3
        line = next(line for line in done.stdout.splitlines() if line.startswith(process))
        assert line.split()[1] == "down" and "failed: boom" in line
    finally:
        metrics.stop_serving(process)
