"""PostgreSQL roles of migration 0005 and password authentication, on real servers.

The dashboard's reader can only read, the pipeline's writer can write its
tables but not DROP, TRUNCATE or CREATE, the triage analyst can change an
alert's status and note and write labels only. Outside the test profile the
embedded server asks for SCRAM passwords (a scratch server of its own).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import stat
import tempfile

import psycopg2
import pytest

from dashboard.data import ANALYST_ROLE, READER_ROLE, role_dsn
from serving import db

pytestmark = pytest.mark.integration

WRITER_ROLE = "ecom_writer"
NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
TX_COLUMNS = ("event_id", "transaction_id", "event_time", "customer_id", "amount", "currency", "payment_method",
              "channel", "item_count", "processed_time")  # fmt: skip
FORBIDDEN_DDL = [
    "DROP TABLE transactions",
    "TRUNCATE transactions",
    "CREATE TABLE stolen (a int)",
    "ALTER TABLE transactions ADD COLUMN x int",
    "CREATE INDEX x_idx ON transactions (currency)",
]


def connect(settings, role: str):
    conn = psycopg2.connect(role_dsn(settings, role))
    conn.autocommit = True
    return conn


def writer(settings):
    """A connection as the pipeline's writer role (its password, if any, from ecom.secrets)."""
    from ecom.secrets import role_password

    password = role_password(settings, WRITER_ROLE)
    pg = settings.postgres
    return psycopg2.connect(host=pg.host, port=pg.port, dbname=pg.database, user=WRITER_ROLE, password=password)


def fails(conn, statement: str, params=()) -> str:
    """The SQLSTATE class name of the error ``statement`` raises (it must raise)."""
    with conn.cursor() as cur:
        try:
            cur.execute(statement, params)
        except psycopg2.Error as exc:
            return type(exc).__name__
    raise AssertionError(f"{statement!r} succeeded")


@pytest.fixture
def alert(isolated):
    """One order and its alert, written as the owner."""
    conn = db.connect(isolated.postgres.dsn)
    try:
        db.commit_batch(conn, "roles-test", 0, "transactions", TX_COLUMNS, ("event_id",),
                        [("e1", "t1", NOW, "C1", "10.00", "USD", "card", "web", 1, NOW)])  # fmt: skip
        db.commit_batch(conn, "roles-test-alerts", 0, "fraud_alerts",
                        ("alert_id", "event_id", "transaction_id", "customer_id", "amount", "fraud_score", "created_at"),
                        ("event_id",), [("a1", "e1", "t1", "C1", "10.00", 91.0, NOW)])  # fmt: skip
    finally:
        conn.close()
    return isolated


def test_the_reader_reads_and_cannot_write_even_when_it_turns_read_only_off(alert):
    conn = connect(alert, READER_ROLE)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM transactions")
            assert cur.fetchone()[0] == 1
        assert fails(conn, "INSERT INTO fx_rates VALUES ('X', 'USD', 1, 's', '2026-01-01')") == "ReadOnlySqlTransaction"
        with conn.cursor() as cur:
            cur.execute("SET default_transaction_read_only = off")
        for statement in [
            "INSERT INTO fx_rates VALUES ('X', 'USD', 1, 's', '2026-01-01')",
            "UPDATE transactions SET amount = 0",
            "DELETE FROM fraud_alerts",
            "UPDATE fraud_alerts SET status = 'false_positive'",
            *FORBIDDEN_DDL,
        ]:
            assert fails(conn, statement) == "InsufficientPrivilege", statement
    finally:
        conn.close()


