"""Kafka over SASL_PLAINTEXT with SCRAM-SHA-512: every client of the project logs in with the settings.

A broker of its own (the embedded runtime with ``kafka.security_protocol: SASL_PLAINTEXT``, free ports, own
data folder) whose SCRAM user is created with its storage; the password is only in ``ECOM_KAFKA_PASSWORD``.
The simulator's producer sends, a consumer built by ``ecom.kafka_config`` reads, the alert producer sends;
a wrong password, or none, is a clear error; Spark's Kafka source reads the topic with the options
``spark_options`` builds; and ``ecom stream all --once`` plus ``ecom reconcile`` run over SASL end to end.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from ecom.kafka_config import PASSWORD_ENV, KafkaConfigError, client_kwargs, producer_kwargs, spark_options
from ecom.runtime.kafka import EmbeddedKafka, ensure_topics
from ecom.runtime.process import ServiceError
from pipelines.silver.sinks import AlertSink
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer, encode
from tests.conftest import shop_environment
from tests.faults import private_kafka, read_topic

pytestmark = pytest.mark.integration

USER = "ecom-test"
ORDERS = 300
QUICK_CONSUMER = {"bootstrap_timeout_ms": 5000, "session_timeout_ms": 5000, "request_timeout_ms": 6000}


def sasl(settings):
    """``settings`` whose clients use SASL_PLAINTEXT with SCRAM-SHA-512 as ``USER``."""
    kafka = settings.kafka.model_copy(
        update={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": USER}
    )
    return settings.model_copy(update={"kafka": kafka})


def sasl_environment(settings) -> dict[str, str]:
    """Environment of a child ``ecom`` on the SASL broker (its address, security settings and password)."""
    k = settings.kafka
    return shop_environment(
        settings,
        ECOM_KAFKA__BOOTSTRAP_SERVERS=k.bootstrap_servers,
        ECOM_KAFKA__SECURITY_PROTOCOL=k.security_protocol,
        ECOM_KAFKA__SASL_MECHANISM=k.sasl_mechanism,
        ECOM_KAFKA__SASL_USERNAME=k.sasl_username,
    )


@pytest.fixture
def broker(isolated, tmp_path, monkeypatch):
    """A SASL/SCRAM broker of this test's own, with the isolated lake, database and topic names."""
    monkeypatch.setenv(PASSWORD_ENV, secrets.token_urlsafe(16) + ",;=]")  # characters a config file could trip on
    settings = sasl(private_kafka(isolated, tmp_path / "sasl"))
    kafka = EmbeddedKafka(settings)
    try:
        kafka.start()  # creates the topics: the admin client logged in
        yield settings
    finally:
        kafka.stop()


def send_orders(settings, count: int, seed: int) -> list[str]:
    """``count`` simulated orders through the simulator's producer; their event ids."""
    sim = TransactionSimulator(settings.simulator, seed=seed)
    events = [g.event for g in sim.events(count, start=datetime.now(UTC), rate_per_s=2000)]
    producer = TransactionProducer(settings)
    for event in events:
        producer.send_raw(event["customer_id"], encode(event))
    producer.close()
    assert producer.stats.failed == 0 and producer.stats.delivered == count, producer.stats.errors
    return [e["event_id"] for e in events]


def test_the_simulator_sends_and_a_consumer_reads_over_sasl_scram(broker):
    sent = send_orders(broker, ORDERS, seed=51)
    read = [json.loads(v)["event_id"] for v in read_topic(broker, broker.kafka.transactions_topic)]
    assert sorted(read) == sorted(sent)


def test_the_alert_producer_logs_in_with_the_settings(broker):
    producer = AlertSink(broker, bookkeeping=None).make_producer()
    try:
        producer.send(broker.kafka.alerts_topic, key=b"C-1", value=b'{"alert_id": "a-1"}').get(timeout=30)
    finally:
        producer.close()
    assert read_topic(broker, broker.kafka.alerts_topic) == [b'{"alert_id": "a-1"}']


def test_a_wrong_password_is_a_clear_error(broker, monkeypatch):
    """``ecom up`` (topic creation) names the login that failed and where the password comes from; the
    clients themselves get no further than the login (the broker closes the connection)."""
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    with pytest.raises(ServiceError, match=f"refused the SCRAM-SHA-512 login of '{USER}'.*{PASSWORD_ENV}"):
        ensure_topics(broker, timeout_s=10)
    with pytest.raises(KafkaError):
        producer = KafkaProducer(**{**producer_kwargs(broker), "max_block_ms": 5000, "bootstrap_timeout_ms": 5000})
        producer.send(broker.kafka.transactions_topic, b"x").get(timeout=10)
    with pytest.raises(KafkaError):
        KafkaConsumer(**client_kwargs(broker), **QUICK_CONSUMER).topics()


def test_no_password_or_no_login_is_refused(broker, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(KafkaConfigError, match=PASSWORD_ENV):
        TransactionProducer(broker)
    plaintext = broker.model_copy(update={"kafka": broker.kafka.model_copy(update={"security_protocol": "PLAINTEXT"})})
    with pytest.raises(KafkaError):  # the broker has no listener without a login
        KafkaConsumer(**client_kwargs(plaintext), **QUICK_CONSUMER).topics()


def test_spark_reads_the_topic_with_the_options_built_from_settings(broker, spark):
    sent = send_orders(broker, 50, seed=52)
    records = (
        spark.read.format("kafka")
        .options(**spark_options(broker))
        .option("subscribe", broker.kafka.transactions_topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )
    read = [json.loads(row.value)["event_id"] for row in records.select("value").collect()]
    assert sorted(read) == sorted(sent)


@pytest.mark.timeout(900)
def test_the_ingest_stream_and_reconcile_run_over_sasl(broker):
    """``ecom stream all --once`` reads over SASL into bronze, silver and PostgreSQL; ``ecom reconcile``
    (a SASL consumer too) finds Kafka and the lake and database in agreement."""
    sent = send_orders(broker, ORDERS, seed=53)
    env = sasl_environment(broker)
    for args in (["stream", "all", "--once"], ["reconcile", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "ecom.cli", *args], env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"ecom {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    assert [report[k] for k in ("produced", "bronze", "silver", "postgres")] == [len(sent)] * 4, report
