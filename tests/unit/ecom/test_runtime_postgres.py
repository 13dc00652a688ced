"""Which profiles run the embedded PostgreSQL crash-safe, and the server options that follow from it."""

from __future__ import annotations

import pytest

from ecom.runtime.postgres import server_options
from ecom.settings import CONF_DIR, load_settings

pytestmark = pytest.mark.fault

PROFILES = sorted(p.stem for p in CONF_DIR.glob("*.yaml") if p.stem != "base")


@pytest.mark.parametrize("profile", PROFILES)
def test_only_the_test_profile_trades_crash_safety_for_speed(profile):
    assert load_settings(profile, environ={}).postgres.durable is (profile != "test")


@pytest.mark.parametrize(("durable", "value"), [(True, "on"), (False, "off")])
def test_server_options_follow_the_durable_setting(durable, value):
    cfg = load_settings("local", environ={}).postgres.model_copy(update={"durable": durable})
    options = server_options(cfg)
    for name in ("fsync", "full_page_writes", "synchronous_commit"):
        assert f"-c {name}={value}" in options
