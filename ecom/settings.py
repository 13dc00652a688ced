"""One typed settings object for every layer.

Loaded from ``conf/base.yaml`` merged with ``conf/<profile>.yaml`` (profile from
``ECOM_PROFILE``, default ``local``), then environment overrides of the form
``ECOM_<SECTION>__<KEY>=value`` (values parsed as YAML, so ``19092`` is an int).
Secrets come only from the environment: ``ECOM_POSTGRES_PASSWORD``,
``ECOM_POSTGRES_DSN``, ``ECOM_PII_KEY``, ``ECOM_KAFKA_PASSWORD``.

Where things are, so that an installed wheel (or a zip handed to ``spark-submit --py-files``) works as well
as a checkout:

- the settings files: ``$ECOM_CONF_DIR``, else ``ecom/conf`` inside the package (in a checkout a link to the
  top-level ``conf/``; in a wheel, package data);
- ``{root}`` in paths (the project's home, e.g. ``data_dir: "{root}/data"``): ``$ECOM_HOME``, else the checkout
  the package is in, else the current directory;
- ``{package}`` in paths: the installed package's folder (``jars.pom: "{package}/jvm/pom.xml"``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ecom.errors import UnknownProfile

PACKAGE_DIR = Path(__file__).resolve().parent
ENV_PREFIX = "ECOM_"


def project_home(environ: Mapping[str, str] = os.environ) -> Path:
    """``{root}``: ``$ECOM_HOME``, else the checkout holding this package, else the current directory."""
    if environ.get("ECOM_HOME"):
        return Path(environ["ECOM_HOME"]).expanduser().resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "ecom" / "settings.py").is_file():
        return checkout
    return Path.cwd()


DATA_FOLDERS = ("conf", "jvm")  # package data: the settings files, the pom of the JVM dependencies


@cache
def package_data() -> Path:
    """The folder holding the package's data folders (``conf/``, ``jvm/``): the package itself, or, imported from a
    zip or wheel on ``sys.path`` (``spark-submit --py-files``), a copy of them made once in a temporary folder."""
    if all((PACKAGE_DIR / name).is_dir() for name in DATA_FOLDERS):
        return PACKAGE_DIR
    from importlib import resources

    files: dict[str, bytes] = {}
    for name in DATA_FOLDERS:
        folder = resources.files("ecom").joinpath(name)
        if not folder.is_dir():
            raise FileNotFoundError(f"{PACKAGE_DIR / name} is not shipped with the ecom package")
        files.update({f"{name}/{f.name}": f.read_bytes() for f in folder.iterdir() if f.is_file()})
    digest = hashlib.sha256(b"".join(n.encode() + b"\0" + files[n] for n in sorted(files))).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"ecom-data-{os.getuid()}-{digest}"
    if not target.is_dir():
        staging = Path(tempfile.mkdtemp(prefix="ecom-data-"))
        for relative, content in files.items():
            (staging / relative).parent.mkdir(exist_ok=True)
            (staging / relative).write_bytes(content)
        try:
            staging.rename(target)
        except OSError:  # another process put the same files there first
            shutil.rmtree(staging, ignore_errors=True)
    return target


def conf_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The settings files: ``$ECOM_CONF_DIR``, else the package's ``conf/``."""
    return Path(environ["ECOM_CONF_DIR"]) if environ.get("ECOM_CONF_DIR") else package_data() / "conf"