def test_the_writer_writes_the_pipelines_tables_the_pipelines_way(alert):
    conn = writer(alert)
    try:
        rows = [("e2", "t2", NOW, "C2", "5.00", "EUR", "paypal", "web", 1, NOW)]
        assert db.commit_batch(conn, "writer-test", 0, "transactions", TX_COLUMNS, ("event_id",), rows) == 1
        assert db.commit_batch(conn, "writer-test", 0, "transactions", TX_COLUMNS, ("event_id",), rows) is None
        with conn, conn.cursor() as cur:  # the gold batch: COPY into a temporary table, then sync
            db.sync_table(cur, "products", ("product_id", "category", "revenue"), ("product_id",),
                          [("P1", "books", 12.5)])  # fmt: skip
            cur.execute("INSERT INTO batch_runs (job, as_of) VALUES ('rfm', '2026-11-25') RETURNING run_id")
            assert cur.fetchone()[0] >= 1
            cur.execute("SELECT count(*) FROM transactions")
            assert cur.fetchone()[0] == 2
    finally:
        conn.close()


def test_the_writer_cannot_drop_truncate_create_or_rewrite_the_migration_ledger(alert):
    conn = writer(alert)
    conn.autocommit = True
    try:
        for statement in FORBIDDEN_DDL:
            assert fails(conn, statement) == "InsufficientPrivilege", statement
        assert fails(conn, "DELETE FROM schema_migrations") == "InsufficientPrivilege"
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM transactions")
            assert cur.fetchone()[0] == 1  # still there
    finally:
        conn.close()


def test_the_analyst_changes_status_and_note_and_writes_labels_only(alert):
    conn = connect(alert, ANALYST_ROLE)
    try:
        with conn.cursor() as cur:
            cur.execute("UPDATE fraud_alerts SET status = 'confirmed_fraud', note = 'checked' WHERE alert_id = 'a1'")
            assert cur.rowcount == 1
            cur.execute(
                "INSERT INTO fraud_labels (event_id, transaction_id, is_fraud, label_time, source)"
                " VALUES ('e1', 't1', true, now(), 'analyst:test')"
            )
        for statement in [
            "UPDATE fraud_alerts SET fraud_score = 0",
            "DELETE FROM fraud_alerts",
            "UPDATE transactions SET amount = 0",
            "INSERT INTO fx_rates VALUES ('X', 'USD', 1, 's', '2026-01-01')",
            *FORBIDDEN_DDL,
        ]:
            assert fails(conn, statement) == "InsufficientPrivilege", statement
    finally:
        conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_outside_the_test_profile_the_embedded_server_asks_for_scram_passwords(monkeypatch):
    from ecom.runtime.postgres import EmbeddedPostgres
    from ecom.secrets import ROLE_PASSWORD_ENV, role_password
    from ecom.settings import load_settings

    for name in ("ECOM_POSTGRES_PASSWORD", "ECOM_POSTGRES_DSN", *ROLE_PASSWORD_ENV.values()):
        monkeypatch.delenv(name, raising=False)
    root = tempfile.mkdtemp(prefix="pgscram", dir="/tmp")  # short: the socket path has a length limit
    base = load_settings("local")
    pg_settings = base.postgres.model_copy(
        update={"port": _free_port(), "durable": False, "credentials_file": f"{root}/secrets/postgres_password"}
    )
    settings = base.model_copy(update={"data_dir": root, "postgres": pg_settings})
    assert settings.postgres.auth == "scram"
    server = EmbeddedPostgres(settings)
    server.start()
    try:
        host = f"127.0.0.1:{settings.postgres.port}"
        with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
            psycopg2.connect(f"postgresql://ecom@{host}/ecom").close()
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(f"postgresql://ecom:guess@{host}/ecom").close()
        db.migrate(settings.postgres.dsn)  # the generated password is in the DSN
        roles = {r: role_password(settings, r) for r in ROLE_PASSWORD_ENV}
        assert sorted(db.set_role_passwords(settings.postgres.dsn, roles)) == sorted(ROLE_PASSWORD_ENV)
        with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
            psycopg2.connect(f"postgresql://{READER_ROLE}@{host}/ecom").close()
        reader = psycopg2.connect(role_dsn(settings, READER_ROLE))
        with reader.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == READER_ROLE
        reader.close()
        secrets_dir = f"{root}/secrets"
        modes = {name: stat.S_IMODE(os.stat(f"{secrets_dir}/{name}").st_mode) for name in os.listdir(secrets_dir)}
        assert modes and set(modes.values()) == {0o600}
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
