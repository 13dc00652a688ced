"""Helpers for fault tests: private services on free ports, process trees, chaos figures.

A fault test that stops a broker or a database never touches the shared test
stack: it runs its own Kafka and PostgreSQL on free ports with their own data
folder (``private_kafka``, ``private_profile``). Fault tests hand their figures
(counts, recovery times) to pytest's ``record_property``; ``make chaos`` reads
them from the JUnit XML report into its table.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from ecom.runtime.process import ProcessIdentity, proc_stat
from ecom.settings import CONF_DIR, Settings


def free_port() -> int:
    """A port nothing listens on now (the OS's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bindable(port: int) -> bool:
    """Nothing holds ``port`` on 127.0.0.1 now: a socket can bind it."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports_in(ports: Iterable[int], count: int) -> list[int]:
    """The first ``count`` of ``ports`` (in the order given) that nothing listens on now."""
    ports = list(ports)
    found = list(itertools.islice((port for port in ports if bindable(port)), count))
    if len(found) < count:
        raise RuntimeError(f"fewer than {count} free ports in {ports[0]}-{ports[-1]}")
    return found


def free_port_in(ports: Iterable[int]) -> int:
    """The first of ``ports`` (in the order given) that nothing listens on now."""
    return free_ports_in(ports, 1)[0]


def run_to_end(cmd: list[str], env: dict[str, str], cwd, timeout_s: float, what: str) -> str:
    """Run ``cmd`` in a process group of its own; its output, or the test fails with the output's end unless it
    exits 0 within ``timeout_s`` (then the whole group is killed: a launcher, its JVM, a Python driver)."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        log, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"{what} did not stop within {timeout_s} s:\n{log[-4000:]}")
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{log[-4000:]}"
    return log


@contextmanager
def scratch_dir(settings: Settings, name: str) -> Iterator[Path]:
    """A folder of its own under the profile's data folder, removed afterwards.

    Not pytest's temporary folder for servers that run as another user (PostgreSQL under root): pytest makes
    that folder private again whenever a session starts, and the server would lose its data mid-test."""
    path = Path(settings.data_dir) / "scratch" / f"{name}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def private_kafka(settings: Settings, root: Path) -> Settings:
    """``settings`` with a Kafka broker of its own: data and pid files under ``root``, free ports."""
    port, controller = free_port(), free_port()
    kafka = settings.kafka.model_copy(
        update={"port": port, "controller_port": controller, "bootstrap_servers": f"{settings.kafka.host}:{port}"}
    )
    return settings.model_copy(update={"data_dir": str(root), "kafka": kafka})


def private_profile(settings: Settings, root: Path) -> dict[str, str]:
    """Environment for a child ``ecom`` with a whole stack of its own under ``root`` (data, free ports).

    Writes a configuration folder with the real base file and the ``settings.profile`` file plus overrides,
    so the child loads the same profile with another data folder and ports."""
    conf = root / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "base.yaml").write_text((CONF_DIR / "base.yaml").read_text())
    profile = yaml.safe_load((CONF_DIR / f"{settings.profile}.yaml").read_text()) or {}
    kafka_port = free_port()
    overrides = {
        "data_dir": str(root / "data"),
        "kafka": {
            "bootstrap_servers": f"127.0.0.1:{kafka_port}",
            "port": kafka_port,
            "controller_port": free_port(),
        },
        "postgres": {"port": free_port()},
        "dashboard": {"port": free_port()},
        "jars": {"cache": settings.jars.cache},
    }
    for section, values in overrides.items():
        profile[section] = {**profile.get(section, {}), **values} if isinstance(values, dict) else values
    (conf / f"{settings.profile}.yaml").write_text(yaml.safe_dump(profile))
    return {"ECOM_CONF_DIR": str(conf), "ECOM_PROFILE": settings.profile}


def descendants(pid: int) -> list[ProcessIdentity]:
    """Every live process below ``pid`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields and fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(ProcessIdentity.of(child))
        todo.extend(children.get(child, []))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def read_topic(settings: Settings, topic: str, timeout_s: float = 120.0) -> list[bytes]:
    """Every record value of ``topic``, from the beginning to the end offsets it has now."""
    return [r.value for r in read_records(settings, topic, timeout_s)]


def read_records(settings: Settings, topic: str, timeout_s: float = 120.0) -> list:
    """Every record of ``topic`` (kafka-python's ``ConsumerRecord``: value, partition, offset, timestamp ...),
    from the beginning to the end offsets it has now."""
    from kafka import KafkaConsumer, TopicPartition

    from ecom.kafka_config import client_kwargs
    from ecom.runtime.process import wait_until

    consumer = KafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    try:
        if not wait_until(lambda: consumer.partitions_for_topic(topic), timeout_s):
            raise AssertionError(f"topic {topic} not found")
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(parts)
        values: list = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within {timeout_s:.0f}s")
            for records in consumer.poll(timeout_ms=1000).values():
                values.extend(records)
        return values
    finally:
        consumer.close()
