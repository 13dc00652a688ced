"""The embedded stack: real Kafka broker and PostgreSQL, started and checked for real."""

import socket

import pytest
from kafka.admin import KafkaAdminClient

from ecom.runtime import stack as runtime_stack
from ecom.runtime.process import ManagedProcess, ServiceError, ensure_port_free
from serving.db import connection, migrate, migration_files

pytestmark = pytest.mark.integration


def test_up_twice_is_harmless_and_topics_exist(stack):
    settings = stack
    lines = []
    runtime_stack.up(settings, log=lines.append)
    assert any("already running" in line for line in lines if line.startswith("kafka"))
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        topics = {t["name"]: t for t in admin.describe_topics(list(settings.kafka.topics.values()))}
    finally:
        admin.close()
    assert len(topics["ecommerce-transactions"]["partitions"]) == 3
    assert {"fraud-alerts", "fraud-labels"} <= set(topics)


def test_status_reports_running_services(stack):
    statuses = {s.name: s for s in runtime_stack.status(stack)}
    assert statuses["kafka"].running and statuses["kafka"].pid
    assert statuses["postgres"].running and statuses["postgres"].pid


def test_migrations_are_applied_once(stack):
    dsn = stack.postgres.dsn
    assert migrate(dsn) == []
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in cur.fetchall()] == [v for v, _ in migration_files()]
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"
        )
        tables = {r[0] for r in cur.fetchall()}
    assert {
        "transactions", "customers", "products", "fraud_alerts", "analytics_summaries", "recommendations", "pipeline_batches",
    } <= tables  # fmt: skip


def test_port_taken_is_a_one_line_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServiceError, match=f"port 127.0.0.1:{port} for Kafka is already taken"):
            ensure_port_free("127.0.0.1", port, "Kafka")


def test_stale_pid_file_is_cleaned_up(tmp_path):
    proc = ManagedProcess("ghost", tmp_path)
    proc.pid_file.write_text("999999")  # no such process
    assert proc.pid() is None
    assert not proc.pid_file.exists()
    assert proc.stop() is False


def test_managed_process_stops_its_whole_group(tmp_path):
    proc = ManagedProcess("sleeper", tmp_path)
    pid = proc.start(["bash", "-c", "sleep 300 & sleep 300"])
    assert proc.is_running()
    assert proc.stop(timeout_s=5)
    assert _live_members_of_group(pid) == []


def _live_members_of_group(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (a zombie waits only for its parent to reap it)."""
    from pathlib import Path

    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live
