"""Consumer lag from a checkpoint and end offsets, a process's /healthz, and the probes of `ecom status`,
without Kafka or PostgreSQL."""

import json
import socket

import pytest

from ecom import metrics
from ecom.health import (
    Check,
    Health,
    committed_offsets,
    consumer_lag,
    lag_rows,
    parse_offsets_file,
    probe,
)
from ecom.settings import load_settings

OFFSETS = """v1
{"batchWatermarkMs":0,"batchTimestampMs":1795660000000,"conf":{"spark.sql.shuffle.partitions":"2"}}
{"ecommerce-transactions":{"2":40,"1":17,"0":25}}
"""


def write_checkpoint(root, committed: str, planned: str | None = None) -> None:
    """A checkpoint folder whose batch 6 is committed (``committed``) and batch 7 only planned (``planned``)."""
    (root / "offsets").mkdir(parents=True)
    (root / "commits").mkdir()
    (root / "offsets" / "6").write_text(committed)
    if planned is not None:
        (root / "offsets" / "7").write_text(planned)
    (root / "commits" / "6").write_text("v1\n{}")
    (root / "commits" / ".6.crc").write_text("")


def test_an_offsets_file_gives_the_next_offset_per_partition():
    assert parse_offsets_file(OFFSETS) == {"ecommerce-transactions": {0: 25, 1: 17, 2: 40}}


def test_something_that_is_not_an_offsets_file_is_an_error():
    with pytest.raises(ValueError, match="offsets file"):
        parse_offsets_file('{"a": 1}')


def test_the_newest_committed_batch_is_used_not_a_planned_one(tmp_path):
    write_checkpoint(tmp_path, OFFSETS, planned=OFFSETS.replace('"2":40', '"2":99'))
    batch, offsets = committed_offsets(str(tmp_path))
    assert batch == 6 and offsets["ecommerce-transactions"][2] == 40
    assert committed_offsets(str(tmp_path / "missing")) is None


def test_lag_is_end_minus_committed_per_partition_and_never_negative():
    rows = lag_rows({0: 30, 1: 17, 2: 45}, {0: 25, 1: 20})
    assert [(r["partition"], r["committed"], r["lag"]) for r in rows] == [(0, 25, 5), (1, 20, 0), (2, 0, 45)]


def test_consumer_lag_reads_the_checkpoint_and_says_where_it_comes_from(tmp_path):
    write_checkpoint(tmp_path / "ingest_transactions", OFFSETS)
    ends = {0: 30, 1: 17, 2: 45, 3: 4}  # a partition the stream has not read yet lags by all it holds
    rows, note = consumer_lag(lambda: ends, "ecommerce-transactions", str(tmp_path / "ingest_transactions"))
    assert [r["lag"] for r in rows] == [5, 0, 5, 4]
    assert note == "stream progress: committed batch 6 (ingest_transactions)"
    rows, note = consumer_lag(lambda: ends, "ecommerce-transactions", str(tmp_path / "none"))
    assert [r["lag"] for r in rows] == [30, 17, 45, 4] and "has not committed" in note


def test_a_checkpoint_on_an_object_store_is_not_read_and_kafka_not_asked():
    def never() -> dict:
        raise AssertionError("Kafka asked")

    rows, note = consumer_lag(never, "t", "s3a://bucket/checkpoints/ingest")
    assert rows == [] and "not on this machine's disk" in note


def test_health_is_200_when_every_check_passes_and_503_with_the_failing_one_named():
    clock = iter([100.0, 112.5, 113.0]).__next__
    health = Health("stream_all", clock=clock)
    health.add("query", lambda: Check(True, "query ingest_transactions active"))
    status, body = health.report()
    assert status == 200 and body["status"] == "ok" and body["uptime_s"] == 12.5
    health.add("sinks", lambda: Check(False, "batch 3 waits for postgres"))
    status, body = health.report()
    assert status == 503 and body["status"] == "down"
    assert body["checks"]["sinks"] == {"ok": False, "detail": "batch 3 waits for postgres"}
    assert body["checks"]["query"]["ok"] is True


def test_a_check_that_raises_fails_with_its_error():
    health = Health("generate")

    def broken() -> Check:
        raise RuntimeError("no client")

    health.add("producer", broken)
    status, body = health.report()
    assert status == 503 and body["checks"]["producer"] == {"ok": False, "detail": "RuntimeError: no client"}


@pytest.fixture
def endpoint():
    """``metrics.serve`` of a process named for the test on a free port; yields (process, base URL)."""
    settings = load_settings("test", environ={"ECOM_METRICS__PORTS__GENERATE": "0"})
    process = "generate"
    metrics.stop_serving(process)
    health = metrics.serve(settings, process)
    host, port = metrics.serving_address(process)
    yield health, f"http://{host}:{port}"
    metrics.stop_serving(process)


def test_probe_reads_a_healthz_answer_up_and_down(endpoint):
    health, url = endpoint
    health.add("producer", lambda: Check(True, "10 delivered"))
    assert probe(f"{url}/healthz").state == "up"
    health.add("producer", lambda: Check(False, "5 sends without an outcome"))
    answer = probe(f"{url}/healthz")
    assert answer.state == "down" and answer.detail == "HTTP 503: 5 sends without an outcome"


def test_probe_of_a_port_nobody_listens_on_is_absent_not_down():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    assert probe(f"http://127.0.0.1:{port}/healthz").state == "absent"


def test_the_endpoint_serves_prometheus_text_and_healthz_json(endpoint):
    import urllib.request

    health, url = endpoint
    health.add("producer", lambda: Check(True, "ok"))
    metrics.record_microbatch("stream_test", records_in=3, written={"silver.transactions": 2}, duration_s=0.2)
    with urllib.request.urlopen(f"{url}/metrics") as response:
        text = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/plain")
    assert 'ecom_records_in_total{stage="stream_test"}' in text
    with urllib.request.urlopen(f"{url}/healthz") as response:
        assert json.loads(response.read())["process"] == "generate"


def test_a_local_mlflow_store_is_read_not_just_found(tmp_path):
    import sqlite3

    from ecom.health import check_mlflow

    path = tmp_path / "mlflow.db"
    assert not check_mlflow(f"sqlite:///{path}").ok  # not made yet
    path.write_bytes(b"")
    broken = check_mlflow(f"sqlite:///{path}")
    assert not broken.ok and "unreadable" in broken.detail  # a file, but no store in it
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE experiments (experiment_id INTEGER)")
        conn.execute("INSERT INTO experiments VALUES (0)")
    assert check_mlflow(f"sqlite:///{path}") == Check(True, "local store, 1 experiments")


def test_postgres_that_refuses_the_connection_is_down_with_the_reason():
    from ecom.health import check_postgres

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    answer = check_postgres(f"postgresql://ecom@127.0.0.1:{port}/ecom")
    assert not answer.ok and "refused" in answer.detail
