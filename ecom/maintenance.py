"""Lake maintenance: compaction of the streaming tables' small files, and VACUUM.

The stream appends a few small files to each of its tables every micro-batch.
``compact`` rewrites them into files of about ``maintenance.target_file_mb``
with delta-rs (``DeltaTable.optimize.compact``): a commit whose adds and
removes all carry ``dataChange = false``, so Delta streams over the tables
(``skipChangeCommits`` or not) skip it, and the rows are the same before and
after. A writer that commits between compaction's read and its commit is not
lost: an append never conflicts with a compaction (delta-rs puts the
compaction's commit on top of it), and a commit that removed some of the same
files (a merge, a delete) makes the compaction fail with ``CommitFailedError``;
it is then run again on the new version, up to ``maintenance.compact_attempts``
times. Merges that lose to a compaction are retried by their writers
(``pipelines.silver.state``, ``pipelines.gold.live``).

``vacuum`` deletes the files no version younger than
``maintenance.vacuum_retention_hours`` (default 168, Delta's own default)
still references. Readers that started on an older version, and time travel
further back than that, lose their files; delta-rs refuses a retention below
the table's ``delta.deletedFileRetentionDuration`` (one week by default).

Both keep the tables' protocol (reader 1, writer 2: no deletion vectors), so
Spark, delta-rs and DuckDB read them as before. Grain: one compaction or
VACUUM commit per table and run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from ecom.scheduling import add_schedule_arguments, run_on_schedule
from ecom.settings import MaintenanceSettings, Settings

# The tables the stream writes every micro-batch, as (layer, table): where small files pile up.
STREAMING_TABLES: tuple[tuple[str, str], ...] = (
    ("bronze", "transactions"),
    ("silver", "transactions"),
    ("silver", "quarantine"),
    ("silver", "duplicates"),
    ("silver", "fraud_alerts"),
    ("silver", "customer_profiles"),
    ("gold", "minute_metrics"),
)


@dataclass(frozen=True)
class CompactResult:
    """One table's compaction: files in its current version before and after, and what was rewritten."""

    table: str
    files_before: int
    files_after: int
    files_removed: int
    files_added: int
    seconds: float
    attempts: int


@dataclass(frozen=True)
class VacuumResult:
    """One table's VACUUM: the files deleted (or, in a dry run, that would be)."""

    table: str
    files_deleted: int
    seconds: float
    dry_run: bool


def table_name(layer: str, table: str) -> str:
    return f"{layer}/{table}"


def is_delta_table(path: str) -> bool:
    """True if a Delta table exists at ``path``."""
    from ecom.storage import is_delta_table as exists

    return exists(path)


def file_count(path: str) -> int:
    """Data files in the table's current version."""
    from ecom.storage import delta_table

    return len(delta_table(path).file_uris())


def compact_table(path: str, cfg: MaintenanceSettings, name: str | None = None) -> CompactResult:
    """Rewrite the table's small files into files of about ``cfg.target_file_mb``; rerun on a conflict."""
    from deltalake import CommitProperties
    from deltalake.exceptions import CommitFailedError

    from ecom.storage import delta_table

    started = time.monotonic()
    before = file_count(path)
    for attempt in range(1, cfg.compact_attempts + 1):
        try:
            metrics = delta_table(path).optimize.compact(
                target_size=cfg.target_file_mb * 1024 * 1024,
                max_concurrent_tasks=cfg.max_concurrent_tasks,
                commit_properties=CommitProperties(custom_metadata={"userMetadata": "ecom-maintain:compact"}),
            )
            break
        except CommitFailedError:  # a merge or delete removed some of the same files first: read again
            if attempt == cfg.compact_attempts:
                raise
            time.sleep(cfg.retry_wait_s * attempt)
    return CompactResult(
        table=name or path,
        files_before=before,
        files_after=file_count(path),
        files_removed=int(metrics.get("numFilesRemoved", 0)),
        files_added=int(metrics.get("numFilesAdded", 0)),
        seconds=round(time.monotonic() - started, 3),
        attempts=attempt,
    )


def vacuum_table(
    path: str, retention_hours: float, name: str | None = None, dry_run: bool = False, enforce: bool = True
) -> VacuumResult:
    """Delete the files no version of the last ``retention_hours`` references (delta-rs VACUUM).

    ``enforce`` keeps delta-rs' check against the table's ``delta.deletedFileRetentionDuration``; only tests
    turn it off, to vacuum files compacted away seconds ago.
    """
    from ecom.storage import delta_table

    started = time.monotonic()
    deleted = delta_table(path).vacuum(
        retention_hours=int(retention_hours), dry_run=dry_run, enforce_retention_duration=enforce
    )
    return VacuumResult(name or path, len(deleted), round(time.monotonic() - started, 3), dry_run)


