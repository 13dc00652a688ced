"""Every Kafka client's settings come from one place: kafka-python kwargs and Spark's options from settings."""

from __future__ import annotations

import pytest

from ecom import kafka_config
from ecom.kafka_config import (
    KafkaConfigError,
    client_kwargs,
    jaas_quote,
    producer_kwargs,
    spark_options,
)
from ecom.settings import load_settings

SASL = {
    "ECOM_KAFKA__BOOTSTRAP_SERVERS": "b1:9092,b2:9092",
    "ECOM_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "ECOM_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
    "ECOM_KAFKA__SASL_USERNAME": "ecom",
}


def test_plaintext_clients_get_the_bootstrap_list_and_nothing_secret():
    settings = load_settings("local", environ={"ECOM_KAFKA__BOOTSTRAP_SERVERS": "b1:9092,b2:9092"})
    assert client_kwargs(settings, environ={}) == {
        "bootstrap_servers": ["b1:9092", "b2:9092"],
        "security_protocol": "PLAINTEXT",
    }
    assert spark_options(settings, environ={}) == {
        "kafka.bootstrap.servers": "b1:9092,b2:9092",
        "kafka.security.protocol": "PLAINTEXT",
    }


def test_sasl_scram_settings_with_the_password_from_the_environment():
    settings = load_settings("local", environ=SASL)
    env = {"ECOM_KAFKA_PASSWORD": "s3cret"}
    assert client_kwargs(settings, environ=env) == {
        "bootstrap_servers": ["b1:9092", "b2:9092"],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ecom",
        "sasl_plain_password": "s3cret",
    }
    assert spark_options(settings, environ=env) == {
        "kafka.bootstrap.servers": "b1:9092,b2:9092",
        "kafka.security.protocol": "SASL_PLAINTEXT",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required username="ecom" '
        'password="s3cret";',
    }


def test_the_producer_gets_its_reliability_settings_and_the_security():
    settings = load_settings("local", environ=SASL)
    kwargs = producer_kwargs(settings, environ={"ECOM_KAFKA_PASSWORD": "pw"})
    assert kwargs["acks"] == settings.producer.acks == "all"
    assert kwargs["enable_idempotence"] is True
    assert kwargs["sasl_plain_password"] == "pw" and kwargs["bootstrap_servers"] == ["b1:9092", "b2:9092"]


def test_sasl_ssl_trusts_the_configured_ca_in_both_clients():
    env = {**SASL, "ECOM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "ECOM_KAFKA__SSL_CAFILE": "/etc/kafka/ca.pem"}
    settings = load_settings("local", environ=env)
    assert client_kwargs(settings, environ={"ECOM_KAFKA_PASSWORD": "pw"})["ssl_cafile"] == "/etc/kafka/ca.pem"
    options = spark_options(settings, environ={"ECOM_KAFKA_PASSWORD": "pw"})
    assert options["kafka.ssl.truststore.type"] == "PEM"
    assert options["kafka.ssl.truststore.location"] == "/etc/kafka/ca.pem"
    assert options["kafka.security.protocol"] == "SASL_SSL"


@pytest.mark.parametrize(
    ("environ", "password_env", "message"),
    [
        ({**SASL}, {}, "ECOM_KAFKA_PASSWORD"),
        ({**SASL}, {"ECOM_KAFKA_PASSWORD": ""}, "ECOM_KAFKA_PASSWORD"),
        ({**SASL, "ECOM_KAFKA__SASL_USERNAME": ""}, {"ECOM_KAFKA_PASSWORD": "pw"}, "kafka.sasl_username"),
        ({**SASL, "ECOM_KAFKA__SASL_MECHANISM": ""}, {"ECOM_KAFKA_PASSWORD": "pw"}, "kafka.sasl_mechanism"),
    ],
    ids=["no password", "empty password", "no user", "no mechanism"],
)
def test_incomplete_sasl_settings_are_a_clear_error_in_both_builders(environ, password_env, message):
    settings = load_settings("local", environ=environ)
    with pytest.raises(KafkaConfigError, match=message):
        client_kwargs(settings, environ=password_env)
    with pytest.raises(KafkaConfigError, match=message):
        spark_options(settings, environ=password_env)


def test_an_unknown_protocol_or_mechanism_is_refused_when_settings_load():
    with pytest.raises(ValueError, match="security_protocol"):
        load_settings("local", environ={"ECOM_KAFKA__SECURITY_PROTOCOL": "SASL"})
    with pytest.raises(ValueError, match="sasl_mechanism"):
        load_settings("local", environ={"ECOM_KAFKA__SASL_MECHANISM": "SCRAM-SHA-1"})


def test_the_password_is_read_from_the_process_environment_by_default(monkeypatch):
    settings = load_settings("local", environ=SASL)
    monkeypatch.setenv(kafka_config.PASSWORD_ENV, "from-env")
    assert client_kwargs(settings)["sasl_plain_password"] == "from-env"


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("plain", '"plain"'), ('a"b', '"a\\"b"'), ("back\\slash", '"back\\\\slash"'), ("", '""')],
)
def test_jaas_values_are_quoted_so_java_reads_them_back(value, quoted):
    assert jaas_quote(value) == quoted


def test_a_jaas_config_with_a_quote_in_the_password_stays_one_value():
    settings = load_settings("local", environ=SASL)
    jaas = spark_options(settings, environ={"ECOM_KAFKA_PASSWORD": 'p"w;x'})["kafka.sasl.jaas.config"]
    assert jaas.endswith('password="p\\"w;x";')


def test_every_kafka_client_in_the_code_is_built_from_kafka_config():
    """No client constructor takes bootstrap servers by hand outside ecom.kafka_config (tests aside)."""
    from ecom.settings import ROOT

    offenders = []
    for package in ("ecom", "simulator", "pipelines", "ml", "serving", "dashboard", "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            if "bootstrap_servers=" in text or '"kafka.bootstrap.servers", settings' in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
