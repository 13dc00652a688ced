"""``ecom train``: fit the fraud models on silver history, evaluate on a held-out time range, track in MLflow.

Inputs: the Delta table ``silver/transactions`` (read with delta-rs, feature
columns written by the silver stream through ``ml.features``) and the ground
truth on the ``fraud-labels`` topic (read from the beginning to the end
offsets; an order without a label is legitimate). Labels are never a model
input: they only evaluate the Isolation Forest and train the challenger.

Split: the newest ``fraud.holdout_fraction`` of the rows by ``event_time`` is
held out; the models are fitted on the older rows.

Outputs: two MLflow runs (Isolation Forest, gradient-boosting challenger),
each with parameters, the feature list, held-out metrics, the comparison
table and the model (pyfunc, with signature and input example), registered
as versions of ``mlflow.model_name``.

Promotion rule (docs/fraud.md):
- the new Isolation Forest takes the alias ``mlflow.alias`` (champion) if no
  champion exists, or if its held-out PR-AUC is at least the current
  champion's (re-scored on the same held-out rows) minus ``fraud.champion_tolerance``;
- the challenger always takes ``fraud.challenger_alias``; it becomes champion
  only with ``--promote-challenger`` and if its held-out PR-AUC beats the
  champion's by ``fraud.challenger_min_gain`` and its ROC-AUC is not lower.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from sklearn.pipeline import Pipeline

from ecom.settings import FraudSettings, Settings
from ml.evaluate import comparison_table, evaluate_scores, rounded
from ml.model import (
    DEFAULT_MODEL_FEATURES,
    INPUT_COLUMNS,
    AlertPolicy,
    FraudFeatures,
    FraudScorer,
    fit_calibrated,
    model_input,
)
from ml.train_args import add_train_arguments

SILVER_COLUMNS = ("event_id", "event_time", *INPUT_COLUMNS)
IFOREST = "isolation_forest"
CHALLENGER = "gradient_boosting"


# -- reading (I/O at the edge) -------------------------------------------------------------
def load_silver(settings: Settings, path: str | None = None) -> pd.DataFrame:
    """The training columns of silver/transactions (delta-rs, no Spark). A column the table lacks (a lake not
    migrated yet) is left out: ``model_input`` reads it as missing."""
    from deltalake.exceptions import TableNotFoundError

    from ecom.storage import delta_table

    path = path or settings.lake.table("silver", "transactions")
    try:
        table = delta_table(path)
    except TableNotFoundError as exc:
        raise SystemExit(f"no silver table at {path}: backfill and run `ecom stream all --once` first") from exc
    present = set(table.schema().to_arrow().names)
    pdf = table.to_pandas(columns=[c for c in SILVER_COLUMNS if c in present])
    pdf["event_time"] = pd.to_datetime(pdf["event_time"], utc=True)
    return pdf


def load_labels(settings: Settings, topic: str | None = None, timeout_s: float = 60.0) -> pd.DataFrame:
    """Every label on the fraud-labels topic, from the beginning to the end offsets (one row per event_id)."""
    from kafka import KafkaConsumer, TopicPartition

    from ecom.kafka_config import client_kwargs

    topic = topic or settings.kafka.labels_topic
    consumer = KafkaConsumer(
        **client_kwargs(settings),
        enable_auto_commit=False,
        value_deserializer=lambda v: json.loads(v.decode("utf-8")),
    )
    records: list[dict] = []
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if tps:
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            deadline = time.monotonic() + timeout_s
            while any(consumer.position(tp) < end[tp] for tp in tps):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic} took longer than {timeout_s:.0f} s")
                for batch in consumer.poll(timeout_ms=1000, max_records=10000).values():
                    records.extend(r.value for r in batch)
    finally:
        consumer.close()
    labels = pd.DataFrame(records, columns=["event_id", "is_fraud", "fraud_pattern"])
    return labels.drop_duplicates("event_id", keep="last")


# -- pure steps ----------------------------------------------------------------------------
def with_labels(silver: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Adds ``label_is_fraud`` and ``label_pattern`` by event_id; an order without a label is legitimate."""
    lab = labels[["event_id", "is_fraud", "fraud_pattern"]].rename(
        columns={"is_fraud": "label_is_fraud", "fraud_pattern": "label_pattern"}
    )
    out = silver.merge(lab, on="event_id", how="left")
    out["label_is_fraud"] = out["label_is_fraud"].astype("boolean").fillna(False).astype(bool)
    out["label_pattern"] = out["label_pattern"].where(out["label_is_fraud"])
    return out


