"""``ecom generate``: drive the simulator into Kafka.

Modes: live at a target rate (until Ctrl-C), a fixed count, a duration, and
backfill (N days of history with past event times, as fast as possible, in
parallel worker processes). ``--seed`` makes a run reproducible event for event.

Every run records the shop it leaves behind (``simulator.shop``), one record
per orders topic under ``simulator.state_dir``. A live run continues the
recorded shop of its topic by default (same seed, same customers and their
history, new customers with new ids); ``--fresh`` starts another shop.

A live run serves the producer's Prometheus metrics and ``/healthz`` on ``metrics.ports.generate``
(``ecom.metrics``; docs/observability.md); a backfill's workers are separate processes and are not scraped.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from simulator import shop

if TYPE_CHECKING:  # the generator, producer and runner (kafka-python) load when a run starts: `--help` stays quick
    from ecom.settings import Settings
    from simulator.runner import RunResult

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
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="live: start another shop instead of continuing the one recorded for this topic",
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


def shop_path(settings: Settings, topic: str | None) -> Path:
    """Where the shop generated into ``topic`` is recorded."""
    state_dir = settings.simulator.state_dir or str(Path(settings.data_dir) / "simulator")
    return shop.shop_path(state_dir, topic or settings.kafka.transactions_topic)


def _record(path: Path, state: shop.ShopState | None) -> None:
    if state is None:
        print(f"the shop was not recorded (a worker did not report): a live run will not continue it ({path})")
        return
    shop.save(path, state)
    print(f"shop recorded in {path}: seed {state.seed}, {state.customers:,} customers with orders")


def _continuing(path: Path, settings: Settings, args: argparse.Namespace) -> shop.ShopState | None:
    """The recorded shop a live run continues, or None for a new one (no record, or --fresh)."""
    if getattr(args, "fresh", False):
        return None
    recorded = shop.to_continue(shop.load(path), seed=args.seed, products=settings.simulator.products, where=path)
    if recorded is not None:
        last = f"{recorded.until:%Y-%m-%d %H:%M} UTC" if recorded.until else "none"
        print(
            f"continuing the shop recorded in {path}: seed {recorded.seed}, "
            f"{recorded.customers:,} customers with orders, last order {last}"
        )
    return recorded


def run_generate(settings: Settings, args: argparse.Namespace) -> int:
    from simulator.generator import TransactionSimulator
    from simulator.producer import TransactionProducer
    from simulator.runner import run_live, run_parallel

    topic = getattr(args, "topic", None)
    labels_topic = getattr(args, "labels_topic", None)
    backfill_days = getattr(args, "backfill_days", None)
    progress = not args.no_progress
    path = shop_path(settings, topic)
    if backfill_days is not None and (args.duration is not None or args.rate is not None):
        print("ecom generate: --backfill-days runs as fast as possible; --rate/--duration do not apply")
        return 2
    try:
        with shop.hold(path):
            if backfill_days is not None:
                result = run_parallel(
                    settings,
                    args.count or DEFAULT_BACKFILL_COUNT,
                    seed=args.seed,
                    workers=getattr(args, "workers", None),
                    days=backfill_days,
                    end=getattr(args, "end", None),
                    topic=topic,
                    labels_topic=labels_topic,
                    progress=progress,
                )
                _record(path, result.shop)  # a backfill starts the topic's shop: it replaces an earlier record
            else:
                sim = TransactionSimulator(settings.simulator, seed=args.seed, shop=_continuing(path, settings, args))
                from ecom import metrics  # not at the top: `ecom --help` imports this module

                producer = TransactionProducer(settings, topic=topic, labels_topic=labels_topic)
                metrics.serve(settings, "generate").add("producer", producer.health)
                metrics.watch_producer(lambda: producer.stats)
                rate = args.rate or settings.simulator.rate_per_s
                result = run_live(
                    settings, producer, sim, rate, count=args.count, duration=args.duration, progress=progress
                )
                _record(path, sim.state())
    except shop.ShopError as exc:
        print(f"ecom generate: {exc}")
        return 2
    return _report(result)
