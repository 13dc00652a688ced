"""Background processes with pid files: start detached, check, stop.

Every embedded service (Kafka broker, PostgreSQL, MLflow UI, the demo's
streaming jobs and dashboard) is one ``ManagedProcess`` under ``<data_dir>/run``.

A pid file names one process, not one number: it records the pid together with
the process's start time (``/proc/<pid>/stat`` field 22, clock ticks since
boot) and the boot id. A pid that now belongs to another process (the recorded
one died and the kernel reused its number) is a stale file: it is removed and
never signalled. Pid files of older versions hold only the pid; they are
trusted only for a process that started before the file was written.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ecom.errors import ServiceError  # noqa: F401  (defined with the other exit codes; imported from here too)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int, what: str) -> None:
    if port_open(host, port):
        raise ServiceError(
            f"port {host}:{port} for {what} is already taken by another process; free it or set another port"
        )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = proc_stat(pid)
    return fields is None or fields[0] != "Z"  # a zombie counts as dead


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return check()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields and int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


GROUP_STOP = ((signal.SIGINT, 15.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0))


def stop_group(pgid: int, steps: Sequence[tuple[signal.Signals, float]] = GROUP_STOP) -> bool:
    """Signal every process of group ``pgid`` (Ctrl-C first, then SIGTERM, then SIGKILL, each after a grace
    period) until none is left; True if the group is empty.

    Only for a group known to be ours: its leader is the caller's child not reaped yet, or was checked by its
    identity. The kernel does not give a group's id to a new process while any member of the group lives."""
    for sig, grace_s in steps:
        if not group_members(pgid):
            return True
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:  # not every member is ours to signal: signal those that are
            for member in group_members(pgid):
                with contextlib.suppress(OSError):
                    os.kill(member, sig)
        if wait_until(lambda: not group_members(pgid), grace_s, interval_s=0.1):
            return True
    return not group_members(pgid)


LEGACY_SLACK_S = 2.0  # /proc/stat's boot time has whole seconds: allow for rounding when comparing with a file's mtime


def proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` from the state on (field 3), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22); None if unknown."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields else None


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class ProcessIdentity:
    """One process: its pid plus what tells it apart from a later process given the same pid."""

    pid: int
    start_ticks: int | None
    boot_id: str | None

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        """The identity of the live process ``pid``."""
        return cls(pid, start_ticks(pid), boot_id())

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "start_ticks": self.start_ticks, "boot_id": self.boot_id})

    def is_alive(self) -> bool:
        """True only while this very process runs (not a zombie, not another process with the same pid)."""
        if not pid_alive(self.pid):
            return False
        if self.start_ticks is None:  # no /proc on this system: the pid is all there is
            return True
        return self.boot_id == boot_id() and start_ticks(self.pid) == self.start_ticks


def _started_before(pid: int, written_at: float) -> bool:
    """A pid file of an older version (pid only): trust it only for a process started before it was written."""
    ticks, booted = start_ticks(pid), _boot_time()
    if ticks is None or booted is None:
        return True
    return booted + ticks / os.sysconf("SC_CLK_TCK") <= written_at + LEGACY_SLACK_S


@dataclass
class ManagedProcess:
    """A detached process whose identity (pid, start time, boot id) lives in ``<run_dir>/<name>.pid``."""

    name: str
    run_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def identity(self) -> ProcessIdentity | None:
        """The process the pid file names if it still runs; a stale file (gone, or pid reused) is removed."""
        try:
            text = self.pid_file.read_text().strip()
            written_at = self.pid_file.stat().st_mtime
        except FileNotFoundError:
            return None
        identity = None
        try:
            if text.startswith("{"):
                raw = json.loads(text)
                identity = ProcessIdentity(int(raw["pid"]), raw.get("start_ticks"), raw.get("boot_id"))
            else:
                pid = int(text)
                if _started_before(pid, written_at):
                    identity = ProcessIdentity.of(pid)
        except (ValueError, KeyError, TypeError):
            identity = None
        if identity is not None and identity.is_alive():
            return identity
        self.pid_file.unlink(missing_ok=True)
        return None

    def _record(self, pid: int) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_file.with_name(f".{self.pid_file.name}.{os.getpid()}")
        tmp.write_text(ProcessIdentity.of(pid).to_json() + "\n")
        tmp.replace(self.pid_file)  # readers never see half a file

    def pid(self) -> int | None:
        """The live pid of the process this file names, or None (a stale file is removed)."""
        identity = self.identity()
        return identity.pid if identity else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None) -> int:
        """Start ``cmd`` detached (own session), output appended to the log file."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                list(cmd),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        self._record(proc.pid)
        return proc.pid

    def adopt(self, pid: int) -> None:
        """Record a pid started by someone else (e.g. pg_ctl's postmaster)."""
        self._record(pid)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the process and its group, SIGKILL after ``timeout_s``; True if something was stopped.

        Only the process the pid file names is stopped, checked by its identity. If it leads a process group
        (started in a session of its own), the whole group goes, and ``stop`` returns when none of it is
        left: a child that outlives its parent (a JVM, a worker) is not left behind."""
        identity = self.identity()
        if identity is None:
            return False
        if identity.pid in group_members(identity.pid):
            stop_group(identity.pid, ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)))
        else:
            for sig, grace_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
                if not identity.is_alive():
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(identity.pid, sig)
                if wait_until(lambda: not identity.is_alive(), grace_s):
                    break
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
