"""Backfill benchmark: N orders of history over D days into the local broker, timed end to end.

``python -m benchmarks.backfill`` (default 1,000,000 orders over 90 days)
starts the embedded stack if Kafka is not running (and stops only what it
started), writes into scratch topics that it deletes afterwards, and prints
one JSON object as its last line with ``backfill_1m_seconds`` (wall time from
launching the worker processes to the last broker acknowledgement) when
``--count`` is one million.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime

from benchmarks._common import bench_settings, emit, log, machine_info, process_cpu_seconds, scratch_topics, services
from ecom.runtime.kafka import EmbeddedKafka
from simulator.runner import run_parallel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backfill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="orders (default 1000000)")
    parser.add_argument("--days", type=float, default=90.0, help="days of history (default 90)")
    parser.add_argument("--workers", type=int, help="producer processes (default: simulator.workers)")
    parser.add_argument("--seed", type=int, default=11, help="simulator seed (default 11)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    settings = bench_settings()
    workers = args.workers or settings.simulator.workers
    out: dict = {"benchmark": "backfill", "profile": settings.profile, "count": args.count, "days": args.days,
                 "workers": workers, "machine": machine_info()}  # fmt: skip
    with (
        services(settings) as started_here,
        scratch_topics(settings, "bench-backfill", {"tx": 3, "labels": 1}) as topics,
    ):
        out["started_services"] = started_here
        log(f"backfill: {args.count} orders over {args.days:g} days from {workers} processes ...")
        end = datetime.now(UTC)
        broker_pid = EmbeddedKafka(settings).process.pid() if settings.kafka.embedded else None
        broker_before = process_cpu_seconds(broker_pid)
        t0 = time.monotonic()
        result = run_parallel(
            settings,
            args.count,
            seed=args.seed,
            workers=workers,
            days=args.days,
            end=end,
            topic=topics["tx"],
            labels_topic=topics["labels"],
            progress=not args.no_progress,
        )
        seconds = time.monotonic() - t0
        broker_after = process_cpu_seconds(broker_pid)
    out.update(
        {
            "seconds": round(seconds, 2),
            "tx_per_s": round(args.count / seconds, 1),
            "delivered": result.delivered,
            "labels": result.labels,
            "failed": result.failed,
            "first_event_time": result.first_event_time,
            "last_event_time": result.last_event_time,
            "producer_cpu_s": round(result.cpu_seconds, 1),
        }
    )
    if broker_before is not None and broker_after is not None:
        out["broker_cpu_s"] = round(broker_after - broker_before, 1)
        # Wall time if the cores ran only this backfill and the broker (an estimate, not a measurement).
        out["cpu_bound_seconds_estimate"] = round((result.cpu_seconds + out["broker_cpu_s"]) / (os.cpu_count() or 1), 1)
    if args.count == 1_000_000:
        out["backfill_1m_seconds"] = out["seconds"]
    if result.errors:
        out["errors"] = result.errors[:5]
    emit(out)
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
