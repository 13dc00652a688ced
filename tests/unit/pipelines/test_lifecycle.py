"""The lifecycle's rules and its lake moves: a few inline rows in scratch Delta tables (delta-rs, no Spark or services).

A move must copy before it deletes, count the copy, and be safe to run again at any point: these tests cut a
run off between its copy and its delete and run it again.
"""

import datetime as dt

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ecom.schemas import DUPLICATES_SCHEMA, QUARANTINE_SCHEMA, arrow_schema
from ecom.settings import LakeSettings, RetentionSettings
from pipelines.lifecycle import archive
from pipelines.lifecycle.policy import LAKE_POLICIES, archive_lookup_dates, cutoff, month_of
from pipelines.silver.plan import with_archived

UTC = dt.UTC
TODAY = dt.date(2026, 11, 26)
POLICIES = {p.name: p for p in LAKE_POLICIES}
NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def test_cutoff_and_month():
    assert cutoff(TODAY, 90) == dt.date(2026, 8, 28)
    assert month_of(dt.date(2026, 8, 28)) == dt.date(2026, 8, 1)


def test_old_events_are_also_looked_up_in_the_archive_with_a_margin():
    retention = RetentionSettings(days=90, lookup_margin_days=2)
    dates = [TODAY, dt.date(2026, 8, 31), dt.date(2026, 8, 29), dt.date(2026, 8, 1), None]
    assert archive_lookup_dates(dates, TODAY, retention) == [dt.date(2026, 8, 1), dt.date(2026, 8, 29)]


def test_stored_rows_gain_the_events_only_the_archive_holds():
    stored = pd.DataFrame({"event_id": ["a"], "kafka_partition": [0], "kafka_offset": [1]})
    archived = pd.DataFrame(
        {"event_id": ["a", "b"], "kafka_partition": [0, 1], "kafka_offset": [9, 2], "amount": [1.0, None]}
    )
    expected = pd.DataFrame({"event_id": ["a", "b"], "kafka_partition": [0, 1], "kafka_offset": [1, 2]})
    pd.testing.assert_frame_equal(with_archived(stored, archived), expected)
    empty = stored.iloc[:0]
    pd.testing.assert_frame_equal(with_archived(empty, archived.iloc[:0]), empty)


def quarantine_row(offset: int, payload: str | None, kafka_day: dt.date = TODAY) -> dict:
    return {
        "payload": payload, "kafka_topic": "orders", "kafka_partition": 0, "kafka_offset": offset,
        "kafka_timestamp": dt.datetime.combine(kafka_day, dt.time(8), tzinfo=UTC), "reasons": ["r"],
        "quarantined_time": NOW, "pipeline_version": "v",
    }  # fmt: skip


def event_dates(policy, rows: list[dict], schema) -> list:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("t", pa.Table.from_pylist(rows, schema=arrow_schema(schema)))
    return [r[0] for r in con.execute(f"SELECT {policy.age} FROM t ORDER BY kafka_offset").fetchall()]


def test_a_records_event_date_is_read_from_its_payload_or_else_its_kafka_date():
    rows = [
        quarantine_row(1, '{"event_time":"2026-07-01T23:30:00.000Z","amount":-1}'),
        quarantine_row(2, '{"event_time":"2026-07-01T23:30:00.000-02:00"}'),  # the next day in UTC
        quarantine_row(3, "{broken", kafka_day=dt.date(2026, 6, 5)),
        quarantine_row(4, None, kafka_day=dt.date(2026, 6, 6)),
        quarantine_row(5, '{"event_time":"yesterday"}', kafka_day=dt.date(2026, 6, 7)),
    ]
    assert event_dates(POLICIES["silver/quarantine"], rows, QUARANTINE_SCHEMA) == [
        dt.date(2026, 7, 1),
        dt.date(2026, 7, 2),
        dt.date(2026, 6, 5),
        dt.date(2026, 6, 6),
        dt.date(2026, 6, 7),
    ]