ROOT = project_home()
CONF_DIR = conf_dir()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str
    embedded: bool
    host: str
    port: int
    controller_port: int
    start_timeout_s: float
    heap: str
    topics: dict[str, str]
    partitions: dict[str, int]
    retention_hours: int
    # Embedded cluster (docs/kafka.md): this many KRaft nodes, each broker and controller; node i (from 0)
    # listens on port + i * node_port_step, its controller on controller_port + i * node_port_step.
    brokers: int = Field(1, ge=1)
    node_port_step: int = Field(10, ge=2)
    # Topics: replicas per partition (None: min(brokers, 3)) and the replicas that must have a write before
    # an acks=all producer hears it succeeded (None: replication_factor - 1, at least 1).
    replication_factor: int | None = Field(None, ge=1)
    min_insync_replicas: int | None = Field(None, ge=1)
    # Client security (ecom.kafka_config): the password only from ECOM_KAFKA_PASSWORD.
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] | None = None
    sasl_username: str | None = None
    ssl_cafile: str | None = None  # PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL)

    @model_validator(mode="before")
    @classmethod
    def _bootstrap_names_every_embedded_node(cls, data: Any) -> Any:
        """An embedded cluster whose bootstrap is its first node's address gets every node's address, so a
        client starting while that node is down still finds the cluster."""
        if not isinstance(data, dict) or not data.get("embedded") or int(data.get("brokers") or 1) <= 1:
            return data
        host, port, step = data.get("host"), data.get("port"), int(data.get("node_port_step") or 10)
        if data.get("bootstrap_servers") != f"{host}:{port}":
            return data
        nodes = ",".join(f"{host}:{int(port) + i * step}" for i in range(int(data["brokers"])))
        return {**data, "bootstrap_servers": nodes}

    @property
    def topic_replication_factor(self) -> int:
        return self.replication_factor or min(self.brokers, 3)

    @property
    def topic_min_insync_replicas(self) -> int:
        return self.min_insync_replicas or max(1, self.topic_replication_factor - 1)

    @property
    def transactions_topic(self) -> str:
        return self.topics["transactions"]

    @property
    def alerts_topic(self) -> str:
        return self.topics["alerts"]

    @property
    def labels_topic(self) -> str:
        return self.topics["labels"]


class ProducerSettings(_Section):
    acks: str | int
    enable_idempotence: bool
    compression_type: str | None
    batch_size: int
    linger_ms: int
    max_in_flight: int
    delivery_timeout_ms: int
    max_block_ms: int = 60000  # how long send() may wait for metadata or buffer space
    reconnect_backoff_max_ms: int = 1000  # longest wait between reconnects to a broker that went away

    def client_config(self, bootstrap_servers: str) -> dict[str, Any]:
        """Keyword arguments of a kafka-python ``KafkaProducer`` with these settings."""
        return {
            "bootstrap_servers": bootstrap_servers.split(","),
            "acks": self.acks,
            "enable_idempotence": self.enable_idempotence,
            "compression_type": self.compression_type,
            "batch_size": self.batch_size,
            "linger_ms": self.linger_ms,
            "max_in_flight_requests_per_connection": self.max_in_flight,
            "delivery_timeout_ms": self.delivery_timeout_ms,
            "max_block_ms": self.max_block_ms,
            "reconnect_backoff_max_ms": self.reconnect_backoff_max_ms,
        }


class SimulatorSettings(_Section):
    rate_per_s: float
    fraud_rate: float
    customers: int
    products: int
    label_delay_s: float
    seed: int | None
    # Share of fraudulent *events* per pattern (normalised); see docs/simulator.md.
    fraud_patterns: dict[str, float] = {
        "account_takeover": 0.3,
        "card_testing": 0.25,
        "amount_spike": 0.25,
        "geo_mismatch": 0.2,
    }
    hard_negative_rate: float = 0.04
    new_customer_share: float = 0.08
    backfill_days: float = 90
    workers: int = 2
    state_dir: str | None = None  # each topic's shop, recorded for live runs to continue (None: {data_dir}/simulator)


