"""Helpers shared by the benchmarks: settings, the machine, services, scratch topics, the result line.

Every benchmark prints one JSON object as its last line. ``services`` starts
the embedded stack only when Kafka is not running and stops only what it
started; ``scratch_topics`` gives a benchmark its own topics and deletes them.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path

from ecom.settings import Settings, load_settings


def bench_settings() -> Settings:
    """Settings of ``$ECOM_PROFILE`` (default ``local``)."""
    return load_settings(os.environ.get("ECOM_PROFILE", "local"))


def machine_info() -> dict:
    """What the numbers were measured on (load averages, since the machine may be shared)."""
    info = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    for package in ("kafka-python", "pyspark"):
        with suppress(metadata.PackageNotFoundError):
            info[package] = metadata.version(package)
    if hasattr(os, "getloadavg"):
        info["load_avg_1m_at_start"] = round(os.getloadavg()[0], 2)
    return info


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None if unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    """Progress for people, on stderr, so stdout ends with the JSON line."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def services(settings: Settings) -> Iterator[bool]:
    """The embedded stack, started here only if Kafka is not running; yields whether it was started here."""
    from ecom.runtime import stack
    from ecom.runtime.kafka import EmbeddedKafka

    started = False
    if settings.kafka.embedded and not EmbeddedKafka(settings).is_running():
        log(f"starting the embedded stack of profile {settings.profile} ...")
        stack.up(settings, log=log)
        started = True
    try:
        yield started
    finally:
        if started:
            log("stopping the embedded stack this benchmark started ...")
            stack.down(settings, log=log)


@contextmanager
def scratch_topics(
    settings: Settings, prefix: str, partitions: dict[str, int], configs: dict[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """Fresh topics ``<prefix>-<timestamp>-<suffix>`` (suffix -> partitions, optional topic configs), deleted afterwards."""
    from kafka.admin import KafkaAdminClient, NewTopic

    stamp = time.strftime("%Y%m%d%H%M%S")
    names = {suffix: f"{prefix}-{stamp}-{suffix}" for suffix in partitions}
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers.split(","))
    try:
        admin.create_topics([NewTopic(names[s], n, 1, topic_configs=configs or {}) for s, n in partitions.items()])
        deadline = time.monotonic() + 30
        while not set(names.values()) <= set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.2)
        yield names
    finally:
        try:
            admin.delete_topics(list(names.values()))
        finally:
            admin.close()


def emit(result: dict) -> None:
    """The benchmark's result: one JSON object on the last line of stdout."""
    print(json.dumps(result, sort_keys=False), flush=True)
