"""The Pipeline-health page's lag and the metrics endpoint's lag are one computation (no Kafka: end offsets
given)."""

from dashboard import health
from ecom import metrics
from ecom.settings import load_settings
from pipelines.silver.job import QUERY_NAMES

OFFSETS = """v1
{"batchWatermarkMs":0,"batchTimestampMs":1795660000000,"conf":{}}
{"ecommerce-transactions":{"2":40,"1":17,"0":25}}
"""
END_OFFSETS = {0: 30, 1: 17, 2: 45}


def test_lag_frame_is_end_minus_committed_per_partition_and_never_negative():
    frame = health.lag_frame({0: 30, 1: 17, 2: 45}, {0: 25, 1: 20})
    assert frame["lag"].tolist() == [5, 0, 45]
    assert frame["committed"].tolist() == [25, 20, 0]


def test_the_page_and_the_metrics_endpoint_show_the_same_lag(tmp_path, monkeypatch):
    settings = load_settings("test", environ={"ECOM_LAKE__CHECKPOINTS": str(tmp_path)})
    checkpoint = tmp_path / QUERY_NAMES["ingest"]
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "commits").mkdir()
    (checkpoint / "offsets" / "4").write_text(OFFSETS)
    (checkpoint / "commits" / "4").write_text("v1\n{}")
    monkeypatch.setattr(health, "end_offsets", lambda _settings, _topic: END_OFFSETS)
    page, _ = health.consumer_lag(settings)

    collector = metrics.LagCollector(settings.kafka)
    monkeypatch.setattr(collector, "_end_offsets", lambda _topic: END_OFFSETS)
    collector.watch("stream_all", settings.kafka.transactions_topic, str(checkpoint))
    lag, up = list(collector.collect())
    scraped = {s.labels["partition"]: s.value for s in lag.samples}
    assert scraped == {str(p): float(v) for p, v in zip(page["partition"], page["lag"], strict=True)}
    assert scraped == {"0": 5.0, "1": 0.0, "2": 5.0}
    assert [s.value for s in up.samples] == [1.0]