class PostgresSettings(_Section):
    embedded: bool
    host: str
    port: int
    database: str
    user: str
    start_timeout_s: float
    durable: bool = True  # embedded server: fsync, full_page_writes, synchronous_commit on (off only for tests)
    auth: Literal["scram", "trust"] = "scram"  # embedded server over TCP: SCRAM passwords, or trust (tests only)
    credentials_file: str | None = None  # the user's password when ECOM_POSTGRES_PASSWORD is unset (embedded: made)

    @property
    def password(self) -> str | None:
        """ECOM_POSTGRES_PASSWORD, else the content of ``credentials_file`` if it exists, else None."""
        from_env = os.environ.get("ECOM_POSTGRES_PASSWORD")
        if from_env:
            return from_env
        if self.credentials_file and os.path.isfile(self.credentials_file):
            with open(self.credentials_file) as f:
                return f.read().strip() or None
        return None

    @property
    def dsn(self) -> str:
        """Connection string: ECOM_POSTGRES_DSN if set, else built from host/port/user and ``password``."""
        explicit = os.environ.get("ECOM_POSTGRES_DSN")
        if explicit:
            return explicit
        password = self.password
        auth = self.user if not password else f"{self.user}:{quote(password, safe='')}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.database}"


class SparkSettings(_Section):
    master: str
    app_name: str
    driver_memory: str
    shuffle_partitions: int
    log_level: str
    ui_enabled: bool
    ui_port: int = 4040  # the first Spark application's UI; Spark tries the next ports for more (`ecom ui`)
    extra_conf: dict[str, str]


class StreamSettings(_Section):
    trigger_interval: str
    max_offsets_per_trigger: int
    # bytes of Kafka records one micro-batch may bring to the driver; with the contract's per-record bound it
    # caps the records per batch below max_offsets_per_trigger (pipelines.bronze.job.records_per_trigger)
    max_batch_bytes: int = 1_073_741_824
    starting_offsets: str
    profiles_snapshot_s: float  # how often the stream's customer profiles are written to silver/customer_profiles
    # A sink that is unavailable (PostgreSQL down, alerts not confirmed by Kafka): the micro-batch waits and is
    # tried again, the wait doubling from retry_initial_s up to retry_max_s; after outage_max_s the stream stops
    # (its place stays in the checkpoint).
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    outage_max_s: float = 3600.0


class LakeSettings(_Section):
    root: str
    checkpoints: str

    def table(self, layer: str, name: str) -> str:
        """Path of a Delta table, e.g. ``table("bronze", "transactions")``."""
        return f"{self.root}/{layer}/{name}"

    def archive(self, layer: str, name: str) -> str:
        """Path of the archive table of a lake table, e.g. ``archive("silver", "transactions")``."""
        return f"{self.root}/archive/{layer}/{name}"

    def checkpoint(self, query: str) -> str:
        """Checkpoint folder of one streaming query."""
        return f"{self.checkpoints}/{query}"


class MlflowSettings(_Section):
    tracking_uri: str
    artifact_root: str
    experiment: str
    model_name: str
    alias: str
    ui_port: int = 5000  # `ecom ui` serves the MLflow UI on 127.0.0.1 here (a local tracking store)


class FraudSettings(_Section):
    """Fraud scoring and training (ml/; docs/fraud.md). Defaults keep older profile files valid."""

    alert_threshold: float
    alert_rate: float = 0.02  # share of training orders calibrated to score >= alert_threshold ("budget")
    alert_policy: Literal["budget", "precision"] = "budget"  # how the threshold's share is chosen (docs/fraud.md)
    target_precision: float = 0.5  # "precision": the largest share whose training precision reaches this
    min_labelled_alerts: int = 20  # "precision" needs this many labelled frauds in training, else it is "budget"
    n_estimators: int = 200
    max_samples: int = 256
    random_state: int = 42
    model_features: list[str] | None = None  # derived model inputs (ml.model.DERIVED_FEATURES; a repeat weighs more)
    holdout_fraction: float = 0.2  # newest share of silver (by event_time) held out for evaluation
    min_train_rows: int = 1000
    reasons_min_score: float = 50  # reasons are worded for orders scoring at least this
    reason_max_share: float = 0.03  # a value rarer than this share of training orders is a reason
    champion_tolerance: float = 0.0  # a retrained forest becomes champion if its PR-AUC >= champion's - this
    challenger_enabled: bool = True
    challenger_alias: str = "challenger"
    challenger_min_gain: float = 0.02  # PR-AUC gain over the champion a challenger needs to be promoted
    challenger_max_iter: int = 200
    challenger_learning_rate: float = 0.1
    fast_path: bool = False  # `ecom up` and `ecom demo` start `ecom stream alerts` (pipelines/alerts)
    fast_path_max_age_s: float = 600  # the fast path alerts orders younger than this; older ones are the batch's
    fast_path_nice: int = 10  # the fast path's CPU priority (Unix nice): under contention the stream goes first
    fast_path_cycle_ms: float = 200  # a poll that brought orders starts the next one this long after it at the earliest


