"""Run modes of the simulator: paced live runs and parallel backfills into Kafka.

``run_live`` paces one simulator at a target rate (optionally for a count or a
duration) and stamps each order with the wall-clock time it is sent.
``run_parallel`` splits the customer base over worker processes (one
kafka-python producer each), generates orders as fast as possible, either with
past event times along the daily curve (backfill) or now, and adds up what the
broker confirmed. Both show a tqdm progress bar with rate and totals.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tqdm import tqdm

from ecom.settings import Settings
from simulator.generator import TransactionSimulator
from simulator.producer import DeliveryStats, TransactionProducer, encode
from simulator.shop import ShopState, merge

PROGRESS_EVERY = 500


@dataclass
class RunResult:
    """Totals of a run; rates are broker-confirmed, from the first send to the last acknowledgement."""

    transactions: int = 0
    delivered: int = 0
    labels: int = 0
    failed: int = 0  # every send without an acknowledgement, including orders a crashed worker never sent
    client_restarts: int = 0  # stalled Kafka clients replaced (their unanswered sends are in failed)
    bytes: int = 0
    first_send: float | None = None
    last_ack: float | None = None
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the producing processes (all threads)
    first_event_time: str | None = None
    last_event_time: str | None = None
    errors: list[str] = field(default_factory=list)
    shop: ShopState | None = None  # the shop as the run left it (backfill: merged from every worker)

    @property
    def ack_seconds(self) -> float:
        if self.first_send is None or self.last_ack is None:
            return 0.0
        return self.last_ack - self.first_send

    @property
    def tx_per_s(self) -> float:
        """Transactions confirmed by the broker per second."""
        return (self.delivered - self.labels) / self.ack_seconds if self.ack_seconds > 0 else 0.0

    def add(self, stats: DeliveryStats, transactions: int) -> None:
        self.transactions += transactions
        self.delivered += stats.delivered
        self.labels += stats.labels_delivered
        self.failed += stats.failed
        self.client_restarts += stats.client_restarts
        self.bytes += stats.bytes
        self.errors.extend(stats.errors)
        if stats.first_send is not None:
            self.first_send = stats.first_send if self.first_send is None else min(self.first_send, stats.first_send)
        if stats.last_ack is not None:
            self.last_ack = stats.last_ack if self.last_ack is None else max(self.last_ack, stats.last_ack)

    def summary(self) -> str:
        restarts = f"; Kafka client replaced {self.client_restarts}x after stalling" if self.client_restarts else ""
        return (
            f"sent {self.transactions} orders (+{self.labels} labels), delivered {self.delivered}, "
            f"failed {self.failed} in {self.wall_seconds:.1f}s; {self.tx_per_s:,.0f} orders/s confirmed{restarts}"
        )


def run_live(
    settings: Settings,
    producer: TransactionProducer,
    sim: TransactionSimulator,
    rate: float,
    count: int | None = None,
    duration: float | None = None,
    progress: bool = True,
    on_event: Callable[[dict], None] | None = None,
) -> RunResult:
    """Send orders at ``rate`` per second until ``count`` or ``duration`` (or Ctrl-C)."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    started = time.monotonic()
    sent = 0
    bar = tqdm(total=count, unit="tx", disable=not progress, mininterval=1.0, smoothing=0.1)
    result = RunResult()
    try:
        while count is None or sent < count:
            elapsed = time.monotonic() - started
            if duration is not None and elapsed >= duration:
                break
            due = int(elapsed * rate) + 1 - sent
            if due <= 0:
                time.sleep(min(0.005, (sent + 1) / rate - elapsed))
                continue
            if count is not None:
                due = min(due, count - sent)
            for _ in range(due):
                generated = sim.generate(datetime.now(UTC), rate)
                producer.send(generated)
                if on_event is not None:
                    on_event(generated.event)
            if sent == 0:
                result.first_event_time = generated.event["event_time"]
            result.last_event_time = generated.event["event_time"]
            sent += due
            bar.update(due)
            bar.set_postfix(failed=producer.stats.failed, refresh=False)
    except KeyboardInterrupt:
        pass
    finally:
        producer.close()
        bar.close()
    result.add(producer.stats, sent)
    result.wall_seconds = time.monotonic() - started
    return result


