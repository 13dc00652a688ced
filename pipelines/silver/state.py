"""The silver stream's customer state: running profiles held by the stream, snapshotted to ``silver/customer_profiles``,
and the window of recent orders the velocity features count.

Features need each customer's history before every order. Reading and
MERGE-ing ``silver/customer_profiles`` in every micro-batch cost about 2.5 s
of a batch on two cores, so the stream keeps the profiles in its driver
(``CustomerState``) and the table becomes a snapshot of them:

- after each batch's rows are in silver, the touched profiles are updated in
  memory (``apply``), together with the highest Kafka offset per partition
  folded so far;
- at most every ``stream.profiles_snapshot_s`` seconds the changed profiles
  are MERGEd into the table, the commit's userMetadata recording those
  offsets (``{"kafka_offsets": {"0": 41, ...}}``); a merge that loses to a
  compaction (``ecom maintain``, which removes the files it read) is run again;
- on start (``load``) the snapshot is read and the silver rows past its
  offsets are folded on top, so the state is exactly "silver so far" even
  after a crash between snapshots.

The window of recent orders (``ml.features.RecentOrders``: the last hour and
a margin, by customer and by device) is not snapshotted: ``apply`` takes each
batch's orders into it and drops the old ones, and ``load`` rebuilds it from
the silver rows of ``RETAINED`` before silver's newest event_time
(``recent_rows``), which is what a carried window holds.

Input: ``silver/customer_profiles`` and ``silver/transactions`` (read with
delta-rs, no Spark job). Output: ``silver/customer_profiles`` (grain: one row
per customer). Memory: one small object per customer (about 1 KB), and about
300 bytes per order of the window.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ecom.schemas import PROFILE_SCHEMA, arrow_schema
from ml.features import ORDER_COLUMNS, RETAINED, Profile, RecentOrders, apply_history, profiles_frame
from pipelines.silver.faults import kill_point

log = logging.getLogger(__name__)

_OFFSETS_KEY = "kafka_offsets"
SNAPSHOT_ATTEMPTS = 5  # a snapshot merge that lost to a compaction commit is merged again, this often at most


class CustomerState:
    """Every customer's profile, and the recent orders, as of the silver rows folded so far."""

    def __init__(
        self,
        profiles: dict[str, Profile] | None = None,
        offsets: dict[int, int] | None = None,
        recent: RecentOrders | None = None,
    ):
        self.profiles: dict[str, Profile] = profiles or {}
        self.offsets: dict[int, int] = offsets or {}  # Kafka partition -> highest offset folded
        self.recent = recent if recent is not None else RecentOrders()
        self.dirty: set[str] = set()
        self.last_snapshot = float("-inf")

    def apply(self, updated: Mapping[str, Profile], rows: pd.DataFrame, recent: RecentOrders | None = None) -> None:
        """Takes the profiles and the recent orders (``ml.features.History``) after a batch whose silver ``rows``
        (with Kafka coordinates) are now in silver."""
        self.profiles.update(updated)
        self.dirty.update(updated)
        if recent is not None:
            self.recent.update(recent)
        if len(rows):
            for partition, offset in rows.groupby("kafka_partition")["kafka_offset"].max().items():
                self.offsets[int(partition)] = max(int(offset), self.offsets.get(int(partition), -1))

    def snapshot_due(self, interval_s: float) -> bool:
        return bool(self.dirty) and time.monotonic() - self.last_snapshot >= interval_s

    def snapshot(self, path: str) -> int:
        """MERGEs the profiles changed since the last snapshot into ``path``; returns how many.

        Written with delta-rs: a MERGE of thousands of profiles takes ~50 ms there, 1.5-7 s as a Spark
        MERGE on two cores, and this runs inside a micro-batch.
        """
        from deltalake import CommitProperties
        from deltalake.exceptions import CommitFailedError

        from ecom.storage import delta_table

        changed = [self.profiles[c] for c in sorted(self.dirty)]
        source = pa.Table.from_pandas(
            profiles_frame(changed), schema=arrow_schema(PROFILE_SCHEMA), preserve_index=False
        )
        meta = json.dumps({_OFFSETS_KEY: {str(p): o for p, o in sorted(self.offsets.items())}})
        kill_point("snapshot_writing")
        for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
            try:
                (
                    delta_table(path)
                    .merge(
                        source,
                        "t.customer_id = s.customer_id",
                        source_alias="s",
                        target_alias="t",
                        commit_properties=CommitProperties(custom_metadata={"userMetadata": meta}),
                    )
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .execute()
                )
                break
            except CommitFailedError:  # a compaction (ecom maintain) committed first: merge into its version
                if attempt == SNAPSHOT_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)
        kill_point("snapshot_committed")
        self.dirty.clear()
        self.last_snapshot = time.monotonic()
        return len(changed)

    @classmethod
    def load(cls, profiles_path: str, silver_path: str, now: dt.datetime | None = None) -> CustomerState:
        """The snapshot in ``profiles_path`` plus the silver rows written after it; the recent orders from silver's
        last ``RETAINED`` (``now``: the wall clock, naive UTC, by default)."""
        from ecom.storage import delta_table

        snapshot = delta_table(profiles_path)
        offsets = snapshot_offsets(snapshot.history())
        # Without recorded offsets the table's rows cannot be placed against silver: rebuild from silver alone.
        table = snapshot.to_pyarrow_table() if offsets else pa.table({})
        profiles = {row["customer_id"]: Profile.from_row(row) for row in table.to_pylist()}
        silver = delta_table(silver_path)
        recent = recent_rows(silver, now)
        state = cls(profiles, offsets, RecentOrders.from_rows(recent, now))
        later = unfolded_rows(silver, offsets)
        if len(later):  # (their recent orders are in the window already: only the profiles take them)
            state.apply(apply_history(later, profiles).profiles, later)
        log.info(
            "customer state: %d profiles from the snapshot, %d later silver rows folded in, %d recent orders",
            len(table),
            len(later),
            len(recent),
        )
        return state


