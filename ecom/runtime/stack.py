"""The local stack as one unit: ``up``, ``down``, ``status``.

Starts what is configured as embedded (Kafka, PostgreSQL), applies the serving
migrations and the lake's (``ecom.upgrades``), and prepares the local MLflow
tracking store and registry. External services (``embedded: false`` or
``ECOM_POSTGRES_DSN``) are only checked.

``status`` asks every service for real, embedded or external (``ecom.health``):
PostgreSQL a ``select 1``, Kafka a metadata request, the MLflow store a read;
then the dashboard's ``/healthz`` and each pipeline process's ``/healthz``
(``metrics.ports``) when it runs, and the other processes the project started
by their pid files. A service that does not answer, or a running process whose
health endpoint answers other than 200, is down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ecom.health import check_kafka, check_mlflow, check_postgres, probe
from ecom.runtime.kafka import EmbeddedKafka, ensure_topics
from ecom.runtime.postgres import EmbeddedPostgres
from ecom.runtime.process import ManagedProcess, port_open
from ecom.settings import Settings

# pid-file names of the processes ``ecom demo`` starts -> their process name in ``metrics.ports``
PID_FILE_PROCESSES = {
    "stream": "stream_all",
    "stream-gold": "stream_gold",
    "gold-batch": "batch",
    "stream-alerts": "stream_alerts",
}
FAST_PATH_PROCESS = "stream-alerts"  # pid-file name of `ecom stream alerts` when `ecom up` or the demo starts it


@dataclass
class ServiceStatus:
    """One line of ``ecom status``. ``running``: the service answers or the process lives; ``ok`` false: down
    (a service that must answer and does not, a process whose health check fails)."""

    name: str
    running: bool
    where: str
    pid: int | None = None
    detail: str = ""
    ok: bool = True

    @property
    def state(self) -> str:
        return "down" if not self.ok else "running" if self.running else "stopped"

    def line(self) -> str:
        pid = f" pid {self.pid}" if self.pid else ""
        detail = f"  ({self.detail})" if self.detail else ""
        return f"{self.name:<13} {self.state:<8} {self.where}{pid}{detail}"


def is_service(name: str) -> bool:
    """A pid file of the embedded services (PostgreSQL, a Kafka node) rather than of a pipeline job."""
    return name == "postgres" or name == "kafka" or (name.startswith("kafka-") and name[6:].isdigit())


def postgres_is_embedded(settings: Settings) -> bool:
    return settings.postgres.embedded and not os.environ.get("ECOM_POSTGRES_DSN")


def prepare_mlflow(settings: Settings) -> None:
    """Create the local tracking store, registry and experiment (idempotent)."""
    uri = settings.mlflow.tracking_uri
    local = uri.startswith("sqlite:///")
    if local:
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        Path(settings.mlflow.artifact_root).mkdir(parents=True, exist_ok=True)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if client.get_experiment_by_name(settings.mlflow.experiment) is None:
        # A tracking server chooses its own artifact store; a local store keeps artifacts under the data dir.
        location = Path(settings.mlflow.artifact_root).as_uri() if local else None
        client.create_experiment(settings.mlflow.experiment, artifact_location=location)


def up(settings: Settings, log=print) -> None:
    """Start every embedded service that is not running; harmless when all run."""
    from ecom.secrets import ROLE_PASSWORD_ENV, role_password
    from ecom.upgrades import migrate_lake
    from serving.db import migrate, set_role_passwords

    if settings.kafka.embedded:
        kafka = EmbeddedKafka(settings)
        if kafka.start():
            log(f"kafka      started on {settings.kafka.bootstrap_servers}")
        else:
            kafka.create_topics()
            log(f"kafka      already running on {settings.kafka.bootstrap_servers}")
    else:
        ensure_topics(settings)
        log(f"kafka      external at {settings.kafka.bootstrap_servers}")
    if postgres_is_embedded(settings):
        pg = EmbeddedPostgres(settings)
        started = pg.start()
        log(
            f"postgres   {'started' if started else 'already running'} on {settings.postgres.host}:{settings.postgres.port}"
        )
        weak = [name for name, value in pg.durability().items() if value != "on"]
        if settings.postgres.durable and weak:  # started earlier by an older version or with other settings
            log(
                f"postgres   WARNING: runs with {', '.join(weak)} off; `ecom down` then `ecom up` restarts it crash-safe"
            )
    applied = migrate(settings.postgres.dsn)
    log(f"postgres   schema up to date{f' (applied {applied})' if applied else ''}")
    lake = migrate_lake(settings, echo=log)
    log(f"lake       schemas up to date{f' ({len(lake)} migrations applied)' if lake else ''}")
    roles = set_role_passwords(settings.postgres.dsn, {r: role_password(settings, r) for r in ROLE_PASSWORD_ENV})
    if roles:
        log(f"postgres   passwords set for {', '.join(roles)} (environment or {settings.data_dir}/secrets)")
    prepare_mlflow(settings)
    log(f"mlflow     tracking store and registry at {settings.mlflow.tracking_uri}")


def start_fast_path(settings: Settings, log=print) -> ManagedProcess:
    """Start ``ecom stream alerts`` in the background (``fraud.fast_path``) unless it runs; ``ecom down`` stops
    it with the other processes."""
    import sys

    proc = ManagedProcess(FAST_PATH_PROCESS, settings.run_dir)
    if proc.is_running():
        log(f"alerts     already running (pid {proc.pid()})")
    else:
        env = {"ECOM_PROFILE": settings.profile, "PYTHONUNBUFFERED": "1"}
        pid = proc.start([sys.executable, "-m", "ecom.cli", "stream", "alerts"], env=env)
        log(f"alerts     per-order alert path started (pid {pid}; `ecom logs {FAST_PATH_PROCESS}`)")
    return proc


def down(settings: Settings, log=print) -> None:
    """Stop every process this project started (pipeline jobs first, then services)."""
    run_dir = settings.run_dir
    if run_dir.exists():
        for pid_file in sorted(run_dir.glob("*.pid")):
            name = pid_file.stem
            if not is_service(name) and ManagedProcess(name, run_dir).stop():
                log(f"{name:<10} stopped")
    if EmbeddedPostgres(settings).stop():
        log("postgres   stopped")
    if EmbeddedKafka(settings).stop():
        log("kafka      stopped")


def status(settings: Settings) -> list[ServiceStatus]:
    """Every service and process, asked for real (module docstring); ``all(s.ok ...)`` when nothing is down."""
    result = [_kafka_status(settings), _postgres_status(settings), _mlflow_status(settings)]
    pids = _running_pid_files(settings)
    d = settings.dashboard
    result.append(_process_status("dashboard", _health_url(d.host, d.port), pids.pop("dashboard", None)))
    ports = settings.metrics.ports.model_dump() if settings.metrics.enabled else {}
    by_process = {PID_FILE_PROCESSES.get(name, name): (name, pid) for name, pid in pids.items()}
    for process, port in ports.items():
        name, pid = by_process.pop(process, (process, None))
        found = _process_status(name, _health_url(settings.metrics.host, port), pid)
        if found.running or not found.ok:
            result.append(found)
    for name, pid in by_process.values():
        result.append(ServiceStatus(name, True, str(ManagedProcess(name, settings.run_dir).log_file), pid))
    return result


def _health_url(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/healthz"


def _running_pid_files(settings: Settings) -> dict[str, int]:
    """Pid-file name -> pid of the live processes the project started (Kafka and PostgreSQL apart)."""
    found = {}
    if settings.run_dir.exists():
        for pid_file in sorted(settings.run_dir.glob("*.pid")):
            if is_service(pid_file.stem):
                continue
            pid = ManagedProcess(pid_file.stem, settings.run_dir).pid()
            if pid is not None:
                found[pid_file.stem] = pid
    return found


def _process_status(name: str, url: str, pid: int | None) -> ServiceStatus:
    """A process by its health endpoint: 200 running; another answer down; nothing listening: stopped, or
    running without an answer yet when its pid file says it lives (a stream serves once Spark has started)."""
    answer = probe(url)
    where = url.removesuffix("/healthz")
    pid = pid or answer.pid  # a process started by hand has no pid file; its /healthz names it
    if answer.state == "up":
        return ServiceStatus(name, True, where, pid, answer.detail)
    if answer.state == "down":
        return ServiceStatus(name, True, where, pid, answer.detail, ok=False)
    if pid is not None:
        return ServiceStatus(name, True, where, pid, f"no answer on {url} yet")
    return ServiceStatus(name, False, where)


def _kafka_status(settings: Settings) -> ServiceStatus:
    """Kafka in one row, asked for metadata; an embedded cluster's row also names the nodes that are down."""
    k = settings.kafka
    check = check_kafka(k, k.transactions_topic)
    if not k.embedded:
        return ServiceStatus("kafka", check.ok, k.bootstrap_servers, None, f"external; {check.detail}", ok=check.ok)
    nodes = EmbeddedKafka(settings).nodes
    down = [n.node_id for n in nodes if n.process.pid() is None or not port_open(k.host, n.port)]
    detail = check.detail
    if len(nodes) > 1:
        detail = f"{len(nodes)} nodes" + (f", down: {', '.join(map(str, down))}" if down else "") + f"; {detail}"
    ok = check.ok and not down
    return ServiceStatus("kafka", check.ok, k.bootstrap_servers, nodes[0].process.pid(), detail, ok=ok)


def _postgres_status(settings: Settings) -> ServiceStatus:
    p = settings.postgres
    check = check_postgres(p.dsn)
    if postgres_is_embedded(settings):
        pid, where = EmbeddedPostgres(settings).process.pid(), f"{p.host}:{p.port}/{p.database}"
    else:
        pid, where = None, "ECOM_POSTGRES_DSN" if os.environ.get("ECOM_POSTGRES_DSN") else f"{p.host}:{p.port}"
    return ServiceStatus("postgres", check.ok, where, pid, check.detail, ok=check.ok)


def _mlflow_status(settings: Settings) -> ServiceStatus:
    check = check_mlflow(settings.mlflow.tracking_uri)
    return ServiceStatus("mlflow", check.ok, settings.mlflow.tracking_uri, detail=check.detail, ok=check.ok)
