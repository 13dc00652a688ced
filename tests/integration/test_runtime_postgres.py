"""The embedded PostgreSQL of a non-test profile runs crash-safe: a real server in its own folder and port."""

from __future__ import annotations

import pytest

from ecom.runtime.postgres import EmbeddedPostgres
from ecom.settings import load_settings
from tests.faults import free_port, scratch_dir

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.fixture
def data_dir(settings):
    with scratch_dir(settings, "durable-pg") as path:
        yield path


def test_a_server_of_the_local_profile_is_crash_safe_and_only_durable_false_turns_that_off(data_dir):
    local = load_settings("local", environ={})
    settings = local.model_copy(
        update={"data_dir": str(data_dir), "postgres": local.postgres.model_copy(update={"port": free_port()})}
    )
    fast = settings.model_copy(update={"postgres": settings.postgres.model_copy(update={"durable": False})})
    server = EmbeddedPostgres(settings)
    try:
        assert server.start() is True
        assert server.durability() == {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}
        server.stop()
        server = EmbeddedPostgres(fast)  # same data folder and port, restarted with the test profile's trade-off
        assert server.start() is True
        assert server.durability() == {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}
    finally:
        server.stop()
    assert not server.is_running()
