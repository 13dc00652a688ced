"""Lake schema migrations: a table written with the previous schema is upgraded, and today's stream appends to it."""

import duckdb
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import SchemaMismatchError

from ecom.lake import TABLES, prepare_lake
from ecom.schemas import SILVER_SCHEMA
from ecom.upgrades import LAKE_MIGRATIONS, PROPERTY, migrate_lake, schema_before
from pipelines.silver.sinks import LakeSink
from tests.integration.lake_rows import lake_settings, sample_rows

pytestmark = pytest.mark.integration

SILVER = ("silver", "transactions")


def columns(path: str) -> list[str]:
    return DeltaTable(path).schema().to_arrow().names


@pytest.mark.parametrize("migration", LAKE_MIGRATIONS, ids=lambda m: m.name)
def test_a_table_with_the_previous_schema_is_upgraded_and_keeps_its_rows(settings, tmp_path, migration):
    settings = lake_settings(settings, tmp_path)
    path = settings.lake.table(migration.layer, migration.table)
    before = schema_before(migration)
    write_deltalake(path, sample_rows(before, 0, 3), partition_by=list(TABLES[(migration.layer, migration.table)][1]))
    earlier = [m.version for m in LAKE_MIGRATIONS if m.version < migration.version]
    migrate_lake(settings, up_to=max(earlier, default=0))  # the lake as the previous version left it

    (applied,) = migrate_lake(settings, up_to=migration.version)

    assert (applied.version, applied.added) == (migration.version, migration.columns)
    assert columns(path) == [*before.fieldNames(), *migration.columns]
    rows = DeltaTable(path).to_pyarrow_table().sort_by("kafka_offset").to_pylist()
    assert [r["kafka_offset"] for r in rows] == [0, 1, 2]
    assert all(r[c] is None for r in rows for c in migration.columns)  # existing rows read the new columns as null
    assert DeltaTable(path).metadata().configuration[PROPERTY] == str(migration.version)


def test_a_lake_from_the_first_version_takes_todays_appends(settings, tmp_path):
    settings = lake_settings(settings, tmp_path)
    path = settings.lake.table(*SILVER)
    first = schema_before(LAKE_MIGRATIONS[0])
    write_deltalake(path, sample_rows(first, 0, 3), partition_by=["event_date"])
    sink = LakeSink(settings.lake)
    today = sample_rows(SILVER_SCHEMA, 3, 2)
    with pytest.raises(SchemaMismatchError):  # what an upgraded checkout met before lake migrations
        sink.append(lambda: today, *SILVER, LakeSink.tag("test", 0), retry=False)

    applied = migrate_lake(settings)

    assert [a.version for a in applied] == [m.version for m in LAKE_MIGRATIONS]
    assert sorted(columns(path)) == sorted(SILVER_SCHEMA.fieldNames())
    sink.append(lambda: today, *SILVER, LakeSink.tag("test", 1), retry=False)  # the stream's own append
    con = duckdb.connect()
    con.register("silver", DeltaTable(path).to_pyarrow_dataset())
    assert con.execute(
        "SELECT kafka_offset, fraud_score, prior_tx_count FROM silver ORDER BY kafka_offset"
    ).fetchall() == [(0, None, None), (1, None, None), (2, None, None), (3, 3.5, 3), (4, 4.5, 4)]
    assert migrate_lake(settings) == []  # applied once


def test_a_spark_job_upgrades_the_old_lake_it_prepares(settings, spark, tmp_path):
    from ecom.lake import ensure_table

    settings = lake_settings(settings, tmp_path)
    path = settings.lake.table(*SILVER)
    ensure_table(spark, path, schema_before(LAKE_MIGRATIONS[0]), ("event_date",))  # as the first version did

    prepare_lake(spark, settings)

    read = spark.read.format("delta").load(path)
    assert sorted(read.schema.fieldNames()) == sorted(SILVER_SCHEMA.fieldNames())
    LakeSink(settings.lake).append(lambda: sample_rows(SILVER_SCHEMA, 0, 2), *SILVER, "test:0", retry=False)
    assert spark.read.format("delta").load(path).where("fraud_score IS NOT NULL").count() == 2
    assert all(DeltaTable(settings.lake.table(*t)).version() >= 0 for t in TABLES)  # the rest created
