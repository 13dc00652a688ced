"""The dashboard's access to PostgreSQL: the reader role's DSN, a connection pool, a short query cache.

Layer: dashboard. Input: the settings (DSN of the read-only role). Output:
query results of ``serving.queries`` functions. Every page reads through one
``Reader`` per process: connections come from a ``psycopg2.pool`` (read-only,
autocommit sessions, reopened after a fork or a lost server), and identical
calls within one refresh period (same function and arguments) share one
result, so ten open tabs cost one query per refresh. Figures computed by the
daily batch are cached until ``batch_runs`` records a newer successful job.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
import psycopg2.pool

from ecom.secrets import role_password
from ecom.settings import Settings
from serving import queries

log = logging.getLogger(__name__)

READER_ROLE = "ecom_reader"
ANALYST_ROLE = "ecom_analyst"
DSN_ENV = {READER_ROLE: "ECOM_DASHBOARD_POSTGRES_DSN", ANALYST_ROLE: "ECOM_DASHBOARD_ANALYST_DSN"}
BATCH_CACHE_S = 3600.0  # batch-computed figures: kept until a newer gold batch run (checked every refresh)


def role_dsn(settings: Settings, role: str, environ: dict[str, str] | None = None) -> str:
    """The DSN of ``role`` on the configured server: ``ECOM_DASHBOARD_POSTGRES_DSN`` (reader) or
    ``ECOM_DASHBOARD_ANALYST_DSN`` (analyst) if set, else the pipeline's DSN with the role as user and its
    password from ``ecom.secrets.role_password`` (``ECOM_POSTGRES_READER_PASSWORD`` /
    ``ECOM_POSTGRES_ANALYST_PASSWORD``, or the embedded server's generated one)."""
    env = os.environ if environ is None else environ
    if env.get(DSN_ENV[role]):
        return env[DSN_ENV[role]]
    parts = urlsplit(settings.postgres.dsn)
    password = role_password(settings, role, env)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{role}{':' + quote(password, safe='') if password else ''}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class TtlCache:
    """Results by key for ``ttl`` seconds; thread-safe. Two threads missing at once both compute (harmless)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = 512):
        self.clock = clock
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: dict[Any, tuple[float, Any]] = {}
        self._failures: dict[Any, tuple[float, Exception]] = {}

    def get_or_compute(
        self, key: Any, ttl_s: float, compute: Callable[[], Any], failure_ttl_s: float | None = None
    ) -> Any:
        """The cached result of ``key``, or ``compute()``'s. With ``failure_ttl_s``, an exception is kept that
        long too and raised again without computing (a source that is down is not asked on every refresh)."""
        now = self.clock()
        with self._lock:
            hit = self._entries.get(key)
            failed = self._failures.get(key)
        if hit is not None and now - hit[0] < ttl_s:
            return hit[1]
        if failed is not None and failure_ttl_s is not None and now - failed[0] < failure_ttl_s:
            raise failed[1]
        try:
            result = compute()
        except Exception as exc:
            with self._lock:
                self._failures[key] = (now, exc)
            raise
        with self._lock:
            if len(self._entries) >= self.max_entries:  # filters typed once must not pile up
                self._entries = {k: v for k, v in self._entries.items() if now - v[0] < BATCH_CACHE_S}
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
            self._entries[key] = (now, result)
            self._failures.pop(key, None)
        return result

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._failures.clear()


class Reader:
    """Pooled, cached access to PostgreSQL for one process; safe to share between threads."""

    def __init__(
        self, dsn: str, max_connections: int = 8, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ):
        self.dsn = dsn
        self.max_connections = max_connections
        self.ttl_s = ttl_s
        self.cache = TtlCache(clock)
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.queries_run = 0  # queries sent to the server (not answered from the cache)

    # -- connections ------------------------------------------------------------------------------
    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():  # a forked worker opens its own connections
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    1, self.max_connections, self.dsn, connect_timeout=5, application_name="ecom-dashboard"
                )
                self._pid = os.getpid()
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A pooled read-only autocommit connection; a broken one is closed instead of returned."""
        pool = self._get_pool()
        conn = pool.getconn()
        broken = False
        try:
            if not conn.autocommit:
                conn.set_session(readonly=True, autocommit=True)
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            pool.putconn(conn, close=broken or conn.closed != 0)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.closeall()
            self._pool = None

    # -- queries ----------------------------------------------------------------------------------
    def run(self, fn: Callable, *args, ttl_s: float | None = None, version: Any = None, **kwargs) -> Any:
        """``fn(connection, *args, **kwargs)``, or its result from the cache when the same call ran within
        ``ttl_s`` (default: the refresh period) under the same ``version``. A query on a connection the
        server dropped is retried once on a fresh one."""
        key = (fn.__module__, fn.__qualname__, args, tuple(sorted(kwargs.items())), version)
        ttl = self.ttl_s if ttl_s is None else ttl_s
        return self.cache.get_or_compute(key, ttl, lambda: self._query(fn, args, kwargs))

    def _query(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        for attempt in (1, 2):
            try:
                with self.connection() as conn:
                    result = fn(conn, *args, **kwargs)
                self.queries_run += 1
                return result
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def batch(self, fn: Callable, *args, **kwargs) -> Any:
        """``run`` for figures the daily batch computes: cached until a gold batch job succeeds again."""
        version = self.run(queries.gold_version)
        return self.run(fn, *args, ttl_s=BATCH_CACHE_S, version=version, **kwargs)


def refresh_now(refresh_ms: int, wall: Callable[[], float] = time.time) -> datetime:
    """The current time rounded down to the refresh period: every tab in one period asks the same question."""
    period = max(refresh_ms, 1) / 1000
    return datetime.fromtimestamp(wall() // period * period, UTC)


_readers: dict[str, Reader] = {}
_readers_lock = threading.Lock()


def reader_for(settings: Settings) -> Reader:
    """The process's ``Reader`` for the settings' reader DSN."""
    dsn = role_dsn(settings, READER_ROLE)
    with _readers_lock:
        if dsn not in _readers:
            d = settings.dashboard
            _readers[dsn] = Reader(dsn, max_connections=d.pool_max_connections, ttl_s=d.refresh_ms / 1000)
        return _readers[dsn]
