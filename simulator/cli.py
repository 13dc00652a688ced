"""``ecom generate``: drive the simulator into Kafka at a target rate, for a count or a duration."""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone

from tqdm import tqdm

from ecom.settings import Settings
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, help="orders per second (default: simulator.rate_per_s)")
    parser.add_argument("--count", type=int, help="stop after this many orders")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--seed", type=int, help="make the run reproducible event for event")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_generate(settings: Settings, args: argparse.Namespace) -> int:
    rate = args.rate or settings.simulator.rate_per_s
    sim = TransactionSimulator(settings.simulator, seed=args.seed)
    producer = TransactionProducer(settings)
    started = time.monotonic()
    sent = 0
    bar = tqdm(total=args.count, unit="tx", disable=args.no_progress, mininterval=1.0)
    try:
        while True:
            if args.count is not None and sent >= args.count:
                break
            elapsed = time.monotonic() - started
            if args.duration is not None and elapsed >= args.duration:
                break
            due = int(elapsed * rate) + 1 - sent
            if due <= 0:
                time.sleep(min(0.01, (sent + 1) / rate - elapsed))
                continue
            if args.count is not None:
                due = min(due, args.count - sent)
            for _ in range(due):
                producer.send(sim.generate(datetime.now(timezone.utc)))
            sent += due
            bar.update(due)
            bar.set_postfix(failed=producer.stats.failed, refresh=False)
    except KeyboardInterrupt:
        pass
    finally:
        producer.close()
        bar.close()
    stats = producer.stats
    print(f"sent {stats.sent}, delivered {stats.delivered}, failed {stats.failed} in {time.monotonic() - started:.1f}s")
    if stats.failed:
        for err in stats.errors:
            print(f"  delivery error: {err}")
    return 1 if stats.failed else 0
