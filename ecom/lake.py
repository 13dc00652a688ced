"""Delta tables of the lake: created once with their declared schemas.

Every table is created explicitly from ``ecom.schemas`` (never inferred) with
deletion vectors off, so delta-rs and DuckDB can read it.
"""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql.types import StructType

from ecom.schemas import (
    ALERT_SCHEMA,
    BRONZE_SCHEMA,
    DUPLICATES_SCHEMA,
    PROFILE_SCHEMA,
    QUARANTINE_SCHEMA,
    SILVER_SCHEMA,
)
from ecom.settings import Settings

# (layer, table) -> (schema, partition columns)
TABLES: dict[tuple[str, str], tuple[StructType, tuple[str, ...]]] = {
    ("bronze", "transactions"): (BRONZE_SCHEMA, ("ingest_date",)),
    ("silver", "transactions"): (SILVER_SCHEMA, ("event_date",)),
    ("silver", "quarantine"): (QUARANTINE_SCHEMA, ()),
    ("silver", "duplicates"): (DUPLICATES_SCHEMA, ()),
    ("silver", "customer_profiles"): (PROFILE_SCHEMA, ()),
    ("silver", "fraud_alerts"): (ALERT_SCHEMA, ("event_date",)),
}


def ensure_table(spark: SparkSession, path: str, schema: StructType, partition_by: tuple[str, ...] = ()) -> None:
    """Create an empty Delta table with ``schema`` at ``path`` if none is there."""
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    builder.property("delta.enableDeletionVectors", "false").execute()


def prepare_lake(spark: SparkSession, settings: Settings) -> None:
    """Create every table of ``TABLES`` that does not exist yet."""
    for (layer, name), (schema, partition_by) in TABLES.items():
        ensure_table(spark, settings.lake.table(layer, name), schema, partition_by)
