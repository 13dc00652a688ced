"""CLI start-up benchmark: how long ``ecom --help`` and each subcommand's ``--help`` take.

``python -m benchmarks.cli --runs 7`` runs the installed console script (``.venv/bin/ecom``, as a person
types it) with ``--help``, then ``ecom COMMAND --help`` for every subcommand, each ``--runs`` times in
turn, and prints as one JSON object on its last line:

- ``help_median_s``: the median wall time per command line (``"ecom --help"``, ``"ecom train --help"``, ...);
- ``slowest``: the slowest median, and ``all_under_target``: whether every median is under ``target_s`` (1 s);
- ``python_start_median_s``: ``python -c pass`` with the same interpreter, the floor under every figure;
- ``machine``: what it ran on, with the load average at the start.

No service is needed; nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import emit, log, machine_info

TARGET_S = 1.0


def commands() -> list[str]:
    """Every subcommand of ``ecom`` (from the parser itself)."""
    from ecom.cli import build_parser

    parser = build_parser()
    return sorted(parser._subparsers._group_actions[0].choices)  # argparse keeps them here


def wall_time(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command line (default 7); the median counts")
    args = parser.parse_args(argv)
    info = machine_info()
    ecom = str(Path(sys.executable).parent / "ecom")
    lines = [[ecom, "--help"]] + [[ecom, name, "--help"] for name in commands()]
    timings: dict[str, list[float]] = {" ".join(["ecom", *line[1:]]): [] for line in lines}
    floor: list[float] = []
    for run in range(args.runs):  # in turn, so a burst of load spreads over every command line
        floor.append(wall_time([sys.executable, "-c", "pass"]))
        for line in lines:
            timings[" ".join(["ecom", *line[1:]])].append(wall_time(line))
        log(f"run {run + 1}/{args.runs} done")
    medians = {name: round(statistics.median(values), 3) for name, values in timings.items()}
    slowest = max(medians, key=medians.get)
    emit(
        {
            "benchmark": "cli",
            "runs": args.runs,
            "help_median_s": medians,
            "slowest": {"command": slowest, "median_s": medians[slowest]},
            "target_s": TARGET_S,
            "all_under_target": all(v < TARGET_S for v in medians.values()),
            "python_start_median_s": round(statistics.median(floor), 3),
            "machine": info,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