class RetentionSettings(_Section):
    """Data lifecycle (pipelines/lifecycle; docs/lifecycle.md): horizons of the hot tables, the archive, pruning."""

    days: int = 90  # hot horizon: bronze, silver, quarantine, duplicates and PostgreSQL transactions, by event date
    alerts_days: int = 730  # fraud alerts (silver/fraud_alerts, PostgreSQL fraud_alerts)
    summaries_days: int = 365  # PostgreSQL analytics_summaries, by period start
    bookkeeping_days: int = 30  # PostgreSQL pipeline_batches, stream_progress, alert_path_agreement (newest kept)
    lookup_margin_days: int = 2  # the stream also looks events this much younger than the horizon up in the archive
    prune_batch_rows: int = 5000  # PostgreSQL rows deleted per transaction
    schedule_s: float = 3600  # the demo runs `ecom lifecycle run` this often


class GoldSettings(_Section):
    """Gold layer (pipelines/gold; docs/gold.md): reporting currency, live metrics, RFM, cohorts, recommendations."""

    reporting_currency: str = "USD"
    watermark: str = "2 minutes"  # live minute metrics: how late an event may be and still count in its minute
    trigger_interval: str = "1 second"  # the live metrics stream's micro-batch trigger
    recompute_days: int = 2  # the daily batch recomputes the minute metrics of this many past days from silver
    rfm_window_days: int = 365  # RFM looks at orders in the window before --as-of
    recommendation_window_days: int = 365  # co-purchases counted over this window
    similar_top_n: int = 20  # similar products kept per product
    recommendations_top_n: int = 10  # recommendations per customer and per product
    fbt_min_support_count: int = 3  # orders holding both products, at least
    fbt_min_confidence: float = 0.01
    repeat_purchase_categories: list[str] = ["grocery", "beauty"]  # bought again: may be recommended again
    schedule_s: float = 900  # the demo runs `ecom batch daily` this often while live (after one run at start)


class MaintenanceSettings(_Section):
    """Lake maintenance (ecom/maintenance.py; docs/maintenance.md): compaction, VACUUM, their schedule."""

    target_file_mb: int = 128  # compaction rewrites small files into files of about this size
    max_concurrent_tasks: int = 2  # files compaction writes at once
    compact_attempts: int = 5  # a compaction that lost to a merge or delete is run again, this often at most
    retry_wait_s: float = 0.5  # wait before the n-th rerun: n times this
    vacuum_retention_hours: float = 168  # VACUUM keeps what versions of the last week need (Delta's default)
    schedule_s: float = 3600  # the demo compacts (and vacuums) this often while live


class DashboardSettings(_Section):
    host: str
    port: int
    refresh_ms: int
    workers: int = 2  # gunicorn worker processes of `ecom dashboard`
    threads: int = 4  # request threads per worker
    pool_max_connections: int = 6  # PostgreSQL connections per worker (read-only role)


