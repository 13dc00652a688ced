"""Lake side of the lifecycle: rows past a table's horizon move from the hot table to ``archive/<layer>/<table>``.

Input: a hot Delta table and its ``policy.LakePolicy``. Output: the archive table (grain: the hot table's,
one row per row moved; the hot columns plus ``event_month``, its partition column) and the hot table without
the moved rows. Read with DuckDB over delta-rs datasets, written with delta-rs: no Spark job, no JVM.

A move goes month by month, each in three steps, so nothing is deleted before its copy is committed and
counted, and a run killed anywhere and run again loses and duplicates nothing:

1. the rows to move (event date before the cutoff), read once from one version of the hot table;
2. MERGE into the archive on (``event_month``, the row's key), inserting only rows not there yet: a rerun
   after a kill between 2 and 3 inserts nothing;
3. the archive is read back: every row of step 1 must be there, else nothing is deleted;
4. MERGE into the hot table on the same keys, deleting the matched rows: only rows the archive holds, so a
   row the stream appended after step 1 stays for the next run.

Streams keep running: the stream's delta-rs appends read nothing, so a delete never makes them fail; a delete
that meets a conflicting commit is tried again on a fresh read (``delete_hot``); the Delta streams reading
silver or bronze skip commits that change existing files (``skipChangeCommits``), as these deletes do.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from ecom.schemas import arrow_schema
from ecom.settings import LakeSettings
from ecom.storage import delta_table, storage_options
from pipelines.lifecycle.policy import ARCHIVE_PARTITION, LakePolicy

log = logging.getLogger(__name__)

MONTH = "event_month"
COMMIT_TRIES = 5


@dataclass
class MonthMove:
    """What one month of one table did (or, in a dry run, would do)."""

    table: str
    month: str  # YYYY-MM
    rows: int  # rows past the horizon found in the hot table
    archived: int = 0  # rows inserted into the archive now (the rest were there from an earlier run)
    deleted: int = 0  # rows deleted from the hot table


def archive_schema(policy: LakePolicy) -> pa.Schema:
    """The archive table's Arrow schema: the hot table's columns plus ``event_month``."""
    from ecom.lake import TABLES  # (Spark's Delta module: imported when a table is moved, not by the CLI's parser)

    schema, _ = TABLES[(policy.layer, policy.table)]
    return arrow_schema(schema).append(pa.field(ARCHIVE_PARTITION, pa.date32(), nullable=False))


def ensure_archive(lake: LakeSettings, policy: LakePolicy) -> DeltaTable:
    """The archive table of ``policy``, created empty (partitioned by month, no deletion vectors) if missing."""
    path = lake.archive(policy.layer, policy.table)
    return DeltaTable.create(
        path,
        archive_schema(policy),
        mode="ignore",
        partition_by=[ARCHIVE_PARTITION],
        configuration={"delta.enableDeletionVectors": "false"},
        storage_options=storage_options(path),
    )


def open_table(path: str) -> DeltaTable | None:
    try:
        return delta_table(path)
    except TableNotFoundError:
        return None


def _duckdb() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # event dates of instants are UTC dates, as in silver
    return con


def _over(hot: DeltaTable) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the hot table (its version read now) as ``hot``."""
    con = _duckdb()
    con.register("hot", hot.to_pyarrow_dataset())
    return con


def rows_to_move(hot: DeltaTable, policy: LakePolicy, cutoff: str) -> pa.Table:
    """The hot rows whose event date is before ``cutoff`` (YYYY-MM-DD), with ``event_month`` added, in the
    archive's schema (one read of one table version)."""
    rows = (
        _over(hot)
        .sql(
            f"SELECT *, CAST(date_trunc('month', {policy.age}) AS DATE) AS {MONTH} FROM hot "
            f"WHERE {policy.age} < DATE '{cutoff}'"
        )
        .to_arrow_table()
    )
    return rows.select(archive_schema(policy).names).cast(archive_schema(policy))


def count_rows_to_move(hot: DeltaTable, policy: LakePolicy, cutoff: str) -> dict[str, int]:
    """Month (YYYY-MM) -> hot rows past the horizon (the dry run)."""
    found = (
        _over(hot)
        .execute(
            f"SELECT strftime({policy.age}, '%Y-%m') AS month, count(*) FROM hot "
            f"WHERE {policy.age} < DATE '{cutoff}' GROUP BY 1 ORDER BY 1"
        )
        .fetchall()
    )
    return dict(found)


def _on(columns: tuple[str, ...]) -> str:
    return " AND ".join(f"t.{c} = s.{c}" for c in columns)


