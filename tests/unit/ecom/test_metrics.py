"""The metric helpers: what a micro-batch and a batch job add, quarantine reasons, live latencies, Spark progress,
the producer's counts, without a running stage."""

from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from ecom import metrics


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_refusal_reason_is_counted_without_its_message_and_rules_as_they_are():
    assert metrics.quarantine_reason("sink_refused:postgres:value too long for type") == "sink_refused:postgres"
    assert metrics.quarantine_reason("malformed_json") == "malformed_json"


def test_quarantine_counts_records_per_reason_once_each():
    reasons = [
        ["bad_country", "amount_not_positive"],
        ["bad_country"],
        ["sink_refused:postgres:a", "sink_refused:postgres:b"],  # one record, one reason once cut
        None,
        [],
    ]
    assert metrics.quarantine_counts(reasons) == {
        "bad_country": 2,
        "amount_not_positive": 1,
        "sink_refused:postgres": 1,
    }


def test_latency_is_measured_for_live_orders_only():
    served = 1_000_000.0
    event_times = [served - 0.8, served - 2.5, served - 3600, served + 5]  # live, live, backfilled, clock ahead
    assert metrics.live_latencies(event_times, served) == pytest.approx([0.8, 2.5])


@pytest.mark.parametrize(("version", "number"), [("7", 7.0), (None, 0.0), ("", 0.0), ("champion-x", 0.0)])
def test_model_version_gauge_value(version, number):
    assert metrics.model_version_number(version) == number


def test_a_microbatch_adds_its_records_tables_reasons_alerts_latencies_and_model():
    stage = "stream_unit_a"
    before = value("ecom_end_to_end_latency_seconds_bucket", stage=stage, le="1.0")
    for _ in range(2):
        metrics.record_microbatch(
            stage,
            records_in=10,
            written={"silver.transactions": 8, "silver.quarantine": 2},
            duration_s=0.6,
            quarantine={"bad_country": 2},
            alerts=1,
            latencies_s=[0.4, 1.7],
            model_version="3",
            ended_at=1_800_000_000.0,
        )
    assert value("ecom_records_in_total", stage=stage) == 20
    assert value("ecom_records_out_total", stage=stage, table="silver.transactions") == 16
    assert value("ecom_quarantined_records_total", stage=stage, reason="bad_country") == 4
    assert value("ecom_fraud_alerts_total", stage=stage) == 2
    assert value("ecom_microbatch_duration_seconds_count", stage=stage) == 2
    assert value("ecom_end_to_end_latency_seconds_bucket", stage=stage, le="1.0") - before == 2
    assert value("ecom_end_to_end_latency_seconds_count", stage=stage) == 4
    assert value("ecom_model_version", stage=stage) == 3
    assert value("ecom_last_microbatch_timestamp_seconds", stage=stage) == 1_800_000_000.0


def test_a_stage_without_a_model_leaves_the_model_gauge_alone():
    metrics.record_microbatch("stream_unit_b", records_in=1, written={}, duration_s=0.1)
    assert REGISTRY.get_sample_value("ecom_model_version", {"stage": "stream_unit_b"}) is None


def test_batch_job_runs_count_successes_failures_and_rows():
    metrics.record_batch_job("unit_job", 12.0, {"gold.rfm": 40})
    metrics.record_batch_job("unit_job", 3.0, None)
    assert value("ecom_batch_job_runs_total", job="unit_job", status="succeeded") == 1
    assert value("ecom_batch_job_runs_total", job="unit_job", status="failed") == 1
    assert value("ecom_batch_job_rows_written_total", job="unit_job", table="gold.rfm") == 40
    assert value("ecom_batch_job_duration_seconds", job="unit_job") == 3.0
    assert value("ecom_batch_job_last_success_timestamp_seconds", job="unit_job") > 0


def test_spark_progress_counts_each_batch_once_and_skips_idle_reports():
    progresses = [
        {"batchId": 4, "numInputRows": 100, "durationMs": {"triggerExecution": 800}},
        {"batchId": 5, "numInputRows": 50, "durationMs": {"triggerExecution": 400}},
        {"batchId": 5, "numInputRows": 0, "durationMs": {"triggerExecution": 2}},  # idle report: same id
        {"batchId": 6, "numInputRows": 7, "durationMs": {}},
    ]
    assert metrics.progress_batches(progresses, after=4) == [(5, 50, 0.4), (6, 7, 0.0)]
    assert metrics.progress_batches(progresses, after=-1)[0] == (4, 100, 0.8)


def test_the_producer_collector_reads_the_newest_stats():
    collector = metrics.ProducerCollector()
    assert list(collector.collect()) == []
    stats = SimpleNamespace(sent=12, delivered=9, failed=1, client_restarts=0, pending=2)
    collector.stats = lambda: stats
    families = {f.name: f.samples[0].value for f in collector.collect()}
    assert families == {
        "ecom_producer_sent": 12,
        "ecom_producer_delivered": 9,
        "ecom_producer_failed": 1,
        "ecom_producer_client_restarts": 0,
        "ecom_producer_pending": 2,
    }


def test_a_taken_port_leaves_the_process_running_without_an_endpoint(caplog):
    import socket

    from ecom.settings import load_settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        settings = load_settings("test", environ={"ECOM_METRICS__PORTS__STREAM_BRONZE": str(port)})
        metrics.stop_serving("stream_bronze")
        health = metrics.serve(settings, "stream_bronze")
    assert health.process == "stream_bronze"
    assert metrics.serving_address("stream_bronze") is None
    assert "not served" in caplog.text


def test_each_process_has_its_own_port_and_the_test_profile_other_ones():
    from ecom.settings import load_settings

    local = load_settings("local", environ={}).metrics.ports.model_dump()
    test = load_settings("test", environ={}).metrics.ports.model_dump()
    assert len(set(local.values())) == len(local) and len(set(test.values())) == len(test)
    assert not set(local.values()) & set(test.values())
    moved = load_settings("test", environ={"ECOM_METRICS__PORTS__STREAM_ALL": "29181"})
    assert moved.metrics.port("stream_all") == 29181 and moved.metrics.port("batch") == test["batch"]
