"""Backup and restore: the lake pinned per table plus pg_dump, restored into a scratch lake and database."""

import datetime as dt
import subprocess
import sys
import uuid

import duckdb
import pytest
from deltalake import DeltaTable

from ecom import backup, maintenance
from ecom.runtime.process import ServiceError
from ecom.settings import child_environment
from pipelines.silver.sinks import LakeSink
from serving import db
from tests.integration.lake_rows import bronze_rows, lake_settings

pytestmark = pytest.mark.integration

COLUMNS = ("event_id", "transaction_id", "event_time", "customer_id", "amount", "currency", "payment_method",
           "channel", "item_count", "processed_time")  # fmt: skip


def served(event_ids) -> list[tuple]:
    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    return [(e, "t", now, "C1", "10.00", "USD", "card", "web", 1, now) for e in event_ids]


def serve(dsn: str, batch_id: int, event_ids) -> None:
    conn = db.connect(dsn)
    try:
        db.commit_batch(conn, "backup-test", batch_id, "transactions", COLUMNS, ("event_id",), served(event_ids))
    finally:
        conn.close()


def event_ids(dsn: str) -> list[str]:
    with db.connection(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id FROM transactions ORDER BY event_id")
        return [r[0] for r in cur.fetchall()]


def with_database(settings, name: str):
    return settings.model_copy(update={"postgres": settings.postgres.model_copy(update={"database": name})})


@pytest.fixture
def source(stack, tmp_path):
    settings = with_database(lake_settings(stack, tmp_path / "source"), f"test_backup_{uuid.uuid4().hex[:8]}")
    db.recreate_database(settings.postgres.dsn)
    yield settings
    db.drop_database(settings.postgres.dsn)


def test_restore_into_a_scratch_location_gives_the_pinned_versions_and_the_dumped_database(source, tmp_path):
    sink = LakeSink(source.lake)
    for b in range(3):  # bronze at version 2, compacted at 3; an archive table (found anywhere under the root)
        sink.append(lambda b=b: bronze_rows(b * 4, 4), "bronze", "transactions", f"s:{b}", retry=False)
    maintenance.compact(source, [("bronze", "transactions")], echo=lambda _: None)
    sink.append(lambda: bronze_rows(100, 2), "archive/bronze", "transactions", "s:a", retry=False)
    serve(source.postgres.dsn, 0, ["a", "b"])
    checkpoint = tmp_path / "source" / "checkpoints" / "ingest" / "commits"
    checkpoint.mkdir(parents=True)
    (checkpoint / "0").write_text("v1\n")

    manifest = backup.create(source, tmp_path / "backup", echo=lambda _: None)

    assert {n: t["version"] for n, t in manifest["tables"].items()} == {
        "bronze/transactions": 3,
        "archive/bronze/transactions": 0,
    }
    assert list(manifest["tables"]) == ["bronze/transactions", "archive/bronze/transactions"]  # hot before archive
    # the stream goes on after the backup
    sink.append(lambda: bronze_rows(50, 4), "bronze", "transactions", "s:3", retry=False)
    serve(source.postgres.dsn, 1, ["c"])

    target = with_database(lake_settings(source, tmp_path / "scratch"), f"{source.postgres.database}_restored")
    env = child_environment(source)
    try:
        subprocess.run(
            [sys.executable, "-m", "ecom.cli", "backup", "restore", str(tmp_path / "backup"),
             "--lake-root", target.lake.root, "--checkpoints", target.lake.checkpoints,
             "--database", target.postgres.database],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        restored = DeltaTable(target.lake.table("bronze", "transactions"))
        assert restored.version() == 3
        offsets = sorted(restored.to_pyarrow_table(columns=["kafka_offset"])["kafka_offset"].to_pylist())
        assert offsets == list(range(12))  # as pinned: not the append made after the backup
        before_compaction = DeltaTable(target.lake.table("bronze", "transactions"), version=1)
        assert before_compaction.to_pyarrow_table().num_rows == 8  # time travel as far back as the source had
        con = duckdb.connect()
        con.register("archive", DeltaTable(target.lake.table("archive/bronze", "transactions")).to_pyarrow_dataset())
        assert con.execute("SELECT min(kafka_offset), count(*) FROM archive").fetchone() == (100, 2)
        assert event_ids(target.postgres.dsn) == ["a", "b"]
        assert (tmp_path / "scratch" / "checkpoints" / "ingest" / "commits" / "0").read_text() == "v1\n"
        assert event_ids(source.postgres.dsn) == ["a", "b", "c"]  # the source is untouched
        with pytest.raises(ServiceError, match="not empty"):  # a restore never overwrites without --replace
            backup.restore(target, tmp_path / "backup", echo=lambda _: None)
    finally:
        db.drop_database(target.postgres.dsn)
