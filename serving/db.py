"""PostgreSQL serving store: connections, versioned migrations, idempotent bulk upserts.

Migrations are the numbered ``serving/migrations/NNNN_*.sql`` files, applied
in order once each and recorded in ``schema_migrations`` with their SHA-256
checksum; an applied migration whose file has changed stops ``migrate`` with
``MigrationChanged`` naming it. Upserts load rows with ``COPY`` into a
temporary staging table and merge with ``INSERT ... ON CONFLICT``; the
(sink, batch_id) bookkeeping row is written in the same database transaction,
so a replayed micro-batch changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg2
import psycopg2.extensions

from ecom.runtime.process import ServiceError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")


def connect(dsn: str, **kwargs) -> psycopg2.extensions.connection:
    return psycopg2.connect(dsn, connect_timeout=10, **kwargs)


@contextmanager
def connection(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection that commits on success and rolls back on error."""
    conn = connect(dsn)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def migration_files() -> list[tuple[int, Path]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append((int(match.group(1)), path))
    return found


class MigrationChanged(ServiceError):
    """An applied migration's file no longer has the checksum recorded when it was applied."""


def migration_checksum(path: Path) -> str:
    """SHA-256 of a migration file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _has_checksums(cur) -> bool:
    cur.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'schema_migrations' AND column_name = 'checksum'"
    )
    return cur.fetchone() is not None


def check_checksums(recorded: dict[int, str | None], files: list[tuple[int, Path]]) -> None:
    """Raise ``MigrationChanged`` naming every applied migration whose file differs from its recorded checksum."""
    changed = [
        path.name
        for version, path in files
        if recorded.get(version) is not None and recorded[version] != migration_checksum(path)
    ]
    if changed:
        raise MigrationChanged(
            f"applied migration(s) {', '.join(changed)} changed since they were applied (checksum differs from "
            "schema_migrations.checksum): restore the file(s) and put the change in a new numbered migration"
        )


def migrate(dsn: str) -> list[int]:
    """Apply pending migrations in order; returns the versions applied now.

    Applied migrations are checked first against their recorded checksums (``MigrationChanged`` if a file was
    edited); the checksums of migrations applied before checksums were recorded are filled in.
    """
    applied_now = []
    files = migration_files()
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(7263541)")
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        if _has_checksums(cur):
            cur.execute("SELECT version, checksum FROM schema_migrations")
            recorded = dict(cur.fetchall())
            check_checksums(recorded, files)
        else:
            cur.execute("SELECT version FROM schema_migrations")
            recorded = {row[0]: None for row in cur.fetchall()}
        for version, path in files:
            if version in recorded:
                continue
            cur.execute(path.read_text())
            cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, path.name))
            applied_now.append(version)
        if _has_checksums(cur) and (applied_now or None in recorded.values()):
            for version, path in files:
                cur.execute(
                    "UPDATE schema_migrations SET checksum = %s WHERE version = %s AND checksum IS NULL",
                    (migration_checksum(path), version),
                )
    return applied_now


def set_role_passwords(dsn: str, passwords: dict[str, str | None]) -> list[str]:
    """Give existing roles their passwords (SCRAM-hashed here, never sent in clear); returns the roles set."""
    from psycopg2 import sql

    done = []
    with connection(dsn) as conn, conn.cursor() as cur:
        for role, password in passwords.items():
            if not password:
                continue
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if cur.fetchone() is None:
                continue
            verifier = psycopg2.extensions.encrypt_password(password, role, conn, "scram-sha-256")
            cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(role)), (verifier,))
            done.append(role)
    return done


# What PostgreSQL text (UTF-8) cannot hold: U+0000, and the UTF-16 surrogates U+D800-U+DFFF, which no UTF-8
# byte sequence encodes (a Python str can hold one alone; the COPY stream would fail to encode it).
UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


class UnstorableValue(psycopg2.DataError):
    """A value PostgreSQL cannot store (text holding U+0000 or a lone surrogate). Names the table, row and
    column, not the value.

    It is the error PostgreSQL itself gives (a data exception, SQLSTATE 22021), raised before anything is sent,
    so callers treat both alike (the silver stream's last line quarantines the record).
    """

    pgcode = "22021"

    def __init__(self, table: str, row: int, column: str):
        super().__init__(
            f"{table}: row {row}, column {column} holds U+0000 or a lone surrogate, which PostgreSQL text cannot store"
        )
        self.table, self.row, self.column = table, row, column


def copy_rows(cur, table: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Bulk-load ``rows`` into ``table`` with COPY (CSV; lists become PostgreSQL arrays).

    No value can be misread: NULL is an unquoted ``\\N`` and every other value is quoted, so the text ``\\N``,
    quotes, backslashes, commas, newlines and ``\\.`` all arrive as they are. U+0000 and lone surrogates cannot
    be stored in PostgreSQL text at all: ``UnstorableValue`` says where one is, before anything is sent.
    """
    text = "".join(",".join(map(_csv_field, row)) + "\n" for row in rows)
    if UNSTORABLE_TEXT.search(text):
        row, column = next(
            (i, c) for i, r in enumerate(rows) for c, v in zip(columns, r, strict=True) if _is_unstorable(v)
        )
        raise UnstorableValue(table, row, column)
    cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", io.StringIO(text))


def _csv_field(value) -> str:
    """One CSV field: ``\\N`` (unquoted) for NULL, anything else quoted with its quotes doubled."""
    if value is None:
        return "\\N"
    if isinstance(value, (list, tuple, np.ndarray)):
        value = _array_literal(value)
    elif not isinstance(value, str):
        value = str(value)
    return '"' + value.replace('"', '""') + '"'


def _array_literal(values) -> str:
    """A PostgreSQL array literal: each element double-quoted with backslash escapes, or an unquoted NULL."""
    quoted = ("NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _is_unstorable(value) -> bool:
    if isinstance(value, (list, tuple, np.ndarray)):
        return any(_is_unstorable(v) for v in value)
    return value is not None and UNSTORABLE_TEXT.search(str(value)) is not None


def admin_dsn(dsn: str) -> str:
    """The same server's ``postgres`` maintenance database."""
    return dsn.rsplit("/", 1)[0] + "/postgres"


def _database_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1].split("?", 1)[0]


def _as_admin(dsn: str, *statements: str) -> None:
    conn = connect(admin_dsn(dsn))
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def recreate_database(dsn: str) -> None:
    """Drop (if present) and create the database named by ``dsn``, then apply the migrations."""
    name = _database_name(dsn)
    _as_admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    migrate(dsn)


def recreate_empty_database(dsn: str, replace: bool = False) -> None:
    """Create the database named by ``dsn``, without migrations (a restore fills it); one that exists is
    dropped first if ``replace``, else refused unless it holds no table."""
    name = _database_name(dsn)
    conn = connect(admin_dsn(dsn))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            exists = cur.fetchone() is not None
    finally:
        conn.close()
    if exists and not replace:
        with connection(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            if cur.fetchone()[0]:
                raise ServiceError(f"database {name} holds tables: restore elsewhere, or pass --replace")
        _as_admin(dsn, f'DROP DATABASE "{name}"')
    elif exists:
        _as_admin(dsn, f'DROP DATABASE "{name}" WITH (FORCE)')
    _as_admin(dsn, f'CREATE DATABASE "{name}"')


def drop_database(dsn: str) -> None:
    _as_admin(dsn, f'DROP DATABASE IF EXISTS "{_database_name(dsn)}" WITH (FORCE)')


def mark_committed(cur, sink: str, batch_id: int, row_count: int) -> None:
    """Record ``(sink, batch_id)`` as committed (in the caller's transaction)."""
    cur.execute(
        "INSERT INTO pipeline_batches (sink, batch_id, row_count, state) VALUES (%s, %s, %s, 'committed') "
        "ON CONFLICT (sink, batch_id) DO UPDATE SET row_count = EXCLUDED.row_count, state = 'committed', "
        "committed_at = now()",
        (sink, batch_id, row_count),
    )


def batch_seen(cur, sink: str, batch_id: int) -> bool:
    """True if ``(sink, batch_id)`` was committed."""
    cur.execute(
        "SELECT 1 FROM pipeline_batches WHERE sink = %s AND batch_id = %s AND state = 'committed'", (sink, batch_id)
    )
    return cur.fetchone() is not None


def begin_batch(conn, sink: str, batch_id: int) -> str:
    """Mark a micro-batch as started: ``new`` (first attempt), ``retry`` (started before, never committed) or ``done``."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO pipeline_batches (sink, batch_id, row_count, state) VALUES (%s, %s, 0, 'started') "
            "ON CONFLICT (sink, batch_id) DO NOTHING RETURNING 1",
            (sink, batch_id),
        )
        if cur.fetchone() is not None:
            return "new"
        cur.execute("SELECT state FROM pipeline_batches WHERE sink = %s AND batch_id = %s", (sink, batch_id))
        return "done" if cur.fetchone()[0] == "committed" else "retry"


def upsert_rows(
    cur,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    rows: Sequence[Sequence],
    update: Sequence[str] | None = None,
    accumulate: Sequence[str] = (),
) -> int:
    """COPY ``rows`` into a staging table and merge them into ``table`` on ``key``.

    Rows are de-duplicated on the key inside the batch (last one wins) before
    the merge, as ``ON CONFLICT`` cannot touch one row twice. ``update`` lists
    the columns overwritten on conflict (default: none, insert-only);
    ``accumulate`` the ones added to on conflict (counters: stored + new).
    Returns the number of rows inserted or updated.
    """
    if not rows:
        return 0
    sets = [f"{c} = EXCLUDED.{c}" for c in update or ()] + [f"{c} = {table}.{c} + EXCLUDED.{c}" for c in accumulate]
    cur.execute(_merge_from_stage(cur, table, columns, key, rows, "DO UPDATE SET " + ", ".join(sets) if sets else ""))
    return cur.rowcount


def insert_new_rows(cur, table: str, columns: Sequence[str], key: Sequence[str], rows: Sequence[Sequence]) -> set:
    """Insert the ``rows`` whose key ``table`` does not hold yet (COPY through a staging table, as
    ``upsert_rows``); returns the keys inserted (one value, or a tuple for a key of several columns)."""
    if not rows:
        return set()
    cur.execute(_merge_from_stage(cur, table, columns, key, rows, "") + f" RETURNING {', '.join(key)}")
    return {r[0] if len(key) == 1 else tuple(r) for r in cur.fetchall()}


def _merge_from_stage(cur, table: str, columns, key, rows, conflict: str) -> str:
    """COPY ``rows`` into a session's staging table; the INSERT that merges them (``ON CONFLICT`` ``conflict``,
    else nothing), one row per key (the last)."""
    stage = f"stage_{table}"
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
    cur.execute(f"TRUNCATE {stage}")
    copy_rows(cur, stage, columns, rows)
    cols, keys = ", ".join(columns), ", ".join(key)
    return (
        f"INSERT INTO {table} ({cols}) "
        f"SELECT DISTINCT ON ({keys}) {cols} FROM {stage} ORDER BY {keys} "
        f"ON CONFLICT ({keys}) {conflict or 'DO NOTHING'}"
    )


@dataclass(frozen=True)
class TableWrite:
    """Rows to merge into one table on ``key``; ``update`` lists the columns overwritten on conflict,
    ``accumulate`` the ones added to."""

    table: str
    columns: Sequence[str]
    key: Sequence[str]
    rows: Sequence[Sequence]
    update: Sequence[str] | None = None
    accumulate: Sequence[str] = ()


def commit_batch_writes(
    conn, sink: str, batch_id: int, writes: Sequence[TableWrite], after: Callable[[object], None] | None = None
) -> list[int] | None:
    """Apply one micro-batch's writes exactly once, in one database transaction; ``after(cursor)``, if given,
    runs in the same transaction after the writes.

    Returns the rows written per table, or None if ``(sink, batch_id)`` was
    already committed (a replayed batch changes nothing).
    """
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (sink,))
        if batch_seen(cur, sink, batch_id):
            return None
        written = [upsert_rows(cur, w.table, w.columns, w.key, w.rows, w.update, w.accumulate) for w in writes]
        if after is not None:
            after(cur)
        mark_committed(cur, sink, batch_id, sum(len(w.rows) for w in writes))
        return written


def commit_batch(
    conn,
    sink: str,
    batch_id: int,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    rows: Sequence[Sequence],
    update: Sequence[str] | None = None,
) -> int | None:
    """``commit_batch_writes`` for a single table: rows written, or None for a replayed batch."""
    result = commit_batch_writes(conn, sink, batch_id, [TableWrite(table, columns, key, rows, update)])
    return None if result is None else result[0]


def sync_table(
    cur,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    rows: Sequence[Sequence],
    scope: str | None = "TRUE",
    scope_params: Sequence = (),
) -> tuple[int, int]:
    """Make ``table`` hold exactly ``rows`` within ``scope``: an idempotent bulk upsert.

    Rows are COPYed into a staging table; new keys are inserted, existing keys
    updated only where a column really changed (so a rerun touches nothing and
    ``updated_at`` keeps its time), and rows inside ``scope`` (a SQL predicate
    on ``table``, default: the whole table; ``None``: delete nothing) whose key
    is not among ``rows`` are deleted. Run it in one transaction with the rest
    of a job's writes to a table, so a job killed half-way leaves the table as
    it was. Returns (rows inserted or changed, rows deleted).
    """
    stage = f"stage_{table}"
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
    cur.execute(f"TRUNCATE {stage}")
    if rows:
        copy_rows(cur, stage, columns, rows)
    # Temporary tables are never auto-analysed: without statistics the planner takes the stage for a few rows
    # and runs the NOT EXISTS below as a nested loop, quadratic in the rows (minutes for 10^5 rows).
    cur.execute(f"ANALYZE {stage}")
    cols = ", ".join(columns)
    keys = ", ".join(key)
    values = [c for c in columns if c not in key]
    changed = " OR ".join(f"{table}.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in values)
    has_updated_at = "updated_at" not in columns and _has_column(cur, table, "updated_at")
    sets = [f"{c} = EXCLUDED.{c}" for c in values] + (["updated_at = now()"] if has_updated_at else [])
    conflict = f"DO UPDATE SET {', '.join(sets)} WHERE {changed}" if values else "DO NOTHING"
    cur.execute(
        f"INSERT INTO {table} ({cols}) SELECT DISTINCT ON ({keys}) {cols} FROM {stage} ORDER BY {keys} "
        f"ON CONFLICT ({keys}) {conflict}"
    )
    upserted = cur.rowcount
    deleted = 0
    if scope is not None:
        match = " AND ".join(f"s.{k} = {table}.{k}" for k in key)
        cur.execute(
            f"DELETE FROM {table} WHERE ({scope}) AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE {match})",
            tuple(scope_params),
        )
        deleted = cur.rowcount
    return upserted, deleted


def _has_column(cur, table: str, column: str) -> bool:
    cur.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = %s AND column_name = %s",
        (table, column),
    )
    return cur.fetchone() is not None
