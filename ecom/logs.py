"""``ecom logs [PROCESS] [-n N] [-f]``: the logs of the processes the project started.

Every background process (``ecom.runtime.process.ManagedProcess``: the Kafka broker, the demo's stream,
gold jobs and dashboard, the MLflow UI) appends its output to ``<data_dir>/run/<name>.log``; PostgreSQL
writes ``<data_dir>/postgres/server.log``. Without a name it lists them with their state; with one it prints
the last ``-n`` lines and, with ``--follow``, what is appended until Ctrl-C (a log that is truncated or
replaced is read again from its start).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ecom.settings import Settings


def known_logs(settings: Settings) -> dict[str, Path]:
    """Process name -> its log file, for every process that has a log or a pid file."""
    run_dir = settings.run_dir
    logs: dict[str, Path] = {}
    if run_dir.exists():
        for path in sorted(run_dir.glob("*.log")) + sorted(run_dir.glob("*.pid")):
            logs.setdefault(path.stem, run_dir / f"{path.stem}.log")
    postgres = Path(settings.data_dir) / "postgres" / "server.log"
    if postgres.exists() or "postgres" in logs:
        logs["postgres"] = postgres
    return dict(sorted(logs.items()))


def listing(settings: Settings) -> list[str]:
    """One line per process: name, running or stopped, log size and last write, path."""
    from ecom.runtime.process import ManagedProcess

    lines = []
    for name, path in known_logs(settings).items():
        state = "running" if ManagedProcess(name, settings.run_dir).is_running() else "stopped"
        if path.exists():
            stat = path.stat()
            written = datetime.fromtimestamp(stat.st_mtime).strftime("%Y-%m-%d %H:%M:%S")
            about = f"{_size(stat.st_size):>8}  {written}"
        else:
            about = f"{'-':>8}  {'no log yet':<19}"
        lines.append(f"{name:<26} {state:<8} {about}  {path}")
    return lines


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def tail(path: Path, lines: int) -> tuple[list[str], int]:
    """The last ``lines`` lines of ``path`` and the offset its end is at (read from the end, in blocks)."""
    with open(path, "rb") as f:
        end = f.seek(0, 2)
        data, pos = b"", end
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(64 * 1024, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    text = data.decode(errors="replace").splitlines()
    return (text[-lines:] if lines > 0 else []), end


def follow(
    path: Path,
    offset: int,
    out: TextIO,
    keep_going: Callable[[], bool] = lambda: True,
    interval_s: float = 0.5,
) -> None:
    """Write what is appended to ``path`` from ``offset`` on, until ``keep_going`` says no (or Ctrl-C)."""
    inode = path.stat().st_ino if path.exists() else None
    while keep_going():
        try:
            stat = path.stat()
        except FileNotFoundError:
            time.sleep(interval_s)
            continue
        if stat.st_ino != inode or stat.st_size < offset:  # replaced or truncated: start over
            inode, offset = stat.st_ino, 0
        if stat.st_size > offset:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read(stat.st_size - offset)
            offset += len(chunk)
            out.write(chunk.decode(errors="replace"))
            out.flush()
        else:
            time.sleep(interval_s)


def add_logs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("process", nargs="?", help="a process name (without one: list them)")
    parser.add_argument("-n", "--lines", type=int, default=40, help="how many of the last lines to print (default 40)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing what is appended (Ctrl-C stops)")


def run_logs(settings: Settings, args: argparse.Namespace) -> int:
    logs = known_logs(settings)
    if args.process is None:
        if not logs:
            print(f"no process logs yet under {settings.run_dir} (`ecom up` or `ecom demo` start processes)")
            return 0
        print("\n".join(listing(settings)))
        print("`ecom logs NAME` prints one (-n lines, -f follows)")
        return 0
    path = logs.get(args.process)
    if path is None:
        known = ", ".join(logs) or "none yet"
        print(f"ecom logs: no process {args.process!r}; known: {known}", file=sys.stderr)
        return 2
    if not path.exists():
        if not args.follow:
            print(f"{args.process} has not written a log yet ({path})", file=sys.stderr)
            return 0
        lines, end = [], 0
    else:
        lines, end = tail(path, args.lines)
    for line in lines:
        print(line)
    sys.stdout.flush()
    if args.follow:
        with contextlib.suppress(KeyboardInterrupt):
            follow(path, end, sys.stdout)
    return 0
