"""Poison pills through the real stream: no input stops it, each record lands where the contract says, and no
clear e-mail address or HMAC key material reaches silver, gold, PostgreSQL or the logs.

The stream is ``ecom stream all`` in its own process, reading the real broker and writing real Delta tables and
a real PostgreSQL database. One micro-batch holds a valid order, an order whose device_id holds U+0000 (which
PostgreSQL text cannot store: it used to stop the stream for good) and an order whose transaction_id and
device_id are the text ``\\N`` (COPY's NULL marker: it used to become NULL, or fail NOT NULL).
"""

import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable

from ecom.reconcile import reconcile
from ecom.runtime.process import wait_until
from ecom.settings import child_environment
from serving.db import connection
from simulator.generator import TransactionSimulator
from tests.conftest import with_registry

pytestmark = pytest.mark.integration

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def send(settings, events: list[dict]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers.split(","), acks="all")
    try:
        for event in events:
            producer.send(
                settings.kafka.transactions_topic, key=event["customer_id"].encode(), value=json.dumps(event).encode()
            ).get(timeout=30)
    finally:
        producer.close()


def delta_rows(settings, layer: str, table: str) -> list[dict]:
    return DeltaTable(settings.lake.table(layer, table)).to_pyarrow_table().to_pylist()


def lake_text(root: Path, layers: tuple[str, ...]) -> str:
    """Every value of every Delta table under the given layers, as one text."""
    texts = []
    for log_dir in sorted(root.glob("*/*/_delta_log")):
        if log_dir.parent.parent.name in layers:
            texts.append(str(DeltaTable(str(log_dir.parent)).to_pyarrow_table().to_pylist()))
    return "\n".join(texts)


def postgres_text(dsn: str) -> str:
    """Every row of every table in the database, as one text."""
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        tables = [row[0] for row in cur.fetchall()]
        rows = []
        for table in tables:
            cur.execute(f'SELECT t::text FROM "{table}" t')
            rows += [row[0] for row in cur.fetchall()]
    return "\n".join(rows)


def test_a_batch_with_a_nul_and_a_null_marker_keeps_the_stream_running_and_lands_by_the_contract(isolated, tmp_path):
    settings = with_registry(isolated, tmp_path)  # an empty registry: orders stay unscored
    key = secrets.token_hex(16)
    sim = TransactionSimulator(settings.simulator, seed=3)
    valid, nul, null_marker, later = (g.event for g in sim.events(4, start=datetime.now(UTC), rate_per_s=10))
    valid["customer_email"] = "valid.order@example.com"
    nul.update(device_id="D\u0000X", customer_email="nul.order@example.com")
    null_marker.update(transaction_id="\\N", device_id="\\N", customer_email="null.marker@example.com")
    later["customer_email"] = "later.order@example.com"
    send(settings, [valid, nul, null_marker])  # before the stream starts: all three in its first micro-batch

    log_path = tmp_path / "stream.log"
    env = {**child_environment(settings), "ECOM_PII_KEY": key}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecom.cli", "stream", "all"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: pg_ids(settings) >= {valid["event_id"], null_marker["event_id"]}, 600), (
            log_path.read_text()[-3000:]
        )
        assert wait_until(lambda: len(rows_or_empty(settings, "silver", "quarantine")) == 1, 120)
        assert proc.poll() is None, "the stream stopped"
        send(settings, [later])  # the stream keeps running: a later order goes through
        assert wait_until(lambda: later["event_id"] in pg_ids(settings), 240), log_path.read_text()[-3000:]
        assert wait_until(lambda: len(rows_or_empty(settings, "silver", "transactions")) == 3, 120)
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)

    # Where each record landed
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id, transaction_id, device_id FROM transactions")
        served = {row[0]: row[1:] for row in cur.fetchall()}
    assert served == {
        valid["event_id"]: (valid["transaction_id"], valid["device_id"]),
        null_marker["event_id"]: ("\\N", "\\N"),  # the two characters, not NULL
        later["event_id"]: (later["transaction_id"], later["device_id"]),
    }
    silver = {
        r["event_id"]: (r["transaction_id"], r["device_id"]) for r in delta_rows(settings, "silver", "transactions")
    }
    assert silver == served
    (quarantined,) = delta_rows(settings, "silver", "quarantine")
    assert quarantined["reasons"] == ["control_characters"]
    expected_token = "email-hmac:" + hmac.new(key.encode(), b"nul.order@example.com", hashlib.sha256).hexdigest()
    assert json.loads(quarantined["payload"]) == {**nul, "customer_email": expected_token}
    bronze = {
        json.loads(r["payload"])["event_id"]: r["payload"] for r in delta_rows(settings, "bronze", "transactions")
    }
    assert json.loads(bronze[nul["event_id"]]) == nul  # bronze alone keeps the record as received

    report = reconcile(settings)
    assert report.ok, report.lines()
    assert (report.produced, report.bronze, report.silver, report.quarantine, report.duplicates, report.postgres) == (
        4, 4, 3, 1, 0, 3,
    )  # fmt: skip

    # No clear e-mail address or key material outside bronze
    lake = Path(settings.lake.root)
    assert "nul.order@example.com" in lake_text(lake, ("bronze",))  # the scan sees addresses where they are
    places = {
        "silver and gold": lake_text(lake, ("silver", "gold")),
        "PostgreSQL": postgres_text(settings.postgres.dsn),
        "the stream's log": log_path.read_text(errors="replace"),
    }
    padded = key.encode().ljust(64, b"\0")
    key_forms = [key, bytes(b ^ 0x36 for b in padded).hex(), bytes(b ^ 0x5C for b in padded).hex()]
    for place, text in places.items():
        assert not EMAIL.findall(text), f"e-mail address in {place}: {EMAIL.findall(text)[:3]}"
        assert not [k for k in key_forms if k in text.lower()], f"key material in {place}"


def pg_ids(settings) -> set[str]:
    try:
        with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT event_id FROM transactions")
            return {row[0] for row in cur.fetchall()}
    except Exception:  # noqa: BLE001  (the stream creates nothing here, but keep polling through hiccups)
        return set()


def rows_or_empty(settings, layer: str, table: str) -> list[dict]:
    try:
        return delta_rows(settings, layer, table)
    except Exception:  # noqa: BLE001  (the table does not exist until the stream prepares the lake)
        return []
