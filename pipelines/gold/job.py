"""Gold batch entry point: ``ecom batch`` and ``spark-submit pipelines/gold/job.py``.

``daily`` runs dimensions, RFM, cohorts, recommendations, the recomputation of
recent minute metrics and the daily summaries, in that order, with progress,
and ends with the rows written per table; each job also runs alone. See
``pipelines.gold.batch`` for what each job reads and writes.
"""

from __future__ import annotations

import argparse
import sys

from ecom.scheduling import add_schedule_arguments, iso_date, run_on_schedule
from ecom.settings import Settings, get_settings

DAILY = "daily"
# pipelines.gold.batch.JOBS, named here too so that `ecom batch --help` loads no Spark (a unit test checks they agree)
JOBS = ("dimensions", "rfm", "cohorts", "recommendations", "minutes", "summaries")


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "job",
        choices=[DAILY, *JOBS],
        help=f"{DAILY}: all jobs in order ({', '.join(JOBS)}); or one job alone",
    )
    parser.add_argument(
        "--as-of", type=iso_date, help="count orders up to the end of this day, YYYY-MM-DD (default: today, UTC)"
    )
    add_schedule_arguments(
        parser,
        "run again every SECONDS until stopped (the demo's schedule: gold.schedule_s); a failed run is "
        "recorded in batch_runs and the next one runs as planned",
    )


def run_batch(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``args.job`` (or the whole daily batch); prints progress and the rows written per table."""
    from ecom.spark import get_spark
    from pipelines.gold import batch

    names = list(batch.JOBS) if args.job == DAILY else [args.job]
    spark = get_spark(settings, f"ecom-batch-{args.job}")

    def once() -> None:
        results = batch.run(spark, settings, names, args.as_of, echo=lambda line: print(line, flush=True))
        print("\n".join(batch.summary_lines(results)), flush=True)

    # a scheduled run that fails is recorded in batch_runs; the next one runs as planned
    return run_on_schedule(
        once, getattr(args, "every", None), args.first_after, "gold batch", after_each=spark.catalog.clearCache
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Gold batch jobs: silver -> gold Delta tables + PostgreSQL.")
    add_batch_arguments(parser)
    parser.add_argument("--profile", help="settings profile (default: $ECOM_PROFILE or local)")
    args = parser.parse_args(argv)
    return run_batch(get_settings(args.profile), args)


if __name__ == "__main__":
    sys.exit(main())
