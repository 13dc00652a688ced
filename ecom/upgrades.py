"""Upgrades: the lake's schema changes, versioned like the PostgreSQL migrations, and ``ecom migrate``.

A lake written by an earlier version holds tables with that version's
schemas. Each change since the first committed schemas (``ecom.schemas``) is a
numbered ``LakeMigration`` in ``LAKE_MIGRATIONS``: it adds its columns, typed
as ``ecom.schemas`` declares them today, to one existing table (delta-rs
``alter.add_columns``; a metadata commit, no data rewritten, rows written
before read the new columns as null). A table that does not exist yet is
created later with today's schema (``ecom.lake.prepare_lake``), so nothing is
added to it.

Each table records the last migration it has had in its table property
``ecom.lakeMigration``. Migrations are idempotent: a column already there is not
added again, so a run cut off between the columns' commit and the property's
is completed by the next. They run with ``ecom up``, ``ecom migrate`` and
before any Spark job prepares the lake, before the streams write.

The PostgreSQL side is ``serving.db.migrate`` (numbered SQL files, with
checksums); ``migrate_all`` runs both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import types as T

from ecom.schemas import SILVER_SCHEMA
from ecom.settings import Settings

PROPERTY = "ecom.lakeMigration"


@dataclass(frozen=True)
class LakeMigration:
    """Columns added to one lake table (in ``schema``, today's declaration of it), numbered like SQL migrations."""

    version: int
    name: str
    layer: str
    table: str
    schema: T.StructType
    columns: tuple[str, ...]

    @property
    def fields(self) -> list[T.StructField]:
        return [self.schema[c] for c in self.columns]

    @property
    def tag(self) -> str:
        return f"ecom-lake-migration:{self.version:04d}_{self.name}"


# Column lists are written out, not taken from the feature or score lists: a released migration never changes.
LAKE_MIGRATIONS: tuple[LakeMigration, ...] = (
    LakeMigration(
        1,
        "silver_history_features",
        "silver",
        "transactions",
        SILVER_SCHEMA,
        (
            "amount_value",
            "hour_of_day",
            "day_of_week",
            "prior_tx_count",
            "prior_avg_amount",
            "amount_to_avg_ratio",
            "amount_zscore",
            "seconds_since_last_order",
            "is_new_device",
            "is_new_ip_country",
            "is_country_mismatch",
        ),
    ),
    LakeMigration(
        2,
        "silver_fraud_scores",
        "silver",
        "transactions",
        SILVER_SCHEMA,
        ("fraud_score", "is_fraud", "model_version", "fraud_reasons"),
    ),
    LakeMigration(
        3,
        "silver_velocity_features",
        "silver",
        "transactions",
        SILVER_SCHEMA,
        (
            "customer_orders_10m",
            "customer_orders_1h",
            "device_orders_10m",
            "device_orders_1h",
            "device_payment_methods_1h",
        ),
    ),
)


@dataclass(frozen=True)
class Applied:
    """One migration run on one table now: the columns it added (none when they were there)."""

    version: int
    name: str
    table: str
    added: tuple[str, ...]


def schema_before(migration: LakeMigration, migrations: tuple[LakeMigration, ...] = LAKE_MIGRATIONS) -> T.StructType:
    """The table's schema as an earlier version wrote it, just before ``migration`` (for tests and checks)."""
    later = {
        c
        for m in migrations
        if (m.layer, m.table) == (migration.layer, migration.table) and m.version >= migration.version
        for c in m.columns
    }
    return T.StructType([f for f in migration.schema.fields if f.name not in later])


def recorded_version(table) -> int:
    """The last lake migration recorded on a delta-rs table (0: none)."""
    return int(table.metadata().configuration.get(PROPERTY, "0"))


def _delta_field(field: T.StructField):
    import json

    from deltalake import Field

    return Field.from_json(json.dumps(field.jsonValue()))


def apply_migration(path: str, migration: LakeMigration) -> tuple[str, ...]:
    """Add the migration's missing columns to the table at ``path`` and record it; returns the columns added."""
    from deltalake import CommitProperties

    from ecom.storage import delta_table

    table = delta_table(path)
    missing = _missing(table, migration)
    for field in missing:
        if not field.nullable:
            raise ValueError(f"{migration.tag}: column {field.name} must be nullable to be added to rows")
    if missing:
        try:
            table.alter.add_columns(
                [_delta_field(f) for f in missing],
                commit_properties=CommitProperties(custom_metadata={"userMetadata": migration.tag}),
            )
        except Exception:  # another process (a job starting at the same time) may have added them first
            if _missing(delta_table(path), migration):
                raise
        table = delta_table(path)
    if recorded_version(table) < migration.version:
        try:
            table.alter.set_table_properties({PROPERTY: str(migration.version)}, raise_if_not_exists=False)
        except Exception:
            if recorded_version(delta_table(path)) < migration.version:
                raise
    return tuple(f.name for f in missing)


def _missing(table, migration: LakeMigration) -> list[T.StructField]:
    present = set(table.schema().to_arrow().names)
    return [f for f in migration.fields if f.name not in present]


def pending(settings: Settings, migrations: tuple[LakeMigration, ...] = LAKE_MIGRATIONS) -> list[LakeMigration]:
    """The migrations an existing table has not recorded yet."""
    from ecom.storage import delta_table, is_delta_table

    out = []
    for m in migrations:
        path = settings.lake.table(m.layer, m.table)
        if is_delta_table(path) and recorded_version(delta_table(path)) < m.version:
            out.append(m)
    return out


def migrate_lake(
    settings: Settings,
    migrations: tuple[LakeMigration, ...] = LAKE_MIGRATIONS,
    up_to: int | None = None,
    echo: Callable[[str], None] = lambda _: None,
) -> list[Applied]:
    """Apply the pending lake migrations (up to version ``up_to``) in order; returns what ran."""
    done = []
    for m in pending(settings, migrations):
        if up_to is not None and m.version > up_to:
            break
        added = apply_migration(settings.lake.table(m.layer, m.table), m)
        name = f"{m.layer}/{m.table}"
        echo(
            f"lake       {m.version:04d}_{m.name} on {name}: " + (f"added {', '.join(added)}" if added else "recorded")
        )
        done.append(Applied(m.version, m.name, name, added))
    return done


def migrate_all(settings: Settings, echo: Callable[[str], None] = print) -> None:
    """``ecom migrate``: the PostgreSQL migrations, then the lake's."""
    from serving.db import migrate

    applied = migrate(settings.postgres.dsn)
    echo(f"postgres   schema up to date{f' (applied {applied})' if applied else ''}")
    lake = migrate_lake(settings, echo=echo)
    echo(f"lake       schemas up to date{f' ({len(lake)} migrations applied)' if lake else ''}")
