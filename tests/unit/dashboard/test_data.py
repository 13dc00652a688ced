"""The data layer without a database: the reader role's DSN, the cache, the refresh clock."""

import datetime as dt

import pytest

from dashboard.data import ANALYST_ROLE, READER_ROLE, TtlCache, refresh_now, role_dsn


def test_role_dsn_swaps_the_user_and_takes_the_role_password_from_the_environment(settings):
    env = {"ECOM_POSTGRES_READER_PASSWORD": "p@ss/word"}
    where = f"{settings.postgres.host}:{settings.postgres.port}/{settings.postgres.database}"
    assert role_dsn(settings, READER_ROLE, env) == f"postgresql://ecom_reader:p%40ss%2Fword@{where}"
    assert role_dsn(settings, ANALYST_ROLE, {}) == f"postgresql://ecom_analyst@{where}"
    explicit = {"ECOM_DASHBOARD_POSTGRES_DSN": "postgresql://r@db:5432/shop"}
    assert role_dsn(settings, READER_ROLE, explicit) == "postgresql://r@db:5432/shop"


def test_the_cache_answers_identical_calls_within_the_ttl_only():
    clock = [100.0]
    cache = TtlCache(clock=lambda: clock[0])
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    assert cache.get_or_compute("k", 5, compute) == 1
    clock[0] = 104.9
    assert cache.get_or_compute("k", 5, compute) == 1
    assert cache.get_or_compute("other", 5, compute) == 2
    clock[0] = 105.0
    assert cache.get_or_compute("k", 5, compute) == 3


def test_a_failure_is_not_cached_unless_asked_and_then_only_for_its_ttl():
    clock = [0.0]
    cache = TtlCache(clock=lambda: clock[0])
    calls = []

    def broken():
        calls.append(1)
        raise ConnectionError("down")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            cache.get_or_compute("plain", 5, broken)
    assert len(calls) == 2
    for _ in range(2):
        with pytest.raises(ConnectionError):
            cache.get_or_compute("kafka", 5, broken, failure_ttl_s=15)
    assert len(calls) == 3  # the second call re-raised without asking
    clock[0] = 15.0
    assert cache.get_or_compute("kafka", 5, lambda: "up", failure_ttl_s=15) == "up"


def test_refresh_now_rounds_down_to_the_refresh_period():
    stamp = dt.datetime(2026, 11, 25, 10, 0, 7, 300000, tzinfo=dt.UTC).timestamp()
    assert refresh_now(5000, wall=lambda: stamp) == dt.datetime(2026, 11, 25, 10, 0, 5, tzinfo=dt.UTC)
