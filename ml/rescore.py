"""``ecom rescore``: score silver again with a chosen model version, for an event-time range (backfill after retraining).

Reads the silver rows of the range (their stored history features, computed
when each order arrived, so nothing later leaks in), scores them with the
given registry version, MERGEs the four score columns back into
``silver/transactions`` (partition-pruned by event date), adds alerts for
orders that now cross the threshold to ``silver/fraud_alerts``, and updates
PostgreSQL ``transactions`` and ``fraud_alerts`` in one transaction.
Running it twice with the same version changes nothing the second time.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from delta.tables import DeltaTable
from pyspark.sql import functions as F

from ecom.settings import Settings
from ml import registry
from ml.scoring import with_fraud_scores

SCORE_COLUMNS = ("fraud_score", "is_fraud", "model_version", "fraud_reasons")


def add_rescore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", required=True, help="first event time (ISO-8601, UTC), inclusive")
    parser.add_argument("--until", required=True, help="end event time (ISO-8601, UTC), exclusive")
    parser.add_argument("--model-version", help="registry version to score with (default: the champion)")


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rescore(settings: Settings, since: datetime, until: datetime, version: str | None = None) -> dict:
    """Rescore silver rows with event_time in [since, until); returns counts."""
    from ecom.spark import get_spark
    from pipelines.silver import transforms as t
    from pipelines.silver.job import ALERT_COLUMNS
    from serving import db

    version = version or registry.champion_version(settings)
    if version is None:
        raise SystemExit("no model registered: run `ecom train` first or pass --model-version")
    spark = get_spark(settings, "ecom-rescore")
    scorer = spark.sparkContext.broadcast(registry.load_version(settings, version))
    path = settings.lake.table("silver", "transactions")
    rows = (
        DeltaTable.forPath(spark, path)
        .toDF()
        .filter(F.col("event_date").between(since.date(), until.date()))
        .filter((F.col("event_time") >= F.lit(since)) & (F.col("event_time") < F.lit(until)))
    )
    scored = with_fraud_scores(rows, scorer, version, settings.fraud.alert_threshold).localCheckpoint()
    dates = [r.event_date for r in scored.select("event_date").distinct().collect()]
    if not dates:
        return {"rows": 0, "alerts": 0, "model_version": version}
    date_list = ", ".join(f"DATE'{d}'" for d in dates)
    (
        DeltaTable.forPath(spark, path)
        .alias("s")
        .merge(
            scored.alias("n"),
            f"s.event_date IN ({date_list}) AND s.event_date = n.event_date AND s.event_id = n.event_id",
        )
        .whenMatchedUpdate(set={c: f"n.{c}" for c in SCORE_COLUMNS})
        .execute()
    )
    alerts = t.to_alerts(scored).localCheckpoint()
    alerts_path = settings.lake.table("silver", "fraud_alerts")
    (
        DeltaTable.forPath(spark, alerts_path)
        .alias("a")
        .merge(alerts.alias("n"), "a.event_id = n.event_id")
        .whenMatchedUpdate(
            set={"fraud_score": "n.fraud_score", "reasons": "n.reasons", "model_version": "n.model_version"}
        )
        .whenNotMatchedInsertAll()
        .execute()
    )
    score_rows = [tuple(r) for r in scored.select("event_id", "fraud_score", "is_fraud", "model_version").collect()]
    alert_rows = [tuple(r) for r in alerts.select(*ALERT_COLUMNS).collect()]
    conn = db.connect(settings.postgres.dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE rescored (event_id TEXT, fraud_score DOUBLE PRECISION, is_fraud BOOLEAN, model_version TEXT) ON COMMIT DROP"
            )
            db.copy_rows(cur, "rescored", ("event_id", "fraud_score", "is_fraud", "model_version"), score_rows)
            cur.execute(
                "UPDATE transactions t SET fraud_score = r.fraud_score, is_fraud = r.is_fraud, model_version = r.model_version "
                "FROM rescored r WHERE t.event_id = r.event_id"
            )
            db.upsert_rows(
                cur, "fraud_alerts", ALERT_COLUMNS, ("event_id",), alert_rows,
                update=("fraud_score", "reasons", "model_version"),
            )  # fmt: skip
    finally:
        conn.close()
    return {"rows": len(score_rows), "alerts": len(alert_rows), "model_version": version}


def run_rescore(settings: Settings, args: argparse.Namespace) -> int:
    result = rescore(settings, _ts(args.since), _ts(args.until), args.model_version)
    print(
        f"rescored {result['rows']:,} orders with model version {result['model_version']}; {result['alerts']:,} alerts"
    )
    return 0
