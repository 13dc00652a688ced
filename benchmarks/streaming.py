"""Streaming benchmark: sustained throughput and end-to-end latency of Kafka -> bronze + silver -> PostgreSQL.

``python -m benchmarks.streaming`` starts the embedded stack if Kafka is not
running (and stops only what it started), gives the run its own topic, lake
folder and PostgreSQL database (all removed at the end), starts ``ecom stream
all`` as a separate process, and drives the simulator on this same machine.

* Warm-up: ``--warmup-seconds`` (30) of orders at the latency rate, all served, before anything is measured:
  the stream's first 20-30 s of batches take two to five times the steady state's (JIT, Spark's first jobs,
  the model's first calls). ``stream_startup_s`` and ``warmup_s`` say how long both took.
* Latency: orders at ``--latency-rate`` (default 1,000/s) for
  ``--latency-seconds``; every 10th order is followed until its row is
  queryable in PostgreSQL (polled every 50 ms). Latency = seen - event time,
  where the event time is stamped when the order is sent.
* Throughput: rate steps (``--rates``), each for ``--step-seconds`` (>= 60);
  a step is sustained when the backlog (produced - served in PostgreSQL)
  at its end is no larger than at its middle plus two seconds of input,
  i.e. bronze, silver and PostgreSQL all keep up. ``sustained_tx_per_s`` is
  the highest sustained step. Each step also reports ``served_tx_per_s``, the
  orders served per second in its second half: at a step the stream cannot
  keep up with, that is its capacity, a figure finer than the steps; and
  ``cpu_s``, the CPU seconds the stream's process tree (its JVM and Python
  workers included) and the fast path's used during the step: what the fast
  path costs, whatever else the machine was doing.

``--model`` scores with a forest fitted here (in the run's own registry); ``--fast-path`` runs the per-order
alert path (``ecom stream alerts``) beside the stream, on the same
topic, lake and database: the stream's rate with and without it is what the fast path costs.

Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import threading
import time

import psycopg2

from benchmarks._common import (
    bench_settings,
    emit,
    epoch,
    log,
    machine_info,
    percentile,
    scratch_stream,
    services,
    step_medians,
)


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
                self.pending[event["event_id"]] = epoch(event["event_time"])

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


def register_forest(settings) -> None:
    """A forest fitted on 30,000 simulated orders, registered as the champion of ``settings``' registry."""
    from datetime import UTC, datetime

    from benchmarks.fraud import register_champion, simulate, with_features
    from ml.train import fit_isolation_forest

    log("fitting a forest on 30,000 simulated orders ...")
    train = with_features(simulate(settings, 101, 30_000, 30, datetime.now(UTC)))
    register_champion(settings, fit_isolation_forest(train, settings.fraud), train, train.tail(1000))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-rate", type=float, default=1000)
    parser.add_argument("--latency-seconds", type=float, default=60)
    parser.add_argument("--warmup-seconds", type=float, default=30,
                        help="orders at the latency rate, all served, before anything is measured (default 30)")  # fmt: skip
    parser.add_argument("--rates", default="2000,3500,5000,6500", help="comma-separated throughput steps (orders/s)")
    parser.add_argument("--step-seconds", type=float, default=60)
    parser.add_argument("--trigger", default="0 seconds", help="stream trigger interval for the run")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the run's orders topic (default 3)")
    parser.add_argument("--model", action="store_true",
                        help="score with a forest fitted on 30,000 simulated orders (its own registry); default: "
                        "the profile's champion, if any")  # fmt: skip
    parser.add_argument("--fast-path", action="store_true",
                        help="run the per-order alert path (ecom stream alerts) beside the stream: its cost")  # fmt: skip
    args = parser.parse_args(argv)

    base = bench_settings()
    result: dict = {"benchmark": "streaming", "partitions": args.partitions, "fast_path": args.fast_path}
    result["model"] = "fitted" if args.model else "profile champion"
    result["machine"] = machine_info()
    started = time.monotonic()
    with (
        services(base),
        scratch_stream(
            base,
            "streaming",
            trigger=args.trigger,
            partitions=args.partitions,
            fast_path=args.fast_path,
            own_registry=args.model,
            prepare=register_forest if args.model else None,
        ) as stream,
    ):
        dsn = stream.dsn
        log("waiting for the stream to serve its first orders ...")
        result["stream_startup_s"] = round(stream.wait_for_first_orders(), 1)
        if args.fast_path:
            stream.wait_for_fast_path()
        log(f"warm-up: {args.latency_rate:.0f} orders/s for {args.warmup_seconds:.0f}s ...")
        result["warmup_s"] = round(stream.warm_up(args.latency_rate, args.warmup_seconds), 1)

        log(f"latency: {args.latency_rate:.0f} orders/s for {args.latency_seconds:.0f}s ...")
        probe = LatencyProbe(dsn)
        poller = threading.Thread(target=probe.run, daemon=True)
        poller.start()
        cpu_before = stream.cpu_seconds()
        run = stream.drive(args.latency_rate, args.latency_seconds, on_event=probe.on_event)
        latency_cpu = stream.cpu_since(cpu_before)
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
                "latency_cpu_s": latency_cpu,
            }
        )
        log(f"  p50 {result['p50_latency_ms']} ms, p95 {result['p95_latency_ms']} ms")

        stream.wait_until_all_served(120)  # the steps start from an empty backlog
        steps = []
        sustained = 0.0
        for rate in (float(r) for r in args.rates.split(",")):
            log(f"throughput step: {rate:.0f} orders/s for {args.step_seconds:.0f}s ...")
            produced_before = stream.served()
            cpu_before = stream.cpu_seconds()
            marks: dict[str, int] = {}
            timer_mid = threading.Timer(args.step_seconds / 2, lambda m=marks: m.__setitem__("mid", stream.served()))
            timer_end = threading.Timer(args.step_seconds - 0.5, lambda m=marks: m.__setitem__("end", stream.served()))
            timer_mid.start()
            timer_end.start()
            run = stream.drive(rate, args.step_seconds)
            timer_mid.join()
            timer_end.join()
            achieved = run.transactions / max(run.wall_seconds, 1e-9)
            cpu = stream.cpu_since(cpu_before)
            sent_mid = achieved * args.step_seconds / 2
            sent_end = achieved * (args.step_seconds - 0.5)
            lag_mid = sent_mid - (marks["mid"] - produced_before)
            lag_end = sent_end - (marks["end"] - produced_before)
            ok = lag_end <= lag_mid + 2 * achieved and achieved >= 0.95 * rate
            steps.append(
                {
                    "target_tx_per_s": rate,
                    "generated_tx_per_s": round(achieved, 1),
                    "served_tx_per_s": round((marks["end"] - marks["mid"]) / (args.step_seconds / 2 - 0.5), 1),
                    "lag_mid": int(lag_mid),
                    "lag_end": int(lag_end),
                    "sustained": ok,
                    "cpu_s": cpu,
                }
            )
            log(
                f"  generated {achieved:,.0f}/s, backlog {int(lag_mid)} -> {int(lag_end)}: {'kept up' if ok else 'fell behind'}"
            )
            stream.wait_until_all_served(120)  # let the stream drain before the next step
            if ok:
                sustained = max(sustained, achieved)
            elif achieved >= 0.95 * rate:
                break
        result["steps"] = steps
        result["sustained_tx_per_s"] = round(sustained, 1)
    if stream.process.log_file.exists():
        result["batch_steps"] = step_medians(stream.process.log_file.read_text(errors="replace"))
    result["seconds"] = round(time.monotonic() - started, 1)
    emit(result)


if __name__ == "__main__":
    main()
