"""The local stack as one unit: ``up``, ``down``, ``status``.

Starts what is configured as embedded (Kafka, PostgreSQL), applies the serving
migrations and the lake's (``ecom.upgrades``), and prepares the local MLflow
tracking store and registry. External services (``embedded: false`` or
``ECOM_POSTGRES_DSN``) are only checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ecom.runtime.kafka import EmbeddedKafka, ensure_topics
from ecom.runtime.postgres import EmbeddedPostgres
from ecom.runtime.process import ManagedProcess, port_open
from ecom.settings import Settings


@dataclass
class ServiceStatus:
    name: str
    running: bool
    where: str
    pid: int | None = None
    detail: str = ""

    def line(self) -> str:
        state = "running" if self.running else "stopped"
        pid = f" pid {self.pid}" if self.pid else ""
        detail = f"  ({self.detail})" if self.detail else ""
        return f"{self.name:<10} {state:<8} {self.where}{pid}{detail}"


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
    result = []
    k = settings.kafka
    if k.embedded:  # one row for the cluster (the CLI's exit code reads the first two rows: Kafka, PostgreSQL)
        nodes = EmbeddedKafka(settings).nodes
        down = [n.node_id for n in nodes if n.process.pid() is None or not port_open(k.host, n.port)]
        detail = ""
        if len(nodes) > 1:
            detail = f"{len(nodes)} nodes" + (f", down: {', '.join(map(str, down))}" if down else "")
        running = not down
        result.append(ServiceStatus("kafka", running, k.bootstrap_servers, nodes[0].process.pid(), detail))
    else:
        result.append(ServiceStatus("kafka", True, k.bootstrap_servers, detail="external, not checked"))
    p = settings.postgres
    if postgres_is_embedded(settings):
        pid = EmbeddedPostgres(settings).process.pid()
        result.append(
            ServiceStatus(
                "postgres", pid is not None and port_open(p.host, p.port), f"{p.host}:{p.port}/{p.database}", pid
            )
        )
    else:
        result.append(
            ServiceStatus("postgres", True, "ECOM_POSTGRES_DSN or configured host", detail="external, not checked")
        )
    result.append(ServiceStatus("mlflow", True, settings.mlflow.tracking_uri, detail="local store, no server process"))
    if settings.run_dir.exists():
        for pid_file in sorted(settings.run_dir.glob("*.pid")):
            if is_service(pid_file.stem):
                continue
            proc = ManagedProcess(pid_file.stem, settings.run_dir)
            pid = proc.pid()
            result.append(ServiceStatus(pid_file.stem, pid is not None, str(proc.log_file), pid))
    return result
