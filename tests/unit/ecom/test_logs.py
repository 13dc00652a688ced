"""``ecom logs``: the list of process logs, the last lines of one, following what is appended.

No services: a real background process (``ManagedProcess``) writes a log in a temporary run folder, and
``ecom logs`` runs as its own process on it.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
import time

import pytest
import yaml

from ecom.logs import follow, known_logs, tail
from ecom.runtime.process import ManagedProcess, wait_until
from ecom.settings import CONF_DIR, child_environment


@pytest.fixture
def run_settings(settings, tmp_path):
    """Test settings whose data folder (and so run folder) is a temporary one."""
    return settings.model_copy(update={"data_dir": str(tmp_path)})


def ecom_logs(settings, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """``ecom logs ARGS`` as its own process, on the run folder of ``settings`` (a conf folder whose test profile
    names its data folder)."""
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    shutil.copy(CONF_DIR / "base.yaml", conf / "base.yaml")
    profile = {**yaml.safe_load((CONF_DIR / "test.yaml").read_text()), "data_dir": settings.data_dir}
    (conf / "test.yaml").write_text(yaml.safe_dump(profile))
    env = {**child_environment(settings), "ECOM_CONF_DIR": str(conf)}
    return subprocess.run(
        [sys.executable, "-m", "ecom.cli", "logs", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_lists_processes_and_prints_the_last_lines_of_one(run_settings, tmp_path):
    proc = ManagedProcess("worker", run_settings.run_dir)
    proc.start([sys.executable, "-c", "import time\nfor i in range(5): print('line', i, flush=True)\ntime.sleep(60)"])
    try:
        assert wait_until(lambda: proc.log_file.exists() and "line 4" in proc.log_file.read_text(), 30)
        (run_settings.run_dir / "old-job.log").write_text("done\n")

        listing = ecom_logs(run_settings, tmp_path)
        assert listing.returncode == 0, listing.stderr
        rows = {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines()[:-1]}
        assert rows == {"old-job": "stopped", "worker": "running"}

        last = ecom_logs(run_settings, tmp_path, "worker", "-n", "2")
        assert (last.returncode, last.stdout) == (0, "line 3\nline 4\n")

        unknown = ecom_logs(run_settings, tmp_path, "nope")
        assert unknown.returncode == 2
        assert unknown.stderr == "ecom logs: no process 'nope'; known: old-job, worker\n"
    finally:
        proc.stop()


def test_postgres_log_is_known_by_its_own_path(run_settings):
    log = run_settings.run_dir.parent / "postgres" / "server.log"
    log.parent.mkdir(parents=True)
    log.write_text("ready\n")
    assert known_logs(run_settings) == {"postgres": log}


def test_tail_reads_only_the_last_lines_of_a_long_log(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("".join(f"row {i}\n" for i in range(100_000)))
    lines, end = tail(path, 3)
    assert lines == ["row 99997", "row 99998", "row 99999"]
    assert end == path.stat().st_size
    assert tail(path, 0)[0] == []


def test_follow_prints_what_is_appended_and_starts_over_after_a_truncation(tmp_path):
    path = tmp_path / "live.log"
    path.write_text("before\n")
    out = io.StringIO()
    stop = threading.Event()
    reader = threading.Thread(
        target=follow, args=(path, path.stat().st_size, out), kwargs={"keep_going": lambda: not stop.is_set(),
                                                                      "interval_s": 0.01}
    )  # fmt: skip
    reader.start()
    try:
        with open(path, "a") as f:
            f.write("one\ntwo\n")
        assert wait_until(lambda: out.getvalue() == "one\ntwo\n", 5, 0.01)
        time.sleep(0.05)
        path.write_text("new\n")  # truncated and rewritten (a restarted process, a rotated log)
        assert wait_until(lambda: out.getvalue() == "one\ntwo\nnew\n", 5, 0.01)
    finally:
        stop.set()
        reader.join(5)
