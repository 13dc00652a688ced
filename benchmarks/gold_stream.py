"""Live metrics benchmark: how soon a minute's final figures are in PostgreSQL, and what the gold stage costs ingest.

``python -m benchmarks.gold_stream`` starts the embedded stack if Kafka is not
running (and stops only what it started), runs ``ecom stream all`` on its own
topic, lake folder and database (``_common.scratch_stream``), and on this same
machine:

1. ingest alone: orders at ``--rate`` (default 1,000/s) for
   ``--baseline-seconds``; every 10th order is followed until it is queryable in
   PostgreSQL (``benchmarks.streaming.LatencyProbe``): the ingest latency
   without the gold stage;
2. ``ecom stream gold`` started beside it (a second process), once it has caught
   up: the same rate for ``--seconds``, the same probe (ingest latency with the
   gold stage), while the minute rows of ``analytics_summaries`` are polled every
   ``--poll-s``. A minute's lag = when PostgreSQL first showed its final
   figures (every metric and dimension, fingerprinted) - the minute's end; the
   gold stage's own share = that - when ``transactions`` first held all the
   minute's orders (polled every second).
   Only minutes entirely inside the sending window count; the final figures are
   those shown ``--settle-s`` after sending stopped.

The CPU seconds per second of each process tree (the ``ecom`` process, its
JVM and Python workers) are sampled over each phase: what the gold stage costs
the machine, however busy it is otherwise. Last, in this process, it measures
what computing the metrics inside the ingest micro-batch would add to a batch
of 1,000 orders: ``LiveMinutes.fold`` (CPU milliseconds) and a PostgreSQL
transaction with its writes.

Prints one JSON object as its last line: ``minute_lag_p95_s`` (and p50, max,
per minute), ``ingest_p95_ms_without_gold`` / ``_with_gold`` and the change in
percent, the CPU shares, the gold stage's median step times, the in-batch
costs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import psycopg2

from benchmarks._common import (
    ScratchStream,
    bench_settings,
    emit,
    log,
    machine_info,
    percentile,
    process_cpu_seconds,
    scratch_stream,
    services,
    step_medians,
)
from benchmarks.streaming import LatencyProbe
from ecom.runtime.process import ManagedProcess
from ecom.settings import Settings, child_environment
from serving.db import connection


class MinutePoller:
    """Polls, per minute: the fingerprint (rows, sum of values) of its figures in ``analytics_summaries``, and how
    many of its orders ``transactions`` holds (every ``orders_every`` polls)."""

    FIGURES = (
        "SELECT period_start, count(*), round(sum(value)::numeric, 6) FROM analytics_summaries "
        "WHERE grain = 'minute' AND metric <> 'late_events' AND period_start >= %s GROUP BY 1"
    )
    ORDERS = "SELECT date_trunc('minute', event_time), count(*) FROM transactions WHERE event_time >= %s GROUP BY 1"

    def __init__(self, dsn: str, since: dt.datetime, poll_s: float, orders_every: int = 4):
        self.dsn, self.since, self.poll_s, self.orders_every = dsn, since, poll_s, orders_every
        # series -> minute -> [(time, value)], a new entry whenever the value changes
        self.seen: dict[str, dict[dt.datetime, list[tuple[float, tuple]]]] = {"figures": {}, "orders": {}}
        self.stop = threading.Event()

    def _record(self, series: str, rows: list[tuple]) -> None:
        now = time.time()
        for minute, *value in rows:
            history = self.seen[series].setdefault(minute, [])
            if not history or history[-1][1] != tuple(value):
                history.append((now, tuple(value)))

    def run(self) -> None:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                polls = 0
                while not self.stop.is_set():
                    cur.execute(self.FIGURES, (self.since,))
                    self._record("figures", cur.fetchall())
                    if polls % self.orders_every == 0:
                        cur.execute(self.ORDERS, (self.since,))
                        self._record("orders", cur.fetchall())
                    polls += 1
                    time.sleep(self.poll_s)
        finally:
            conn.close()

    def final_at(self, series: str, first: dt.datetime, last_end: dt.datetime) -> dict[dt.datetime, float]:
        """When each minute in [first, last_end) first showed its final value (epoch s)."""
        found = {}
        for minute, history in sorted(self.seen[series].items()):
            if first <= minute and minute + dt.timedelta(minutes=1) <= last_end:
                found[minute] = next(t for t, value in history if value == history[-1][1])
        return found


def _probe_latency(stream: ScratchStream, rate: float, seconds: float) -> dict:
    probe = LatencyProbe(stream.dsn)
    poller = threading.Thread(target=probe.run, daemon=True)
    poller.start()
    run = stream.drive(rate, seconds, on_event=probe.on_event)
    probe.deadline = time.time() + 60
    probe.stop.set()
    poller.join()
    lat = probe.latencies_ms
    return {
        "achieved_tx_per_s": round(run.transactions / max(run.wall_seconds, 1e-9), 1),
        "samples": len(lat),
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
    }


def _wait_caught_up(dsn: str, process: ManagedProcess, timeout_s: float) -> float:
    """Wait until the gold stage has folded every order served so far; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not process.is_running():
            raise RuntimeError(f"the gold stage stopped; see {process.log_file}")
        with connection(dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT (SELECT count(*) FROM transactions), "
                "(SELECT coalesce(sum(value), 0) FROM analytics_summaries WHERE grain = 'minute' "
                "AND metric IN ('orders', 'late_events') AND dimension = '')"
            )
            served, counted = cur.fetchone()
        if served and counted >= served:
            return time.monotonic() - started
        time.sleep(1)
    raise RuntimeError(f"the gold stage did not catch up within {timeout_s:.0f}s; see {process.log_file}")