def table_paths(settings: Settings, tables: Iterable[tuple[str, str]] = STREAMING_TABLES) -> dict[str, str]:
    """``layer/table`` -> path, for the tables of ``tables`` that exist."""
    paths = {table_name(*t): settings.lake.table(*t) for t in tables}
    return {name: path for name, path in paths.items() if is_delta_table(path)}


def files_per_table(settings: Settings, tables: Iterable[tuple[str, str]] = STREAMING_TABLES) -> dict[str, int]:
    """Data files in each existing table's current version."""
    return {name: file_count(path) for name, path in table_paths(settings, tables).items()}


def compact(
    settings: Settings, tables: Iterable[tuple[str, str]] = STREAMING_TABLES, echo: Callable[[str], None] = print
) -> list[CompactResult]:
    """Compact every existing table of ``tables``, one after the other, echoing each as it is done."""
    paths = table_paths(settings, tables)
    results = []
    for i, (name, path) in enumerate(paths.items(), 1):
        result = compact_table(path, settings.maintenance, name)
        echo(
            f"[{i}/{len(paths)}] {name}: {result.files_before} -> {result.files_after} files "
            f"({result.files_removed} rewritten into {result.files_added}, {result.seconds:.1f} s)"
        )
        results.append(result)
    return results


def vacuum(
    settings: Settings,
    tables: Iterable[tuple[str, str]] = STREAMING_TABLES,
    retention_hours: float | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> list[VacuumResult]:
    """VACUUM every existing table of ``tables`` with ``retention_hours`` (default: the settings')."""
    hours = settings.maintenance.vacuum_retention_hours if retention_hours is None else retention_hours
    paths = table_paths(settings, tables)
    results = []
    for i, (name, path) in enumerate(paths.items(), 1):
        result = vacuum_table(path, hours, name, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        echo(f"[{i}/{len(paths)}] {name}: {verb} {result.files_deleted} files older than {hours:g} h")
        results.append(result)
    return results


def summary_lines(results: Sequence[CompactResult]) -> list[str]:
    """A table of files per table before and after a compaction run."""
    lines = [f"{'table':<28}{'files before':>14}{'files after':>13}{'seconds':>10}"]
    for r in results:
        lines.append(f"{r.table:<28}{r.files_before:>14}{r.files_after:>13}{r.seconds:>10.1f}")
    before, after = sum(r.files_before for r in results), sum(r.files_after for r in results)
    lines.append(f"{'total':<28}{before:>14}{after:>13}{sum(r.seconds for r in results):>10.1f}")
    return lines


# -- the ``ecom maintain`` command ---------------------------------------------------------------------------
ACTIONS = ("compact", "vacuum", "all")


def _tables(text: str) -> tuple[str, str]:
    layer, sep, table = text.partition("/")
    if not sep or not table:
        import argparse

        raise argparse.ArgumentTypeError(f"not layer/table: {text}")
    return layer, table


def add_maintain_arguments(parser) -> None:
    parser.add_argument(
        "action",
        choices=ACTIONS,
        help="compact: rewrite small files; vacuum: delete files older versions no longer need; all: both",
    )
    parser.add_argument(
        "--table",
        type=_tables,
        action="append",
        dest="tables",
        metavar="LAYER/TABLE",
        help="only this table (repeatable; default: the streaming tables)",
    )
    parser.add_argument(
        "--retain-hours", type=float, help="VACUUM retention (default: maintenance.vacuum_retention_hours)"
    )
    parser.add_argument("--dry-run", action="store_true", help="VACUUM: list what would be deleted, delete nothing")
    add_schedule_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object per run")


def run_once(settings: Settings, args) -> dict:
    """One run of ``args.action``; returns what it did (files per table before and after, files vacuumed)."""
    tables = args.tables or STREAMING_TABLES
    echo = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    out: dict = {}
    if args.action in ("compact", "all"):
        results = compact(settings, tables, echo=echo)
        if not args.json:
            print("\n".join(summary_lines(results)), flush=True)
        out["compact"] = [asdict(r) for r in results]
    if args.action in ("vacuum", "all"):
        results = vacuum(settings, tables, args.retain_hours, args.dry_run, echo=echo)
        out["vacuum"] = [asdict(r) for r in results]
    return out


def run_maintain(settings: Settings, args) -> int:
    """``ecom maintain``: once, or every ``--every`` seconds (a failed run is reported; the next runs as planned)."""
    import json

    def once() -> None:
        result = run_once(settings, args)
        if args.json:
            print(json.dumps(result), flush=True)

    return run_on_schedule(once, args.every, args.first_after, "maintenance")
