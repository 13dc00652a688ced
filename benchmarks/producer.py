"""Producer benchmark: simulated orders into the local broker, counted by broker acknowledgement.

``python -m benchmarks.producer`` starts the embedded stack if Kafka is not
running (and stops only what it started), sends into its own scratch topics
(deleted at the end) and prints one JSON object as its last line:

* ``tx_per_s`` / ``mb_per_s``: the whole path (generate, serialise, send) from
  ``--workers`` processes at the configured producer settings (acks=all,
  idempotence, gzip, 16 KB batches, 10 ms linger); the rate is acknowledged
  orders from the first send to the last acknowledgement.
* ``producer_only``: the same with orders generated and serialised before the
  clock starts (what kafka-python alone sustains).
* ``tuned``: the whole path with larger batches and linger (not the
  configuration; shown for comparison only).
* ``rate_accuracy``: live mode at each ``--rates`` target for
  ``--rate-seconds``, the achieved rate measured from the event times.
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks._common import bench_settings, emit, log, machine_info, process_cpu_seconds, scratch_topics, services
from ecom.runtime.kafka import EmbeddedKafka
from ecom.settings import Settings
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from simulator.runner import RunResult, run_live, run_parallel

TUNED = {"batch_size": 262_144, "linger_ms": 50}


def _epoch_s(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def throughput(result: RunResult, broker_cpu_s: float | None) -> dict:
    """Rates of one run, plus CPU per order (producers and broker) since the machine may be shared."""
    seconds = result.ack_seconds
    n = max(1, result.transactions)
    out = {
        "tx_per_s": round(result.tx_per_s, 1),
        "mb_per_s": round(result.bytes / seconds / 1e6, 2) if seconds else 0.0,
        "events": result.transactions,
        "labels": result.labels,
        "delivered": result.delivered,
        "failed": result.failed,
        "seconds": round(seconds, 3),
        "producer_cpu_us_per_tx": round(1e6 * result.cpu_seconds / n, 1),
    }
    if broker_cpu_s is not None:
        out["broker_cpu_us_per_tx"] = round(1e6 * broker_cpu_s / n, 1)
        # What the cores would sustain if only this benchmark and the broker ran (an estimate, not a measurement).
        per_tx = (result.cpu_seconds + broker_cpu_s) / n
        out["cpu_bound_tx_per_s_estimate"] = round((os.cpu_count() or 1) / per_tx, 0) if per_tx else None
    return out


def measured(settings: Settings, run) -> dict:
    """``run()`` -> RunResult, with the broker's CPU time over the run."""
    broker_pid = EmbeddedKafka(settings).process.pid() if settings.kafka.embedded else None
    before = process_cpu_seconds(broker_pid)
    result = run()
    after = process_cpu_seconds(broker_pid)
    return throughput(result, after - before if before is not None and after is not None else None), result


def rate_accuracy(settings: Settings, topic: str, labels_topic: str, rate: float, seconds: float, seed: int) -> dict:
    """Live mode at ``rate`` for ``seconds``; achieved rate from the first to the last event time."""
    times: list[str] = []
    sim = TransactionSimulator(settings.simulator, seed=seed)
    producer = TransactionProducer(settings, topic=topic, labels_topic=labels_topic)
    result = run_live(
        settings,
        producer,
        sim,
        rate,
        duration=seconds,
        progress=False,
        on_event=lambda e: times.append(e["event_time"]),
    )
    span = _epoch_s(times[-1]) - _epoch_s(times[0])
    achieved = (len(times) - 1) / span if span > 0 else 0.0
    return {
        "target_per_s": rate,
        "achieved_per_s": round(achieved, 2),
        "error_pct": round(100.0 * (achieved - rate) / rate, 3),
        "events": len(times),
        "span_s": round(span, 3),
        "failed": result.failed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.producer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=400_000, help="orders per throughput run (default 400000)")
    parser.add_argument("--workers", type=int, help="producer processes (default: simulator.workers)")
    parser.add_argument("--rates", default="100,1000,5000", help="live targets to check, comma-separated ('' to skip)")
    parser.add_argument("--rate-seconds", type=float, default=60.0, help="seconds per live target (default 60)")
    parser.add_argument("--no-tuned", action="store_true", help="skip the tuned-batching comparison run")
    parser.add_argument("--no-producer-only", action="store_true", help="skip the pre-serialised run")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    settings = bench_settings()
    workers = args.workers or settings.simulator.workers
    p = settings.producer
    out: dict = {
        "benchmark": "producer",
        "profile": settings.profile,
        "workers": workers,
        "producer_config": {
            "acks": p.acks,
            "enable_idempotence": p.enable_idempotence,
            "compression_type": p.compression_type,
            "batch_size": p.batch_size,
            "linger_ms": p.linger_ms,
            "max_in_flight": p.max_in_flight,
        },
        "machine": machine_info(),
    }
    started = time.monotonic()
    with (
        services(settings) as started_here,
        scratch_topics(settings, "bench-producer", {"tx": 3, "labels": 1}) as topics,
    ):
        out["started_services"] = started_here
        common = dict(
            seed=args.seed,
            workers=workers,
            topic=topics["tx"],
            labels_topic=topics["labels"],
            progress=not args.no_progress,
        )
        log(f"throughput: {args.events} orders from {workers} processes at the configured producer settings ...")
        numbers, main_run = measured(settings, lambda: run_parallel(settings, args.events, desc="configured", **common))
        out.update(numbers)
        if main_run.errors:
            out["errors"] = main_run.errors[:5]
        if not args.no_producer_only:
            log("producer only: orders generated and serialised before the clock starts ...")
            out["producer_only"], _ = measured(
                settings, lambda: run_parallel(settings, args.events, pregenerate=True, desc="pre-serialised", **common)
            )
        if not args.no_tuned:
            log(f"tuned comparison (not the configuration): {TUNED} ...")
            tuned, _ = measured(
                settings, lambda: run_parallel(settings, args.events, producer_overrides=TUNED, desc="tuned", **common)
            )
            out["tuned"] = {"producer_overrides": TUNED, **tuned}
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
        if rates and args.rate_seconds > 0:
            out["rate_accuracy"] = []
            for rate in rates:
                log(f"live rate {rate:g}/s for {args.rate_seconds:g}s ...")
                check = rate_accuracy(settings, topics["tx"], topics["labels"], rate, args.rate_seconds, args.seed)
                log(f"  achieved {check['achieved_per_s']}/s ({check['error_pct']:+.3f} %)")
                out["rate_accuracy"].append(check)
    out["total_seconds"] = round(time.monotonic() - started, 1)
    emit(out)
    return 0 if out["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
