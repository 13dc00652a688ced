"""``ecom generate``: drive the simulator into Kafka.

Modes: live at a target rate (until Ctrl-C), a fixed count, a duration, and
backfill (N days of history with past event times, as fast as possible, in
parallel worker processes). ``--seed`` makes a run reproducible event for event.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from ecom.settings import Settings
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from simulator.runner import RunResult, run_live, run_parallel

DEFAULT_BACKFILL_COUNT = 1_000_000


def _utc(text: str) -> datetime:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=_positive(float), help="live: orders per second (default: simulator.rate_per_s)")
    parser.add_argument(
        "--count", type=_positive(int), help="stop after this many orders (backfill default: 1,000,000)"
    )
    parser.add_argument("--duration", type=_positive(float), help="live: stop after this many seconds")
    parser.add_argument("--seed", type=int, help="make the run reproducible event for event")
    parser.add_argument(
        "--backfill-days",
        type=_positive(float),
        metavar="DAYS",
        help="backfill: spread --count orders over the DAYS before --end, as fast as possible",
    )
    parser.add_argument("--end", type=_utc, help="backfill: end of the history window, ISO-8601 (default: now)")
    parser.add_argument(
        "--workers", type=_positive(int), help="backfill: producer processes (default: simulator.workers)"
    )
    parser.add_argument("--topic", help="orders topic (default: kafka.topics.transactions)")
    parser.add_argument("--labels-topic", help="fraud labels topic (default: kafka.topics.labels)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _report(result: RunResult) -> int:
    print(result.summary())
    if result.first_event_time:
        print(f"event times {result.first_event_time} .. {result.last_event_time}")
    for err in result.errors[:10]:
        print(f"  delivery error: {err}")
    return 1 if result.failed else 0


def run_generate(settings: Settings, args: argparse.Namespace) -> int:
    topic = getattr(args, "topic", None)
    labels_topic = getattr(args, "labels_topic", None)
    backfill_days = getattr(args, "backfill_days", None)
    progress = not args.no_progress
    if backfill_days is not None:
        if args.duration is not None or args.rate is not None:
            print("ecom generate: --backfill-days runs as fast as possible; --rate/--duration do not apply")
            return 2
        count = args.count or DEFAULT_BACKFILL_COUNT
        result = run_parallel(
            settings,
            count,
            seed=args.seed,
            workers=getattr(args, "workers", None),
            days=backfill_days,
            end=getattr(args, "end", None),
            topic=topic,
            labels_topic=labels_topic,
            progress=progress,
        )
        return _report(result)
    rate = args.rate or settings.simulator.rate_per_s
    sim = TransactionSimulator(settings.simulator, seed=args.seed)
    producer = TransactionProducer(settings, topic=topic, labels_topic=labels_topic)
    result = run_live(settings, producer, sim, rate, count=args.count, duration=args.duration, progress=progress)
    return _report(result)