def split_by_time(df: pd.DataFrame, holdout_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(older rows, newest ``holdout_fraction`` of rows by event_time); the cut is one timestamp."""
    if not 0 < holdout_fraction < 1:
        raise ValueError("holdout_fraction must be in (0, 1)")
    ordered = df.sort_values(["event_time", "event_id"], kind="stable")
    cut = ordered["event_time"].iloc[int(len(ordered) * (1 - holdout_fraction))]
    return ordered[ordered["event_time"] < cut], ordered[ordered["event_time"] >= cut]


def model_features(fraud: FraudSettings) -> tuple[str, ...]:
    return tuple(fraud.model_features) if fraud.model_features else DEFAULT_MODEL_FEATURES


def alert_policy(fraud: FraudSettings) -> AlertPolicy:
    return AlertPolicy(fraud.alert_policy, fraud.alert_rate, fraud.target_precision, fraud.min_labelled_alerts)


def training_labels(train: pd.DataFrame) -> np.ndarray | None:
    """The training rows' fraud labels (for the alert policy), when the rows carry them."""
    return train["label_is_fraud"].to_numpy(dtype=bool) if "label_is_fraud" in train else None


def fit_isolation_forest(train: pd.DataFrame, fraud: FraudSettings) -> FraudScorer:
    """Unsupervised: fit on every training row (labels never an input), calibrate on the same rows (with the
    labels only when the alert policy is ``precision``)."""
    pipeline = Pipeline(
        [
            ("features", FraudFeatures(model_features(fraud))),
            (
                "model",
                IsolationForest(
                    n_estimators=fraud.n_estimators,
                    max_samples=min(fraud.max_samples, len(train)),
                    random_state=fraud.random_state,
                    n_jobs=1,
                ),
            ),
        ]
    )
    return fit_calibrated(
        pipeline, IFOREST, model_input(train), alert_rate=fraud.alert_rate, threshold=fraud.alert_threshold,
        reason_max_share=fraud.reason_max_share, reasons_min_score=fraud.reasons_min_score,
        policy=alert_policy(fraud), labels=training_labels(train),
    )  # fmt: skip


def fit_challenger(train: pd.DataFrame, fraud: FraudSettings) -> FraudScorer:
    """Supervised: gradient boosting on the chargeback labels, same inputs and same 0-100 calibration."""
    pipeline = Pipeline(
        [
            ("features", FraudFeatures(model_features(fraud))),
            (
                "model",
                HistGradientBoostingClassifier(
                    max_iter=fraud.challenger_max_iter,
                    learning_rate=fraud.challenger_learning_rate,
                    random_state=fraud.random_state,
                ),
            ),
        ]
    )
    return fit_calibrated(
        pipeline, CHALLENGER, model_input(train), y=train["label_is_fraud"].to_numpy(),
        alert_rate=fraud.alert_rate, threshold=fraud.alert_threshold,
        reason_max_share=fraud.reason_max_share, reasons_min_score=fraud.reasons_min_score,
        policy=alert_policy(fraud), labels=training_labels(train),
    )  # fmt: skip


def evaluate(scorer: FraudScorer, heldout: pd.DataFrame, threshold: float) -> dict:
    """Held-out metrics of ``scorer`` (``ml.evaluate.evaluate_scores``)."""
    scores = scorer.calibration(scorer.raw_scores(model_input(heldout)))
    return evaluate_scores(scores, heldout["label_is_fraud"].to_numpy(), heldout["label_pattern"].to_numpy(), threshold)


def _pr(metrics: dict | None) -> float:
    value = (metrics or {}).get("pr_auc", math.nan)
    return -math.inf if value is None or math.isnan(value) else value


def forest_beats_champion(candidate: dict, champion: dict | None, tolerance: float) -> bool:
    """A retrained forest serves if there is no champion or its held-out PR-AUC >= champion's - tolerance."""
    return champion is None or _pr(candidate) >= _pr(champion) - tolerance


def challenger_beats_champion(challenger: dict, champion: dict, min_gain: float) -> bool:
    """The challenger wins if its held-out PR-AUC beats the champion's by ``min_gain`` and its ROC-AUC is not lower."""
    roc_c, roc_b = challenger.get("roc_auc", math.nan), champion.get("roc_auc", math.nan)
    return _pr(challenger) >= _pr(champion) + min_gain and not (roc_c < roc_b)


# -- MLflow --------------------------------------------------------------------------------
def _requirements() -> list[str]:
    reqs = []
    for package in ("scikit-learn", "pandas", "numpy", "mlflow"):
        try:
            reqs.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            reqs.append(package)
    return reqs


def log_model_run(
    settings: Settings, scorer: FraudScorer, metrics: dict, train: pd.DataFrame, heldout: pd.DataFrame,
    run_name: str, extra_params: dict, table: str,
) -> tuple[str, str]:  # fmt: skip
    """One MLflow run: params, feature list, metrics, comparison table, model registered. Returns (run id, version)."""
    import mlflow
    from mlflow.models import infer_signature

    from ml.model import FraudPyfunc

    example = model_input(heldout.head(5), scorer.input_columns)
    signature = infer_signature(example, scorer.score(example))
    features = list(scorer.features.features)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params(
            {
                "model_kind": scorer.kind,
                "input_columns": ",".join(scorer.input_columns),
                "model_features": ",".join(features),
                "alert_threshold": settings.fraud.alert_threshold,
                "alert_rate": round(scorer.calibration.alert_rate, 5),  # the share the policy chose
                "alert_policy": scorer.metadata.get("alert_policy", settings.fraud.alert_policy),
                "train_rows": len(train),
                "heldout_rows": len(heldout),
                "train_from": str(train["event_time"].min()),
                "train_to": str(train["event_time"].max()),
                "heldout_from": str(heldout["event_time"].min()),
                "heldout_to": str(heldout["event_time"].max()),
                **extra_params,
            }
        )
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float) and not math.isnan(v)})
        mlflow.log_dict({"input_columns": list(scorer.input_columns), "model_features": features}, "features.json")
        mlflow.log_text(table, "heldout_comparison.txt")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=FraudPyfunc(scorer),
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            registered_model_name=settings.mlflow.model_name,
        )
        version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key in ("roc_auc", "pr_auc", "precision_at_threshold", "recall_at_threshold"):
        value = metrics.get(key)
        client.set_model_version_tag(
            settings.mlflow.model_name, version, key, "nan" if value is None else f"{value:.4f}"
        )
    client.set_model_version_tag(settings.mlflow.model_name, version, "model_kind", scorer.kind)
    return run.info.run_id, version


