"""What the batch-style commands share: a ``--as-of`` date type and the ``--every`` / ``--first-after`` schedule.

``ecom batch``, ``ecom lifecycle run`` and ``ecom maintain`` run once, or, with ``--every S``, every S seconds
until stopped (the demo's background processes). A scheduled run that fails is reported on stderr and the next
one runs as planned: each of those jobs is idempotent, so the next run completes what a failed one left.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable


def iso_date(text: str) -> dt.date:
    """An argparse type: a date as YYYY-MM-DD."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text}") from exc


def add_schedule_arguments(parser: argparse.ArgumentParser, every_help: str | None = None) -> None:
    """``--every SECONDS`` and ``--first-after SECONDS`` (default 0)."""
    parser.add_argument(
        "--every", type=float, metavar="SECONDS", help=every_help or "run again every SECONDS until stopped"
    )
    parser.add_argument(
        "--first-after",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --every: wait this long before the first run (default 0)",
    )


def run_on_schedule(
    once: Callable[[], object],
    every: float | None,
    first_after: float,
    what: str,
    after_each: Callable[[], object] | None = None,
) -> int:
    """``once()`` now (its errors raised), or with ``every``: after ``first_after`` seconds, every ``every``
    seconds until stopped, a failure reported as "<what> failed: ..." on stderr; ``after_each`` runs after
    every scheduled run, failed or not."""
    if not every:
        once()
        return 0
    time.sleep(first_after)
    while True:
        started = time.monotonic()
        try:
            once()
        except Exception as exc:  # noqa: BLE001
            print(f"{what} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        if after_each is not None:
            after_each()
        time.sleep(max(0.0, every - (time.monotonic() - started)))
