"""``ecom lifecycle run``: retention and archive of the lake, and PostgreSQL pruned to match.

One run, in this order (docs/lifecycle.md):

1. lake (``archive.move_table``): for each table of ``policy.LAKE_POLICIES``, rows whose event date is before
   the cutoff of its horizon move to ``archive/<layer>/<table>``, month by month: copied, counted, then deleted;
2. PostgreSQL (``prune_postgres``), only once every lake move succeeded: each table of ``policy.PG_POLICIES``
   to its horizon (``transactions`` the hot one, ``fraud_alerts`` the alerts one, the streams' per-batch
   bookkeeping the bookkeeping one, each sink's newest batch kept), in bounded batches.

``--dry-run`` counts what would move or be pruned and changes nothing. ``--every S`` runs it again every S
seconds (the demo's schedule). Horizons come from ``retention`` in the settings; ``--as-of`` moves "today".
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ecom.scheduling import add_schedule_arguments, iso_date, run_on_schedule
from ecom.settings import Settings
from pipelines.lifecycle.policy import LAKE_POLICIES, PG_POLICIES, cutoff

if TYPE_CHECKING:  # the lake moves (Spark, delta-rs) and pruning (psycopg2) load when a run starts
    from pipelines.lifecycle import archive, prune


@dataclass
class LifecycleReport:
    """What one run moved and pruned (or, dry, would)."""

    as_of: str
    dry_run: bool
    cutoffs: dict[str, str]  # horizon name -> first event date kept hot
    moves: list[archive.MonthMove] = field(default_factory=list)
    pruned: list[prune.Pruned] = field(default_factory=list)

    def moved(self, table: str) -> int:
        return sum(m.rows for m in self.moves if m.table == table)

    @property
    def changed(self) -> bool:
        """True if the run changed a table (a dry run never does)."""
        if self.dry_run:
            return False
        return any(m.archived or m.deleted for m in self.moves) or any(p.rows for p in self.pruned)

    def lines(self) -> list[str]:
        verb = "would move" if self.dry_run else "moved"
        out = [f"lifecycle as of {self.as_of}" + (" (dry run: nothing changed)" if self.dry_run else "")]
        out += [f"  keeps hot from {day} ({name})" for name, day in self.cutoffs.items()]
        out.append(f"{'lake table':<26}{verb + ' to archive':>22}{'archived now':>14}{'deleted hot':>13}")
        for policy in LAKE_POLICIES:
            mine = [m for m in self.moves if m.table == policy.name]
            out.append(
                f"{policy.name:<26}{sum(m.rows for m in mine):>22,}{sum(m.archived for m in mine):>14,}"
                f"{sum(m.deleted for m in mine):>13,}"
            )
        out.append(f"{'PostgreSQL table':<26}{'would prune' if self.dry_run else 'pruned':>22}{'batches':>14}")
        out += [f"{p.table:<26}{p.rows:>22,}{p.batches:>14,}" for p in self.pruned]
        return out

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "changed": self.changed})


def cutoffs(settings: Settings, as_of: dt.date) -> dict[str, dt.date]:
    """Horizon name (a ``retention`` field) -> the first event date kept hot on ``as_of``."""
    horizons = {p.horizon for p in LAKE_POLICIES} | {p.horizon for p in PG_POLICIES}
    return {h: cutoff(as_of, getattr(settings.retention, h)) for h in sorted(horizons)}


def run_lifecycle(
    settings: Settings, as_of: dt.date | None = None, dry_run: bool = False, echo: Callable[[str], None] = print
) -> LifecycleReport:
    """One lifecycle run: lake moves, then PostgreSQL pruning; returns what it did."""
    from pipelines.lifecycle import archive

    as_of = as_of or dt.datetime.now(dt.UTC).date()
    days = cutoffs(settings, as_of)
    report = LifecycleReport(as_of.isoformat(), dry_run, {h: d.isoformat() for h, d in days.items()})
    verb = "would move" if dry_run else "moved"
    for policy in LAKE_POLICIES:
        echo(f"{policy.name}: rows dated before {days[policy.horizon]} -> archive/{policy.name} ...")
        report.moves += archive.move_table(
            settings.lake,
            policy,
            days[policy.horizon].isoformat(),
            dry_run=dry_run,
            echo=lambda m: echo(
                f"  {m.month}: {m.rows:,} rows {verb}"
                + ("" if dry_run else f" ({m.archived:,} archived now, {m.deleted:,} deleted hot)")
            ),
        )
    report.pruned = prune_postgres(settings, as_of, dry_run, echo)
    return report


def prune_postgres(
    settings: Settings, as_of: dt.date, dry_run: bool = False, echo: Callable[[str], None] = print
) -> list[prune.Pruned]:
    """PostgreSQL's part of a run: every table of ``PG_POLICIES`` pruned to its horizon on ``as_of``."""
    from pipelines.lifecycle import prune

    days = cutoffs(settings, as_of)
    pruned = []
    for policy in PG_POLICIES:
        echo(f"PostgreSQL {policy.table}: rows dated before {days[policy.horizon]} ...")
        pruned.append(
            prune.prune_table(
                settings.postgres.dsn,
                policy,
                days[policy.horizon],
                settings.retention.prune_batch_rows,
                dry_run=dry_run,
                echo=lambda p: echo(f"  {p.rows:,} rows {'would be pruned' if dry_run else 'pruned'}"),
            )
        )
    return pruned


def add_lifecycle_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["run"], help="run: archive the lake past its horizons, prune PostgreSQL")
    parser.add_argument("--dry-run", action="store_true", help="say what would move and be pruned; change nothing")
    parser.add_argument("--as-of", type=iso_date, help="today for the horizons, YYYY-MM-DD (default: today, UTC)")
    add_schedule_arguments(parser)
    parser.add_argument("--json", action="store_true", help="end with one JSON object instead of the table")


def run_lifecycle_command(settings: Settings, args: argparse.Namespace) -> int:
    """``ecom lifecycle run``: one run with progress and a table, or one every ``--every`` seconds."""

    def once() -> None:
        report = run_lifecycle(settings, args.as_of, args.dry_run, echo=lambda line: print(line, flush=True))
        print(report.to_json() if args.json else "\n".join(report.lines()), flush=True)

    # a scheduled run that fails is reported; the next one completes it (every step is idempotent)
    return run_on_schedule(once, args.every, args.first_after, "lifecycle run")
