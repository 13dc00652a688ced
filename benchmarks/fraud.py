"""Fraud model benchmark: Isolation Forest trained on one simulated shop, evaluated on another (different seed).

``python -m benchmarks.fraud`` generates training history with ``--train-seed``
and held-out history with ``--heldout-seed`` in-process with the simulator
(no Kafka), computes the features with the streaming code
(``ml.features.with_history_features`` on local Spark), fits the scorer with
``ml.train`` exactly as ``ecom train`` does, and scores the newest
``--heldout-fraction`` of the held-out shop (its older orders are only
customer history). Prints one JSON object as its last line: roc_auc, pr_auc,
precision/recall at the alert threshold, recall per pattern, and the same for
the supervised challenger.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import pandas as pd

from benchmarks._common import bench_settings, emit, log, machine_info
from ecom.settings import Settings
from ml.evaluate import per_pattern_recall, rounded
from ml.train import evaluate, fit_challenger, fit_isolation_forest

EVENT_COLUMNS = ("event_id", "customer_id", "event_time", "amount", "currency", "device_id", "ip_country",
                 "shipping_country")  # fmt: skip


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


def with_features(spark, orders: pd.DataFrame) -> pd.DataFrame:
    """The silver history features, computed by the streaming code path on Spark."""
    from ml.features import with_history_features

    sdf = spark.createDataFrame(orders.assign(event_time=orders["event_time"].dt.tz_localize(None)))
    out = with_history_features(sdf).toPandas()
    out["event_time"] = pd.to_datetime(out["event_time"]).dt.tz_localize("UTC")
    return out


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
    args = parser.parse_args(argv)
    if args.train_seed == args.heldout_seed:
        parser.error("--train-seed and --heldout-seed must differ")

    settings = bench_settings()
    fraud = settings.fraud
    out: dict = {"benchmark": "fraud", "profile": settings.profile, "machine": machine_info()}
    t0 = time.monotonic()
    from ecom.spark import get_spark

    spark = get_spark(settings, "bench-fraud")
    end = datetime.fromisoformat(args.end).astimezone(UTC)
    try:
        log(f"simulating {args.train_count:,} training orders (seed {args.train_seed}) ...")
        train = with_features(spark, simulate(settings, args.train_seed, args.train_count, args.days, end))
        log(f"simulating {args.heldout_count:,} held-out orders (seed {args.heldout_seed}) ...")
        shop = with_features(spark, simulate(settings, args.heldout_seed, args.heldout_count, args.days, end))
    finally:
        spark.stop()
    cut = shop["event_time"].quantile(1 - args.heldout_fraction)
    heldout = shop[shop["event_time"] >= cut]
    t_fit = time.monotonic()
    forest = fit_isolation_forest(train, fraud)
    fit_seconds = time.monotonic() - t_fit
    metrics = evaluate(forest, heldout, fraud.alert_threshold)
    t_score = time.monotonic()
    forest.score(heldout)
    score_seconds = time.monotonic() - t_score
    log("training the supervised challenger ...")
    challenger = evaluate(fit_challenger(train, fraud), heldout, fraud.alert_threshold)
    r = rounded(metrics)
    out.update(
        {
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
            "train_seed": args.train_seed,
            "heldout_seed": args.heldout_seed,
            "fit_seconds": round(fit_seconds, 2),
            "score_rows_per_s": round(len(heldout) / score_seconds, 0),
            "challenger": {
                k: rounded(challenger)[k]
                for k in ("roc_auc", "pr_auc", "precision_at_threshold", "recall_at_threshold")
            }
            | {"per_pattern_recall": per_pattern_recall(rounded(challenger))},
            "targets_met": bool((r["roc_auc"] or 0) >= 0.95 and (r["pr_auc"] or 0) >= 0.5),
            "seconds": round(time.monotonic() - t0, 1),
        }
    )
    emit(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