# -- entry point ---------------------------------------------------------------------------
@dataclass
class TrainResult:
    forest_version: str
    challenger_version: str | None
    champion_version: str
    metrics: dict[str, dict]
    table: str


def train(
    settings: Settings,
    silver: pd.DataFrame,
    labels: pd.DataFrame,
    args: argparse.Namespace,
    step: Callable[[str], None] = lambda _: None,
) -> TrainResult:
    """Fit, evaluate, log, register and set aliases from already-loaded silver rows and labels (``step`` is told
    as each stage starts: fit, challenger, evaluate, register)."""
    from ecom.runtime.stack import prepare_mlflow
    from ml import registry

    fraud = settings.fraud
    threshold = fraud.alert_threshold
    data = with_labels(silver, labels)
    older, heldout = split_by_time(data, getattr(args, "holdout_fraction", None) or fraud.holdout_fraction)
    if len(older) < fraud.min_train_rows:
        raise SystemExit(f"only {len(older)} training rows (need fraud.min_train_rows = {fraud.min_train_rows})")
    print(f"training on {len(older):,} orders up to {older['event_time'].max()}, "
          f"evaluating on {len(heldout):,} from {heldout['event_time'].min()} "
          f"({int(heldout['label_is_fraud'].sum())} labelled fraud)", flush=True)  # fmt: skip

    prepare_mlflow(settings)
    client = registry.use_tracking(settings)
    import mlflow

    mlflow.set_experiment(settings.mlflow.experiment)

    step(f"fitting the Isolation Forest on {len(older):,} orders")
    scorers = {IFOREST: fit_isolation_forest(older, fraud)}
    with_challenger = fraud.challenger_enabled and not getattr(args, "no_challenger", False)
    if with_challenger and older["label_is_fraud"].nunique() == 2:
        step("fitting the gradient-boosting challenger")
        scorers[CHALLENGER] = fit_challenger(older, fraud)
    else:
        step("no challenger")
        if with_challenger:
            print("no fraud labels in the training range: skipping the challenger", flush=True)
    step(f"evaluating on {len(heldout):,} held-out orders")
    metrics = {name: evaluate(s, heldout, threshold) for name, s in scorers.items()}

    current = registry.load_champion(settings)
    if current is not None:
        metrics[f"champion v{current[1]}"] = evaluate(current[0], heldout, threshold)
    table = comparison_table(metrics, threshold)

    step(f"logging the runs and registering the models in MLflow ({settings.mlflow.tracking_uri})")
    forest_params = {
        "n_estimators": fraud.n_estimators,
        "max_samples": fraud.max_samples,
        "random_state": fraud.random_state,
    }
    _, forest_version = log_model_run(settings, scorers[IFOREST], metrics[IFOREST], older, heldout,
                                      "isolation-forest", forest_params, table)  # fmt: skip
    champion = current[1] if current else None
    champion_metrics = metrics.get(f"champion v{champion}") if champion else None
    if forest_beats_champion(metrics[IFOREST], champion_metrics, fraud.champion_tolerance):
        client.set_registered_model_alias(settings.mlflow.model_name, settings.mlflow.alias, forest_version)
        champion, champion_metrics = forest_version, metrics[IFOREST]
        print(f"isolation forest v{forest_version} is now {settings.mlflow.alias}", flush=True)
    else:
        print(f"isolation forest v{forest_version} registered; v{champion} stays {settings.mlflow.alias} "
              f"(better held-out PR-AUC)", flush=True)  # fmt: skip

    challenger_version = None
    if CHALLENGER in scorers:
        params = {"max_iter": fraud.challenger_max_iter, "learning_rate": fraud.challenger_learning_rate}
        _, challenger_version = log_model_run(settings, scorers[CHALLENGER], metrics[CHALLENGER], older, heldout,
                                              "challenger-gradient-boosting", params, table)  # fmt: skip
        client.set_registered_model_alias(settings.mlflow.model_name, fraud.challenger_alias, challenger_version)
        wins = challenger_beats_champion(metrics[CHALLENGER], champion_metrics or {}, fraud.challenger_min_gain)
        if wins and getattr(args, "promote_challenger", False):
            client.set_registered_model_alias(settings.mlflow.model_name, settings.mlflow.alias, challenger_version)
            champion = challenger_version
            print(f"challenger v{challenger_version} wins and is now {settings.mlflow.alias}", flush=True)
        else:
            verdict = "wins on held-out data; pass --promote-challenger to serve it" if wins else "does not win"
            print(f"challenger v{challenger_version} ({fraud.challenger_alias}) {verdict}", flush=True)
    assert champion is not None
    return TrainResult(forest_version, challenger_version, champion, {k: rounded(v) for k, v in metrics.items()}, table)


