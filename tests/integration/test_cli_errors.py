"""The common failures of ``ecom``, each run for real as its own process: one line on stderr that says what
to do, no traceback, and the exit code of ``ecom.errors``.

Nothing needs to run: PostgreSQL and Kafka are pointed at a closed port, Maven is made offline with an empty
repository and the jar cache is an empty folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from ecom import errors

pytestmark = pytest.mark.integration


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ecom(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"ECOM_DEBUG", "ECOM_PII_KEY"}}
    return subprocess.run(
        [sys.executable, "-m", "ecom.cli", *args],
        env={**clean, "ECOM_PROFILE": "test", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line(done: subprocess.CompletedProcess, code: int, *parts: str) -> None:
    """Exit ``code``; the last line of stderr is ``ecom: ...`` with each of ``parts``; no traceback."""
    assert done.returncode == code, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("ecom: ")
    for part in parts:
        assert part in last, last


def test_unknown_profile():
    done = ecom("--profile", "prod", "status")
    assert_one_line(done, errors.UnknownProfile.exit_code, "unknown profile 'prod'", "use one of", "test")
    assert done.stderr.count("\n") == 1
    from_env = ecom("status", env={"ECOM_PROFILE": "staging"})
    assert_one_line(from_env, 10, "unknown profile 'staging'")


def test_missing_secret():
    # outside the local/test profiles the PII key must come from the environment: checked before Spark starts
    done = ecom("--profile", "cluster", "stream", "--once")
    assert_one_line(done, errors.MissingSecret.exit_code, "ECOM_PII_KEY is not set", "export ECOM_PII_KEY=")
    assert done.stderr.count("\n") == 1
    # the dashboard needs users outside the test profile; it says how to make one, before announcing an address
    users = {"ECOM_DASHBOARD_USERS": "", "ECOM_DASHBOARD_USERS_FILE": "", "ECOM_DASHBOARD__PORT": str(closed_port())}
    dash = ecom("--profile", "local", "dashboard", env=users)
    assert_one_line(dash, 11, "needs at least one user", "python -m dashboard.auth NAME")
    assert dash.stdout == ""


def test_postgres_unreachable():
    port = closed_port()
    done = ecom("migrate", env={"ECOM_POSTGRES__PORT": str(port)})
    assert_one_line(done, errors.PostgresUnreachable.exit_code, f"127.0.0.1:{port} is unreachable", "ecom up")
    assert done.stderr.count("\n") == 1
    debug = ecom("migrate", "--debug", env={"ECOM_POSTGRES__PORT": str(port)})
    assert debug.returncode == 12 and "Traceback" in debug.stderr and "psycopg2.OperationalError" in debug.stderr


def test_kafka_unreachable():
    servers = f"127.0.0.1:{closed_port()}"
    done = ecom("generate", "--count", "1", "--no-progress", env={"ECOM_KAFKA__BOOTSTRAP_SERVERS": servers})
    assert_one_line(done, errors.KafkaUnreachable.exit_code, f"no Kafka broker answers at {servers}", "ecom up")


def test_jars_not_resolvable(tmp_path):
    # Maven offline (its settings file) with an empty local repository, and an empty jar cache
    home = tmp_path / "home"
    (home / ".m2").mkdir(parents=True)
    (home / ".m2" / "settings.xml").write_text("<settings><offline>true</offline></settings>\n")
    env = {"ECOM_JARS__CACHE": str(tmp_path / "jars"), "MAVEN_OPTS": f"-Duser.home={home}"}
    done = ecom("setup", env=env)
    assert_one_line(done, errors.JarsUnresolvable.exit_code, "mvn could not resolve the spark jars", "ecom setup")
    debug = ecom("setup", env={**env, "ECOM_DEBUG": "1"})
    assert debug.returncode == 14 and "[ERROR]" in debug.stderr  # Maven's own output, with --debug only
    no_maven = ecom("setup", env={**env, "PATH": os.path.dirname(sys.executable)})
    assert_one_line(no_maven, 14, "Maven (mvn) is not on PATH", "apt-get install maven")
