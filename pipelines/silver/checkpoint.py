"""The silver stream's checkpoint: one stream at a time on it, and the stream's name in the bookkeeping.

- ``CheckpointLock``: taken by ``job.start`` before the stream writes anything (lake tables, checkpoint,
  PostgreSQL), held while the process lives. A second stream on a checkpoint in use is refused
  (``CheckpointInUse``). Local paths: an exclusive ``flock`` on ``<checkpoint>.lock``; the kernel releases it
  when the holder dies, kill -9 included, so a stale lock never blocks a restart. Object-store paths
  (``s3a://``, ``gs://``, ``abfss://``...), which have no locks of their own: a PostgreSQL session advisory
  lock on the checkpoint's name, held on a connection of its own; PostgreSQL releases it when that connection
  ends (the holder died, kill -9 included) and also when PostgreSQL itself restarts, so during a PostgreSQL
  restart a second stream is not kept out.
- ``sink_id``: the stream's name in the bookkeeping (PostgreSQL ``pipeline_batches``, Delta commit tags):
  a digest of the checkpoint location and the id of the query that runs on it. The query id comes from
  Spark's running query (``StreamingQuery.id``, the id Spark keeps in the checkpoint), so any checkpoint
  location works, and a checkpoint deleted and started again is a new stream whose batch 0 is not the old
  one's.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from ecom.runtime.process import ServiceError
from serving import db

LOCK_SUFFIX = ".lock"


class CheckpointInUse(ServiceError):
    """Another stream runs on this checkpoint."""


def is_local(location: str) -> bool:
    """A path on this machine's file system (no scheme, or ``file:``)."""
    return "://" not in location or location.startswith("file:")


def local_path(location: str) -> Path:
    return Path(location.removeprefix("file://").removeprefix("file:"))


class CheckpointLock:
    """Held while the stream on ``location`` runs; ``release`` (or the process ending) lets the next one in."""

    def __init__(self, location: str, dsn: str):
        self.location = location
        self._file = None
        self._conn = None
        if is_local(location):
            self._lock_file(local_path(location).with_name(local_path(location).name + LOCK_SUFFIX))
        else:
            self._lock_in_postgres(dsn)

    def _lock_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held open for the life of the stream
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise CheckpointInUse(
                f"checkpoint {self.location} is in use by another stream ({holder}); stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._file = handle

    def _lock_in_postgres(self, dsn: str) -> None:
        conn = db.connect(dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"ecom-checkpoint:{self.location}",))
            held = cur.fetchone()[0]
        if not held:
            conn.close()
            raise CheckpointInUse(f"checkpoint {self.location} is in use by another stream; stop it first")
        self._conn = conn

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def sink_id(checkpoint: str, query_id: str = "") -> str:
    """The stream's name in the bookkeeping: checkpoint location and query id (none when no query runs it)."""
    return f"silver-{hashlib.sha1(f'{checkpoint}#{query_id}'.encode()).hexdigest()[:12]}"
