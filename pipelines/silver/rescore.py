"""``ecom rescore``: score silver again with a chosen model version, for an event-time range (backfill after retraining).

Input: the silver rows of the range, scored by ``ml.rescore.scored_rows``. Output: the four score columns
MERGEd back into ``silver/transactions`` (partition-pruned by event date), alerts for orders that now cross
the threshold added to ``silver/fraud_alerts`` (grain: one row per flagged order), and PostgreSQL
``transactions`` and ``fraud_alerts`` updated in one transaction (``sinks.ServingSink.rescore``).
Running it twice with the same version changes nothing the second time.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING

from ecom.progress import Steps

if TYPE_CHECKING:  # Spark, Delta and the model load when a rescore starts: `ecom rescore --help` stays quick
    from ecom.settings import Settings


def add_rescore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", required=True, help="first event time (ISO-8601, UTC), inclusive")
    parser.add_argument("--until", required=True, help="end event time (ISO-8601, UTC), exclusive")
    parser.add_argument("--model-version", help="registry version to score with (default: the champion)")


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rescore(settings: Settings, since: datetime, until: datetime, version: str | None = None) -> dict:
    """Rescore silver rows with event_time in [since, until); returns counts."""
    from delta.tables import DeltaTable

    from ecom.schemas import SCORE_COLUMNS
    from ecom.spark import get_spark
    from ml.rescore import rescore_version, scored_rows
    from pipelines.silver import transforms as t
    from pipelines.silver.sinks import ALERT_COLUMNS, RESCORE_COLUMNS, ServingSink

    step = Steps("rescore", 5)
    version = rescore_version(settings, version)
    step(f"starting Spark; model version {version}")
    spark = get_spark(settings, "ecom-rescore")
    step(f"scoring silver orders from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M}")
    scored = scored_rows(spark, settings, since, until, version).localCheckpoint()
    dates = [r.event_date for r in scored.select("event_date").distinct().collect()]
    if not dates:
        return {"rows": 0, "alerts": 0, "model_version": version}
    step(f"merging the scores into silver/transactions ({len(dates)} event dates)")
    date_list = ", ".join(f"DATE'{d}'" for d in dates)
    (
        DeltaTable.forPath(spark, settings.lake.table("silver", "transactions"))
        .alias("s")
        .merge(
            scored.alias("n"),
            f"s.event_date IN ({date_list}) AND s.event_date = n.event_date AND s.event_id = n.event_id",
        )
        .whenMatchedUpdate(set={c: f"n.{c}" for c in SCORE_COLUMNS})
        .execute()
    )
    step("merging alerts into silver/fraud_alerts")
    alerts = t.to_alerts(scored).localCheckpoint()
    (
        DeltaTable.forPath(spark, settings.lake.table("silver", "fraud_alerts"))
        .alias("a")
        .merge(alerts.alias("n"), "a.event_id = n.event_id")
        .whenMatchedUpdate(
            set={"fraud_score": "n.fraud_score", "reasons": "n.reasons", "model_version": "n.model_version"}
        )
        .whenNotMatchedInsertAll()
        .execute()
    )
    score_rows = [tuple(r) for r in scored.select(*RESCORE_COLUMNS).collect()]
    alert_rows = [tuple(r) for r in alerts.select(*ALERT_COLUMNS).collect()]
    step(f"updating PostgreSQL: {len(score_rows):,} orders, {len(alert_rows):,} alerts")
    serving = ServingSink.from_settings(settings)
    try:
        serving.rescore(score_rows, alert_rows)
    finally:
        serving.close()
    return {"rows": len(score_rows), "alerts": len(alert_rows), "model_version": version}


def run_rescore(settings: Settings, args: argparse.Namespace) -> int:
    result = rescore(settings, _ts(args.since), _ts(args.until), args.model_version)
    print(
        f"rescored {result['rows']:,} orders with model version {result['model_version']}; {result['alerts']:,} alerts"
    )
    return 0
