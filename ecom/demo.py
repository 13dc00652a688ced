"""``ecom demo``: the whole pipeline on embedded defaults, ending with a live dashboard.

Starts the stack (what is not running); on a fresh stack with no registered
fraud model, backfills history, streams it into silver, trains a first model
(so scoring works from the first live order) and scores the history with it;
runs the daily gold batch once if gold was never computed; then starts the
stream, the per-order alert path (``ecom stream alerts``, when ``fraud.fast_path``), the live gold metrics, the gold batch on its schedule
(``gold.schedule_s``), the data lifecycle (``ecom lifecycle run`` every
``retention.schedule_s``, docs/lifecycle.md), the lake maintenance (``ecom
maintain all``: compaction and VACUUM every ``maintenance.schedule_s``) and the
dashboard as background processes, and generates live orders in the foreground
until Ctrl-C (or ``--duration``); the live orders continue the backfilled shop
(same customers, new ids for new ones: ``ecom generate`` continues the shop
recorded for the topic, docs/simulator.md). On the way out it stops everything it started.
It prints the dashboard's address and how long it took until the first live
order was queryable in PostgreSQL (the data the dashboard shows).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pandas as pd

from ecom.progress import Steps
from ecom.runtime import stack
from ecom.runtime.kafka import EmbeddedKafka
from ecom.runtime.postgres import EmbeddedPostgres
from ecom.runtime.process import ManagedProcess, ServiceError, port_open, stop_group, wait_until
from ecom.settings import Settings


def _watch_first_data(settings: Settings, started: float, live_from: datetime, done: threading.Event) -> None:
    """Print how long it took until the first live order (not backfill) was queryable by the dashboard."""
    from serving.queries import latest_order_time

    while not done.is_set():
        try:
            last = latest_order_time(settings.postgres.dsn)
            if last is not None and not pd.isna(last) and last >= live_from:
                print(
                    f"\nfirst live order on the dashboard {time.monotonic() - started:.1f}s after `ecom demo` started",
                    flush=True,
                )
                return
        except Exception:  # the database may still be starting  # noqa: BLE001
            pass
        done.wait(0.5)


def _run_step(what: str, cmd: list[str], env: dict[str, str], step: Callable[[str], None]) -> None:
    """Run one bootstrap step in the foreground; interrupted, it is stopped with all it started (workers, JVMs)."""
    print(file=sys.stderr)
    step(what)
    step = subprocess.Popen(cmd, env={**os.environ, **env}, start_new_session=True)  # its own group: stoppable whole
    try:
        returncode = step.wait()
    except BaseException:  # Ctrl-C, or SIGTERM (the CLI turns it into KeyboardInterrupt)
        stop_group(step.pid)
        step.wait()
        raise
    if returncode != 0:
        raise ServiceError(f"{what} failed (command: {' '.join(cmd[2:])})")


def needs_model(settings: Settings) -> bool:
    """True if no fraud model is registered yet (the demo then bootstraps one)."""
    from ml.registry import champion_version

    return champion_version(settings) is None


MODEL_STEPS = 4  # backfill, stream, train, rescore


def bootstrap_model(settings: Settings, env: dict[str, str], days: int, count: int, step: Steps) -> None:
    """No model registered yet: backfill history, build silver from it, train and register one, score the history."""
    print(f"no fraud model registered yet: training one on {count:,} backfilled orders over {days} days", flush=True)
    cli = [sys.executable, "-m", "ecom.cli"]
    _run_step(
        f"backfill {count:,} orders over {days} days",
        [*cli, "generate", "--backfill-days", str(days), "--count", str(count)],
        env,
        step,
    )
    _run_step("stream the backfill into bronze and silver", [*cli, "stream", "all", "--once"], env, step)
    _run_step("train and register the fraud model", [*cli, "train"], env, step)
    # The backfill reached silver before there was a model: score it now, so the fraud page has a history.
    until = datetime.now(UTC) + timedelta(minutes=1)
    since = until - timedelta(days=days + 1)
    _run_step(
        "score the backfill with the new model",
        [
            *cli,
            "rescore",
            "--since",
            since.isoformat(timespec="seconds"),
            "--until",
            until.isoformat(timespec="seconds"),
        ],
        env,
        step,
    )


def gold_computed(settings: Settings) -> bool:
    """True if a daily gold batch has finished before (its last job, the summaries, succeeded)."""
    from serving.db import connection

    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM batch_runs WHERE job = 'summaries' AND status = 'succeeded' LIMIT 1")
        return cur.fetchone() is not None


def bootstrap_gold(settings: Settings, env: dict[str, str], step: Steps) -> None:
    """Gold never computed: run the daily batch once, so the dashboard's analytics have data when it opens."""
    cmd = [sys.executable, "-m", "ecom.cli", "batch", "daily"]
    _run_step("gold: the daily batch over the history", cmd, env, step)