def _tag(policy: LakePolicy, cutoff: str, step: str) -> CommitProperties:
    meta = json.dumps({"lifecycle": step, "table": policy.name, "cutoff": cutoff})
    return CommitProperties(custom_metadata={"userMetadata": meta})


def archived_count(archive_path: str, policy: LakePolicy, month_rows: pa.Table) -> int:
    """How many of ``month_rows`` the archive holds (read back from its latest version)."""
    keys = (MONTH, *policy.key)
    con = _duckdb()
    month = month_rows.column(MONTH)[0].as_py()
    dataset = delta_table(archive_path).to_pyarrow_dataset()
    con.register("archive", dataset.to_table(columns=list(keys), filter=pc.field(MONTH) == month))
    con.register("moved", month_rows.select(list(keys)))
    join = " AND ".join(f"a.{k} = m.{k}" for k in keys)
    return con.execute(f"SELECT count(*) FROM moved m SEMI JOIN archive a ON {join}").fetchall()[0][0]


def delete_hot(lake: LakeSettings, policy: LakePolicy, cutoff: str, month_rows: pa.Table) -> dict:
    """Step 4: delete ``month_rows`` (matched on the hot partitions and the key) from the hot table; tried again
    on a commit conflict (a writer changed the files it read), each try reading the table afresh."""
    match = (*policy.partitions, *policy.key)
    for attempt in range(1, COMMIT_TRIES + 1):
        try:
            return (
                delta_table(lake.table(policy.layer, policy.table))
                .merge(
                    month_rows.select(list(match)),
                    _on(match),
                    source_alias="s",
                    target_alias="t",
                    streamed_exec=False,  # source statistics prune the hot table to the partitions involved
                    commit_properties=_tag(policy, cutoff, "delete"),
                )
                .when_matched_delete()
                .execute()
            )
        except CommitFailedError:
            if attempt == COMMIT_TRIES:
                raise
            log.warning("%s: delete conflicted with a concurrent commit (try %d); trying again", policy.name, attempt)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def move_month(lake: LakeSettings, policy: LakePolicy, cutoff: str, month_rows: pa.Table) -> MonthMove:
    """Steps 2-4 for one month's rows: archive (insert missing), count, delete from the hot table."""
    month = month_rows.column(MONTH)[0].as_py().strftime("%Y-%m")
    archive_path = lake.archive(policy.layer, policy.table)
    keys = (MONTH, *policy.key)
    inserted = (
        delta_table(archive_path)
        .merge(
            month_rows,
            _on(keys),
            source_alias="s",
            target_alias="t",
            streamed_exec=False,  # source statistics prune the archive to the month
            commit_properties=_tag(policy, cutoff, "archive"),
        )
        .when_not_matched_insert_all()
        .execute()
    )
    held = archived_count(archive_path, policy, month_rows)
    if held != month_rows.num_rows:
        raise RuntimeError(
            f"{policy.name} {month}: the archive holds {held} of {month_rows.num_rows} rows after the copy; "
            "nothing deleted"
        )
    deleted = delete_hot(lake, policy, cutoff, month_rows)
    return MonthMove(
        policy.name,
        month,
        month_rows.num_rows,
        archived=int(inserted.get("num_target_rows_inserted", 0)),
        deleted=int(deleted.get("num_target_rows_deleted", 0)),
    )


def move_table(
    lake: LakeSettings,
    policy: LakePolicy,
    cutoff: str,
    dry_run: bool = False,
    echo: Callable[[MonthMove], None] = lambda move: None,
) -> list[MonthMove]:
    """Move one table's rows dated before ``cutoff`` to its archive, month by month (``dry_run``: count them)."""
    hot = open_table(lake.table(policy.layer, policy.table))
    if hot is None:
        return []
    if dry_run:
        moves = [MonthMove(policy.name, month, n) for month, n in count_rows_to_move(hot, policy, cutoff).items()]
        for move in moves:
            echo(move)
        return moves
    rows = rows_to_move(hot, policy, cutoff)
    if not rows.num_rows:
        return []
    ensure_archive(lake, policy)
    moves = []
    months = pc.unique(rows.column(MONTH)).to_pylist()
    for month in sorted(months):
        move = move_month(lake, policy, cutoff, rows.filter(pc.field(MONTH) == month))
        log.info("%s %s: %d rows, %d archived now, %d deleted", policy.name, move.month, move.rows, move.archived,
                 move.deleted)  # fmt: skip
        echo(move)
        moves.append(move)
    return moves
