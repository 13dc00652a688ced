"""Compaction and VACUUM on real Delta tables, with the stream's own writer appending during compaction."""

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake

from ecom import maintenance
from ecom.schemas import PROFILE_SCHEMA
from ecom.settings import child_environment
from pipelines.silver.sinks import LakeSink
from tests.integration.lake_rows import bronze_rows, lake_settings, sample_rows

pytestmark = pytest.mark.integration

BRONZE = ("bronze", "transactions")


def fill(sink: LakeSink, batches: int, rows: int = 5, first_batch: int = 0) -> int:
    """Append ``batches`` micro-batches as the stream does (one commit each, tagged); returns rows written."""
    for b in range(first_batch, first_batch + batches):
        sink.append(lambda b=b: bronze_rows(b * rows, rows), *BRONZE, LakeSink.tag("test", b), retry=False)
    return batches * rows


def offsets(path: str) -> list[int]:
    return sorted(DeltaTable(path).to_pyarrow_table(columns=["kafka_offset"])["kafka_offset"].to_pylist())


def duckdb_counts(path: str) -> tuple[int, int]:
    con = duckdb.connect()
    con.register("bronze", DeltaTable(path).to_pyarrow_dataset())
    return con.execute("SELECT count(*), count(DISTINCT kafka_offset) FROM bronze").fetchone()


def log_actions(path: str, version: int) -> list[dict]:
    lines = (Path(path) / "_delta_log" / f"{version:020d}.json").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_compaction_rewrites_small_files_and_loses_no_append_made_during_it(settings, tmp_path):
    settings = lake_settings(settings, tmp_path)
    sink = LakeSink(settings.lake)
    path = settings.lake.table(*BRONZE)
    written = fill(sink, 40)
    stop, streamed, errors = threading.Event(), [], []

    def stream() -> None:  # the silver stream's lake sink, appending micro-batches while compaction runs
        batch = 1000
        while not stop.is_set():
            try:
                sink.append(lambda b=batch: bronze_rows(b * 5, 5), *BRONZE, LakeSink.tag("live", batch), retry=False)
                streamed.extend(range(batch * 5, batch * 5 + 5))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
            batch += 1

    appender = threading.Thread(target=stream)
    appender.start()
    try:
        while len(streamed) < 10:  # the stream is writing before compaction starts
            time.sleep(0.01)
        (result,) = maintenance.compact(settings, [BRONZE], echo=lambda _: None)
    finally:
        stop.set()
        appender.join()

    assert errors == []
    assert result.files_before >= 40 and result.files_removed >= 40
    assert maintenance.file_count(path) < result.files_before
    expected = sorted([*range(written), *streamed])
    assert offsets(path) == expected  # nothing lost, nothing twice
    assert duckdb_counts(path) == (len(expected), len(expected))
    compaction = next(c for c in DeltaTable(path).history() if c["operation"] == "OPTIMIZE")
    actions = log_actions(path, compaction["version"])
    changes = [a.get("add") or a.get("remove") for a in actions if "add" in a or "remove" in a]
    assert changes and all(change["dataChange"] is False for change in changes)  # Delta streams skip it
    protocol = DeltaTable(path).protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)


def test_vacuum_keeps_what_time_travel_within_the_retention_needs(settings, tmp_path):
    settings = lake_settings(settings, tmp_path)
    path = settings.lake.table(*BRONZE)
    written = fill(LakeSink(settings.lake), 12)
    before_compaction = DeltaTable(path).version()
    maintenance.compact(settings, [BRONZE], echo=lambda _: None)

    (kept,) = maintenance.vacuum(settings, [BRONZE], echo=lambda _: None)  # the configured week
    assert kept.files_deleted == 0
    old = DeltaTable(path, version=before_compaction).to_pyarrow_table(columns=["kafka_offset"])
    assert sorted(old["kafka_offset"].to_pylist()) == list(range(written))

    with pytest.raises(Exception, match="(?i)retention"):  # shorter than the table's own retention: refused
        maintenance.vacuum_table(path, 1)
    gone = maintenance.vacuum_table(path, 0, enforce=False)
    assert gone.files_deleted == 12
    assert offsets(path) == list(range(written))
    with pytest.raises(Exception):  # noqa: B017 - the compacted-away files of the old version are deleted
        DeltaTable(path, version=before_compaction).to_pyarrow_table()


