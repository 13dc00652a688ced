"""Silver stage decisions: a micro-batch's routed rows plus the stored state -> what goes where. Pure, no I/O.

Input: the batch's routed Arrow rows (``SilverBatch.prepare``: bronze columns, then each record's silver row
``silver__*`` or quarantine row ``quarantine__*``), what the sinks hold already for the batch (``Attempt``:
the batch's bookkeeping; ``stored``: the events stored before), the customer profiles and the recent orders
the stream holds, and the champion model. Output: a ``BatchPlan``: bronze, silver, quarantine and duplicate rows for the lake,
the rows PostgreSQL serves, the alerts, the profiles after the batch, and which sinks to (re)write.
Grain: one plan per micro-batch; every Kafka record of the batch is in exactly one of silver, quarantine or
duplicates.

The decisions:
- a batch whose PostgreSQL commit and alerts are both recorded is skipped (``Attempt.skip``);
- a first attempt looks events up in PostgreSQL ``transactions``; a retry (and the rebuild from bronze,
  where PostgreSQL holds everything already) looks in silver itself (``looks_up_silver``); events dated
  older than the hot horizon (less a margin) are also looked up in the archive (``with_archived``), so a
  duplicate of an archived event is a duplicate (docs/lifecycle.md);
- repeats of an event within the batch: the earliest Kafka record wins, the others are duplicates;
- each first record is ``new``, ``written`` (this very record is stored: a replay) or ``duplicate``;
- new events get their history features and scores; on a retry, events the first attempt stored in silver
  are served again as silver holds them, so PostgreSQL and the alerts get them even after a crash;
- PostgreSQL is written unless the batch's commit is recorded; the lake tables on a retry only where their
  commit tag is missing (the lake sink checks the tags);
- a record a sink refused (``batch_rows(routed, refused)``) goes to quarantine with that reason, and a later
  record of the same event in the batch takes its place.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ecom.schemas import BRONZE_SCHEMA, SILVER_SCHEMA
from ml import features
from ml.model import FraudScorer
from ml.scoring import score_frame
from pipelines.silver import transforms as t

ROUTED = "quarantine__pipeline_version"  # the last column ``SilverBatch.prepare`` adds
SILVER_COLUMNS = SILVER_SCHEMA.fieldNames()

RECORD = ("kafka_topic", "kafka_partition", "kafka_offset")  # the coordinates that name a Kafka record
Record = tuple[str, int, int]
Model = tuple[FraudScorer, str]  # (scorer, registry version), as ``ml.scoring.ChampionTracker.refresh`` gives it


@dataclass(frozen=True)
class Attempt:
    """What the bookkeeping says about a batch: its PostgreSQL state and whether its alerts reached Kafka.

    ``postgres``: ``new`` (first attempt), ``retry`` (started before, never committed) or ``done`` (committed).
    """

    postgres: str
    alerts_published: bool = False

    @property
    def skip(self) -> bool:
        """Everything of the batch is recorded: nothing to do."""
        return self.postgres == "done" and self.alerts_published

    @property
    def retry(self) -> bool:
        """An earlier attempt started: the lake sink writes only the tables its commit tag is missing from."""
        return self.postgres != "new"

    @property
    def writes_postgres(self) -> bool:
        return self.postgres != "done"


def with_archived(stored: pd.DataFrame, archived: pd.DataFrame) -> pd.DataFrame:
    """The stored rows of the batch's events plus those only the archive holds (events older than the hot
    horizon, whose hot rows the lifecycle moved), in ``stored``'s columns."""
    if not len(archived):
        return stored
    only_archived = archived[~archived["event_id"].isin(stored["event_id"])]
    if not len(stored):
        return only_archived[list(stored.columns)].reset_index(drop=True)
    return pd.concat([stored, only_archived[list(stored.columns)]], ignore_index=True)


def looks_up_silver(attempt: Attempt, write_bronze: bool) -> bool:
    """Where the batch's events are looked up: silver (a retry, or the rebuild from bronze) or PostgreSQL."""
    return attempt.retry or not write_bronze


@dataclass(frozen=True)
class BatchRows:
    """A batch's routed rows, split: the valid records' silver rows, ranked within the batch, and quarantine."""

    routed: pa.Table
    firsts: pd.DataFrame  # the earliest record of each event in the batch
    repeats: pd.DataFrame  # later records of an event in the batch
    quarantine: pa.Table  # QUARANTINE_SCHEMA rows: the records the rules rejected and those a sink refused

    @property
    def event_ids(self) -> list[str]:
        return self.firsts["event_id"].tolist()

    @property
    def event_dates(self) -> list[dt.date]:
        return sorted(set(self.firsts["event_date"]))


