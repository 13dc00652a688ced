"""The lake migration list against the schemas' history, and the PostgreSQL migration checksums."""

import pytest

from ecom.schemas import SILVER_SCHEMA
from ecom.upgrades import LAKE_MIGRATIONS, schema_before
from serving import db

# silver/transactions as the first committed version (de5a02a) created it: the lake an old checkout wrote.
FIRST_SILVER_COLUMNS = [
    "event_id", "transaction_id", "event_time", "customer_id", "customer_email_hash", "items", "item_count",
    "amount", "currency", "payment_method", "channel", "device_id", "ip_country", "shipping_country",
    "schema_version", "event_date", "kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
    "processed_time", "pipeline_version",
]  # fmt: skip


def test_versions_are_numbered_from_one_without_gaps():
    assert [m.version for m in LAKE_MIGRATIONS] == list(range(1, len(LAKE_MIGRATIONS) + 1))
    assert len({m.name for m in LAKE_MIGRATIONS}) == len(LAKE_MIGRATIONS)


@pytest.mark.parametrize("migration", LAKE_MIGRATIONS, ids=lambda m: m.name)
def test_each_migration_adds_declared_nullable_columns_the_previous_schema_lacks(migration):
    before = schema_before(migration)
    assert all(f.nullable for f in migration.fields)  # Delta can only add a column existing rows read as null
    assert not set(migration.columns) & set(before.fieldNames())
    assert set(migration.columns) <= set(migration.schema.fieldNames())


def test_the_first_migration_starts_from_the_first_committed_silver_schema():
    first = next(m for m in LAKE_MIGRATIONS if (m.layer, m.table) == ("silver", "transactions"))
    assert schema_before(first).fieldNames() == FIRST_SILVER_COLUMNS
    added = [c for m in LAKE_MIGRATIONS if (m.layer, m.table) == ("silver", "transactions") for c in m.columns]
    assert sorted(FIRST_SILVER_COLUMNS + added) == sorted(SILVER_SCHEMA.fieldNames())


def test_a_changed_applied_migration_is_named(tmp_path):
    path = tmp_path / "0001_first.sql"
    path.write_text("CREATE TABLE a (x int);\n")
    recorded = {1: db.migration_checksum(path), 2: None}
    db.check_checksums(recorded, [(1, path)])  # unchanged: no error
    path.write_text("CREATE TABLE a (x bigint);\n")
    with pytest.raises(db.MigrationChanged, match="0001_first.sql"):
        db.check_checksums(recorded, [(1, path)])
