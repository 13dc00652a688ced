"""Scaling benchmark: how throughput and batch time grow with Kafka partitions, data size and worker cores.

``python -m benchmarks.scaling`` runs the other benchmarks as child processes (each its own scratch topics,
lake and database) and prints one JSON object as its last line:

- ``stream``: ``benchmarks.streaming`` with the orders topic at each of ``--partitions`` (default 1, 3, 6):
  ``sustained_tx_per_s``, ``p95_latency_ms`` at ``--latency-rate``, the median micro-batch;
- ``gold``: ``benchmarks.gold_batch --skip-stream`` at each of ``--transactions`` (default 250,000, 1,000,000,
  4,000,000) and each of ``--cores`` (default 1, 2; Spark's local master ``local[N]``, the machine's worker
  cores): the whole batch's ``seconds`` and per step.

Each run's own output goes to the log (stderr). A run that fails is reported with its exit code and the run
goes on. On a cluster, point ``ECOM_SPARK__MASTER`` at it and pass ``--cores`` as the executors' cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks._common import emit, log, machine_info


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def child(module: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``python -m <module> <args>`` and return the JSON object of its last line (or its exit code)."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"failed": proc.returncode, "wall_seconds": round(time.monotonic() - started, 1)}
    return {**json.loads(lines[-1]), "wall_seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", default="1,3,6", help="orders-topic partitions of the stream runs")
    parser.add_argument("--rates", default="2000,3500,5000,6500", help="throughput steps of each stream run")
    parser.add_argument("--latency-rate", type=float, default=1000)
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument("--step-seconds", type=float, default=60)
    parser.add_argument("--transactions", default="250000,1000000,4000000", help="orders in silver, gold runs")
    parser.add_argument("--cores", default="1,2", help="Spark worker cores of the gold runs (local[N])")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--skip-gold", action="store_true")
    args = parser.parse_args(argv)

    out: dict = {"benchmark": "scaling", "machine": machine_info(), "stream": [], "gold": []}
    if not args.skip_stream:
        for partitions in _ints(args.partitions):
            log(f"[stream] {partitions} partition(s) ...")
            r = child(
                "benchmarks.streaming",
                ["--partitions", str(partitions), "--rates", args.rates, "--latency-rate", str(args.latency_rate),
                 "--latency-seconds", str(args.latency_seconds), "--step-seconds", str(args.step_seconds)],
            )  # fmt: skip
            row = {"partitions": partitions, **{k: r.get(k) for k in ("sustained_tx_per_s", "p95_latency_ms")}}
            row["median_batch_ms"] = (r.get("batch_steps") or {}).get("median_total_ms")
            row["failed"] = r.get("failed")
            out["stream"].append(row)
            log(f"[stream] {row}")
    if not args.skip_gold:
        for transactions in _ints(args.transactions):
            for cores in _ints(args.cores):
                log(f"[gold] {transactions:,} orders on {cores} core(s) ...")
                r = child(
                    "benchmarks.gold_batch",
                    ["--transactions", str(transactions), "--skip-stream", "--lookups", "200"],
                    env={"ECOM_SPARK__MASTER": f"local[{cores}]"},
                )
                row = {"transactions": transactions, "cores": cores, "seconds": r.get("seconds")}
                row["step_seconds"] = r.get("step_seconds")
                row["failed"] = r.get("failed")
                out["gold"].append(row)
                log(f"[gold] {row}")
    emit(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
