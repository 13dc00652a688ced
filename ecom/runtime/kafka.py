"""Embedded Apache Kafka: real KRaft nodes run with plain ``java``, one by default.

The broker's jars come from Maven Central (``ecom.jars``); its data, config
and log live under ``<data_dir>/kafka`` and ``<data_dir>/run``. With
``kafka.brokers: 3`` three nodes (each broker and controller) form one cluster
and topics get three replicas, two of them in sync for an acks=all write.
With ``kafka.security_protocol: SASL_PLAINTEXT`` the client listener asks for
SCRAM; the configured user is created with the storage. Topics of the
architecture are created on start (idempotently). docs/kafka.md.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ecom import jars
from ecom.kafka_config import SASL_PROTOCOLS, client_kwargs, jaas_config, sasl_credentials
from ecom.runtime.process import ManagedProcess, ServiceError, ensure_port_free, port_open, wait_until
from ecom.settings import Settings

MIN_JAVA = 17
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")

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


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node of the embedded cluster: broker and controller in one JVM."""

    node_id: int
    port: int
    controller_port: int
    home: Path  # its config, log4j2 file and log.dirs
    process: ManagedProcess

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"


def node_layout(settings: Settings) -> list[KafkaNode]:
    """The embedded cluster's nodes: node 1 keeps the single broker's places (``<data_dir>/kafka``, pid file
    ``kafka``), node i > 1 lives in ``<data_dir>/kafka/node-<i>`` with pid file ``kafka-<i>``."""
    c = settings.kafka
    home = Path(settings.data_dir) / "kafka"
    nodes = []
    for i in range(c.brokers):
        node_id = i + 1
        nodes.append(
            KafkaNode(
                node_id=node_id,
                port=c.port + i * c.node_port_step,
                controller_port=c.controller_port + i * c.node_port_step,
                home=home if i == 0 else home / f"node-{node_id}",
                process=ManagedProcess("kafka" if i == 0 else f"kafka-{node_id}", settings.run_dir),
            )
        )
    return nodes


def broker_properties(settings: Settings, node: KafkaNode, nodes: list[KafkaNode]) -> dict[str, str]:
    """server.properties of one node: listeners, quorum, replication of internal topics, client security."""
    c = settings.kafka
    rf, min_isr = c.topic_replication_factor, c.topic_min_insync_replicas
    if c.security_protocol not in ("PLAINTEXT", "SASL_PLAINTEXT"):
        raise ServiceError(
            f"the embedded Kafka serves PLAINTEXT or SASL_PLAINTEXT, not {c.security_protocol}; "
            "for TLS point kafka.bootstrap_servers at your cluster with kafka.embedded false"
        )
    if rf > len(nodes):
        raise ServiceError(f"kafka.replication_factor {rf} needs at least {rf} brokers; kafka.brokers is {len(nodes)}")
    listener = c.security_protocol  # the client and inter-broker listener is named after its protocol
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(f"{n.node_id}@{c.host}:{n.controller_port}" for n in nodes),
        "listeners": f"{listener}://{c.host}:{node.port},CONTROLLER://{c.host}:{node.controller_port}",
        "advertised.listeners": f"{listener}://{c.host}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": listener,
        "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.log_dir),
        "num.partitions": "1",
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(min_isr),
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": str(rf),
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": str(c.retention_hours),
        "message.max.bytes": "10485760",
    }
    if c.security_protocol == "SASL_PLAINTEXT":
        mechanism = c.sasl_mechanism
        if mechanism not in SCRAM_MECHANISMS:
            raise ServiceError(
                f"the embedded Kafka authenticates with SCRAM ({', '.join(SCRAM_MECHANISMS)}), not {mechanism}"
            )
        props |= {
            "sasl.enabled.mechanisms": mechanism,
            "sasl.mechanism.inter.broker.protocol": mechanism,
            # brokers talk to each other as the configured user (created with the storage, see _format_storage)
            f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config": jaas_config(settings),
        }
    return props


def properties_value(value: str) -> str:
    """A value written so that Java's ``Properties.load`` reads it back: backslashes doubled, printable ASCII
    as it is, every other character as ``\\uXXXX`` (UTF-16 units; the file is read as ISO-8859-1)."""
    out = []
    for char in value.replace("\\", "\\\\"):
        if ord(char) < 0x7F and char not in "\r\n":
            out.append(char)
        else:
            units = char.encode("utf-16-be")
            out.extend(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2))
    return "".join(out)


SCRAM_ITERATIONS = 8192


