"""Shared fixtures: the test profile, one session-scoped Spark, the real embedded stack.

The test profile (conf/test.yaml) has its own ports and data folder, so tests
never touch a running demo. ``stack`` starts the real Kafka broker and
PostgreSQL once per session if they are not running, and stops what it started.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

os.environ["ECOM_PROFILE"] = "test"

from ecom.settings import Settings, child_environment, load_settings  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings("test")


@pytest.fixture(scope="session")
def stack(settings: Settings):
    """The real embedded Kafka + PostgreSQL + MLflow store of the test profile."""
    from ecom.runtime import stack as runtime_stack
    from ecom.runtime.kafka import EmbeddedKafka
    from ecom.runtime.postgres import EmbeddedPostgres

    kafka, pg = EmbeddedKafka(settings), EmbeddedPostgres(settings)
    was_running = kafka.is_running() and pg.is_running()
    runtime_stack.up(settings, log=lambda *_: None)
    yield settings
    if not was_running and not os.environ.get("ECOM_TEST_KEEP_STACK"):
        runtime_stack.down(settings, log=lambda *_: None)


@pytest.fixture(scope="session")
def spark(settings: Settings):
    from ecom.spark import get_spark

    session = get_spark(settings, "ecom-tests")
    yield session
    session.stop()


def with_topic(settings: Settings, role: str, name: str, partitions: int = 1) -> Settings:
    """Settings whose ``role`` topic (``transactions``, ``alerts``, ``labels``) is ``<configured name>-<name>``."""
    topic = f"{settings.kafka.topics[role]}-{name}"
    topics = {**settings.kafka.topics, role: topic}
    partitions_by_topic = {**settings.kafka.partitions, topic: partitions}
    return settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topics": topics, "partitions": partitions_by_topic})}
    )


def with_registry(settings: Settings, root) -> Settings:
    """Settings with an empty MLflow tracking store and registry of their own under ``root``."""
    store = {"tracking_uri": f"sqlite:///{root}/mlflow/mlflow.db", "artifact_root": f"{root}/artifacts"}
    return settings.model_copy(update={"mlflow": settings.mlflow.model_copy(update=store)})


def isolated_settings(settings: Settings, root, name: str) -> Settings:
    """Settings with a fresh topic, lake, checkpoint root and database name: a test sees only its own data."""
    return with_topic(settings, "transactions", name, partitions=3).model_copy(
        update={
            "lake": settings.lake.model_copy(update={"root": f"{root}/lake", "checkpoints": f"{root}/checkpoints"}),
            "postgres": settings.postgres.model_copy(update={"database": f"test_{name}".replace("-", "_")}),
        }
    )


@pytest.fixture
def isolated(stack: Settings, tmp_path):
    """Isolated settings (own topic, lake, database) with the topic created and the database migrated."""
    import uuid

    from ecom.runtime.kafka import ensure_topics
    from serving.db import drop_database, recreate_database

    # A subfolder: other fixtures of the same test may use tmp_path for their own lake.
    settings = isolated_settings(stack, tmp_path / "isolated", uuid.uuid4().hex[:10])
    recreate_database(settings.postgres.dsn)
    ensure_topics(settings)
    yield settings
    drop_database(settings.postgres.dsn)


def shop_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment of a child ``ecom`` (or a notebook kernel) that must use these settings' topics, labels topic
    included, lake, database and MLflow store; ``extra`` variables on top."""
    return {**child_environment(settings), "ECOM_KAFKA__TOPICS__LABELS": settings.kafka.labels_topic, **extra}


def run_ecom_together(settings: Settings, *commands: tuple[str, ...], timeout: float = 900) -> None:
    """Independent ``ecom`` commands (e.g. ``train`` and ``batch daily``) at the same time; the test fails with the
    output of any that fails."""
    import tempfile

    with tempfile.TemporaryDirectory() as logs:
        started = []
        for i, args in enumerate(commands):
            log = open(f"{logs}/{i}.log", "w+")  # noqa: SIM115 (closed below)
            proc = subprocess.Popen([sys.executable, "-m", "ecom.cli", *args], env=shop_environment(settings),
                                    stdout=log, stderr=subprocess.STDOUT, text=True)  # fmt: skip
            started.append((args, proc, log))
        for args, proc, log in started:
            code = proc.wait(timeout=timeout)
            log.seek(0)
            output = log.read()
            log.close()
            assert code == 0, f"ecom {' '.join(args)} failed:\n{output[-6000:]}"


def run_ecom(settings: Settings, *args: str, timeout: float = 900) -> str:
    """``python -m ecom.cli ARGS`` on ``settings`` (``shop_environment``); its stdout, or the test fails with its output."""
    done = subprocess.run(
        [sys.executable, "-m", "ecom.cli", *args], env=shop_environment(settings), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"ecom {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout
