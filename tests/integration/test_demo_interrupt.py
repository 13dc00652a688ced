"""An interrupted first run of ``ecom demo`` stops everything it started.

The demo runs as a real child process with a stack of its own (Kafka,
PostgreSQL, MLflow store and lake under a temporary folder, free ports), so
its first run bootstraps a model: backfill, ``stream all --once``, ``train``,
each a child process. It is interrupted in one of those steps, by SIGTERM (a
service manager, ``kill``) or by Ctrl-C (SIGINT to its whole process group, as
a terminal sends it). Afterwards none of the processes it had started runs,
and the broker and database it started are stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecom.runtime.process import ManagedProcess, ProcessIdentity, wait_until
from tests.faults import cmdline, descendants, private_profile, scratch_dir

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def _step_is_running(step: str, demo: subprocess.Popen, log: Path) -> bool:
    """The demo has reached ``step`` and the step's own processes run (the workers, the JVM)."""
    tree = [cmdline(p.pid) for p in descendants(demo.pid)]
    if step == "backfill":
        return any("multiprocessing" in c for c in tree)
    if step == "stream":
        return any("java" in c and "pyspark" in c for c in tree)
    return "] train and register" in log.read_text(errors="replace") and any(" train" in c for c in tree)


@pytest.mark.parametrize(
    ("step", "interrupt"),
    [
        ("backfill", "sigterm"),
        pytest.param("backfill", "ctrl-c", marks=pytest.mark.chaos),
        pytest.param("stream", "ctrl-c", marks=pytest.mark.chaos),
        pytest.param("train", "sigterm", marks=pytest.mark.chaos),
    ],
)
def test_an_interrupted_first_run_leaves_nothing_running(settings, step, interrupt, record_property):
    with scratch_dir(settings, f"demo-{step}") as root:
        _interrupt_a_first_run(settings, root, step, interrupt, record_property)


def _interrupt_a_first_run(settings, root: Path, step: str, interrupt: str, record_property) -> None:
    env = {**os.environ, **private_profile(settings, root), "PYTHONUNBUFFERED": "1"}
    env.pop("ECOM_DEMO_KEEP_STACK", None)
    count = "3000000" if step == "backfill" else "3000"
    log = root / "demo.log"
    with open(log, "wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "ecom.cli", "demo", "--backfill-count", count, "--backfill-days", "10"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # as from a terminal: a shell's background jobs (CI, nohup) inherit SIGINT ignored
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    run_dir = root / "data" / "run"
    started: list[ProcessIdentity] = []
    try:
        reached = wait_until(lambda: demo.poll() is not None or _step_is_running(step, demo, log), 600, 0.5)
        assert reached and demo.poll() is None, f"the demo did not reach the {step} step:\n{log.read_text()[-3000:]}"
        time.sleep(2)  # let the step get going
        services = [ManagedProcess(name, run_dir).identity() for name in ("kafka", "postgres")]
        assert all(services), "the demo should have started a broker and a database of its own"
        started = list(dict.fromkeys([*descendants(demo.pid), *services]))
        interrupted_at = time.monotonic()
        if interrupt == "sigterm":
            os.kill(demo.pid, signal.SIGTERM)
        else:
            os.killpg(demo.pid, signal.SIGINT)
        demo.wait(timeout=300)
        stop_s = time.monotonic() - interrupted_at
        left = [f"{p.pid} {cmdline(p.pid)[:160]}" for p in started if p.is_alive()]
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        for p in started:  # whatever the outcome, nothing of this test outlives it
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
    record_property("processes_started", len(started))
    record_property("left_running", len(left))
    record_property("stop_s", round(stop_s, 1))
    assert left == [], "still running after the demo exited:\n" + "\n".join(left)
    assert "demo stopped" in log.read_text(errors="replace")
