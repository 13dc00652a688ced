"""Process supervision never signals a process it did not start, even when the kernel reuses a pid.

Real processes, no services: ``sleep`` children, pid files in a temporary run folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from ecom.runtime.process import ManagedProcess, ProcessIdentity, group_members, start_ticks, wait_until

pytestmark = pytest.mark.fault

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


def _spawn_with_pid(pid: int, attempts: int = 50) -> subprocess.Popen | None:
    """A ``sleep`` that gets exactly ``pid`` (Linux hands out ns_last_pid + 1 next); None if not possible here."""
    for _ in range(attempts):
        try:
            with open(NS_LAST_PID, "w") as f:
                f.write(str(pid - 1))
        except OSError:
            return None
        proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


@pytest.fixture
def stranger():
    """A process nobody recorded in a pid file; killed at the end whatever happens."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def test_a_reused_pid_is_a_stale_file_and_never_signalled(tmp_path, stranger):
    managed = ManagedProcess("job", tmp_path)
    pid = managed.start(["sleep", "300"])
    recorded = managed.pid_file.read_text()
    # Start times have clock-tick resolution (10 ms); a pid can only come round again after many more forks.
    time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)  # the job dies behind the supervisor's back (OOM killer, crash, reboot of a host)
    os.waitpid(pid, 0)
    other = _spawn_with_pid(pid)
    if other is None:  # cannot steer pids here: an unrelated process plus the dead job's record is the same state
        other = subprocess.Popen(["sleep", "300"], start_new_session=True)
        recorded = recorded.replace(f'"pid": {pid}', f'"pid": {other.pid}')
    stranger.append(other)
    managed.pid_file.write_text(recorded)  # what the supervisor still holds: the dead job's pid file

    assert managed.stop(timeout_s=2) is False
    assert managed.is_running() is False
    assert not managed.pid_file.exists()
    time.sleep(0.2)
    assert other.poll() is None, "the supervisor signalled a process it did not start"


def test_a_process_the_supervisor_started_is_recorded_with_its_start_time_and_stopped(tmp_path):
    managed = ManagedProcess("job", tmp_path)
    pid = managed.start(["sleep", "300"])
    assert ProcessIdentity.of(pid).start_ticks == start_ticks(pid) is not None
    assert managed.pid() == pid
    assert managed.stop(timeout_s=5) is True
    assert os.waitpid(pid, 0)[0] == pid  # it was ours, it exited


def test_an_old_pid_only_file_is_trusted_only_for_a_process_started_before_it_was_written(tmp_path, stranger):
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    stranger.append(other)
    before = ManagedProcess("older-than-its-process", tmp_path)
    before.pid_file.write_text(str(other.pid))
    an_hour_ago = time.time() - 3600
    os.utime(before.pid_file, (an_hour_ago, an_hour_ago))  # written long before this process started: reused pid
    assert before.stop(timeout_s=2) is False
    assert other.poll() is None

    after = ManagedProcess("written-after-start", tmp_path)
    after.pid_file.write_text(str(other.pid))  # what a running stack of the previous version holds
    assert after.pid() == other.pid
    assert after.stop(timeout_s=5) is True
    assert other.wait(timeout=5) == -signal.SIGTERM


def test_stopping_a_process_stops_what_it_started_even_when_that_outlives_it(tmp_path):
    managed = ManagedProcess("job", tmp_path)
    # the leader exits on SIGTERM; its child ignores SIGTERM and would run on after it (like a JVM shutting down)
    pid = managed.start(["bash", "-c", "bash -c 'trap \"\" TERM; while :; do sleep 0.1; done' & sleep 300"])
    assert wait_until(lambda: len(group_members(pid)) >= 3, 5)  # the leader, the child, the child's sleep
    assert managed.stop(timeout_s=1) is True
    assert group_members(pid) == []