class MetricsPorts(_Section):
    """One port per long-running process: its Prometheus ``/metrics`` and its ``/healthz`` (docs/observability.md)."""

    stream_all: int
    stream_bronze: int
    stream_silver: int
    stream_gold: int
    batch: int
    generate: int
    stream_alerts: int = 9187  # ecom stream alerts (the per-order alert path)


class MetricsSettings(_Section):
    """Prometheus metrics and health endpoints (``ecom.metrics``, ``ecom.health``; docs/observability.md)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    ports: MetricsPorts

    def port(self, process: str) -> int:
        """The port of ``process`` (``stream_all``, ``stream_gold``, ``batch``, ``generate``, ...)."""
        return getattr(self.ports, process)


class JarSettings(_Section):
    cache: str
    pom: str


class Settings(_Section):
    profile: str
    data_dir: str
    kafka: KafkaSettings
    producer: ProducerSettings
    simulator: SimulatorSettings
    postgres: PostgresSettings
    spark: SparkSettings
    stream: StreamSettings
    lake: LakeSettings
    mlflow: MlflowSettings
    fraud: FraudSettings
    retention: RetentionSettings
    gold: GoldSettings = GoldSettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()
    dashboard: DashboardSettings
    metrics: MetricsSettings
    jars: JarSettings

    @property
    def run_dir(self) -> Path:
        """Where pid files and service logs live."""
        return Path(self.data_dir) / "run"


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``ECOM_KAFKA__PORT=1`` -> ``{"kafka": {"port": 1}}``; single-level names are not overrides."""
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
    return overrides


def _expand(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, replacement in variables.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, dict):
        return {k: _expand(v, variables) for k, v in value.items()}
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"settings file {path} not found")
    return yaml.safe_load(path.read_text()) or {}


def load_settings(profile: str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build the settings for ``profile`` (default: $ECOM_PROFILE or ``local``)."""
    environ = dict(os.environ if environ is None else environ)
    profile = profile or environ.get("ECOM_PROFILE", "local")
    conf = conf_dir(environ)
    raw = _read_yaml(conf / "base.yaml")
    profile_file = conf / f"{profile}.yaml"
    if not profile_file.exists():
        known = sorted(p.stem for p in conf.glob("*.yaml") if p.stem != "base")
        raise UnknownProfile(
            f"unknown profile {profile!r}; use one of {', '.join(known)} (--profile or ECOM_PROFILE), "
            f"or add {conf}/{profile}.yaml"
        )
    raw = _deep_merge(raw, _read_yaml(profile_file))
    raw = _deep_merge(raw, _env_overrides(environ))
    raw["profile"] = profile
    root = str(project_home(environ))
    package = str(package_data())
    data_dir = _expand(raw["data_dir"], {"root": root, "package": package})
    raw = _expand(raw, {"root": root, "package": package, "data_dir": data_dir})
    return Settings.model_validate(raw)


def child_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child ``ecom`` process that must use these settings' topics (orders, alerts), lake,
    database and MLflow store (for settings changed in code, e.g. a benchmark's or a test's scratch copies)."""
    return {
        **(os.environ if base is None else base),
        "ECOM_PROFILE": settings.profile,
        "ECOM_KAFKA__TOPICS__TRANSACTIONS": settings.kafka.transactions_topic,
        "ECOM_KAFKA__TOPICS__ALERTS": settings.kafka.alerts_topic,
        "ECOM_LAKE__ROOT": settings.lake.root,
        "ECOM_LAKE__CHECKPOINTS": settings.lake.checkpoints,
        "ECOM_POSTGRES__DATABASE": settings.postgres.database,
        "ECOM_MLFLOW__TRACKING_URI": settings.mlflow.tracking_uri,
        "ECOM_MLFLOW__ARTIFACT_ROOT": settings.mlflow.artifact_root,
    }


@cache
def get_settings(profile: str | None = None) -> Settings:
    """Cached settings for the current process."""
    return load_settings(profile)
