"""Fraud model benchmark: Isolation Forest trained on one simulated shop, evaluated on another; alert latency.

Accuracy (skip with ``--skip-accuracy``): ``python -m benchmarks.fraud``
generates training history with ``--train-seed`` and held-out history with
``--heldout-seed`` in-process with the simulator (no Kafka), computes the
features with the streaming code (``ml.features.with_history_features``),
fits the scorer with ``ml.train`` exactly as ``ecom train`` does, and scores
the newest ``--heldout-fraction`` of the held-out shop (its older orders are
only customer history): roc_auc, pr_auc, precision/recall at the alert
threshold, recall per pattern, and the same for the supervised challenger.
``by_fraud_rate`` repeats the forest's part for shops whose fraud rate is each
of ``--fraud-rates`` (0.5 %, 2 %, 5%), under the alert policy of the profile
or ``--alert-policy``.

Alert latency (skip with ``--skip-latency``): first the per-order path's own
work in this process (``fast_path_decide``: ``FastPath.decide`` in polls of 1,
10 and 100 orders, no I/O). Then the forest fitted above is registered as
champion in a scratch MLflow registry, and ``ecom stream all`` runs as a child
process, with ``ecom stream alerts`` beside it (``--no-fast-path``: without),
on its own topics, lake folder and database
(``benchmarks._common.scratch_stream``; the embedded stack is started if Kafka
is not running, and stopped afterwards). It first takes in ``--history-orders`` of history (the live shop
continues it: its fraud hits customers with history, as in a shop that has been running; without it every
customer is a first-timer and almost nothing alerts). After ``--warmup-seconds`` of orders at the live rate,
all served (the JVM's and the model's first calls are slow), live orders go to it at
``--latency-rate`` (1,000/s) for ``--latency-seconds``; once every order is
served, each alert's latency is the PostgreSQL commit of its row minus the
order's event time (stamped when the order is sent). The commit time is
database-side: for a row the fast path wrote first, the start of its insert
(``written_at``); otherwise the micro-batch's rows and its ``pipeline_batches`` row are
written in one transaction (same ``xmin``), whose ``committed_at`` (now())
is that transaction's start: earlier than the commit by the transaction's
length (within the ``postgres`` step of ``batch_steps``; tens of ms for small
batches, a few hundred for batches of about 10,000 orders).

Prints one JSON object as its last line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta

import pandas as pd

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
from ecom.settings import FraudSettings, Settings
from ml.evaluate import per_pattern_recall, rounded
from ml.model import FraudScorer
from ml.train import evaluate, fit_challenger, fit_isolation_forest
from serving.db import connection

EVENT_COLUMNS = ("event_id", "customer_id", "event_time", "amount", "currency", "device_id", "ip_country",
                 "shipping_country", "payment_method")  # fmt: skip


def simulate(settings: Settings, seed: int, count: int, days: float, end: datetime) -> pd.DataFrame:
    """``count`` backfilled orders of one simulated shop with ``label_is_fraud`` / ``label_pattern``."""
    from simulator.generator import TransactionSimulator

    sim = TransactionSimulator(settings.simulator, seed=seed, expected_orders=count)
    rows, patterns = [], []
    for generated in sim.backfill(count, days=days, end=end):
        rows.append(tuple(generated.event[c] for c in EVENT_COLUMNS))
        patterns.append(generated.label["fraud_pattern"] if generated.label else None)
    pdf = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    pdf["event_time"] = pd.to_datetime(pdf["event_time"], utc=True)
    pdf["label_pattern"] = patterns
    pdf["label_is_fraud"] = pdf["label_pattern"].notna()
    return pdf


def with_features(orders: pd.DataFrame) -> pd.DataFrame:
    """The silver history and velocity features, computed by the streaming code path (``ml.features``)."""
    from ml.features import with_history_features

    out = with_history_features(orders.assign(event_time=orders["event_time"].dt.tz_localize(None)))
    out["event_time"] = pd.to_datetime(out["event_time"]).dt.tz_localize("UTC")
    return out


def accuracy(forest: FraudScorer, train: pd.DataFrame, heldout: pd.DataFrame, fraud: FraudSettings) -> dict:
    """Held-out metrics of the forest and of the supervised challenger."""
    metrics = evaluate(forest, heldout, fraud.alert_threshold)
    t_score = time.monotonic()
    forest.score(heldout)
    score_seconds = time.monotonic() - t_score
    log("training the supervised challenger ...")
    challenger = evaluate(fit_challenger(train, fraud), heldout, fraud.alert_threshold)
    r = rounded(metrics)
    return {
        "model": "isolation_forest",
        "roc_auc": r["roc_auc"],
        "pr_auc": r["pr_auc"],
        "precision_at_threshold": r["precision_at_threshold"],
        "recall_at_threshold": r["recall_at_threshold"],
        "threshold": fraud.alert_threshold,
        "alert_share": r["alert_share"],
        "per_pattern_recall": per_pattern_recall(r),
        "per_pattern_rows": {p: r[f"rows_{p}"] for p in per_pattern_recall(r)},
        "train_rows": len(train),
        "heldout_rows": len(heldout),
        "heldout_fraud_rows": r["fraud_rows"],
        "score_rows_per_s": round(len(heldout) / score_seconds, 0),
        "challenger": {
            k: rounded(challenger)[k] for k in ("roc_auc", "pr_auc", "precision_at_threshold", "recall_at_threshold")
        }
        | {"per_pattern_recall": per_pattern_recall(rounded(challenger))},
        "targets_met": bool((r["roc_auc"] or 0) >= 0.95 and (r["pr_auc"] or 0) >= 0.5),
    }


def by_fraud_rate(settings: Settings, args: argparse.Namespace, end: datetime) -> dict:
    """The forest trained and evaluated on shops whose fraud rate is each of ``--fraud-rates``, under the
    configured alert policy: the same simulated shops (seeds, sizes) with only the fraud rate changed."""
    out = {}
    for rate in (float(r) for r in args.fraud_rates.split(",")):
        shop = settings.model_copy(update={"simulator": settings.simulator.model_copy(update={"fraud_rate": rate})})
        log(f"fraud rate {rate}: simulating and training ...")
        train = with_features(simulate(shop, args.train_seed, args.train_count, args.days, end))
        held = with_features(simulate(shop, args.heldout_seed, args.heldout_count, args.days, end))
        held = held[held["event_time"] >= held["event_time"].quantile(1 - args.heldout_fraction)]
        forest = fit_isolation_forest(train, settings.fraud)
        r = rounded(evaluate(forest, held, settings.fraud.alert_threshold))
        out[str(rate)] = {
            "roc_auc": r["roc_auc"],
            "pr_auc": r["pr_auc"],
            "precision_at_threshold": r["precision_at_threshold"],
            "recall_at_threshold": r["recall_at_threshold"],
            "per_pattern_recall": per_pattern_recall(r),
            "alert_share": r["alert_share"],
            "calibrated_alert_rate": round(forest.calibration.alert_rate, 4),
            "alert_policy": forest.metadata.get("alert_policy", settings.fraud.alert_policy),
            "heldout_fraud_rows": r["fraud_rows"],
        }
        log(f"  {out[str(rate)]}")
    return out


def register_champion(settings: Settings, scorer: FraudScorer, train: pd.DataFrame, heldout: pd.DataFrame) -> str:
    """Registers ``scorer`` in the settings' MLflow registry under the serving alias; returns its version."""
    import mlflow

    from ecom.runtime.stack import prepare_mlflow
    from ml import registry
    from ml.train import log_model_run

    prepare_mlflow(settings)
    client = registry.use_tracking(settings)
    mlflow.set_experiment(settings.mlflow.experiment)
    with redirect_stdout(sys.stderr):  # MLflow prints "Successfully registered model ..."; stdout is for the result
        _, version = log_model_run(settings, scorer, {}, train, heldout, "benchmark-forest", {}, table="")
    client.set_registered_model_alias(settings.mlflow.model_name, settings.mlflow.alias, version)
    return version


