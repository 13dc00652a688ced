"""Rescoring (ml side of ``ecom rescore``): silver rows of an event-time range scored with a chosen model version.

Input: ``silver/transactions`` rows with event_time in [since, until) (their stored history features, computed
when each order arrived, so nothing later leaks in) and a registry version (default: the champion). Output: the
same rows with the four score columns filled by that version, as a Spark DataFrame (one row per order).
Writing them back (silver, ``silver/fraud_alerts``, PostgreSQL) is the silver stage's:
``pipelines.silver.rescore``.
"""

from __future__ import annotations

from datetime import datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ecom.settings import Settings
from ml import registry
from ml.scoring import with_fraud_scores


def rescore_version(settings: Settings, version: str | None) -> str:
    """The registry version to rescore with: ``version``, else the champion; exits when none is registered."""
    version = version or registry.champion_version(settings)
    if version is None:
        raise SystemExit("no model registered: run `ecom train` first or pass --model-version")
    return version


def scored_rows(spark: SparkSession, settings: Settings, since: datetime, until: datetime, version: str) -> DataFrame:
    """Silver rows with event_time in [since, until), scored again with registry ``version``."""
    scorer = spark.sparkContext.broadcast(registry.load_version(settings, version))
    rows = (
        DeltaTable.forPath(spark, settings.lake.table("silver", "transactions"))
        .toDF()
        .filter(F.col("event_date").between(since.date(), until.date()))
        .filter((F.col("event_time") >= F.lit(since)) & (F.col("event_time") < F.lit(until)))
    )
    return with_fraud_scores(rows, scorer, version, settings.fraud.alert_threshold)
