"""What the Pipeline-health page reads besides PostgreSQL: Kafka end offsets, the stream's checkpoint, MLflow.

Layer: dashboard. Consumer lag per partition = the topic's end offset (Kafka)
minus the offset the stream has committed (the newest ``commits/N`` of its
Structured Streaming checkpoint, whose ``offsets/N`` holds the next offset to
read per partition). The champion model's version and age come from the
MLflow registry. Each answer is cached for a few seconds per process, and a
source that does not answer is reported, not retried on every refresh.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from dashboard.data import TtlCache
from ecom.settings import Settings

OFFSETS_TTL_S = 4.0
MODEL_TTL_S = 60.0
FAILURE_TTL_S = 15.0  # a source that did not answer is asked again after this long
_cache = TtlCache()
_consumer_lock = threading.Lock()
_consumers: dict[str, object] = {}


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


def lag_frame(end: dict[int, int], committed: dict[int, int]) -> pd.DataFrame:
    """Per partition: end offset, committed offset (0 if none yet) and the lag between them."""
    rows = [
        {
            "partition": p,
            "end_offset": end[p],
            "committed": committed.get(p, 0),
            "lag": max(0, end[p] - committed.get(p, 0)),
        }
        for p in sorted(end)
    ]
    return pd.DataFrame(rows, columns=["partition", "end_offset", "committed", "lag"])


def _consumer(settings: Settings):
    from kafka import KafkaConsumer

    from ecom.kafka_config import client_kwargs

    bootstrap = settings.kafka.bootstrap_servers
    with _consumer_lock:
        if bootstrap not in _consumers:
            _consumers[bootstrap] = KafkaConsumer(
                **client_kwargs(settings),
                enable_auto_commit=False,
                session_timeout_ms=6000,  # no group is joined; kafka-python wants request > session timeout
                request_timeout_ms=8000,
                bootstrap_timeout_ms=3000,
                client_id="ecom-dashboard",
            )
        return _consumers[bootstrap]


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The topic's end offset per partition (one metadata and one offsets request, cached a few seconds)."""
    from kafka import TopicPartition

    def fetch() -> dict[int, int]:
        consumer = _consumer(settings)
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()} if tps else {}

    key = ("end", settings.kafka.bootstrap_servers, topic)
    return _cache.get_or_compute(key, OFFSETS_TTL_S, fetch, failure_ttl_s=FAILURE_TTL_S)


def ingest_checkpoint(settings: Settings) -> str:
    from pipelines.silver.job import QUERY_NAMES  # the stream's query name names its checkpoint folder

    return settings.lake.checkpoint(QUERY_NAMES["ingest"])


def consumer_lag(settings: Settings) -> tuple[pd.DataFrame, str]:
    """Lag per partition of the ingest stream on the transactions topic, and a note on where it comes from."""
    topic = settings.kafka.transactions_topic
    checkpoint = ingest_checkpoint(settings)
    if "://" in checkpoint and not checkpoint.startswith("file:"):
        return lag_frame({}, {}), f"the checkpoint ({checkpoint}) is not on this machine's disk"
    end = end_offsets(settings, topic)
    progress = committed_offsets(checkpoint)
    if progress is None:
        return lag_frame(end, {}), "the stream has not committed a batch yet (`ecom stream all`)"
    batch, offsets = progress
    return lag_frame(end, offsets.get(topic, {})), f"stream progress: committed batch {batch} ({Path(checkpoint).name})"


def champion(settings: Settings) -> dict | None:
    """The champion model: version and when it was registered (None if there is none), cached a minute."""

    def fetch() -> dict | None:
        from mlflow.exceptions import MlflowException

        from ml.registry import use_tracking

        client = use_tracking(settings)
        try:
            version = client.get_model_version_by_alias(settings.mlflow.model_name, settings.mlflow.alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
                return None  # no model registered, or no alias on it
            raise
        created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)
        return {"version": str(version.version), "registered_at": created, "run_id": version.run_id}

    key = ("champion", settings.mlflow.tracking_uri)
    return _cache.get_or_compute(key, MODEL_TTL_S, fetch, failure_ttl_s=FAILURE_TTL_S)