def commit_times(dsn: str, table: str) -> dict[str, float | None]:
    """event_id -> when the PostgreSQL transaction that wrote the row began (epoch s; None if no batch row matches).

    A micro-batch writes its rows and marks its ``pipeline_batches`` row
    committed in one transaction, so both carry that transaction's id (``xmin``).
    """
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT r.event_id, extract(epoch FROM b.committed_at)::float8 FROM {table} r "
            "LEFT JOIN pipeline_batches b ON b.xmin = r.xmin AND b.state = 'committed'"
        )
        return dict(cur.fetchall())


def fast_path_cost(settings: Settings, forest: FraudScorer, polls=(1, 10, 100), orders: int = 3000) -> dict:
    """The per-order path's own work, in this process, without Kafka or PostgreSQL: ``FastPath.decide``
    (validate, features, score, alerts, state update) over ``orders`` live orders in polls of each size, from
    the profiles of 20,000 orders of history. Orders per second of one core, and milliseconds per poll."""
    import json
    from collections import namedtuple

    from ml.features import apply_history
    from pipelines.alerts.job import FastPath
    from pipelines.silver.state import CustomerState
    from simulator.generator import TransactionSimulator

    class Champion:
        def refresh(self):
            return forest, "bench"

    now = datetime.now(UTC)
    sim = TransactionSimulator(settings.simulator, seed=303, expected_orders=20_000 + orders)
    history = pd.DataFrame([g.event for g in sim.backfill(20_000, days=30, end=now - timedelta(hours=1))]).assign(
        event_time=lambda d: pd.to_datetime(d["event_time"], utc=True).dt.tz_convert(None),
        amount=lambda d: d["amount"].astype(float),
        customer_email_hash=None,
    )
    profiles = apply_history(history).profiles
    record = namedtuple("Record", "topic partition offset timestamp value")
    stamp = int(now.timestamp() * 1000)
    live = [record("t", 0, i, stamp, json.dumps(g.event).encode())
            for i, g in enumerate(sim.backfill(orders, days=5 / 1440, end=now))]  # fmt: skip
    out = {}
    for size in polls:
        path = FastPath(settings, CustomerState(dict(profiles)), b"bench-key", tracker=Champion())
        started = time.perf_counter()
        for i in range(0, len(live), size):
            path.decide(live[i : i + size], now)
        seconds = time.perf_counter() - started
        out[str(size)] = {
            "orders_per_s": round(len(live) / seconds),
            "ms_per_poll": round(1000 * seconds / -(-len(live) // size), 2),
        }
        log(f"  fast path, polls of {size}: {out[str(size)]}")
    return out


def alert_commit_times(dsn: str) -> dict[str, float | None]:
    """event_id -> when its alert was first committed (epoch s): the start of the fast path's insert for rows
    it wrote first (``written_at``; the micro-batch's upsert moves ``xmin`` but keeps it), else the micro-batch's
    transaction (``commit_times``)."""
    times = commit_times(dsn, "fraud_alerts")
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT event_id, extract(epoch FROM written_at)::float8 FROM fraud_alerts WHERE source = 'fast-path'"
        )
        times.update(dict(cur.fetchall()))
    return times


def path_agreement(dsn: str, since: datetime) -> dict:
    """The paths' agreement over the run from ``since``: alert rows written since by the path that wrote them
    first, and the micro-batches' outcomes summed (``alert_path_agreement``: confirmed, corrected, withdrawn,
    micro_batch_only)."""
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT source, count(*) FROM fraud_alerts WHERE written_at >= %s GROUP BY source", (since,))
        by_source = dict(cur.fetchall())
        cur.execute(
            "SELECT coalesce(sum(confirmed), 0), coalesce(sum(corrected), 0), coalesce(sum(withdrawn), 0),"
            " coalesce(sum(micro_batch_only), 0) FROM alert_path_agreement WHERE committed_at >= %s",
            (since,),
        )
        confirmed, corrected, withdrawn, only = (int(x) for x in cur.fetchone())
    compared = confirmed + corrected + withdrawn
    return {
        "written_first_by": by_source,
        "confirmed": confirmed,
        "corrected": corrected,
        "withdrawn": withdrawn,
        "micro_batch_only_in_compared_batches": only,
        "agreement": round(confirmed / compared, 4) if compared else None,
    }


def alert_latency(
    settings: Settings, forest: FraudScorer, train: pd.DataFrame, heldout: pd.DataFrame, args: argparse.Namespace
) -> dict:
    """Orders at ``--latency-rate`` through a scratch stream scoring with ``forest``: alert (and order) latencies."""
    sent: dict[str, str] = {}  # event_id -> event time, stamped when it was sent
    versions: list[str] = []

    def prepare(scratch: Settings) -> None:
        versions.append(register_champion(scratch, forest, train, heldout))

    with (
        services(settings),
        scratch_stream(
            settings, "fraud", trigger=args.trigger, own_registry=True, prepare=prepare, fast_path=args.fast_path
        ) as stream,
    ):
        stream.seed = 2
        if args.history_orders:
            log(f"history: {args.history_orders:,} orders over {args.history_days:g} days ...")
            stream.backfill(args.history_orders, args.history_days)
        log("waiting for the scoring stream to serve its first orders ...")
        startup_s = stream.wait_for_first_orders()
        if args.fast_path:
            log("waiting for the fast path to read the orders topic ...")
            stream.wait_for_fast_path()
        if not stream.wait_until_all_served(args.drain_seconds):
            raise RuntimeError(f"the stream did not take in the history; see {stream.process.log_file}")
        log(f"warm-up: {args.latency_rate:.0f} orders/s for {args.warmup_seconds:.0f}s ...")
        warmup_s = stream.warm_up(args.latency_rate, args.warmup_seconds)
        measured_from = datetime.now(UTC)
        log(f"alert latency: {args.latency_rate:.0f} orders/s for {args.latency_seconds:.0f}s ...")
        run = stream.drive(
            args.latency_rate,
            args.latency_seconds,
            on_event=lambda e: sent.update({e["event_id"]: e["event_time"]}),
        )
        log("waiting until every order is served ...")
        all_served = stream.wait_until_all_served(args.drain_seconds)
        time.sleep(2 if args.fast_path else 0)  # the micro-batches' last agreement rows
        alerts = {e: t for e, t in alert_commit_times(stream.dsn).items() if e in sent}
        orders = {e: t for e, t in commit_times(stream.dsn, "transactions").items() if e in sent}
        paths = path_agreement(stream.dsn, measured_from)

    def latencies_ms(times: dict[str, float | None]) -> list[float]:
        return [1000 * (t - epoch(sent[e])) for e, t in times.items() if t is not None]

    alert_ms, order_ms = latencies_ms(alerts), latencies_ms(orders)
    stream_log = stream.process.log_file  # where the time goes: the stream's per-step timings
    steps = step_medians(stream_log.read_text(errors="replace")) if stream_log.exists() else None
    result = {
        "alert_p50_latency_ms": percentile(alert_ms, 50),
        "alert_p95_latency_ms": percentile(alert_ms, 95),
        "alert_p99_latency_ms": percentile(alert_ms, 99),
        "alert_latency": {
            "rate_tx_per_s": args.latency_rate,
            "achieved_rate_tx_per_s": round(run.transactions / max(run.wall_seconds, 1e-9), 1),
            "seconds": args.latency_seconds,
            "orders": run.transactions,
            "orders_served": len(orders),
            "all_served": all_served,
            "alerts": len(alerts),
            "alerts_without_commit_time": len(alerts) - len(alert_ms),
            "fast_path": args.fast_path,
            "paths": paths,
            "model_version": versions[0] if versions else None,
            "order_p50_latency_ms": percentile(order_ms, 50),
            "order_p95_latency_ms": percentile(order_ms, 95),
            "history_orders": args.history_orders,
            "stream_startup_s": round(startup_s, 1),
            "warmup_s": round(warmup_s, 1),
            "trigger": args.trigger,
            "batch_steps": steps,
        },
    }
    log(f"  {len(alerts)} alerts: p50 {result['alert_p50_latency_ms']} ms, p95 {result['alert_p95_latency_ms']} ms")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fraud", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-count", type=int, default=120_000, help="training orders (default 120000)")
    parser.add_argument("--heldout-count", type=int, default=60_000, help="held-out shop orders (default 60000)")
    parser.add_argument("--days", type=float, default=60.0, help="days of history per shop (default 60)")
    parser.add_argument("--train-seed", type=int, default=101)
    parser.add_argument("--heldout-seed", type=int, default=202)
    parser.add_argument("--end", default="2026-03-01T00:00:00+00:00",
                        help="end of both simulated histories, ISO-8601 (fixed for reproducible figures)")  # fmt: skip
    parser.add_argument("--heldout-fraction", type=float, default=0.5,
                        help="newest share of the held-out shop that is scored (default 0.5)")  # fmt: skip
    parser.add_argument("--skip-accuracy", action="store_true",
                        help="no held-out shop, no challenger: only fit the forest for the latency part")  # fmt: skip
    parser.add_argument("--skip-latency", action="store_true",
                        help="no stream: only the accuracy part (needs no Kafka or PostgreSQL)")  # fmt: skip
    parser.add_argument("--latency-rate", type=float, default=1000, help="orders/s for alert latency (default 1000)")
    parser.add_argument("--latency-seconds", type=float, default=60,
                        help="how long orders are sent for alert latency (default 60)")  # fmt: skip
    parser.add_argument("--history-orders", type=int, default=30_000,
                        help="orders of history the stream takes in first, so that the live orders' fraud hits "
                        "customers with history (default 30000; 0: none, every customer new)")  # fmt: skip
    parser.add_argument("--history-days", type=float, default=30, help="days the history spans (default 30)")
    parser.add_argument("--warmup-seconds", type=float, default=30,
                        help="orders at the latency rate, all served, before latency is measured (default 30)")  # fmt: skip
    parser.add_argument("--drain-seconds", type=float, default=300,
                        help="how long to wait afterwards for every order to be served (default 300)")  # fmt: skip
    parser.add_argument("--trigger", default="0 seconds", help="stream trigger interval (default: 0 seconds)")
    parser.add_argument("--fast-path", action=argparse.BooleanOptionalAction, default=True,
                        help="run the per-order alert path (ecom stream alerts) beside the stream (default: on)")  # fmt: skip
    parser.add_argument("--fraud-rates", default="0.005,0.02,0.05",
                        help="shops' fraud rates for by_fraud_rate (default 0.005,0.02,0.05; '' skips)")  # fmt: skip
    parser.add_argument("--alert-policy", choices=("budget", "precision"),
                        help="fraud.alert_policy for this run (default: the profile's)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.train_seed == args.heldout_seed:
        parser.error("--train-seed and --heldout-seed must differ")
    if args.skip_accuracy and args.skip_latency:
        parser.error("--skip-accuracy and --skip-latency leave nothing to measure")

    settings = bench_settings()
    if args.alert_policy:
        settings = settings.model_copy(
            update={"fraud": settings.fraud.model_copy(update={"alert_policy": args.alert_policy})}
        )
    fraud = settings.fraud
    out: dict = {"benchmark": "fraud", "profile": settings.profile, "alert_policy": fraud.alert_policy}
    out["machine"] = machine_info()
    t0 = time.monotonic()
    end = datetime.fromisoformat(args.end).astimezone(UTC)
    shop = None
    log(f"simulating {args.train_count:,} training orders (seed {args.train_seed}) ...")
    train = with_features(simulate(settings, args.train_seed, args.train_count, args.days, end))
    if not args.skip_accuracy:
        log(f"simulating {args.heldout_count:,} held-out orders (seed {args.heldout_seed}) ...")
        shop = with_features(simulate(settings, args.heldout_seed, args.heldout_count, args.days, end))
    t_fit = time.monotonic()
    forest = fit_isolation_forest(train, fraud)
    out["fit_seconds"] = round(time.monotonic() - t_fit, 2)
    out.update({"train_seed": args.train_seed, "heldout_seed": args.heldout_seed})
    if shop is None:
        heldout = train.tail(1000)  # only the registered model's input example
    else:
        heldout = shop[shop["event_time"] >= shop["event_time"].quantile(1 - args.heldout_fraction)]
        out.update(accuracy(forest, train, heldout, fraud))
        if args.fraud_rates:
            out["by_fraud_rate"] = by_fraud_rate(settings, args, end)
    if not args.skip_latency:
        log("the per-order path's own cost (no Kafka, no PostgreSQL) ...")
        out["fast_path_decide"] = fast_path_cost(settings, forest)
        out.update(alert_latency(settings, forest, train, heldout, args))
    out["seconds"] = round(time.monotonic() - t0, 1)
    emit(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
