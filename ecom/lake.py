"""Delta tables of the lake: created once with their declared schemas.

Every table is created explicitly from ``ecom.schemas`` (never inferred) with
deletion vectors off, so delta-rs and DuckDB can read it. ``read_with_archive``
reads a table together with its archive (docs/lifecycle.md).
"""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from ecom.schemas import (
    ALERT_SCHEMA,
    BRONZE_SCHEMA,
    COHORT_SCHEMA,
    CUSTOMER_SCHEMA,
    DUPLICATES_SCHEMA,
    FBT_SCHEMA,
    FX_RATE_SCHEMA,
    MINUTE_METRICS_SCHEMA,
    PRODUCT_SCHEMA,
    PROFILE_SCHEMA,
    QUARANTINE_SCHEMA,
    RECOMMENDATION_SCHEMA,
    RFM_SCHEMA,
    SILVER_SCHEMA,
    SIMILARITY_SCHEMA,
)
from ecom.settings import LakeSettings, Settings

# (layer, table) -> (schema, partition columns)
TABLES: dict[tuple[str, str], tuple[StructType, tuple[str, ...]]] = {
    ("bronze", "transactions"): (BRONZE_SCHEMA, ("ingest_date",)),
    ("silver", "transactions"): (SILVER_SCHEMA, ("event_date",)),
    ("silver", "quarantine"): (QUARANTINE_SCHEMA, ()),
    ("silver", "duplicates"): (DUPLICATES_SCHEMA, ()),
    ("silver", "customer_profiles"): (PROFILE_SCHEMA, ()),
    ("silver", "fraud_alerts"): (ALERT_SCHEMA, ("event_date",)),
    ("gold", "fx_rates"): (FX_RATE_SCHEMA, ()),
    ("gold", "minute_metrics"): (MINUTE_METRICS_SCHEMA, ("event_date",)),
    ("gold", "rfm"): (RFM_SCHEMA, ("as_of",)),
    ("gold", "cohorts"): (COHORT_SCHEMA, ()),
    ("gold", "product_similarity"): (SIMILARITY_SCHEMA, ()),
    ("gold", "frequently_bought_together"): (FBT_SCHEMA, ()),
    ("gold", "recommendations"): (RECOMMENDATION_SCHEMA, ()),
    ("gold", "products"): (PRODUCT_SCHEMA, ()),
    ("gold", "customers"): (CUSTOMER_SCHEMA, ()),
}


def ensure_table(spark: SparkSession, path: str, schema: StructType, partition_by: tuple[str, ...] = ()) -> None:
    """Create an empty Delta table with ``schema`` at ``path`` if none is there."""
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    builder.property("delta.enableDeletionVectors", "false").execute()


def prepare_lake(spark: SparkSession, settings: Settings) -> None:
    """Bring tables an earlier version wrote up to today's schemas, then create every table of ``TABLES`` that
    does not exist yet."""
    from ecom.upgrades import migrate_lake

    migrate_lake(settings)
    for (layer, name), (schema, partition_by) in TABLES.items():
        ensure_table(spark, settings.lake.table(layer, name), schema, partition_by)


def read_with_archive(spark: SparkSession, lake: LakeSettings, layer: str, name: str) -> DataFrame:
    """A lake table's hot rows and the rows the lifecycle moved to its archive (``archive/<layer>/<table>``,
    docs/lifecycle.md), in the hot table's columns: the whole history, for batch jobs that look back further
    than the hot horizon."""
    hot = spark.read.format("delta").load(lake.table(layer, name))
    archive = lake.archive(layer, name)
    if not DeltaTable.isDeltaTable(spark, archive):
        return hot
    return hot.unionByName(spark.read.format("delta").load(archive).select(*hot.columns))
