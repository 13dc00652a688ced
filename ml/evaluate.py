"""Evaluation of fraud scores against ground-truth labels: overall, at the alert threshold, per fraud pattern.

Input: 0-100 scores, the label of each row (True = fraud) and its fraud
pattern (None for legitimate orders). Output: a flat dict of metrics (the
names logged to MLflow and printed by the benchmark) and a text table.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

PATTERNS = ("account_takeover", "card_testing", "amount_spike", "geo_mismatch")


def evaluate_scores(scores: np.ndarray, is_fraud: np.ndarray, patterns: np.ndarray, threshold: float) -> dict:
    """ROC-AUC, PR-AUC (average precision), precision/recall at ``threshold`` and recall per fraud pattern."""
    scores = np.asarray(scores, dtype="float64")
    y = np.asarray(is_fraud, dtype=bool)
    patterns = np.asarray(patterns, dtype=object)
    alerts = scores >= threshold
    both = int((alerts & y).sum())
    metrics: dict = {
        "rows": int(len(y)),
        "fraud_rows": int(y.sum()),
        "alerts": int(alerts.sum()),
        "roc_auc": float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else math.nan,
        "pr_auc": float(average_precision_score(y, scores)) if y.any() else math.nan,
        "precision_at_threshold": both / int(alerts.sum()) if alerts.any() else math.nan,
        "recall_at_threshold": both / int(y.sum()) if y.any() else math.nan,
        "alert_share": float(alerts.mean()) if len(y) else math.nan,
    }
    for pattern in PATTERNS:
        mask = patterns == pattern
        metrics[f"recall_{pattern}"] = float(alerts[mask].mean()) if mask.any() else math.nan
        metrics[f"rows_{pattern}"] = int(mask.sum())
    return metrics


def per_pattern_recall(metrics: dict) -> dict[str, float]:
    """``{pattern: recall at the threshold}`` from ``evaluate_scores`` output."""
    return {p: metrics[f"recall_{p}"] for p in PATTERNS}


def rounded(metrics: dict, digits: int = 4) -> dict:
    """Floats rounded, NaN as None (JSON friendly)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, float):
            out[key] = None if math.isnan(value) else round(value, digits)
        else:
            out[key] = value
    return out


def comparison_table(results: dict[str, dict], threshold: float) -> str:
    """Models side by side (one column each): the overall metrics, then recall per pattern."""
    names = list(results)
    rows = [
        ("ROC-AUC", "roc_auc"),
        ("PR-AUC", "pr_auc"),
        (f"precision @ {threshold:g}", "precision_at_threshold"),
        (f"recall @ {threshold:g}", "recall_at_threshold"),
        ("alert share", "alert_share"),
        *[(f"recall {p} (n={results[names[0]].get(f'rows_{p}', 0)})", f"recall_{p}") for p in PATTERNS],
    ]
    width = max(len(label) for label, _ in rows) + 2
    col = max(12, *(len(n) + 2 for n in names))

    def fmt(value) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

    lines = ["metric".ljust(width) + "".join(n.rjust(col) for n in names)]
    lines.append("-" * len(lines[0]))
    for label, key in rows:
        lines.append(label.ljust(width) + "".join(fmt(results[n].get(key)).rjust(col) for n in names))
    return "\n".join(lines)
