"""What the Pipeline-health page reads besides PostgreSQL: the consumer lag and the champion model.

Layer: dashboard. The lag per partition is ``ecom.health.consumer_lag``, the
function the stream's ``/metrics`` endpoint exposes as
``ecom_consumer_lag_records`` (docs/observability.md): the transactions
topic's end offsets (Kafka) minus the offsets the ingest stream's checkpoint
has committed, so the page and Prometheus show the same figures. The
champion model's version and age come from the MLflow registry. Each answer is
cached for a few seconds per process, and a source that does not answer is
reported, not retried on every refresh.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pandas as pd

from dashboard.data import TtlCache
from ecom import health as core
from ecom.settings import Settings

OFFSETS_TTL_S = 4.0
MODEL_TTL_S = 60.0
FAILURE_TTL_S = 15.0  # a source that did not answer is asked again after this long
LAG_COLUMNS = ["partition", "end_offset", "committed", "lag"]
_cache = TtlCache()
_consumer_lock = threading.Lock()
_consumers: dict[str, object] = {}


def lag_frame(end: dict[int, int], committed: dict[int, int]) -> pd.DataFrame:
    """Per partition: end offset, committed offset (0 if none yet) and the lag between them."""
    return pd.DataFrame(core.lag_rows(end, committed), columns=LAG_COLUMNS)


def _consumer(settings: Settings):
    bootstrap = settings.kafka.bootstrap_servers
    with _consumer_lock:
        if bootstrap not in _consumers:
            _consumers[bootstrap] = core.kafka_consumer(settings.kafka, "ecom-dashboard")
        return _consumers[bootstrap]


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The topic's end offset per partition (one metadata and one offsets request, cached a few seconds)."""
    key = ("end", settings.kafka.bootstrap_servers, topic)
    fetch = lambda: core.kafka_end_offsets(_consumer(settings), topic)  # noqa: E731
    return _cache.get_or_compute(key, OFFSETS_TTL_S, fetch, failure_ttl_s=FAILURE_TTL_S)


def ingest_checkpoint(settings: Settings) -> str:
    from pipelines.silver.job import QUERY_NAMES  # the stream's query name names its checkpoint folder

    return settings.lake.checkpoint(QUERY_NAMES["ingest"])


def consumer_lag(settings: Settings) -> tuple[pd.DataFrame, str]:
    """Lag per partition of the ingest stream on the transactions topic, and a note on where it comes from."""
    topic = settings.kafka.transactions_topic
    rows, note = core.consumer_lag(lambda: end_offsets(settings, topic), topic, ingest_checkpoint(settings))
    return pd.DataFrame(rows, columns=LAG_COLUMNS), note


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
