"""A 3-broker KRaft cluster loses a broker under load: every acknowledged order is found downstream.

The cluster is the embedded runtime's (``kafka.brokers: 3``), on ports of its own with its own data folder:
three nodes, each broker and controller, topics with three replicas and ``min.insync.replicas=2``. The
simulator's producer (acks=all, idempotent) sends at a steady rate; meanwhile the broker leading a partition
of the orders topic is killed (SIGKILL). Afterwards, with that broker still down:

- every send has an outcome, none failed, and each acknowledged order is in the topic once (a fresh consumer
  reads it from the two brokers left);
- ``ecom stream all --once`` takes the topic into bronze, silver and PostgreSQL, ``ecom reconcile`` is exact,
  and every acknowledged order is a row in PostgreSQL;

then the broker is started again and catches up: every partition has three in-sync replicas.

The tests share one cluster (started once); the broker test runs last. Marker ``cluster``: run by ``make
test-cluster``, not by the default ``pytest``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from ecom.kafka_config import client_kwargs
from ecom.runtime.kafka import EmbeddedKafka, ensure_topics
from ecom.runtime.process import port_open, wait_until
from serving.db import connection, drop_database, recreate_database
from simulator.generator import TransactionSimulator
from simulator.runner import run_live
from tests.conftest import isolated_settings, shop_environment
from tests.integration.test_kafka_outage import Tracked, assert_acknowledged_arrived_once

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

PORT_RANGE = range(49100, 49200)  # the ports this test may take; node i: base + 10 i, its controller + 1
RATE = 300.0  # orders per second
BEFORE_S, AFTER_S = 6.0, 14.0  # sending before the kill, and after it


def bindable(port: int) -> bool:
    """Nothing listens on ``port`` and no socket holds it (the range lies among the ephemeral ports, which
    clients' connections take too)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not port_open("127.0.0.1", port)


def free_cluster_ports(step: int, nodes: int = 3) -> int:
    """A base port in PORT_RANGE whose node and controller ports (base + i*step, + 1) are all free."""
    for base in PORT_RANGE:
        ports = [base + i * step + j for i in range(nodes) for j in (0, 1)]
        if ports[-1] in PORT_RANGE and all(bindable(p) for p in ports):
            return base
    pytest.skip(f"no free ports for a {nodes}-node cluster in {PORT_RANGE}")


def cluster_settings(settings, root: Path):
    """``settings`` with an embedded 3-node cluster of its own: data under ``root``, ports in PORT_RANGE."""
    step = settings.kafka.node_port_step
    base = free_cluster_ports(step)
    kafka = settings.kafka.model_copy(
        update={
            "brokers": 3,
            "port": base,
            "controller_port": base + 1,
            "bootstrap_servers": ",".join(f"127.0.0.1:{base + i * step}" for i in range(3)),
            "heap": "384m",
            "replication_factor": None,
            "min_insync_replicas": None,
        }
    )
    return settings.model_copy(update={"data_dir": str(root), "kafka": kafka})


def describe(settings, topic: str) -> list[dict]:
    """The topic's partitions: {partition, leader, replicas, isr} (broker ids)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**client_kwargs(settings), request_timeout_ms=10000)
    try:
        [found] = admin.describe_topics([topic])
    finally:
        admin.close()
    return [
        {
            "partition": p.get("partition_index", p.get("partition")),
            "leader": p.get("leader_id", p.get("leader")),
            "replicas": sorted(p.get("replica_nodes", p.get("replicas")) or []),
            "isr": sorted(p.get("isr_nodes", p.get("isr")) or []),
        }
        for p in found["partitions"]
    ]


def min_insync_replicas(settings, topic: str) -> str:
    """The topic's ``min.insync.replicas`` as the brokers report it."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(**client_kwargs(settings), request_timeout_ms=10000)
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"min.insync.replicas": None})
        found = admin.describe_configs([resource])  # {resource type: {name: {config: {value, ...}}}}
    finally:
        admin.close()
    return found["topic"][topic]["min.insync.replicas"]["value"]


