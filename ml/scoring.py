"""Scoring: the champion model, reloaded when its registry alias moves; vectorised over pandas batches.

``ChampionTracker.refresh`` is called at every micro-batch boundary: one
registry call; when the alias points at a new version the scorer is loaded, so
a retrained model takes over without a restart. The stream scores each batch's
new orders in its driver with ``score_frame`` (one vectorised call per batch);
``with_fraud_scores`` applies the same function with ``mapInPandas`` to a
Spark DataFrame (``ecom rescore``), each Python worker deserialising the
broadcast scorer once. Without a registered model rows stay unscored (null
score) and the stream keeps running.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pandas as pd
from pyspark import Broadcast
from pyspark.sql import DataFrame

from ecom.settings import Settings
from ml import registry
from ml.model import FraudScorer

log = logging.getLogger(__name__)


class ChampionTracker:
    """The serving model as of the last micro-batch boundary."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.version: str | None = None
        self.scorer: FraudScorer | None = None
        self._warned = False

    def refresh(self) -> tuple[FraudScorer, str] | None:
        try:
            version = registry.champion_version(self.settings)
        except Exception as exc:  # the registry being away must not stop the stream  # noqa: BLE001
            log.warning("fraud model registry unreachable (%s); keeping model version %s", exc, self.version)
            version = self.version
        if version is None:
            if not self._warned:
                log.warning(
                    "no fraud model registered as %s@%s: rows stay unscored until `ecom train` registers one",
                    self.settings.mlflow.model_name,
                    self.settings.mlflow.alias,
                )
                self._warned = True
            return None
        if version != self.version:
            self.scorer = registry.load_version(self.settings, version)
            log.warning("fraud model version %s now scores the stream (was %s)", version, self.version)
            self.version = version
        return self.scorer, self.version


def score_frame(pdf: pd.DataFrame, scorer: FraudScorer, version: str, threshold: float) -> pd.DataFrame:
    """Fills fraud_score, is_fraud, model_version and fraud_reasons of a pandas batch (the scorer reads the
    columns it was fitted on)."""
    scored = scorer.score(pdf[list(scorer.input_columns)])
    pdf = pdf.copy()
    pdf["fraud_score"] = scored["fraud_score"].astype("float64")
    pdf["is_fraud"] = pdf["fraud_score"] >= threshold
    pdf["model_version"] = version
    pdf["fraud_reasons"] = scored["fraud_reasons"]
    return pdf


def with_fraud_scores(df: DataFrame, scorer: Broadcast, version: str, threshold: float) -> DataFrame:
    """Scores every row (vectorised per Arrow batch); ``df`` already has the score columns (as nulls)."""

    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = scorer.value
        for pdf in batches:
            yield score_frame(pdf, model, version, threshold)

    return df.mapInPandas(score_batches, schema=df.schema)
