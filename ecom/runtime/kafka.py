"""Embedded Apache Kafka: one real broker in KRaft mode, run with plain ``java``.

The broker's jars come from Maven Central (``ecom.jars``); its data, config
and log live under ``<data_dir>/kafka`` and ``<data_dir>/run``. Topics of the
architecture are created on start (idempotently).
"""

from __future__ import annotations

import base64
import contextlib
import re
import shutil
import subprocess
import uuid
from pathlib import Path

from ecom import jars
from ecom.runtime.process import ManagedProcess, ServiceError, ensure_port_free, port_open, wait_until
from ecom.settings import Settings

MIN_JAVA = 17

LOG4J2 = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
"""


def java_version(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise ServiceError(f"could not read the Java version from `{java} -version`: {out.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 else major


def find_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServiceError(f"Java is not installed: the Kafka broker and Spark need a JDK {MIN_JAVA}+ on PATH")
    version = java_version(java)
    if version < MIN_JAVA:
        raise ServiceError(f"Java {version} is too old: the Kafka broker and Spark need Java {MIN_JAVA}+")
    return java


def new_cluster_id() -> str:
    """A random KRaft cluster id (16 bytes, URL-safe base64) that does not start with ``-``.

    One id in 64 would, and the storage tool's argument parser then takes it
    for an option (``--cluster-id: expected one argument``); Kafka's own
    ``Uuid.randomUuid`` draws again in that case, and so does this.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class EmbeddedKafka:
    """A single-node KRaft broker + controller on 127.0.0.1."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cfg = settings.kafka
        self.home = Path(settings.data_dir) / "kafka"
        self.process = ManagedProcess("kafka", settings.run_dir)

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    def _write_config(self) -> None:
        c = self.cfg
        self.home.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{c.host}:{c.controller_port}",
            "listeners": f"PLAINTEXT://{c.host}:{c.port},CONTROLLER://{c.host}:{c.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{c.host}:{c.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.home / "logs"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": str(c.retention_hours),
            "message.max.bytes": "10485760",
        }
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j2.yaml").write_text(LOG4J2)

    def _format_storage(self, java: str, classpath: str) -> None:
        if (self.home / "logs" / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        cmd = [
            java, "-cp", classpath, f"-Dlog4j2.configurationFile={self.home / 'log4j2.yaml'}",
            "kafka.tools.StorageTool", "format", "--cluster-id", cluster_id,
            "--config", str(self.properties_file), "--ignore-formatted",
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed: {(result.stderr or result.stdout).strip()[-300:]}")

    def is_running(self) -> bool:
        return self.process.is_running()

    def start(self) -> bool:
        """Start the broker unless it already runs; returns True if it was started now."""
        if self.process.is_running():
            return False
        c = self.cfg
        ensure_port_free(c.host, c.port, "Kafka")
        ensure_port_free(c.host, c.controller_port, "the Kafka controller")
        java = find_java()
        classpath = jars.kafka_classpath(self.settings)
        self._write_config()
        self._format_storage(java, classpath)
        cmd = [
            java, f"-Xms{c.heap}", f"-Xmx{c.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.yaml'}",
            "-cp", classpath, "kafka.Kafka", str(self.properties_file),
        ]  # fmt: skip
        self.process.start(cmd)
        if not wait_until(lambda: port_open(c.host, c.port) or not self.process.is_running(), c.start_timeout_s):
            self.process.stop()
            raise ServiceError(
                f"the Kafka broker did not come up on {c.host}:{c.port} within {c.start_timeout_s:.0f}s; "
                f"see {self.process.log_file}"
            )
        if not self.process.is_running():
            raise ServiceError(f"the Kafka broker exited during start-up: {self.process.log_tail(5)}")
        self.create_topics()
        return True

    def create_topics(self) -> None:
        """Create the architecture's topics; existing ones are left as they are."""
        ensure_topics(self.settings)

    def stop(self) -> bool:
        return self.process.stop(timeout_s=30)


def ensure_topics(settings: Settings, timeout_s: float = 60) -> None:
    """Create every configured topic with its partition count (idempotent)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    from ecom.errors import KafkaUnreachable

    def connect() -> KafkaAdminClient | None:
        try:
            return KafkaAdminClient(
                bootstrap_servers=settings.kafka.bootstrap_servers.split(","), request_timeout_ms=10000
            )
        except KafkaError:
            return None

    admins: list[KafkaAdminClient] = []
    if not wait_until(lambda: admins.append(connect()) or admins[-1] is not None, timeout_s, interval_s=1.0):
        raise KafkaUnreachable(
            f"Kafka at {settings.kafka.bootstrap_servers} does not answer; start the broker, "
            "or check ECOM_KAFKA__BOOTSTRAP_SERVERS"
        )
    admin = admins[-1]
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(name=topic, num_partitions=settings.kafka.partitions.get(topic, 1), replication_factor=1)
            for topic in settings.kafka.topics.values()
            if topic not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile by someone else
                admin.create_topics(wanted)
        wait_until(lambda: set(settings.kafka.topics.values()) <= set(admin.list_topics()), timeout_s)
    finally:
        admin.close()
