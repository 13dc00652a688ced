"""``ecom``: one console command for the whole product.

Every subcommand has ``--help``. Settings come from ``--profile`` (or
``ECOM_PROFILE``), see ``ecom.settings``.

Building the parser imports only the standard library and the light modules
that declare each command's arguments; a command's own modules (Spark, pandas,
MLflow, scikit-learn, Kafka and PostgreSQL clients) load when it runs, so
``--help`` answers at once (``tests/unit/ecom/test_cli.py`` checks it).
The common failures end in one line and an exit code of ``ecom.errors``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ecom import errors

if TYPE_CHECKING:
    from ecom.settings import Settings

_loaded: list[Settings] = []  # the settings a command loaded, to name servers in error messages


def _settings(args: argparse.Namespace) -> Settings:
    from ecom.settings import load_settings

    if args.profile:
        os.environ["ECOM_PROFILE"] = args.profile  # child processes and get_settings() follow
    settings = load_settings(args.profile)
    _loaded.append(settings)
    return settings


def cmd_setup(args: argparse.Namespace) -> int:
    from ecom import jars

    settings = _settings(args)
    jars.resolve(settings)
    print(f"jars cached under {settings.jars.cache}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from ecom.runtime import stack

    settings = _settings(args)
    stack.up(settings)
    if settings.fraud.fast_path and not args.no_alerts:
        stack.start_fast_path(settings)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from ecom.runtime import stack

    stack.down(_settings(args))
    return 0


STATUS_DOWN = 3  # `ecom status`: a service or process is down


def cmd_status(args: argparse.Namespace) -> int:
    from ecom.runtime import stack

    statuses = stack.status(_settings(args))
    if args.json:
        import json

        print(json.dumps([{**vars(s), "state": s.state} for s in statuses]))
    else:
        for s in statuses:
            print(s.line())
    return 0 if all(s.ok for s in statuses) else STATUS_DOWN


def cmd_generate(args: argparse.Namespace) -> int:
    from simulator.cli import run_generate

    return run_generate(_settings(args), args)


def lower_priority(nice: int) -> None:
    """Run this process at ``nice``. Where the kernel groups processes by session (autogroup), nice only ranks
    processes within a group, so a process in a session of its own (as ``ecom up`` and the demo start it)
    lowers its group's too; one started from a shell leaves the shell's session alone."""
    if nice <= 0:
        return
    os.nice(nice)
    autogroup = "/proc/self/autogroup"
    if os.getsid(0) == os.getpid() and os.path.exists(autogroup):
        try:
            with open(autogroup, "w") as f:
                f.write(str(nice))
        except OSError:  # not allowed here: the process-level nice stands
            pass


def cmd_stream_alerts(settings: Settings, partitions: list[int] | None) -> int:
    """``ecom stream alerts``: the per-order alert path (pipelines.alerts.job) until Ctrl-C or SIGTERM."""
    import logging
    import signal
    import threading

    from ecom.secrets import pii_key
    from pipelines.alerts import job

    pii_key(settings)  # a missing key fails here, before anything starts
    lower_priority(settings.fraud.fast_path_nice)  # the stream, not the fast path, gets the cores it is short of
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("pipelines", "ml", "ecom"):
        logging.getLogger(name).setLevel(logging.INFO)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"streaming {settings.kafka.transactions_topic} -> per-order alerts (PostgreSQL + Kafka); Ctrl-C to stop")
    try:
        counts = job.serve(settings, stop.is_set, partitions)
    except KeyboardInterrupt:
        return 0
    print(f"stopped: {counts.records:,} records, {counts.alerts:,} alerts written")
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    import logging

    settings = _settings(args)
    if args.layer == "alerts":
        if args.once:
            raise SystemExit("ecom stream alerts runs until stopped; --once is for the Spark layers")
        return cmd_stream_alerts(settings, args.partitions)
    if args.partitions is not None:
        raise SystemExit("--partitions is for ecom stream alerts")
    if args.layer in ("all", "silver"):
        from ecom.secrets import pii_key

        pii_key(settings)  # a missing key fails here, not after Spark has started

    from ecom.spark import get_spark
    from pipelines import supervisor
    from pipelines.bronze import job as bronze
    from pipelines.gold import live
    from pipelines.silver import job as silver

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("pipelines", "ml", "ecom"):
        logging.getLogger(name).setLevel(logging.INFO)  # per-batch step timings and model changes
    spark = get_spark(settings, f"ecom-stream-{args.layer}")
    # layer -> (what it does, how to start it)
    layers: dict[str, tuple[str, Callable]] = {
        "all": ("Kafka -> bronze + silver + PostgreSQL", lambda **k: silver.start(spark, settings, mode="ingest", **k)),
        "bronze": ("Kafka -> bronze", lambda **k: bronze.start(spark, settings, **k)),
        "silver": ("bronze -> silver + PostgreSQL", lambda **k: silver.start(spark, settings, mode="silver", **k)),
        "gold": ("silver -> live minute metrics (gold) + PostgreSQL", lambda **k: live.start(spark, settings, **k)),
    }
    what, start = layers[args.layer]
    running: list = []  # the query now running (a restart replaces it)

    def started(query) -> None:
        if not running and not args.once:
            print(f"streaming {what}; Ctrl-C to stop", flush=True)
        running[:] = [query]

    if args.once:
        print(f"{what}: processing what is available ...", flush=True)
    progress = OnceProgress(f"stream {args.layer} --once") if args.once else None
    try:
        supervisor.run(
            lambda: start(once=args.once),
            settings.stream,
            args.layer,
            on_start=started,
            wait=progress.wait if progress else None,
        )
    except KeyboardInterrupt:
        if running and running[0].isActive:
            running[0].stop()
        return 0
    except supervisor.QueryFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    if progress:
        print(f"done: {progress.batches:,} micro-batches, {progress.rows:,} input rows")
    return 0


class OnceProgress:
    """Progress of a stream that stops by itself (``--once``), across restarts: a line on stderr every
    ``every_s`` seconds, and the micro-batches and input rows in the end."""

    def __init__(self, name: str, every_s: float = 10.0):
        self.name, self.every_s = name, every_s
        self.started = time.monotonic()
        self.rows_by_batch: dict[int, int] = {}

    @property
    def batches(self) -> int:
        return len(self.rows_by_batch)

    @property
    def rows(self) -> int:
        return sum(self.rows_by_batch.values())

    def _count(self, query) -> None:
        for p in query.recentProgress:
            self.rows_by_batch[p["batchId"]] = p.get("numInputRows", 0)

    def wait(self, query) -> None:
        """Wait for ``query`` to end (``pipelines.supervisor.run``'s ``wait``), reporting as it goes."""
        while not query.awaitTermination(self.every_s):
            self._count(query)
            now = (query.status or {}).get("message", "")  # e.g. "Processing new data"
            print(
                f"{self.name}: {self.batches:,} micro-batches done, {self.rows:,} rows so far"
                f"{'; ' + now.lower() if now else ''} ({time.monotonic() - self.started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        self._count(query)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboard.auth import AuthConfigError, required_users

    settings = _settings(args)
    try:
        required_users(settings.profile)  # no users: say so before announcing an address
        from dashboard.server import serve

        server = "Flask development server" if args.dev else f"gunicorn, {settings.dashboard.workers} workers"
        print(f"dashboard on http://{settings.dashboard.host}:{settings.dashboard.port}/ ({server})", flush=True)
        serve(settings, dev=args.dev)
    except AuthConfigError as exc:
        raise errors.MissingSecret(str(exc)) from exc
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from ecom.reconcile import reconcile

    report = reconcile(_settings(args), since=args.since, until=args.until, allow_pending=args.allow_pending)
    print(report.to_json() if args.json else "\n".join(report.lines()))
    return 0 if report.ok else 1


def cmd_train(args: argparse.Namespace) -> int:
    from ml.train import run_train

    return run_train(_settings(args), args)


def cmd_rescore(args: argparse.Namespace) -> int:
    from pipelines.silver.rescore import run_rescore

    return run_rescore(_settings(args), args)


def cmd_batch(args: argparse.Namespace) -> int:
    from pipelines.gold.job import run_batch

    return run_batch(_settings(args), args)


def cmd_lifecycle(args: argparse.Namespace) -> int:
    from pipelines.lifecycle.job import run_lifecycle_command

    return run_lifecycle_command(_settings(args), args)


def cmd_demo(args: argparse.Namespace) -> int:
    from ecom.demo import run_demo

    return run_demo(_settings(args), args)


def cmd_maintain(args: argparse.Namespace) -> int:
    from ecom.maintenance import run_maintain

    return run_maintain(_settings(args), args)


def cmd_migrate(args: argparse.Namespace) -> int:
    from ecom.upgrades import migrate_all

    migrate_all(_settings(args))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from ecom.backup import run_backup

    return run_backup(_settings(args), args)


def cmd_sql(args: argparse.Namespace) -> int:
    from ecom.sql import run_sql

    return run_sql(_settings(args), args)


def cmd_notebook(args: argparse.Namespace) -> int:
    from ecom.notebook import run_notebook

    return run_notebook(_settings(args), args)


def cmd_logs(args: argparse.Namespace) -> int:
    from ecom.logs import run_logs

    return run_logs(_settings(args), args)


def cmd_ui(args: argparse.Namespace) -> int:
    from ecom.ui import run_ui

    return run_ui(_settings(args), args)


def _timestamp(text: str) -> datetime:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib import metadata

        try:
            version = metadata.version("ecom-lakehouse")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed: pip install -e .)"
        print(f"ecom {version}")
        parser.exit()


def _exit_codes_epilog() -> str:
    lines = [f"  {code:>3}  {what}" for code, what in errors.EXIT_CODES]
    return (
        "exit codes:\n"
        + "\n".join(lines)
        + "\n\n--debug (or ECOM_DEBUG=1) shows the traceback behind a one-line error."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecom",
        description="Real-time e-commerce analytics lakehouse.",
        epilog=_exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profile", help="settings profile: local (default), test, docker, cluster")
    parser.add_argument("--debug", action="store_true", help="show the traceback behind an error (or ECOM_DEBUG=1)")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--profile", help=argparse.SUPPRESS, default=argparse.SUPPRESS)
        p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS, default=argparse.SUPPRESS)
        p.set_defaults(func=func)
        return p

    add("setup", cmd_setup, "Resolve the JVM jars (Delta, Spark Kafka source, Kafka broker) into the local cache.")
    up = add(
        "up",
        cmd_up,
        "Start the embedded stack (Kafka, PostgreSQL, MLflow store) and, with fraud.fast_path, the per-order alert "
        "path (`ecom stream alerts`) in the background; harmless if they run.",
    )
    up.add_argument("--no-alerts", action="store_true", help="do not start the per-order alert path")
    add("down", cmd_down, "Stop every process the project started.")
    status = add(
        "status",
        cmd_status,
        "Ask each service for real (PostgreSQL select 1, Kafka metadata, the MLflow store, the dashboard's and each "
        f"running pipeline process's /healthz) and show what runs where. Exit 0 when all answer, {STATUS_DOWN} when "
        "one is down (docs/observability.md).",
    )
    status.add_argument("--json", action="store_true", help="print one JSON list, a service or process each")

    gen = add("generate", cmd_generate, "Send simulated orders to Kafka (live, fixed count, duration or backfill).")
    from simulator.cli import add_generate_arguments

    add_generate_arguments(gen)

    stream = add("stream", cmd_stream, "Run the streaming layers.")
    stream.add_argument(
        "layer",
        nargs="?",
        default="all",
        choices=["all", "bronze", "silver", "gold", "alerts"],
        help="all (default): one query Kafka -> bronze + silver + PostgreSQL; bronze: Kafka -> bronze only; "
        "silver: rebuild silver from bronze; gold: live per-minute metrics from silver (docs/gold.md); "
        "alerts: the per-order alert path beside the stream, no Spark (docs/fraud.md)",
    )
    stream.add_argument("--once", action="store_true", help="process what is available, then stop")
    stream.add_argument(
        "--partitions",
        type=lambda text: [int(p) for p in text.split(",")],
        help="alerts only: this process's partitions of the orders topic, e.g. 0,1 (default all; docs/fraud.md)",
    )

    rec = add(
        "reconcile",
        cmd_reconcile,
        "Check Kafka, bronze, silver, quarantine, duplicates and PostgreSQL agree; exit 1 if not.",
    )
    rec.add_argument("--since", type=_timestamp, help="only records with Kafka timestamp >= this (ISO-8601, UTC)")
    rec.add_argument("--until", type=_timestamp, help="only records with Kafka timestamp < this (ISO-8601, UTC)")
    rec.add_argument("--allow-pending", action="store_true", help="records not yet in bronze are not a failure")
    rec.add_argument("--json", action="store_true", help="print one JSON object")

    train = add(
        "train",
        cmd_train,
        "Train the fraud models on silver history, evaluate on held-out data, register in MLflow (docs/fraud.md).",
    )
    from ml.train_args import add_train_arguments

    add_train_arguments(train)

    rescore = add(
        "rescore",
        cmd_rescore,
        "Score silver again for an event-time range with a chosen model version (after retraining).",
    )
    from pipelines.silver.rescore import add_rescore_arguments

    add_rescore_arguments(rescore)

    batch = add(
        "batch",
        cmd_batch,
        "Run the gold batch: dimensions, RFM, cohorts, recommendations, recent minutes, summaries (docs/gold.md).",
    )
    from pipelines.gold.job import add_batch_arguments

    add_batch_arguments(batch)

    lake_sql = add(
        "sql",
        cmd_sql,
        "Run SQL (DuckDB) over the lake's Delta tables by name (gold.rfm, ...), now or as of a version or time.",
    )
    from ecom.sql import add_sql_arguments

    add_sql_arguments(lake_sql)

    notebook = add("notebook", cmd_notebook, "Start JupyterLab on 127.0.0.1 over notebooks/ with the project's kernel.")
    from ecom.notebook import add_notebook_arguments

    add_notebook_arguments(notebook)

    lifecycle = add(
        "lifecycle",
        cmd_lifecycle,
        "Retention: move lake rows past their horizon to archive/ Delta tables, prune PostgreSQL (docs/lifecycle.md).",
    )
    from pipelines.lifecycle.job import add_lifecycle_arguments

    add_lifecycle_arguments(lifecycle)

    dash = add("dashboard", cmd_dashboard, "Serve the Plotly Dash dashboard (reads PostgreSQL, sign-in required).")
    dash.add_argument("--dev", action="store_true", help="Flask's development server instead of gunicorn")

    maintain = add(
        "maintain",
        cmd_maintain,
        "Compact the streaming tables' small files and VACUUM them; files per table before and after "
        "(docs/maintenance.md).",
    )
    from ecom.maintenance import add_maintain_arguments

    add_maintain_arguments(maintain)

    add("migrate", cmd_migrate, "Apply the PostgreSQL migrations and the lake's schema migrations (`up` does too).")

    backup = add(
        "backup",
        cmd_backup,
        "Back up the lake (a Delta version pinned per table) and PostgreSQL (pg_dump), or restore a backup.",
    )
    from ecom.backup import add_backup_arguments

    add_backup_arguments(backup)

    logs = add("logs", cmd_logs, "Print (-n) or follow (-f) a process's log; without a name, list the processes.")
    from ecom.logs import add_logs_arguments

    add_logs_arguments(logs)

    ui = add("ui", cmd_ui, "Print the MLflow UI's address (starting it on 127.0.0.1 if needed) and any Spark UI's.")
    from ecom.ui import add_ui_arguments

    add_ui_arguments(ui)

    demo = add("demo", cmd_demo, "Start everything, stream live orders and serve the dashboard until Ctrl-C.")
    demo.add_argument("--rate", type=float, help="orders per second (default: simulator.rate_per_s)")
    demo.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    demo.add_argument("--backfill-days", type=int, default=30, help="history for the first model (default 30)")
    demo.add_argument("--backfill-count", type=int, default=60000, help="orders in that history (default 60,000)")
    demo.add_argument("--skip-training", action="store_true", help="do not train a first model; rows stay unscored")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "profile"):
        args.profile = None
    debug = getattr(args, "debug", False) or os.environ.get("ECOM_DEBUG", "") not in ("", "0")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return errors.INTERRUPTED
    except Exception as exc:
        error = errors.from_exception(exc, _loaded[-1] if _loaded else None)
        if error is None:
            raise  # not one of the expected failures: the traceback is the report
        if debug:
            import traceback

            traceback.print_exception(exc)
            if error.detail:
                print(error.detail, file=sys.stderr)
        print(f"ecom: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
