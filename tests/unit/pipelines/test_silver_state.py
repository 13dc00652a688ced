"""The stream's customer state survives a restart exactly: snapshot + the silver rows written after it."""

import datetime as dt

import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake
from pandas.testing import assert_frame_equal

from ecom.lake import ensure_table
from ecom.schemas import PROFILE_SCHEMA, arrow_schema
from ml.features import FEATURE_COLUMNS, RETAINED, apply_history, profiles_frame
from pipelines.silver.state import CustomerState, snapshot_offsets

COLUMNS = [
    "event_id", "customer_id", "event_time", "amount", "device_id", "ip_country", "shipping_country",
    "customer_email_hash", "payment_method", "kafka_partition", "kafka_offset",
]  # fmt: skip


def t(minute: int) -> dt.datetime:
    return dt.datetime(2026, 11, 23, 3, minute)


def batch(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS).astype({"kafka_partition": "int32", "kafka_offset": "int64"})


FIRST = batch(
    [
        ("e1", "A", t(1), 10.0, "d1", "DE", "DE", "h", "card", 0, 0),
        ("e2", "B", t(2), 5.0, None, None, "US", None, "paypal", 0, 1),
    ]
)
SECOND = batch(
    [
        ("e3", "A", t(3), 90.0, "d2", "FR", "DE", "h", "card", 0, 2),
        ("e4", "C", t(4), 7.0, "d9", "PL", "PL", "c", "card", 1, 0),
    ]
)


def comparable(state: CustomerState) -> dict:
    return {c: {k: v for k, v in p.as_row().items() if k != "updated_time"} for c, p in state.profiles.items()}


def test_load_is_the_snapshot_plus_later_silver_rows(spark, tmp_path):
    profiles_path, silver_path = str(tmp_path / "profiles"), str(tmp_path / "silver")
    ensure_table(spark, profiles_path, PROFILE_SCHEMA)
    live = CustomerState()
    live.apply(apply_history(FIRST, live.profiles).profiles, FIRST)
    assert live.snapshot_due(30) and live.snapshot(profiles_path) == 2
    assert not live.snapshot_due(0)  # nothing changed since
    live.apply(apply_history(SECOND, live.profiles).profiles, SECOND)  # not snapshotted: a crash here
    assert live.offsets == {0: 2, 1: 0} and live.dirty == {"A", "C"}
    write_deltalake(silver_path, pd.concat([FIRST, SECOND], ignore_index=True))

    restored = CustomerState.load(profiles_path, silver_path)
    assert comparable(restored) == comparable(live)
    assert restored.profiles["A"].tx_count == 2 and restored.profiles["A"].devices == ["d1", "d2"]
    assert restored.offsets == live.offsets
    assert restored.dirty == {"A", "C"}  # the folded customers go into the next snapshot


def test_without_a_snapshot_every_silver_row_is_folded(spark, tmp_path):
    """Also when the table holds profiles without recorded offsets (written by an older version): not counted twice."""
    profiles_path, silver_path = str(tmp_path / "profiles"), str(tmp_path / "silver")
    ensure_table(spark, profiles_path, PROFILE_SCHEMA)
    unplaced = CustomerState()
    unplaced.apply(apply_history(FIRST).profiles, FIRST)
    write_deltalake(
        profiles_path,
        pa.Table.from_pandas(profiles_frame(unplaced.profiles), arrow_schema(PROFILE_SCHEMA)),
        mode="append",
    )
    write_deltalake(silver_path, pd.concat([FIRST, SECOND], ignore_index=True))
    restored = CustomerState.load(profiles_path, silver_path)
    assert {c: p.tx_count for c, p in restored.profiles.items()} == {"A": 2, "B": 1, "C": 1}


def test_snapshot_offsets_come_from_the_latest_snapshot_commit():
    history = [
        {"userMetadata": "silver-abc:7"},  # a batch tag, not a snapshot
        {"userMetadata": '{"kafka_offsets": {"0": 41, "2": 7}}'},
        {"userMetadata": '{"kafka_offsets": {"0": 3}}'},
        {},
    ]
    assert snapshot_offsets(history) == {0: 41, 2: 7}
    assert snapshot_offsets([{"userMetadata": "{broken"}]) == {}


def orders_at(start: dt.datetime, minutes: list[int], first_offset: int) -> pd.DataFrame:
    """Orders every few minutes, cycling through four customers and three devices (shared between them)."""
    rows = []
    for i, m in enumerate(minutes):
        when = start + dt.timedelta(minutes=m)
        offset = first_offset + i
        rows.append((f"o{offset}", "ABCD"[offset % 4], when, 10.0 + offset, f"d{offset % 3}", "DE", "DE", None,
                     ("card", "paypal")[offset % 2], 0, offset))  # fmt: skip
    return batch(rows).assign(event_date=lambda d: d["event_time"].dt.date)


def test_the_recent_orders_rebuilt_from_silver_give_the_features_of_the_carried_ones(tmp_path):
    """Batches spanning midnight folded into a live state; a restart loads the state from silver (the window from
    its last RETAINED only); the next batch, one order of it 5 minutes late, gets the same features from both."""
    profiles_path, silver_path = str(tmp_path / "profiles"), str(tmp_path / "silver")
    write_deltalake(profiles_path, pa.Table.from_pylist([], arrow_schema(PROFILE_SCHEMA)))
    start = dt.datetime(2026, 11, 23, 22, 0)
    batches = [orders_at(start, list(range(0, 90, 3)), 0), orders_at(start, list(range(90, 150, 2)), 30)]
    live = CustomerState()
    for rows in batches:
        history = apply_history(rows, live.profiles, recent=live.recent)
        live.apply(history.profiles, rows, history.recent)
        write_deltalake(silver_path, rows, mode="append", partition_by=["event_date"])
    restored = CustomerState.load(profiles_path, silver_path)
    newest = start + dt.timedelta(minutes=148)
    assert restored.recent.newest == live.recent.newest == newest
    kept = {e for orders in restored.recent.customers.values() for _, e, _ in orders}
    folded = pd.concat(batches)
    assert kept == set(folded.loc[folded["event_time"] > newest - RETAINED, "event_id"])  # not the older ones
    following = orders_at(start, [150, 143, 151, 152], 60)  # the second is 5 minutes older than the newest
    carried = apply_history(following, live.profiles, recent=live.recent).features
    rebuilt = apply_history(following, restored.profiles, recent=restored.recent).features
    assert_frame_equal(rebuilt[list(FEATURE_COLUMNS)], carried[list(FEATURE_COLUMNS)])
    assert carried["device_orders_1h"].min() > 0 and carried["customer_orders_10m"].max() > 0