def batch_rows(routed: pa.Table, refused: pa.Table | None = None) -> BatchRows:
    """Routed Arrow rows -> ``BatchRows``. ``refused``: the quarantine rows of records a sink refused (the
    last line behind the rules): they go to quarantine instead of silver."""
    valid = driver_frame(struct_rows(routed, "silver"))
    quarantine = struct_rows(routed, "quarantine")
    if refused is not None and refused.num_rows:
        valid = valid[~record_keys(valid).isin(record_keys(refused.select(RECORD).to_pandas()))]
        quarantine = pa.concat_tables([quarantine, refused.select(quarantine.column_names).cast(quarantine.schema)])
    ranked = t.with_event_rank(valid)
    firsts = ranked[ranked["event_rank"] == 1].drop(columns="event_rank")
    return BatchRows(routed, firsts, ranked[ranked["event_rank"] > 1], quarantine)


def records_of(rows: pd.DataFrame) -> list[Record]:
    """The Kafka coordinates (``RECORD``) of each row: what names a record."""
    columns = [rows[c].tolist() for c in RECORD]
    return [(str(t), int(p), int(o)) for t, p, o in zip(*columns, strict=True)]


def record_keys(rows: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_tuples(records_of(rows), names=RECORD)


@dataclass(frozen=True)
class BatchPlan:
    """What one micro-batch writes where."""

    bronze: pa.Table | None  # None: the stream does not write bronze (rebuild from bronze)
    quarantine: pa.Table  # QUARANTINE_SCHEMA rows
    silver: pd.DataFrame  # SILVER_COLUMNS rows of the new events
    duplicates: pd.DataFrame  # DUPLICATES_SCHEMA rows
    served: pd.DataFrame  # silver rows PostgreSQL serves: the new events and, on a retry, those written before
    customers: list[features.Profile]  # the served customers' profiles after the batch
    alerts: pd.DataFrame  # ALERT_SCHEMA rows of the served events at or above the threshold
    profiles: dict[str, features.Profile]  # the profiles the new events changed (the stream's state takes them)
    writes_postgres: bool
    retry: bool
    recent: features.RecentOrders | None = None  # the recent orders the new events changed (the state takes them)


def plan_batch(
    rows: BatchRows,
    stored: pd.DataFrame,
    attempt: Attempt,
    profiles: Mapping[str, features.Profile],
    model: Model | None,
    *,
    alert_threshold: float,
    write_bronze: bool,
    pipeline_version: str,
    now: dt.datetime,
    recent: features.RecentOrders | None = None,
) -> BatchPlan:
    """The plan of one batch. ``stored``: the stored rows of the batch's events (event_id, Kafka coordinates; all
    silver columns when looked up in silver); ``profiles`` and ``recent``: the customers' profiles and the recent
    orders before the batch."""
    firsts = t.with_duplicate_status(rows.firsts, stored)
    fresh = firsts[firsts["status"] == "new"].drop(columns="status")
    history = features.apply_history(fresh, profiles, recent=recent)
    new_rows = t.with_unscored_columns(history.features)
    if model is not None and len(new_rows):  # (an empty frame keeps the unscored columns' types)
        new_rows = score_frame(new_rows, *model, alert_threshold)
    new_rows = new_rows[SILVER_COLUMNS]
    # On a retry, the events a first attempt stored in silver are served again as silver holds them.
    # (Found in PostgreSQL, such a record was served before and needs nothing more.)
    in_silver = looks_up_silver(attempt, write_bronze)
    again = firsts.loc[firsts["status"] == "written", "event_id"] if in_silver else pd.Series(dtype=object)
    served = pd.concat([new_rows, stored[stored["event_id"].isin(again)]]) if len(again) else new_rows
    repeats = pd.concat([rows.repeats, firsts[firsts["status"] == "duplicate"]], ignore_index=True)
    return BatchPlan(
        bronze=rows.routed.select(BRONZE_SCHEMA.fieldNames()) if write_bronze else None,
        quarantine=rows.quarantine,
        silver=new_rows,
        duplicates=t.duplicates_frame(repeats, pipeline_version, now),
        served=served,
        customers=[history.profiles.get(c) or profiles[c] for c in served["customer_id"].unique()],
        alerts=t.alerts_frame(served),
        profiles=history.profiles,
        writes_postgres=attempt.writes_postgres,
        retry=attempt.retry,
        recent=history.recent,
    )


def struct_rows(routed: pa.Table, route: str) -> pa.Table:
    """The rows routed to ``route`` (``silver`` or ``quarantine``), with that route's columns."""
    prefix = f"{route}__"
    names = [n for n in routed.column_names if n.startswith(prefix)]
    rows = routed.select(names).filter(pc.is_valid(routed.column(prefix + "pipeline_version")))
    return rows.rename_columns([n[len(prefix) :] for n in names])


def driver_frame(rows: pa.Table) -> pd.DataFrame:
    """Arrow rows -> pandas as the driver steps use them: timestamps naive UTC, decimals as ``Decimal``."""
    frame = rows.to_pandas()
    for name, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.DatetimeTZDtype):
            frame[name] = frame[name].dt.tz_convert(None)
    return frame