def session_cpu_seconds(leader: int | None) -> float:
    """CPU seconds of the live processes of the session ``leader`` started (a ``ManagedProcess`` and its children)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if leader is None or not entry.name.isdigit():
            continue
        try:
            session = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3])
        except (OSError, IndexError, ValueError):
            continue
        if session == leader:
            total += process_cpu_seconds(int(entry.name)) or 0.0
    return total


class CpuMeter:
    """CPU seconds per wall second of process sessions, between ``start`` and ``stop``."""

    def __init__(self, **leaders: int | None):
        self.leaders = leaders
        self.begin: dict[str, float] = {}
        self.t0 = 0.0

    def start(self) -> None:
        self.t0, self.begin = time.monotonic(), {n: session_cpu_seconds(p) for n, p in self.leaders.items()}

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        return {
            f"{name}_cpu_s_per_s": round((session_cpu_seconds(pid) - self.begin[name]) / wall, 3)
            for name, pid in self.leaders.items()
        }


def _simulated_batches(settings: Settings, orders: int, repeats: int):
    """``repeats`` batches of ``orders`` simulated silver rows (``LIVE_COLUMNS``), one second apart."""
    import pyarrow as pa

    from ecom.schemas import arrow_schema
    from pipelines.gold.live import LIVE_SCHEMA
    from simulator.generator import TransactionSimulator

    sim = TransactionSimulator(settings.simulator, seed=3)
    start = dt.datetime.now(dt.UTC)
    for r in range(repeats):
        rows = []
        for i, generated in enumerate(sim.events(orders, start=start + dt.timedelta(seconds=r), rate_per_s=orders)):
            e = generated.event
            at = dt.datetime.fromisoformat(e["event_time"].replace("Z", "+00:00"))
            rows.append(
                {
                    **{k: e[k] for k in ("event_id", "customer_id", "currency", "payment_method", "channel")},
                    "event_time": at,
                    "processed_time": at,
                    "items": [{**item, "unit_price": Decimal(str(item["unit_price"]))} for item in e["items"]],
                    "amount": Decimal(str(e["amount"])),
                    "is_fraud": i % 50 == 0,
                    "kafka_partition": 0,
                    "kafka_offset": r * orders + i,
                }
            )
        yield pa.Table.from_pylist(rows, schema=arrow_schema(LIVE_SCHEMA))


def in_batch_cost(settings: Settings, orders: int = 1000, repeats: int = 20) -> dict[str, float]:
    """What the live metrics would add to an ingest micro-batch of ``orders`` silver rows: median CPU ms of
    ``LiveMinutes.fold`` and median wall ms of a PostgreSQL transaction with its writes (``settings``' database)."""
    from pipelines.gold.live import LiveMinutes, minute_writes
    from serving import db

    state = LiveMinutes.from_settings(settings)
    fold_ms, write_ms = [], []
    conn = db.connect(settings.postgres.dsn)
    try:
        for batch_id, batch in enumerate(_simulated_batches(settings, orders, repeats)):
            t0 = time.process_time()
            changes = state.fold(batch)
            fold_ms.append(1000 * (time.process_time() - t0))
            writes = minute_writes(changes, "bench-in-batch", batch_id, state.progress())
            t0 = time.perf_counter()
            db.commit_batch_writes(conn, "bench-in-batch", batch_id, writes)
            write_ms.append(1000 * (time.perf_counter() - t0))
    finally:
        conn.close()
    return {
        "in_batch_orders": orders,
        "in_batch_fold_cpu_ms": round(statistics.median(fold_ms), 1),
        "in_batch_postgres_ms": round(statistics.median(write_ms), 1),
    }


def measure_minute_lag(
    base: Settings,
    rate: float = 1000,
    seconds: float = 240,
    baseline_seconds: float = 120,
    poll_s: float = 0.25,
    settle_s: float = 30,
    trigger: str | None = None,
) -> dict:
    """Run ingest alone, then ingest plus the gold stage, at ``rate``; returns the figures (see the module doc).

    ``trigger`` is the gold stage's trigger interval (default ``gold.trigger_interval``).
    """
    trigger = trigger or base.gold.trigger_interval
    result: dict = {
        "rate_tx_per_s": rate,
        "seconds_with_gold": seconds,
        "seconds_without_gold": baseline_seconds,
        "gold_trigger": trigger,
    }
    with scratch_stream(base, "gold") as stream:
        log("waiting for the ingest stream to serve its first orders ...")
        stream.wait_for_first_orders()
        log(f"ingest alone: {rate:.0f} orders/s for {baseline_seconds:.0f}s ...")
        meter = CpuMeter(ingest=stream.process.pid())
        meter.start()
        result["ingest_without_gold"] = {**_probe_latency(stream, rate, baseline_seconds), **meter.stop()}
        stream.wait_until_all_served(120)

        gold = ManagedProcess(f"bench-gold-live-{time.strftime('%Y%m%d%H%M%S')}", stream.settings.run_dir)
        try:
            env = {**child_environment(stream.settings), "ECOM_GOLD__TRIGGER_INTERVAL": trigger}
            gold.start([sys.executable, "-m", "ecom.cli", "stream", "gold"], env=env)
            log("gold stage started; waiting until it has caught up ...")
            result["gold_catch_up_s"] = round(_wait_caught_up(stream.dsn, gold, 600), 1)
            started = dt.datetime.now(dt.UTC)
            poller = MinutePoller(stream.dsn, started.replace(second=0, microsecond=0), poll_s)
            polling = threading.Thread(target=poller.run, daemon=True)
            polling.start()
            log(f"ingest + gold: {rate:.0f} orders/s for {seconds:.0f}s ...")
            meter = CpuMeter(ingest=stream.process.pid(), gold=gold.pid())
            meter.start()
            result["ingest_with_gold"] = {**_probe_latency(stream, rate, seconds), **meter.stop()}
            ended = dt.datetime.now(dt.UTC)
            time.sleep(settle_s)
            poller.stop.set()
            polling.join()
            first = started.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
            figures = poller.final_at("figures", first, ended)
            orders = poller.final_at("orders", first, ended)
            lags = {m.isoformat(): round(t - (m + dt.timedelta(minutes=1)).timestamp(), 2) for m, t in figures.items()}
            behind = [round(t - orders[m], 2) for m, t in figures.items() if m in orders]
            values = list(lags.values())
            result.update(
                {
                    "minutes_measured": len(values),
                    "minute_lag_p50_s": percentile(values, 50),
                    "minute_lag_p95_s": percentile(values, 95),
                    "minute_lag_max_s": max(values) if values else None,
                    "minute_lags_s": lags,
                    # the gold stage's own share: final figures - the minute's last order queryable in transactions
                    "gold_behind_ingest_p50_s": percentile(behind, 50),
                    "gold_behind_ingest_max_s": max(behind) if behind else None,
                }
            )
        finally:
            gold.stop()
        if gold.log_file.exists():
            result["gold_batch_steps"] = step_medians(gold.log_file.read_text(errors="replace"))
        result.update(in_batch_cost(stream.settings))
    without, with_gold = result["ingest_without_gold"]["p95_ms"], result["ingest_with_gold"]["p95_ms"]
    result["ingest_p95_ms_without_gold"], result["ingest_p95_ms_with_gold"] = without, with_gold
    if without and with_gold:
        result["ingest_p95_change_pct"] = round(100 * (with_gold - without) / without, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000, help="orders per second (default 1,000)")
    parser.add_argument("--seconds", type=float, default=240, help="sending time with the gold stage (>= 120)")
    parser.add_argument("--baseline-seconds", type=float, default=120, help="sending time without it")
    parser.add_argument("--poll-s", type=float, default=0.25, help="how often analytics_summaries is polled")
    parser.add_argument("--settle-s", type=float, default=30, help="polling after sending stopped")
    parser.add_argument("--trigger", help="the gold stage's trigger interval (default: gold.trigger_interval)")
    args = parser.parse_args(argv)
    base = bench_settings()
    result: dict = {"benchmark": "gold_stream", "machine": machine_info()}
    started = time.monotonic()
    with services(base):
        lag = measure_minute_lag(
            base, args.rate, args.seconds, args.baseline_seconds, args.poll_s, args.settle_s, args.trigger
        )
    result.update(lag)
    result["seconds"] = round(time.monotonic() - started, 1)
    emit(result)


if __name__ == "__main__":
    main()
