"""PostgreSQL migrations carry checksums: recorded, filled for older databases, and an edited one is refused."""

import shutil
import subprocess
import sys
import uuid

import pytest

from ecom.settings import child_environment
from serving import db

pytestmark = pytest.mark.integration


def recorded(dsn: str) -> dict[int, str | None]:
    with db.connection(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT version, checksum FROM schema_migrations")
        return dict(cur.fetchall())


@pytest.fixture
def scratch(stack):
    settings = stack.model_copy(
        update={"postgres": stack.postgres.model_copy(update={"database": f"test_checksums_{uuid.uuid4().hex[:8]}"})}
    )
    db.recreate_database(settings.postgres.dsn)
    yield settings
    db.drop_database(settings.postgres.dsn)


def test_checksums_are_recorded_and_filled_in_for_a_database_from_before_them(scratch):
    dsn = scratch.postgres.dsn
    files = db.migration_files()
    expected = {version: db.migration_checksum(path) for version, path in files}
    assert recorded(dsn) == expected
    checksums_version = next(v for v, p in files if p.name.endswith("_migration_checksums.sql"))
    with db.connection(dsn) as conn, conn.cursor() as cur:  # as a database migrated by the previous version
        cur.execute("ALTER TABLE schema_migrations DROP COLUMN checksum")
        cur.execute("DELETE FROM schema_migrations WHERE version >= %s", (checksums_version,))

    assert db.migrate(dsn) == [v for v, _ in files if v >= checksums_version]
    assert recorded(dsn) == expected
    assert db.migrate(dsn) == []


def test_an_edited_applied_migration_stops_migrate_with_its_name(scratch, tmp_path, monkeypatch):
    dsn = scratch.postgres.dsn
    edited = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, edited)
    target = edited / "0003_gold.sql"
    target.write_text(target.read_text() + "\n-- edited after it was applied\n")
    monkeypatch.setattr(db, "MIGRATIONS_DIR", edited)

    with pytest.raises(db.MigrationChanged, match="0003_gold.sql"):
        db.migrate(dsn)

    monkeypatch.undo()
    assert db.migrate(dsn) == []  # the original file is accepted again


def test_migrate_command_applies_both_sides(scratch):
    out = subprocess.run(
        [sys.executable, "-m", "ecom.cli", "migrate"],
        env=child_environment(scratch),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "postgres   schema up to date" in out.stdout and "lake       schemas up to date" in out.stdout