def test_maintain_command_reports_files_per_table(settings, tmp_path):
    settings = lake_settings(settings, tmp_path)
    fill(LakeSink(settings.lake), 6)
    out = subprocess.run(
        [sys.executable, "-m", "ecom.cli", "maintain", "all", "--json"],
        env=child_environment(settings),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    (bronze,) = result["compact"]  # only the tables that exist
    assert (bronze["table"], bronze["files_before"], bronze["files_after"]) == ("bronze/transactions", 6, 1)
    assert result["vacuum"][0]["files_deleted"] == 0
    assert "[1/1] bronze/transactions: 6 -> 1 files" in out.stderr


def test_a_profile_snapshot_that_loses_to_a_compaction_merges_again(settings, tmp_path, monkeypatch):
    from deltalake.table import TableMerger

    from ml.features import Profile
    from pipelines.silver.state import CustomerState, snapshot_offsets

    settings = lake_settings(settings, tmp_path)
    path = settings.lake.table("silver", "customer_profiles")
    for i in range(3):  # three snapshots' small files
        write_deltalake(path, sample_rows(PROFILE_SCHEMA, i, 1), mode="append")
    state = CustomerState()
    changed = [Profile.from_row(row) for row in sample_rows(PROFILE_SCHEMA, 1, 3).to_pylist()]
    state.apply({p.customer_id: p for p in changed}, pd.DataFrame({"kafka_partition": [0], "kafka_offset": [41]}))
    original, raced = TableMerger.execute, []

    def compaction_first(merger):  # a compaction commits between the merge's read and its commit
        if not raced:
            raced.append(maintenance.compact_table(path, settings.maintenance))
        return original(merger)

    monkeypatch.setattr(TableMerger, "execute", compaction_first)

    assert state.snapshot(path) == 3

    assert raced[0].files_removed == 3
    table = DeltaTable(path)
    assert sorted(table.to_pyarrow_table()["customer_id"].to_pylist()) == [f"customer_id-{i}" for i in range(4)]
    assert snapshot_offsets(table.history()) == {0: 41}


def test_a_delta_stream_reads_each_row_once_across_a_compaction(settings, spark, tmp_path):
    settings = lake_settings(settings, tmp_path)
    sink, path = LakeSink(settings.lake), settings.lake.table(*BRONZE)
    seen: list[int] = []

    def stream_available() -> None:  # a Delta stream over the table, as the live gold metrics read silver
        query = (
            spark.readStream.format("delta")
            .load(path)
            .writeStream.foreachBatch(lambda df, _: seen.extend(r[0] for r in df.select("kafka_offset").collect()))
            .option("checkpointLocation", str(tmp_path / "stream-checkpoint"))
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()

    fill(sink, 5)
    stream_available()
    maintenance.compact(settings, [BRONZE], echo=lambda _: None)
    fill(sink, 2, first_batch=5)
    stream_available()

    assert sorted(seen) == list(range(35))  # the compacted rows are not read again, the later ones are read


def test_a_retention_delete_that_loses_to_a_compaction_deletes_again(settings, tmp_path, monkeypatch):
    """The lifecycle's delete from a hot table conflicts with a compaction that rewrote the same files first; it
    reads the table again and deletes: the archive and the hot table each hold their rows once."""
    from deltalake.table import TableMerger

    from pipelines.lifecycle import archive
    from pipelines.lifecycle.policy import LAKE_POLICIES, cutoff

    settings = lake_settings(settings, tmp_path)
    path = settings.lake.table(*BRONZE)
    today = dt.date.today()
    old = today - dt.timedelta(days=settings.retention.days + 30)
    for b in range(6):  # small files, past the horizon and inside it
        rows = bronze_rows(b * 5, 5, old if b < 4 else today)
        write_deltalake(path, rows, mode="append", partition_by=["ingest_date"])
    original, raced = TableMerger.execute, []

    def compaction_first(merger):  # a compaction commits between the hot delete's read and its commit
        if not raced and merger._table.table_uri().rstrip("/") == f"file://{path}":  # not the archive's merge
            raced.append(maintenance.compact_table(path, settings.maintenance))
        return original(merger)

    monkeypatch.setattr(TableMerger, "execute", compaction_first)
    policy = next(p for p in LAKE_POLICIES if p.name == "bronze/transactions")

    moves = archive.move_table(settings.lake, policy, cutoff(today, settings.retention.days).isoformat())

    assert raced and raced[0].files_removed >= 4  # the compaction rewrote the files the delete had read
    assert sum(m.rows for m in moves) == 20
    assert offsets(path) == list(range(20, 30))
    assert offsets(settings.lake.archive(*BRONZE)) == list(range(20))