def demo_user() -> tuple[dict[str, str], str | None]:
    """Sign-in for the demo's dashboard: none to add when users are configured; else a ``demo`` user with a
    fresh random password, given to the dashboard process only as a hash (nothing is written anywhere)."""
    from werkzeug.security import generate_password_hash

    from dashboard.auth import USERS_ENV, USERS_FILE_ENV

    if os.environ.get(USERS_ENV) or os.environ.get(USERS_FILE_ENV):
        return {}, None
    password = secrets.token_urlsafe(12)
    return {USERS_ENV: f"demo:{generate_password_hash(password)}"}, password


def process_commands(settings: Settings) -> dict[str, list[str]]:
    """The ``ecom`` arguments of each background process the demo starts, by process name."""
    every = str(settings.gold.schedule_s)
    maintain_every = str(settings.maintenance.schedule_s)
    lifecycle_every = str(settings.retention.schedule_s)
    fast_path = {"stream-alerts": ["stream", "alerts"]} if settings.fraud.fast_path else {}
    return {
        "stream": ["stream", "all"],
        **fast_path,
        "stream-gold": ["stream", "gold"],
        "gold-batch": ["batch", "daily", "--every", every, "--first-after", every],
        "lifecycle": ["lifecycle", "run", "--every", lifecycle_every, "--first-after", lifecycle_every],
        "maintain": ["maintain", "all", "--every", maintain_every, "--first-after", maintain_every],
        "dashboard": ["dashboard"],
    }


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    started = time.monotonic()
    env = {"ECOM_PROFILE": settings.profile, "PYTHONUNBUFFERED": "1"}
    kafka_was_running = EmbeddedKafka(settings).is_running()
    pg_was_running = EmbeddedPostgres(settings).is_running()
    run_dir = settings.run_dir
    stream = ManagedProcess("stream", run_dir)
    dash_proc = ManagedProcess("dashboard", run_dir)
    user_env, demo_password = demo_user()
    gold_batch = ManagedProcess("gold-batch", run_dir)
    gold_stream = ManagedProcess("stream-gold", run_dir)
    fast_path = ManagedProcess("stream-alerts", run_dir)
    maintain = ManagedProcess("maintain", run_dir)
    lifecycle = ManagedProcess("lifecycle", run_dir)
    ours: list[ManagedProcess] = []
    done = threading.Event()
    try:  # from the first step on: an interrupted first run stops what it started too
        stack.up(settings)
        model_needed = not args.skip_training and needs_model(settings)
        gold_needed = not gold_computed(settings)
        step = Steps("demo", MODEL_STEPS * model_needed + gold_needed + 2)  # + start processes, dashboard up
        if model_needed:
            bootstrap_model(settings, env, args.backfill_days, args.backfill_count, step)
        if gold_needed:
            bootstrap_gold(settings, env, step)
        commands = process_commands(settings)
        print(file=sys.stderr)
        step(f"starting {', '.join(commands)} in the background (`ecom logs NAME` shows each one's log)")
        for proc in (stream, fast_path, gold_stream, gold_batch, lifecycle, maintain, dash_proc):
            if proc.name in commands and not proc.is_running():
                proc.start(
                    [sys.executable, "-m", "ecom.cli", *commands[proc.name]],
                    env={**env, **user_env} if proc is dash_proc else env,
                )
                ours.append(proc)
        d = settings.dashboard
        step(f"waiting for the dashboard on {d.host}:{d.port}")
        if not wait_until(lambda: port_open(d.host, d.port) or not dash_proc.is_running(), 60):
            raise ServiceError(f"the dashboard did not come up on {d.host}:{d.port}; see {dash_proc.log_file}")
        if not dash_proc.is_running():
            raise ServiceError(f"the dashboard exited: {dash_proc.log_tail(5)}")
        print(f"\ndashboard: http://{d.host}:{d.port}/   (logs in {run_dir}; Ctrl-C stops the demo)", flush=True)
        if demo_password and dash_proc in ours:
            print(f"sign in as demo / {demo_password}   (a new password each demo)", flush=True)
        print(flush=True)
        live_from = datetime.now(UTC)
        threading.Thread(target=_watch_first_data, args=(settings, started, live_from, done), daemon=True).start()

        from simulator.cli import add_generate_arguments, run_generate

        gen_parser = argparse.ArgumentParser()
        add_generate_arguments(gen_parser)
        gen_argv = []
        if args.rate:
            gen_argv += ["--rate", str(args.rate)]
        if args.duration:
            gen_argv += ["--duration", str(args.duration)]
        gen_args = gen_parser.parse_args(gen_argv)
        with contextlib.suppress(KeyboardInterrupt):
            run_generate(settings, gen_args)
        if not stream.is_running():
            print(f"the streaming job stopped: {stream.log_tail(10)}", file=sys.stderr)
            return 1
        return 0
    finally:
        done.set()
        print("stopping the demo ...", flush=True)
        for proc in ours:
            proc.stop()
        if not os.environ.get("ECOM_DEMO_KEEP_STACK"):
            if not pg_was_running:
                EmbeddedPostgres(settings).stop()
            if not kafka_was_running:
                EmbeddedKafka(settings).stop()
        print("demo stopped", flush=True)