def run_train(settings: Settings, args: argparse.Namespace) -> int:
    """``ecom train``: read silver + labels, then ``train``; prints the held-out comparison table.
    ``--bootstrap``: the first model of a fresh stack, or nothing if one is registered."""
    from ecom.progress import Steps

    if getattr(args, "bootstrap", False):
        from ecom import demo

        if demo.needs_model(settings):
            env = {"ECOM_PROFILE": settings.profile, "PYTHONUNBUFFERED": "1"}
            step = Steps("train --bootstrap", demo.MODEL_STEPS)
            demo.bootstrap_model(settings, env, args.bootstrap_days, args.bootstrap_count, step)
        print(f"a champion is registered: {settings.mlflow.model_name}@{settings.mlflow.alias}", flush=True)
        return 0

    t0 = time.monotonic()
    step = Steps("train", 6)
    step("reading silver/transactions")
    silver = load_silver(settings, getattr(args, "silver", None))
    step(f"reading the fraud labels from {getattr(args, 'labels_topic', None) or settings.kafka.labels_topic}")
    labels = load_labels(settings, getattr(args, "labels_topic", None))
    print(f"read {len(silver):,} silver orders and {len(labels):,} fraud labels", flush=True)
    result = train(settings, silver, labels, args, step)
    print(result.table)
    print(f"champion: {settings.mlflow.model_name} v{result.champion_version} ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":  # python -m ml.train [--profile P]
    from ecom.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m ml.train", description="Train the fraud models.")
    parser.add_argument("--profile")
    add_train_arguments(parser)
    ns = parser.parse_args()
    sys.exit(run_train(load_settings(ns.profile), ns))
