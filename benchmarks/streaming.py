"""Streaming benchmark: sustained throughput and end-to-end latency of Kafka -> bronze + silver -> PostgreSQL.

``python -m benchmarks.streaming`` starts the embedded stack if Kafka is not
running (and stops only what it started), gives the run its own topic, lake
folder and PostgreSQL database (all removed at the end), starts ``ecom stream
all`` as a separate process, and drives the simulator on this same machine.

* Latency: orders at ``--latency-rate`` (default 1,000/s) for
  ``--latency-seconds``; every 10th order is followed until its row is
  queryable in PostgreSQL (polled every 50 ms). Latency = seen - event time,
  where the event time is stamped when the order is sent.
* Throughput: rate steps (``--rates``), each for ``--step-seconds`` (>= 60);
  a step is sustained when the backlog (produced - served in PostgreSQL)
  at its end is no larger than at its middle plus two seconds of input,
  i.e. bronze, silver and PostgreSQL all keep up. ``sustained_tx_per_s`` is
  the highest sustained step.

Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import threading
import time
from datetime import datetime

import psycopg2

from benchmarks._common import bench_settings, emit, log, machine_info, scratch_topics, services
from ecom.runtime.process import ManagedProcess
from ecom.settings import Settings, child_environment
from serving.db import connection, drop_database, recreate_database
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from simulator.runner import run_live


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def served(dsn: str) -> int:
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM transactions")
        return cur.fetchone()[0]


class LatencyProbe:
    """Follows sampled event ids until they are queryable in PostgreSQL."""

    def __init__(self, dsn: str, every: int = 10, poll_s: float = 0.05):
        self.dsn, self.every, self.poll_s = dsn, every, poll_s
        self.deadline = float("inf")  # set when sending stops: how long to keep following
        self.pending: dict[str, float] = {}
        self.latencies_ms: list[float] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.n = 0

    def on_event(self, event: dict) -> None:
        self.n += 1
        if self.n % self.every == 0:
            with self.lock:
                self.pending[event["event_id"]] = _epoch(event["event_time"])

    def run(self) -> None:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not (self.stop.is_set() and (not self.pending or time.time() > self.deadline)):
                    with self.lock:
                        ids = list(self.pending)
                    if ids:
                        cur.execute("SELECT event_id FROM transactions WHERE event_id = ANY(%s)", (ids,))
                        seen_at = time.time()
                        found = [r[0] for r in cur.fetchall()]
                        with self.lock:
                            for event_id in found:
                                self.latencies_ms.append(1000 * (seen_at - self.pending.pop(event_id)))
                    time.sleep(self.poll_s)
        finally:
            conn.close()


BATCH_LINE = re.compile(r"batch (\d+): (.*) ms$")


def step_medians(log_text: str) -> dict:
    """Median milliseconds per micro-batch step, from the stream's 'batch N: step ms, ...' log lines."""
    steps: dict[str, list[float]] = {}
    batches = 0
    for line in log_text.splitlines():
        match = BATCH_LINE.search(line.strip())
        if not match:
            continue
        batches += 1
        for part in match.group(2).split(", "):
            name, _, value = part.rpartition(" ")
            steps.setdefault(name, []).append(float(value))
    medians = {name: round(statistics.median(values), 1) for name, values in steps.items()}
    return {"batches": batches, "median_ms": medians, "median_total_ms": round(sum(medians.values()), 1)}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1) if len(values) > 1 else values[0]


def drive(settings: Settings, rate: float, seconds: float, seed: int, probe: LatencyProbe | None = None):
    sim = TransactionSimulator(settings.simulator, seed=seed)
    producer = TransactionProducer(settings)
    return run_live(
        settings, producer, sim, rate, duration=seconds, progress=False, on_event=probe.on_event if probe else None
    )