def _shard_counts(count: int, shards: int) -> list[int]:
    return [count // shards + (1 if i < count % shards else 0) for i in range(shards)]


def _worker(
    settings: Settings,
    seed: int,
    shard: int,
    shards: int,
    count: int,
    days: float | None,
    end: datetime | None,
    topic: str | None,
    labels_topic: str | None,
    producer_overrides: dict,
    pregenerate: bool,
    progress,
    results,
) -> None:
    """One worker process: its share of customers, one producer, its share of the orders."""
    report = {"shard": shard, "first_event_time": None, "last_event_time": None, "cpu_s": 0.0}
    cpu_start = time.process_time()
    producer = None
    try:
        sim = TransactionSimulator(settings.simulator, seed, shard=shard, shards=shards, expected_orders=count)
        producer = TransactionProducer(settings, None, topic, labels_topic, client_overrides=producer_overrides)
        if days is not None:
            stream = sim.backfill(count, days, end)
        else:
            now = datetime.now(UTC)
            stream = (sim.generate(now) for _ in range(count))
        if pregenerate:  # producer-only measurement: generation and JSON before the clock starts
            payloads = [(g.event["customer_id"], encode(g.event)) for g in stream]
            cpu_start = time.process_time()
            for i, (key, value) in enumerate(payloads, 1):
                producer.send_raw(key, value)
                if i % PROGRESS_EVERY == 0:
                    progress[shard] = i
        else:
            stop: list[int] = []  # Ctrl-C (or the parent) asks to stop: finish the current order, then flush
            signal.signal(signal.SIGINT, lambda signum, _frame: stop.append(signum))
            for i, generated in enumerate(stream, 1):
                producer.send(generated)
                if i == 1:
                    report["first_event_time"] = generated.event["event_time"]
                report["last_event_time"] = generated.event["event_time"]
                if i % PROGRESS_EVERY == 0:
                    progress[shard] = i
                    if stop:
                        break
        producer.close()
        report.update(_stats_report(producer.stats), shop=sim.state())
        progress[shard] = report["sent"]
        report["cpu_s"] = time.process_time() - cpu_start
    except BaseException as exc:  # report, never lose a worker's failure silently
        report.update(_failed_report(producer, count, exc))
        results.put(report)
        raise
    results.put(report)


def _stats_report(stats: DeliveryStats) -> dict:
    """A worker's delivery counts for the parent; ``sent`` counts orders (labels apart)."""
    return {
        "sent": stats.sent - stats.labels_sent,
        "delivered": stats.delivered,
        "labels": stats.labels_delivered,
        "failed": stats.failed,
        "client_restarts": stats.client_restarts,
        "bytes": stats.bytes,
        "first_send": stats.first_send,
        "last_ack": stats.last_ack,
        "errors": stats.errors,
    }


def _failed_report(producer: TransactionProducer | None, count: int, exc: BaseException) -> dict:
    """A crashed worker: what the broker acknowledged stays delivered; the rest of its orders count as failed."""
    if producer is None:
        return {**_stats_report(DeliveryStats()), "sent": count, "failed": count, "errors": [repr(exc)]}
    try:
        producer.close()  # outcomes for what was sent; no outcome counts as failed
    except Exception:  # noqa: BLE001 - the worker is failing already; the counts below stay exact
        producer.stats.settle("the worker failed while closing its producer")
    report = _stats_report(producer.stats)
    never_sent = count - report["sent"]
    report.update(sent=count, failed=report["failed"] + never_sent, errors=[repr(exc), *report["errors"]])
    return report


def run_parallel(
    settings: Settings,
    count: int,
    *,
    seed: int | None = None,
    workers: int | None = None,
    days: float | None = None,
    end: datetime | None = None,
    topic: str | None = None,
    labels_topic: str | None = None,
    producer_overrides: dict | None = None,
    pregenerate: bool = False,
    progress: bool = True,
    desc: str = "backfill",
) -> RunResult:
    """``count`` orders from ``workers`` processes, as fast as the broker confirms them.

    With ``days`` the event times are spread over the ``days`` before ``end``
    (backfill); otherwise they are the current time. Reproducible for the same
    seed, worker count and ``end``.
    """
    workers = max(1, workers or settings.simulator.workers)
    seed = seed if seed is not None else settings.simulator.seed
    if seed is None:
        seed = int(time.time() * 1000)
    if days is not None and end is None:
        end = datetime.now(UTC)
    ctx = mp.get_context("spawn")
    shares = _shard_counts(count, workers)
    done = ctx.Array("q", workers, lock=False)
    results = ctx.Queue()
    started = time.monotonic()
    procs = [
        ctx.Process(
            target=_worker,
            args=(
                settings,
                seed,
                i,
                workers,
                shares[i],
                days,
                end,
                topic,
                labels_topic,
                producer_overrides or {},
                pregenerate,
                done,
                results,
            ),
            name=f"ecom-sim-{i}",
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    result = RunResult()
    outcomes = []
    bar = tqdm(total=count, unit="tx", desc=desc, disable=not progress, mininterval=0.5, smoothing=0.05)
    interrupted = False
    try:
        while len(outcomes) < workers:
            try:
                outcomes.append(results.get(timeout=0.5))
            except queue.Empty:  # report progress, check the workers are alive
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
            except KeyboardInterrupt:  # ask the workers to stop; they flush and report
                if interrupted:
                    raise
                interrupted = True
                for p in procs:
                    if p.is_alive() and p.pid:
                        os.kill(p.pid, signal.SIGINT)
            bar.update(sum(done) - bar.n)
        bar.update(sum(done) - bar.n)
    finally:
        bar.close()
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
    result.wall_seconds = time.monotonic() - started
    reported = {o["shard"] for o in outcomes}
    for o in outcomes:
        stats = DeliveryStats(
            delivered=o["delivered"],
            labels_delivered=o["labels"],
            failed=o["failed"],
            client_restarts=o["client_restarts"],
            bytes=o["bytes"],
            first_send=o["first_send"],
            last_ack=o["last_ack"],
            errors=o["errors"],
        )
        result.add(stats, o["sent"])
        result.cpu_seconds += o["cpu_s"]
        first, last = o["first_event_time"], o["last_event_time"]
        if first and (result.first_event_time is None or first < result.first_event_time):
            result.first_event_time = first
        if last and (result.last_event_time is None or last > result.last_event_time):
            result.last_event_time = last
    for shard in set(range(workers)) - reported:
        result.failed += shares[shard]
        result.errors.append(f"worker {shard} died without a report")
    parts = sorted((o for o in outcomes if o.get("shop") is not None), key=lambda o: o["shard"])
    if len(parts) == workers:
        result.shop = merge([o["shop"] for o in parts])
    return result