def run_ecom_env(env: dict[str, str], *args: str) -> str:
    """``python -m ecom.cli ARGS`` in ``env``; its stdout, or the test fails with its output."""
    done = subprocess.run(
        [sys.executable, "-m", "ecom.cli", *args], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"ecom {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def kill_node(node) -> None:
    """SIGKILL a node's JVM (a crash, not a controlled shutdown)."""
    pid = node.process.pid()
    assert pid is not None, f"node {node.node_id} does not run"
    os.killpg(pid, signal.SIGKILL)
    assert wait_until(lambda: not node.process.is_running(), 30), f"node {node.node_id} did not die"


@pytest.fixture(scope="module")
def cluster(stack, tmp_path_factory):
    """One cluster for the module's tests, with a topic, lake and database of their own. The test that kills a
    broker runs last and starts it again."""
    root = tmp_path_factory.mktemp("kafka-cluster")
    settings = cluster_settings(isolated_settings(stack, root / "isolated", uuid.uuid4().hex[:10]), root / "cluster")
    recreate_database(settings.postgres.dsn)
    kafka = EmbeddedKafka(settings)
    try:
        kafka.start()
        yield settings, kafka
    finally:
        kafka.stop()
        drop_database(settings.postgres.dsn)


def test_topics_of_a_three_broker_cluster_have_three_replicas_two_in_sync(cluster):
    settings, kafka = cluster
    assert kafka.is_running() and len(kafka.nodes) == 3
    for topic in settings.kafka.topics.values():
        partitions = describe(settings, topic)
        assert len(partitions) == settings.kafka.partitions.get(topic, 1)
        assert all(p["replicas"] == [1, 2, 3] and p["isr"] == [1, 2, 3] for p in partitions), partitions
        assert min_insync_replicas(settings, topic) == "2"


def test_ensure_topics_on_a_running_cluster_is_idempotent(cluster):
    settings, _ = cluster
    ensure_topics(settings)
    ensure_topics(settings)
    assert all(len(p["replicas"]) == 3 for p in describe(settings, settings.kafka.transactions_topic))


@pytest.mark.timeout(1200)
def test_a_broker_killed_under_load_loses_no_acknowledged_order_down_to_postgres(cluster, record_property):
    settings, kafka = cluster
    topic = settings.kafka.transactions_topic
    victim_id = describe(settings, topic)[0]["leader"]
    victim = next(node for node in kafka.nodes if node.node_id == victim_id)
    producer = Tracked(settings)
    assert settings.producer.acks == "all"
    timeline: dict[str, float] = {}

    def crash() -> None:
        time.sleep(BEFORE_S)
        timeline["sent_before"] = producer.stats.sent
        kill_node(victim)
        timeline["killed"] = time.monotonic()

    chaos = threading.Thread(target=crash, daemon=True)
    chaos.start()
    run_live(
        settings, producer, TransactionSimulator(settings.simulator, seed=31), RATE, duration=BEFORE_S + AFTER_S,
        progress=False,
    )  # fmt: skip
    producer.close()
    chaos.join(timeout=60)
    assert "killed" in timeline and not victim.process.is_running()
    stats = producer.stats
    record_property("sent", stats.sent)
    record_property("sent_before_kill", timeline["sent_before"])
    record_property("delivered", stats.delivered)
    record_property("failed", stats.failed)
    assert stats.sent > timeline["sent_before"] > 0, "the broker was not killed under load"
    assert stats.failed == 0, stats.errors  # two in-sync replicas are left: acks=all writes still succeed

    # The controller fences the dead broker (after its session times out): it leads nothing, is in no ISR.
    def victim_fenced() -> bool:
        return all(p["leader"] != victim_id and victim_id not in p["isr"] for p in describe(settings, topic))

    assert wait_until(victim_fenced, 60, 1), describe(settings, topic)

    # A fresh consumer finds every acknowledged order once; so does the ingest stream, down to PostgreSQL.
    labels = settings.kafka.labels_topic
    assert_acknowledged_arrived_once(producer, settings, [topic, labels])
    acknowledged = set(producer.acknowledged(topic))
    env = shop_environment(settings, ECOM_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers)
    started = time.monotonic()
    run_ecom_env(env, "stream", "all", "--once")
    record_property("stream_once_s", round(time.monotonic() - started, 1))
    report = json.loads(run_ecom_env(env, "reconcile", "--json"))  # exit 0: exact
    orders = len(acknowledged)
    counts = [report[k] for k in ("produced", "bronze", "silver", "postgres", "quarantine", "duplicates")]
    assert counts == [orders, orders, orders, orders, 0, 0], report
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id FROM transactions")
        in_postgres = {row[0] for row in cur.fetchall()}
    assert acknowledged <= in_postgres, f"{len(acknowledged - in_postgres)} acknowledged orders not in PostgreSQL"
    assert len(in_postgres) == len(acknowledged)

    # The broker comes back and catches up.
    assert kafka.start()
    assert wait_until(lambda: all(p["isr"] == [1, 2, 3] for p in describe(settings, topic)), 120, 2)