def wait_for_stream(dsn: str, settings: Settings, timeout_s: float = 180) -> float:
    """Send a few warm-up orders and wait until they are served; returns the seconds it took."""
    started = time.monotonic()
    drive(settings, 50, 2, seed=1)
    while time.monotonic() - started < timeout_s:
        if served(dsn) > 0:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError("the stream served nothing within the timeout; see the stream log")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-rate", type=float, default=1000)
    parser.add_argument("--latency-seconds", type=float, default=60)
    parser.add_argument("--rates", default="2000,3500,5000,6500", help="comma-separated throughput steps (orders/s)")
    parser.add_argument("--step-seconds", type=float, default=60)
    parser.add_argument("--trigger", default="0 seconds", help="stream trigger interval for the run")
    args = parser.parse_args(argv)

    base = bench_settings()
    stamp = time.strftime("%Y%m%d%H%M%S")
    root = f"{base.data_dir}/bench/streaming-{stamp}"
    result: dict = {"benchmark": "streaming", "machine": machine_info()}
    started = time.monotonic()
    with services(base), scratch_topics(base, "bench-streaming", {"tx": 3}) as topics:
        settings = base.model_copy(
            update={
                "postgres": base.postgres.model_copy(update={"database": f"bench_streaming_{stamp}"}),
                "kafka": base.kafka.model_copy(update={"topics": {**base.kafka.topics, "transactions": topics["tx"]}}),
                "lake": base.lake.model_copy(update={"root": f"{root}/lake", "checkpoints": f"{root}/checkpoints"}),
            }
        )
        dsn = settings.postgres.dsn
        recreate_database(dsn)
        env = {**child_environment(settings, base={}), "ECOM_STREAM__TRIGGER_INTERVAL": args.trigger}
        stream = ManagedProcess(f"bench-stream-{stamp}", settings.run_dir)
        stream.start([sys.executable, "-m", "ecom.cli", "stream", "all"], env=env)
        try:
            log("waiting for the stream to serve its first orders ...")
            result["stream_startup_s"] = round(wait_for_stream(dsn, settings), 1)

            log(f"latency: {args.latency_rate:.0f} orders/s for {args.latency_seconds:.0f}s ...")
            probe = LatencyProbe(dsn)
            poller = threading.Thread(target=probe.run, daemon=True)
            poller.start()
            run = drive(settings, args.latency_rate, args.latency_seconds, seed=2, probe=probe)
            probe.deadline = time.time() + 60
            probe.stop.set()  # keep following what is in flight, for at most a minute
            poller.join()
            lat = probe.latencies_ms
            result.update(
                {
                    "latency_rate_tx_per_s": args.latency_rate,
                    "latency_achieved_rate_tx_per_s": round(run.transactions / max(run.wall_seconds, 1e-9), 1),
                    "latency_samples": len(lat),
                    "latency_unseen_samples": len(probe.pending),
                    "p50_latency_ms": percentile(lat, 50),
                    "p95_latency_ms": percentile(lat, 95),
                    "p99_latency_ms": percentile(lat, 99),
                }
            )
            log(f"  p50 {result['p50_latency_ms']} ms, p95 {result['p95_latency_ms']} ms")

            steps = []
            sustained = 0.0
            for i, rate in enumerate(float(r) for r in args.rates.split(",")):
                log(f"throughput step: {rate:.0f} orders/s for {args.step_seconds:.0f}s ...")
                produced_before = served(dsn)
                marks: dict[str, int] = {}
                timer_mid = threading.Timer(args.step_seconds / 2, lambda m=marks: m.__setitem__("mid", served(dsn)))
                timer_end = threading.Timer(args.step_seconds - 0.5, lambda m=marks: m.__setitem__("end", served(dsn)))
                timer_mid.start()
                timer_end.start()
                run = drive(settings, rate, args.step_seconds, seed=10 + i)
                timer_mid.join()
                timer_end.join()
                achieved = run.transactions / max(run.wall_seconds, 1e-9)
                sent_mid = achieved * args.step_seconds / 2
                sent_end = achieved * (args.step_seconds - 0.5)
                lag_mid = sent_mid - (marks["mid"] - produced_before)
                lag_end = sent_end - (marks["end"] - produced_before)
                ok = lag_end <= lag_mid + 2 * achieved and achieved >= 0.95 * rate
                steps.append(
                    {
                        "target_tx_per_s": rate,
                        "generated_tx_per_s": round(achieved, 1),
                        "lag_mid": int(lag_mid),
                        "lag_end": int(lag_end),
                        "sustained": ok,
                    }
                )
                log(
                    f"  generated {achieved:,.0f}/s, backlog {int(lag_mid)} -> {int(lag_end)}: {'kept up' if ok else 'fell behind'}"
                )
                # let the stream drain before the next step
                deadline = time.monotonic() + 120
                total = produced_before + run.transactions
                while served(dsn) < total and time.monotonic() < deadline:
                    time.sleep(1)
                if ok:
                    sustained = max(sustained, achieved)
                elif achieved >= 0.95 * rate:
                    break
            result["steps"] = steps
            result["sustained_tx_per_s"] = round(sustained, 1)
        finally:
            stream.stop()
            if stream.log_file.exists():
                result["batch_steps"] = step_medians(stream.log_file.read_text(errors="replace"))
            drop_database(dsn)
            shutil.rmtree(root, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    emit(result)


if __name__ == "__main__":
    main()
