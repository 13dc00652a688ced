"""Idempotent bulk upserts into the real PostgreSQL."""

import datetime as dt
import uuid

import pytest

from serving import db

pytestmark = pytest.mark.integration

COLUMNS = (
    "event_id", "transaction_id", "event_time", "customer_id", "amount", "currency",
    "payment_method", "channel", "item_count", "processed_time",
)  # fmt: skip


def row(event_id, amount="10.00"):
    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    return (event_id, "t", now, "C1", amount, "USD", "card", "web", 1, now)


def count(dsn, where, params):
    with db.connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM transactions WHERE {where}", params)
        return cur.fetchone()[0]


def test_replayed_batch_changes_nothing_and_duplicates_in_batch_collapse(stack):
    dsn = stack.postgres.dsn
    sink = f"test-{uuid.uuid4()}"
    prefix = f"{sink}-"
    rows = [row(prefix + "a"), row(prefix + "b"), row(prefix + "a")]  # 'a' twice in one batch
    conn = db.connect(dsn)
    try:
        assert db.commit_batch(conn, sink, 7, "transactions", COLUMNS, ("event_id",), rows) == 2
        # the same batch id again (a replay after a crash): nothing happens
        assert db.commit_batch(conn, sink, 7, "transactions", COLUMNS, ("event_id",), [row(prefix + "c")]) is None
        # a later batch with an already-served event adds only the new one
        assert (
            db.commit_batch(
                conn, sink, 8, "transactions", COLUMNS, ("event_id",), [row(prefix + "b"), row(prefix + "d")]
            )
            == 1
        )
    finally:
        conn.close()
    assert count(dsn, "event_id LIKE %s", (prefix + "%",)) == 3
    assert count(dsn, "event_id = %s", (prefix + "c",)) == 0


def test_failed_batch_rolls_back_rows_and_bookkeeping(stack):
    dsn = stack.postgres.dsn
    sink = f"test-{uuid.uuid4()}"
    bad = (sink, "t", None, "C1", "1.00", "USD", "card", "web", 1, None)  # NOT NULL violations
    conn = db.connect(dsn)
    try:
        with pytest.raises(Exception, match="null value"):
            db.commit_batch(conn, sink, 1, "transactions", COLUMNS, ("event_id",), [row(sink + "-ok"), bad])
        assert db.commit_batch(conn, sink, 1, "transactions", COLUMNS, ("event_id",), [row(sink + "-ok")]) == 1
    finally:
        conn.close()
    assert count(dsn, "event_id = %s", (sink + "-ok",)) == 1
