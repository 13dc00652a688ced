"""PostgreSQL's part of the lifecycle on a database of its own: every table that grows with time is pruned to
its horizon, the streams' bookkeeping keeps each sink's newest batch, a dry run changes nothing."""

import datetime as dt
import json

import pytest

from pipelines.lifecycle.job import prune_postgres
from serving.db import connection

pytestmark = pytest.mark.integration

AS_OF = dt.date(2026, 11, 26)


def at(days_before: int) -> dt.datetime:
    return dt.datetime.combine(AS_OF, dt.time(12), tzinfo=dt.UTC) - dt.timedelta(days=days_before)


def fill(dsn: str) -> None:
    """Bookkeeping of two sinks: 'a' whose every batch is past the 30-day horizon (its newest must stay), 'b'
    still running; quarantine minutes and labels either side of their horizons."""
    batches = [("a", b, at(40)) for b in (1, 2, 3, 4)] + [("b", 1, at(45)), ("b", 2, at(31)), ("b", 3, at(1))]
    with connection(dsn) as conn, conn.cursor() as cur:
        for sink, batch, when in batches:
            cur.execute(
                "INSERT INTO pipeline_batches (sink, batch_id, row_count, committed_at) VALUES (%s, %s, 1, %s)",
                (sink, batch, when),
            )
            cur.execute(
                "INSERT INTO stream_progress (sink, batch_id, progress, committed_at) VALUES (%s, %s, %s, %s)",
                (sink, batch, json.dumps({"batch": batch}), when),
            )
            cur.execute(
                "INSERT INTO alert_path_agreement (sink, batch_id, confirmed, corrected, withdrawn, micro_batch_only,"
                " committed_at) VALUES (%s, %s, 1, 0, 0, 0, %s)",
                (sink, batch, when),
            )
        for days, reason in ((100, "old"), (89, "new")):
            cur.execute(
                "INSERT INTO quarantine_counts (minute, reason, records) VALUES (%s, %s, 3)", (at(days), reason)
            )
        for days, event in ((800, "e-old"), (700, "e-new")):
            cur.execute(
                "INSERT INTO fraud_labels (event_id, transaction_id, is_fraud, label_time, source)"
                " VALUES (%s, 't', true, %s, 'test')",
                (event, at(days)),
            )


def rows(dsn: str, sql: str) -> list[tuple]:
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return sorted(cur.fetchall())


def state(dsn: str) -> dict[str, list[tuple]]:
    return {
        "pipeline_batches": rows(dsn, "SELECT sink, batch_id FROM pipeline_batches"),
        "stream_progress": rows(dsn, "SELECT sink, batch_id FROM stream_progress"),
        "alert_path_agreement": rows(dsn, "SELECT sink, batch_id FROM alert_path_agreement"),
        "quarantine_counts": rows(dsn, "SELECT reason FROM quarantine_counts"),
        "fraud_labels": rows(dsn, "SELECT event_id FROM fraud_labels"),
    }


def test_bookkeeping_quarantine_minutes_and_labels_are_pruned_to_their_horizons(isolated):
    dsn = isolated.postgres.dsn
    fill(dsn)
    before = state(dsn)

    dry = {p.table: p.rows for p in prune_postgres(isolated, AS_OF, dry_run=True, echo=lambda _: None)}
    assert state(dsn) == before
    assert dry["pipeline_batches"] == dry["stream_progress"] == 5  # a: 1-3 (4 is its newest), b: 1-2
    assert dry["alert_path_agreement"] == 6  # no newest kept: a count per batch, not a position
    assert dry["quarantine_counts"] == dry["fraud_labels"] == 1

    done = {p.table: p.rows for p in prune_postgres(isolated, AS_OF, echo=lambda _: None)}
    assert done == dry
    after = state(dsn)
    assert after["pipeline_batches"] == after["stream_progress"] == [("a", 4), ("b", 3)]
    assert after["alert_path_agreement"] == [("b", 3)]
    assert after["quarantine_counts"] == [("new",)]
    assert after["fraud_labels"] == [("e-new",)]

    again = {p.table: p.rows for p in prune_postgres(isolated, AS_OF, echo=lambda _: None)}
    assert set(again.values()) == {0}
