"""Kafka client settings, built once from the typed settings for every client of the project.

Two builders, one per client library, both from ``settings.kafka`` (``bootstrap_servers``,
``security_protocol``, ``sasl_mechanism``, ``sasl_username``, ``ssl_cafile``) and the password in
``ECOM_KAFKA_PASSWORD`` (the environment only, never a file in the repository):

- ``client_kwargs``: keyword arguments of any kafka-python client (producer, consumer, admin); the
  simulator, the alert producer, reconcile, training, the dashboard and topic creation use it;
  ``producer_kwargs`` adds ``settings.producer`` (acks, idempotence, batching, timeouts);
- ``spark_options``: options of Spark's Kafka source (``kafka.bootstrap.servers``,
  ``kafka.security.protocol``, ``kafka.sasl.mechanism``, ``kafka.sasl.jaas.config``, a PEM truststore).

docs/kafka.md describes the settings, the embedded cluster and SCRAM users.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ecom.runtime.process import ServiceError
from ecom.settings import KafkaSettings, Settings

PASSWORD_ENV = "ECOM_KAFKA_PASSWORD"
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
# The JAAS login module of each SASL mechanism the project supports (Spark's Java client needs it spelled out).
LOGIN_MODULES = {
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
}


class KafkaConfigError(ServiceError, ValueError):
    """The Kafka security settings are incomplete (e.g. SASL without a user or password); the CLI prints the
    one-line message (a ``ServiceError``)."""


def _kafka(settings: Settings | KafkaSettings) -> KafkaSettings:
    return settings.kafka if isinstance(settings, Settings) else settings


def kafka_password(environ: Mapping[str, str] | None = None) -> str | None:
    """The SASL password: ``ECOM_KAFKA_PASSWORD``, or None when unset or empty."""
    return (os.environ if environ is None else environ).get(PASSWORD_ENV) or None


def sasl_credentials(settings: Settings | KafkaSettings, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(user, password) for a SASL protocol; a clear error names what is missing."""
    kafka = _kafka(settings)
    if kafka.sasl_mechanism not in LOGIN_MODULES:
        raise KafkaConfigError(
            f"kafka.security_protocol {kafka.security_protocol} needs kafka.sasl_mechanism "
            f"({', '.join(LOGIN_MODULES)}), not {kafka.sasl_mechanism!r}"
        )
    if not kafka.sasl_username:
        raise KafkaConfigError(f"kafka.security_protocol {kafka.security_protocol} needs kafka.sasl_username")
    password = kafka_password(environ)
    if password is None:
        raise KafkaConfigError(
            f"kafka.security_protocol {kafka.security_protocol} needs the password of "
            f"{kafka.sasl_username!r} in {PASSWORD_ENV}"
        )
    return kafka.sasl_username, password


def security_kwargs(settings: Settings | KafkaSettings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """kafka-python's security arguments: nothing beyond the protocol for PLAINTEXT."""
    kafka = _kafka(settings)
    kwargs: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol in SASL_PROTOCOLS:
        user, password = sasl_credentials(kafka, environ)
        kwargs |= {"sasl_mechanism": kafka.sasl_mechanism, "sasl_plain_username": user, "sasl_plain_password": password}
    if kafka.security_protocol in TLS_PROTOCOLS and kafka.ssl_cafile:
        kwargs["ssl_cafile"] = kafka.ssl_cafile
    return kwargs


def client_kwargs(settings: Settings | KafkaSettings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments every kafka-python client (``KafkaProducer``, ``KafkaConsumer``, ``KafkaAdminClient``)
    needs to reach the configured brokers: bootstrap servers and security."""
    kafka = _kafka(settings)
    return {"bootstrap_servers": kafka.bootstrap_servers.split(","), **security_kwargs(kafka, environ)}


def producer_kwargs(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A ``KafkaProducer``'s keyword arguments: ``settings.producer`` (acks, idempotence, batching, timeouts)
    plus ``client_kwargs``."""
    return {
        **settings.producer.client_config(settings.kafka.bootstrap_servers),
        **client_kwargs(settings, environ),
    }


def jaas_quote(value: str) -> str:
    """A value inside a JAAS config's double quotes (Java's tokenizer reads ``\\\\`` and ``\\"`` back)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def jaas_config(settings: Settings | KafkaSettings, environ: Mapping[str, str] | None = None) -> str:
    """The ``sasl.jaas.config`` of the Java client: the mechanism's login module with user and password."""
    kafka = _kafka(settings)
    user, password = sasl_credentials(kafka, environ)
    module = LOGIN_MODULES[kafka.sasl_mechanism]
    return f"{module} required username={jaas_quote(user)} password={jaas_quote(password)};"


def java_client_properties(
    settings: Settings | KafkaSettings, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The Java client's properties for the configured security (no bootstrap servers); Spark prefixes them
    with ``kafka.``."""
    kafka = _kafka(settings)
    props = {"security.protocol": kafka.security_protocol}
    if kafka.security_protocol in SASL_PROTOCOLS:
        props |= {"sasl.mechanism": kafka.sasl_mechanism, "sasl.jaas.config": jaas_config(kafka, environ)}
    if kafka.security_protocol in TLS_PROTOCOLS and kafka.ssl_cafile:
        props |= {"ssl.truststore.type": "PEM", "ssl.truststore.location": kafka.ssl_cafile}
    return props


def spark_options(settings: Settings | KafkaSettings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Options of Spark's Kafka source (and sink) for the configured brokers and security.

    The JAAS config holds the password; Spark redacts option values that match ``spark.redaction.regex``
    (``password`` does) in its UI and logs."""
    kafka = _kafka(settings)
    props = java_client_properties(kafka, environ)
    return {"kafka.bootstrap.servers": kafka.bootstrap_servers, **{f"kafka.{k}": v for k, v in props.items()}}