def snapshot_offsets(history: list[dict]) -> dict[int, int]:
    """The Kafka offsets recorded by the latest snapshot commit ({} when none was taken)."""
    for commit in history:  # newest first
        try:
            meta = json.loads(commit.get("userMetadata") or "null")
        except ValueError:
            continue
        if isinstance(meta, dict) and _OFFSETS_KEY in meta:
            return {int(p): int(o) for p, o in meta[_OFFSETS_KEY].items()}
    return {}


def newest_event_time(silver) -> dt.datetime | None:
    """The newest event_time in silver (naive UTC), from the files' statistics (read from the rows when a file has
    none). None for an empty table."""
    actions = pa.table(silver.get_add_actions(flatten=True))
    if not actions.num_rows:
        return None
    stat = "max.event_time"
    if stat in actions.column_names and actions.column(stat).null_count == 0:
        newest = pd.Timestamp(pc.max(actions.column(stat)).as_py())
    else:
        times = silver.to_pyarrow_dataset().to_table(columns=["event_time"]).column("event_time")
        newest = pd.Timestamp(pc.max(times).as_py())
    return (newest.tz_convert("UTC").tz_localize(None) if newest.tzinfo else newest).to_pydatetime()


def recent_rows(silver, now: dt.datetime | None = None) -> pd.DataFrame:
    """Silver rows of the last ``RETAINED`` before its newest event_time (no later than ``now``), with
    ``ORDER_COLUMNS``, event_time naive UTC: the orders a carried window of recent orders holds."""
    newest = newest_event_time(silver)
    if newest is None:
        return pd.DataFrame(columns=list(ORDER_COLUMNS))
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    horizon = min(newest, now) - RETAINED
    dataset = silver.to_pyarrow_dataset()
    condition = pc.field("event_time") > pa.scalar(horizon, dataset.schema.field("event_time").type)
    if "event_date" in dataset.schema.names:  # the partition column: only the last days' files are read
        condition &= pc.field("event_date") >= horizon.date()
    rows = dataset.to_table(columns=list(ORDER_COLUMNS), filter=condition).to_pandas()
    rows["event_time"] = pd.to_datetime(rows["event_time"], utc=True).dt.tz_convert(None)
    return rows


def unfolded_rows(silver, offsets: Mapping[int, int]) -> pd.DataFrame:
    """Silver rows past ``offsets`` (per Kafka partition), with what profiles need, event_time naive UTC."""
    columns = [*ORDER_COLUMNS, "kafka_partition", "kafka_offset"]
    condition = None  # no snapshot: every row
    if offsets:
        condition = ~pc.field("kafka_partition").isin(list(offsets))  # partitions the snapshot has not seen
        for partition, offset in offsets.items():
            condition |= (pc.field("kafka_partition") == partition) & (pc.field("kafka_offset") > offset)
    dataset = silver.to_pyarrow_dataset()
    rows = dataset.to_table(columns=columns, filter=condition).to_pandas()
    if len(rows):
        rows["event_time"] = pd.to_datetime(rows["event_time"], utc=True).dt.tz_convert(None)
    return rows
