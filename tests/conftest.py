"""Shared fixtures: the test profile, one session-scoped Spark, the real embedded stack.

The test profile (conf/test.yaml) has its own ports and data folder, so tests
never touch a running demo. ``stack`` starts the real Kafka broker and
PostgreSQL once per session if they are not running, and stops what it started.
"""

from __future__ import annotations

import os

import pytest

os.environ["ECOM_PROFILE"] = "test"

from ecom.settings import Settings, load_settings  # noqa: E402


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
