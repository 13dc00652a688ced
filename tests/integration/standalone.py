"""Beyond one machine, on one machine: the project as a wheel, a clean interpreter, a Spark standalone cluster.

- ``build_wheel``: ``pip wheel --no-deps --no-build-isolation`` of the checkout; ``unpack``: the job files
  from it.
- ``clean_python``: a virtual environment that sees the project's dependencies but not the checkout (the
  editable install's finder is a ``.pth`` of ``.venv``, which a path added by another ``.pth`` does not run),
  so ``ecom`` imports only from what ``--py-files`` ships.
- ``StandaloneCluster``: a master and workers started with ``spark-class`` from pyspark's own Spark
  distribution, on 127.0.0.1 and free ports of ``PORTS``, stopped as a whole. The workers start once the
  master serves its web UI (a worker that finds no master waits several seconds before it tries again).
- ``spark_submit``: a job file through ``spark-submit`` against a master, with ``--py-files`` and ``--jars``;
  its driver and executors take ports the OS chooses, so several applications can run at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pyspark
import pytest

from ecom.runtime.process import port_open
from tests.faults import free_ports_in, run_to_end

SPARK_HOME = Path(pyspark.__file__).parent
HOST = "127.0.0.1"
PORTS = range(57000, 57400)  # the master's and workers' ports and web UIs: free ones of these


def build_wheel(source: Path, target: Path) -> Path:
    """The project's wheel (``pip wheel --no-deps``), built from ``source`` into ``target`` with the environment's
    own setuptools (pinned in requirements.lock), not a copy fetched into a build environment of its own."""
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w", str(target)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"pip wheel failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    (wheel,) = target.glob("ecom_lakehouse-*.whl")
    return wheel


def unpack(wheel: Path, target: Path) -> Path:
    """The wheel's files under ``target`` (the job files spark-submit runs come from here, not the checkout)."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def clean_python(target: Path) -> Path:
    """The interpreter of a new virtual environment that imports the project's dependencies but not the project."""
    if not (target / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=120)
    site = Path(
        subprocess.run(
            [str(target / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    (site / "ecom-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = target / "bin" / "python"
    # (from a folder of its own: `python -c` puts the working directory on the path; without a PYTHONPATH that
    # may name a checkout, as spark_submit runs it)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    deps = subprocess.run(
        [str(python), "-c", "import pyspark, deltalake, pandas"], cwd=target, env=env, capture_output=True
    )
    assert deps.returncode == 0, deps.stderr.decode()[-2000:]
    project = subprocess.run([str(python), "-c", "import ecom"], cwd=target, env=env, capture_output=True)
    assert project.returncode != 0, "the clean interpreter must not import ecom from the checkout"
    return python


def _stop(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class StandaloneCluster:
    """A Spark standalone master and ``workers`` workers of ``cores`` cores and ``memory`` each; ``ports``: the
    master's, its web UI's, then each worker's and its web UI's (free ones of ``PORTS`` unless given)."""

    work: Path
    workers: int = 2
    cores: int = 1
    memory: str = "1g"
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ports = self.ports or free_ports_in(PORTS, 2 + 2 * self.workers)

    @property
    def master_port(self) -> int:
        return self.ports[0]

    @property
    def ui_port(self) -> int:
        return self.ports[1]

    @property
    def worker_ports(self) -> list[tuple[int, int]]:
        """(port, web UI port) of each worker."""
        return [(self.ports[2 + 2 * i], self.ports[3 + 2 * i]) for i in range(self.workers)]

    @property
    def url(self) -> str:
        return f"spark://{HOST}:{self.master_port}"

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "SPARK_HOME": str(SPARK_HOME),
            "SPARK_LOCAL_IP": HOST,
            "SPARK_DAEMON_MEMORY": "256m",  # the master's and workers' own JVMs
            "SPARK_LOG_DIR": str(self.work / "logs"),
            "SPARK_NO_DAEMONIZE": "1",
        }

    def _start(self, name: str, *args: str) -> None:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            [str(SPARK_HOME / "bin" / "spark-class"), *args], env=self.environment(), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.processes.append(proc)

    def start(self, timeout_s: float = 120) -> StandaloneCluster:
        """Start the master, and the workers once it serves its web UI (its endpoint is up by then); returns
        without waiting for them to register (``wait_for_workers``)."""
        self.work.mkdir(parents=True, exist_ok=True)
        self._start(
            "master", "org.apache.spark.deploy.master.Master",
            "--host", HOST, "--port", str(self.master_port), "--webui-port", str(self.ui_port),
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not port_open(HOST, self.ui_port):
            if self.processes[0].poll() is not None or time.monotonic() > deadline:
                self._fail("the standalone master did not come up")
            time.sleep(0.2)
        for i, (port, ui) in enumerate(self.worker_ports):
            (self.work / f"worker-{i}").mkdir(exist_ok=True)
            self._start(
                f"worker-{i}", "org.apache.spark.deploy.worker.Worker",
                "--host", HOST, "--port", str(port), "--webui-port", str(ui),
                "--cores", str(self.cores), "--memory", self.memory, "--work-dir", str(self.work / f"worker-{i}"),
                self.url,
            )  # fmt: skip
        return self

    def wait_for_workers(self, timeout_s: float = 120) -> StandaloneCluster:
        """Wait until every worker is registered and alive; the test fails with the daemons' logs otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                break
            if self.alive_workers() == self.workers:
                return self
            time.sleep(0.5)
        self._fail(f"the standalone cluster did not come up with {self.workers} workers")

    def _fail(self, message: str) -> NoReturn:
        logs = "\n".join(f"== {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.work.glob("*.log")))
        self.stop()
        pytest.fail(f"{message}:\n{logs}")

    def state(self) -> dict:
        """The master's own view (its web UI's JSON)."""
        with urllib.request.urlopen(f"http://{HOST}:{self.ui_port}/json/", timeout=5) as response:
            return json.load(response)

    def alive_workers(self) -> int:
        if not port_open(HOST, self.ui_port):
            return 0
        try:
            return sum(1 for w in self.state().get("workers", []) if w.get("state") == "ALIVE")
        except OSError:
            return 0

    def stop(self) -> None:
        for proc in reversed(self.processes):  # workers first, then the master
            _stop(proc)
        self.processes.clear()


def submit_conf(master: str) -> list[str]:
    """``--conf`` options of a run: the driver at 127.0.0.1; on a cluster, small executors."""
    conf = {"spark.driver.host": HOST}  # every executor is on this machine; on a real cluster: an address they reach
    if not master.startswith("local"):
        conf |= {
            "spark.executor.memory": "768m",
            "spark.executor.cores": "1",
            "spark.cores.max": "2",
            "spark.locality.wait": "0",  # every executor is on this machine: no task waits for a preferred one
        }
    return [arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")]


def spark_submit(
    job: Path,
    args: list[str],
    *,
    master: str,
    python: Path,
    py_files: Path,
    jars: list[str],
    env: dict[str, str],
    cwd: Path,
    timeout_s: float = 600,
) -> str:
    """Run ``spark-submit --master MASTER --py-files WHEEL --jars ... JOB ARGS`` with ``python`` as driver and
    worker interpreter; its output, or the test fails with its end unless it exits 0 by itself."""
    environment = {
        **env,
        "SPARK_HOME": str(SPARK_HOME),
        "PYSPARK_PYTHON": str(python),
        "PYSPARK_DRIVER_PYTHON": str(python),
        "SPARK_LOCAL_IP": HOST,
    }
    environment.pop("PYTHONPATH", None)
    cmd = [
        str(SPARK_HOME / "bin" / "spark-submit"), "--master", master, "--py-files", str(py_files),
        "--jars", ",".join(jars), *submit_conf(master), str(job), *args,
    ]  # fmt: skip
    return run_to_end(cmd, environment, cwd, timeout_s, f"{job.name} {' '.join(args)} on {master}")