def duplicate_row(offset: int, day: dt.date) -> dict:
    return {
        "event_id": f"e{offset}", "event_date": day, "kafka_topic": "orders", "kafka_partition": 0,
        "kafka_offset": offset, "kafka_timestamp": NOW, "detected_time": NOW, "pipeline_version": "v",
    }  # fmt: skip


@pytest.fixture
def lake(tmp_path) -> LakeSettings:
    """A scratch lake whose duplicates table holds rows of July, August and today."""
    lake = LakeSettings(root=str(tmp_path / "lake"), checkpoints=str(tmp_path / "checkpoints"))
    days = [dt.date(2026, 7, 3), dt.date(2026, 7, 30), dt.date(2026, 8, 2), TODAY, TODAY]
    rows = [duplicate_row(i, d) for i, d in enumerate(days)]
    write_deltalake(
        lake.table("silver", "duplicates"), pa.Table.from_pylist(rows, schema=arrow_schema(DUPLICATES_SCHEMA))
    )
    return lake


def table_rows(path: str) -> list[tuple]:
    frame = DeltaTable(path).to_pandas(columns=["kafka_offset", "event_date"]).sort_values("kafka_offset")
    return list(frame.itertuples(index=False, name=None))


def test_rows_past_the_horizon_move_to_a_monthly_archive_and_a_rerun_changes_nothing(lake):
    policy = POLICIES["silver/duplicates"]
    first_kept = cutoff(TODAY, 90).isoformat()
    dry = archive.move_table(lake, policy, first_kept, dry_run=True)
    assert [(m.month, m.rows, m.archived) for m in dry] == [("2026-07", 2, 0), ("2026-08", 1, 0)]
    assert DeltaTable(lake.table("silver", "duplicates")).version() == 0

    moves = archive.move_table(lake, policy, first_kept)
    assert [(m.month, m.rows, m.archived, m.deleted) for m in moves] == [("2026-07", 2, 2, 2), ("2026-08", 1, 1, 1)]
    hot, cold = lake.table("silver", "duplicates"), lake.archive("silver", "duplicates")
    assert table_rows(hot) == [(3, TODAY), (4, TODAY)]
    assert table_rows(cold) == [(0, dt.date(2026, 7, 3)), (1, dt.date(2026, 7, 30)), (2, dt.date(2026, 8, 2))]
    assert DeltaTable(cold).metadata().partition_columns == ["event_month"]
    versions = (DeltaTable(hot).version(), DeltaTable(cold).version())

    assert archive.move_table(lake, policy, first_kept) == []
    assert (DeltaTable(hot).version(), DeltaTable(cold).version()) == versions


def test_a_run_cut_off_between_copy_and_delete_is_completed_by_the_next(lake, monkeypatch):
    policy = POLICIES["silver/duplicates"]
    first_kept = cutoff(TODAY, 90).isoformat()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the archive commit, before the delete

    monkeypatch.setattr(archive, "delete_hot", killed)
    with pytest.raises(KeyboardInterrupt):
        archive.move_table(lake, policy, first_kept)
    hot, cold = lake.table("silver", "duplicates"), lake.archive("silver", "duplicates")
    assert len(table_rows(hot)) == 5 and len(table_rows(cold)) == 2  # July copied, nothing deleted
    monkeypatch.undo()

    moves = archive.move_table(lake, policy, first_kept)
    assert [(m.month, m.rows, m.archived, m.deleted) for m in moves] == [("2026-07", 2, 0, 2), ("2026-08", 1, 1, 1)]
    assert [o for o, _ in table_rows(hot)] == [3, 4]
    assert [o for o, _ in table_rows(cold)] == [0, 1, 2]  # each once


def test_nothing_is_deleted_when_the_archive_does_not_hold_the_copy(lake, monkeypatch):
    policy = POLICIES["silver/duplicates"]
    monkeypatch.setattr(archive, "archived_count", lambda *args: 0)
    with pytest.raises(RuntimeError, match="nothing deleted"):
        archive.move_table(lake, policy, cutoff(TODAY, 90).isoformat())
    assert len(table_rows(lake.table("silver", "duplicates"))) == 5