def scram_user_argument(mechanism: str, user: str, password: str, salt: bytes | None = None) -> str:
    """The storage tool's ``--add-scram`` value for ``user``: the salted password (RFC 5802's
    Hi(password, salt, i), PBKDF2 with the mechanism's hash), so the password itself is never on a command
    line, e.g. ``SCRAM-SHA-512=[name="ecom",iterations=8192,salt="...",saltedpassword="..."]``."""
    if '"' in user:
        raise ServiceError("the embedded Kafka's SCRAM user cannot hold a double quote (\")")
    digest = {"SCRAM-SHA-512": "sha512", "SCRAM-SHA-256": "sha256"}[mechanism]
    salt = salt if salt is not None else secrets.token_bytes(32)
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, SCRAM_ITERATIONS)
    b64 = base64.b64encode
    return (
        f'{mechanism}=[name="{user}",iterations={SCRAM_ITERATIONS},'
        f'salt="{b64(salt).decode()}",saltedpassword="{b64(salted).decode()}"]'
    )


class EmbeddedKafka:
    """The embedded KRaft cluster on 127.0.0.1: ``kafka.brokers`` nodes (one by default), each broker and
    controller, run with plain ``java``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cfg = settings.kafka
        self.home = Path(settings.data_dir) / "kafka"
        self.nodes = node_layout(settings)
        self.process = self.nodes[0].process

    @property
    def properties_file(self) -> Path:
        return self.nodes[0].properties_file

    def _write_config(self, node: KafkaNode) -> None:
        node.home.mkdir(parents=True, exist_ok=True)
        props = broker_properties(self.settings, node, self.nodes)
        text = "".join(f"{k}={properties_value(v)}\n" for k, v in props.items())
        # With SASL the file holds the broker's own credentials: readable by its owner only.
        fd = os.open(node.properties_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(node.properties_file, 0o600)
        (node.home / "log4j2.yaml").write_text(LOG4J2)

    def cluster_id(self) -> str:
        """The cluster id every node is formatted with: kept in ``<data_dir>/kafka/cluster_id``, or read from
        a formatted first node (older single-broker folders), else new."""
        stored = self.home / "cluster_id"
        if stored.exists():
            return stored.read_text().strip()
        meta = self.nodes[0].log_dir / "meta.properties"
        found = re.search(r"^cluster\.id=(\S+)$", meta.read_text(), re.M) if meta.exists() else None
        cluster_id = found.group(1) if found else new_cluster_id()
        self.home.mkdir(parents=True, exist_ok=True)
        stored.write_text(cluster_id + "\n")
        return cluster_id

    def _format_storage(self, node: KafkaNode, java: str, classpath: str) -> None:
        c = self.cfg
        users_file = self.home / "scram_users"  # users created with the storage (names only)
        if (node.log_dir / "meta.properties").exists():
            if c.security_protocol == "SASL_PLAINTEXT":
                users = users_file.read_text().split() if users_file.exists() else []
                if f"{c.sasl_mechanism}:{c.sasl_username}" not in users:
                    raise ServiceError(
                        f"the embedded Kafka in {self.home} was formatted without the SCRAM user "
                        f"{c.sasl_username!r} ({c.sasl_mechanism}); `ecom down`, remove {self.home}, `ecom up`"
                    )
            return
        cmd = [
            java, "-cp", classpath, f"-Dlog4j2.configurationFile={node.home / 'log4j2.yaml'}",
            "kafka.tools.StorageTool", "format", "--cluster-id", self.cluster_id(),
            "--config", str(node.properties_file), "--ignore-formatted",
        ]  # fmt: skip
        if c.security_protocol == "SASL_PLAINTEXT":
            user, password = sasl_credentials(c)
            cmd += ["--add-scram", scram_user_argument(c.sasl_mechanism, user, password)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed: {(result.stderr or result.stdout).strip()[-300:]}")
        if c.security_protocol == "SASL_PLAINTEXT":
            users_file.write_text(f"{c.sasl_mechanism}:{c.sasl_username}\n")

    def is_running(self) -> bool:
        """True when every node runs."""
        return all(node.process.is_running() for node in self.nodes)

    def start(self) -> bool:
        """Start every node that does not run; returns True if one was started now."""
        stopped = [node for node in self.nodes if not node.process.is_running()]
        if not stopped:
            return False
        c = self.cfg
        for node in stopped:
            name = "Kafka" if len(self.nodes) == 1 else f"Kafka node {node.node_id}"
            ensure_port_free(c.host, node.port, name)
            ensure_port_free(c.host, node.controller_port, f"the controller of {name}")
        java = find_java()
        classpath = jars.kafka_classpath(self.settings)
        for node in stopped:
            self._write_config(node)
            self._format_storage(node, java, classpath)
        for node in stopped:  # all before waiting: a node waits for a quorum of controllers
            self.start_node(node, java, classpath)
        for node in stopped:
            self._wait_for(node)
        self.create_topics()
        return True

    def start_node(self, node: KafkaNode, java: str | None = None, classpath: str | None = None) -> None:
        """Start one node's JVM on its written config (``start`` writes it and formats the storage first)."""
        java = java or find_java()
        classpath = classpath or jars.kafka_classpath(self.settings)
        cmd = [
            java, f"-Xms{self.cfg.heap}", f"-Xmx{self.cfg.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node.home / 'log4j2.yaml'}",
            "-cp", classpath, "kafka.Kafka", str(node.properties_file),
        ]  # fmt: skip
        node.process.start(cmd)

    def _wait_for(self, node: KafkaNode) -> None:
        c = self.cfg
        up = wait_until(lambda: port_open(c.host, node.port) or not node.process.is_running(), c.start_timeout_s)
        if not up:
            self.stop()
            raise ServiceError(
                f"Kafka node {node.node_id} did not come up on {c.host}:{node.port} within "
                f"{c.start_timeout_s:.0f}s; see {node.process.log_file}"
            )
        if not node.process.is_running():
            self.stop()
            raise ServiceError(f"Kafka node {node.node_id} exited during start-up: {node.process.log_tail(5)}")

    def create_topics(self) -> None:
        """Create the architecture's topics; existing ones are left as they are."""
        ensure_topics(self.settings)

    def stop(self) -> bool:
        """Stop every node, all at once (one by one, the last would wait for a quorum that is gone); nodes a
        bigger ``kafka.brokers`` started earlier go too (their pid files name them)."""
        processes = {node.process.name: node.process for node in self.nodes}
        for pid_file in self.settings.run_dir.glob("kafka-*.pid"):
            if pid_file.stem[len("kafka-") :].isdigit():
                processes.setdefault(pid_file.stem, ManagedProcess(pid_file.stem, self.settings.run_dir))
        with ThreadPoolExecutor(max_workers=len(processes)) as pool:
            stopped = list(pool.map(lambda process: process.stop(timeout_s=30), processes.values()))
        return any(stopped)


