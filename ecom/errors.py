"""The errors ``ecom`` reports in one line, each with its own exit code (the only place the codes are defined).

Every class carries ``exit_code``; its message says what went wrong and what to do. The CLI prints
``ecom: <message>`` to stderr and exits with the code, without a traceback (``--debug`` or ``ECOM_DEBUG=1``
shows it). Failures that arise as a library's own exception (psycopg2 cannot connect, kafka-python finds no
broker) are translated at the CLI's boundary by ``from_exception``, so code that retries on those exceptions
keeps seeing them. Nothing here imports more than the standard library: the CLI imports it before parsing.
"""

from __future__ import annotations

import os
import re
import sys

OK = 0
FAILED = 1  # the command ran and found a problem (reconcile disagrees), or an unexpected error (with a traceback)
USAGE = 2  # a wrong argument or option (argparse), or a one-line service error (ServiceError)
SERVICE_DOWN = 3  # `ecom status`: a service is down
INTERRUPTED = 130  # Ctrl-C or SIGTERM


class EcomError(RuntimeError):
    """An expected failure: one line for the user that says what to do, and an exit code."""

    exit_code = FAILED
    detail: str = ""  # more lines (a tool's output), shown with --debug only


class ServiceError(EcomError):
    """A service could not be started or stopped, or a command cannot go on; the message is one line."""

    exit_code = USAGE


class UnknownProfile(EcomError, ValueError):
    """The settings profile has no ``conf/<profile>.yaml``."""

    exit_code = 10


class MissingSecret(EcomError):
    """A secret this profile needs is not in the environment (or is malformed, or refused)."""

    exit_code = 11


class PostgresUnreachable(ServiceError):
    """PostgreSQL does not accept a connection."""

    exit_code = 12


class KafkaUnreachable(ServiceError):
    """No Kafka broker answers at the bootstrap servers."""

    exit_code = 13


class JarsUnresolvable(EcomError):
    """The JVM jars are not in the cache and Maven cannot fetch them (offline, or no ``mvn``)."""

    exit_code = 14


# (exit code, what it means) in the order `ecom --help` and the README list them
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (OK, "success"),
    (FAILED, "the command found a problem (e.g. reconcile disagrees) or failed unexpectedly"),
    (USAGE, "wrong arguments, or a service error the message explains"),
    (SERVICE_DOWN, "ecom status: a service is down"),
    (UnknownProfile.exit_code, "unknown settings profile"),
    (MissingSecret.exit_code, "a required secret is missing (or refused)"),
    (PostgresUnreachable.exit_code, "PostgreSQL unreachable"),
    (KafkaUnreachable.exit_code, "Kafka unreachable"),
    (JarsUnresolvable.exit_code, "JVM jars not resolvable (Maven offline or missing)"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
)


def _chain(exc: BaseException):
    """``exc`` and the exceptions it was raised from or during, innermost last."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_instance(exc: BaseException, module: str, names: tuple[str, ...]) -> bool:
    """``isinstance`` against classes of ``module`` only if it is already imported (never imports it)."""
    mod = sys.modules.get(module)
    classes = tuple(getattr(mod, n) for n in names if mod is not None and hasattr(mod, n))
    return bool(classes) and isinstance(exc, classes)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def from_exception(exc: BaseException, settings=None) -> EcomError | None:
    """The typed error for a library exception that is one of the common failures, else None.

    ``settings`` (when loaded) names the server in the message."""
    for e in _chain(exc):
        if isinstance(e, EcomError):
            return e
        if _is_instance(e, "psycopg2", ("OperationalError",)):
            text = str(e).lower()
            where = _postgres_where(settings)
            fix = "set ECOM_POSTGRES_PASSWORD (or a DSN with it in ECOM_POSTGRES_DSN) for the configured user"
            if "no password supplied" in text:
                return MissingSecret(f"PostgreSQL{where} asks for a password and none is set; {fix}")
            if "password authentication failed" in text:
                return MissingSecret(f"PostgreSQL{where} refused the password; {fix}")
            if _connection_failure(text):
                return PostgresUnreachable(
                    f"PostgreSQL{where} is unreachable ({_first_line(e)}); start it with `ecom up`, "
                    "or check ECOM_POSTGRES_DSN / ECOM_POSTGRES__HOST and ECOM_POSTGRES__PORT"
                )
        # kafka-python 2 raises NoBrokersAvailable; 3 a KafkaTimeoutError "Unable to bootstrap from [...]"
        if _is_instance(e, "kafka.errors", ("NoBrokersAvailable",)) or (
            _is_instance(e, "kafka.errors", ("KafkaTimeoutError",)) and _KAFKA_UNREACHABLE.search(str(e))
        ):
            servers = f" at {settings.kafka.bootstrap_servers}" if settings is not None else ""
            return KafkaUnreachable(
                f"no Kafka broker answers{servers}; start it with `ecom up`, or check ECOM_KAFKA__BOOTSTRAP_SERVERS"
            )
    return None


# kafka-python's timeouts that mean no broker was reached (not a slow send to a reachable one)
_KAFKA_UNREACHABLE = re.compile(r"unable to bootstrap|no brokers", re.IGNORECASE)

# psycopg2 reports every failure to connect as OperationalError; these say the server was not reached
_UNREACHABLE = (
    "connection refused",
    "could not connect",
    "could not translate host name",
    "timeout expired",
    "no route to host",
    "server closed the connection",
    "network is unreachable",
    "is the server running",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
)


def _connection_failure(text: str) -> bool:
    return any(marker in text for marker in _UNREACHABLE)


def _postgres_where(settings) -> str:
    if settings is None:
        return ""
    if os.environ.get("ECOM_POSTGRES_DSN"):
        return " (ECOM_POSTGRES_DSN)"
    return f" at {settings.postgres.host}:{settings.postgres.port}"
