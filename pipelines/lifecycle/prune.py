"""PostgreSQL side of the lifecycle: served rows past their horizon are deleted in bounded batches.

Input: the serving tables and ``policy.PG_POLICIES``. Each batch deletes at most
``retention.prune_batch_rows`` rows in its own short transaction, so it holds row locks on those rows only,
for milliseconds: the stream's upserts (new events) and the dashboard's reads go on. A run killed between
batches has deleted whole batches; the next run deletes the rest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.lifecycle.policy import PgPolicy, cutoff_instant
from serving import db


@dataclass
class Pruned:
    """What pruning one table did (or, in a dry run, would do)."""

    table: str
    rows: int
    batches: int = 0


def past(policy: PgPolicy) -> str:
    """SQL condition (one parameter: the cutoff instant) for the rows of ``policy.table`` to delete."""
    return f"{policy.age} < %s" + (f" AND NOT ({policy.keep})" if policy.keep else "")


def count_past(dsn: str, policy: PgPolicy, before: dt.date) -> int:
    """Rows of ``policy.table`` dated before ``before`` (and not kept)."""
    with db.connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {policy.table} WHERE {past(policy)}", (cutoff_instant(before),))
        return cur.fetchone()[0]


def prune_table(
    dsn: str,
    policy: PgPolicy,
    before: dt.date,
    batch_rows: int,
    dry_run: bool = False,
    echo: Callable[[Pruned], None] = lambda pruned: None,
) -> Pruned:
    """Delete the rows of ``policy.table`` dated before ``before`` (except ``policy.keep``), ``batch_rows`` per
    transaction."""
    if dry_run:
        result = Pruned(policy.table, count_past(dsn, policy, before))
        echo(result)
        return result
    result = Pruned(policy.table, 0)
    conn = db.connect(dsn)
    try:
        while True:
            with conn, conn.cursor() as cur:
                cur.execute("SET LOCAL lock_timeout = '5s'")  # a row the stream holds: fail, the next run retries
                cur.execute(
                    f"DELETE FROM {policy.table} WHERE ctid = ANY(ARRAY("
                    f"SELECT ctid FROM {policy.table} WHERE {past(policy)} LIMIT %s))",
                    (cutoff_instant(before), batch_rows),
                )
                deleted = cur.rowcount
            if not deleted:
                break
            result.rows += deleted
            result.batches += 1
            echo(result)
            if deleted < batch_rows:
                break
    finally:
        conn.close()
    return result