def ensure_topics(settings: Settings, timeout_s: float = 60) -> None:
    """Create every configured topic with its partition count, ``kafka.replication_factor`` replicas and
    ``min.insync.replicas`` (idempotent: existing topics are left as they are)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, SaslAuthenticationFailedError, TopicAlreadyExistsError

    c = settings.kafka

    from ecom.errors import KafkaUnreachable

    def connect() -> KafkaAdminClient | None:
        try:
            # each try waits for the brokers a short while: the loop below tries again until timeout_s
            bootstrap_ms = int(min(timeout_s, 10) * 1000)
            return KafkaAdminClient(
                **client_kwargs(settings), request_timeout_ms=10000, bootstrap_timeout_ms=bootstrap_ms
            )
        except SaslAuthenticationFailedError as exc:
            raise ServiceError(auth_failure_message(settings, exc)) from exc
        except KafkaError:
            return None

    admins: list[KafkaAdminClient] = []
    if not wait_until(lambda: admins.append(connect()) or admins[-1] is not None, timeout_s, interval_s=1.0):
        raise KafkaUnreachable(unreachable_message(settings))
    admin = admins[-1]
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name=topic,
                num_partitions=c.partitions.get(topic, 1),
                replication_factor=c.topic_replication_factor,
                topic_configs={"min.insync.replicas": str(c.topic_min_insync_replicas)},
            )
            for topic in c.topics.values()
            if topic not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile by someone else
                admin.create_topics(wanted)
        wait_until(lambda: set(c.topics.values()) <= set(admin.list_topics()), timeout_s)
    finally:
        admin.close()


def unreachable_message(settings: Settings) -> str:
    """Why no client could start: nothing answers, or (SASL) brokers answer but let no one in. A broker
    refusing a SCRAM login closes the connection, which kafka-python reports as a lost connection only."""
    c = settings.kafka
    answering = [s for s in c.bootstrap_servers.split(",") if port_open(*_host_port(s))]
    if answering and c.security_protocol in SASL_PROTOCOLS:
        return (
            f"Kafka at {','.join(answering)} answers but refused the {c.sasl_mechanism} login of "
            f"{c.sasl_username!r} over {c.security_protocol}: check ECOM_KAFKA_PASSWORD and kafka.sasl_*"
        )
    return f"Kafka at {c.bootstrap_servers} does not answer; start the broker, or check ECOM_KAFKA__BOOTSTRAP_SERVERS"


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]"), int(port)


def auth_failure_message(settings: Settings, exc: Exception) -> str:
    """One line for a refused SASL login: who, how, and where the password comes from."""
    c = settings.kafka
    return (
        f"Kafka at {c.bootstrap_servers} refused the {c.sasl_mechanism} login of {c.sasl_username!r}: "
        f"check ECOM_KAFKA_PASSWORD ({exc})"
    )
