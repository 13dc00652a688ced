"""The lake on an S3-compatible store: moto's S3 server on 127.0.0.1, ``s3a://`` for Spark and delta-rs alike.

The whole path runs with the lake and the checkpoints in a bucket: the ingest stream (``--once``), the daily
gold batch, the lifecycle (a hot horizon of a week and a backfill past it, so rows move to the archive
tables), ``ecom sql`` over the bucket's tables, and ``ecom reconcile``, which must be exact. Credentials and
the endpoint come only from the standard AWS environment variables (``ecom.storage``). The horizon is short
so that the orders span few days: every event date is a partition of silver, and each of its files costs
Spark and delta-rs several requests to the store.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from ecom.reconcile import reconcile
from ecom.storage import delta_table
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from tests.conftest import run_ecom, with_registry
from tests.faults import free_port_in

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

ORDERS = 600
HOT_DAYS = 7  # retention.days: the hot horizon
DAYS = 12  # the backfill: past the horizon, so the lifecycle has rows to archive
MALFORMED = b'{"event_id": "broken", "amount": '
PORTS = range(59150, 59200)  # this test's S3 server takes the first free one


def free_port() -> int:
    return free_port_in(PORTS)


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server with a new bucket; the AWS variables point this process and its children at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    environment = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_S3_ALLOW_UNSAFE_RENAME", "AWS_S3_LOCKING_PROVIDER", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=environment["AWS_ENDPOINT_URL"], region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    server.stop()


def keys(client, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_the_whole_path_runs_on_an_s3_lake(isolated, s3, tmp_path, monkeypatch):
    client, bucket = s3
    lake = isolated.lake.model_copy(
        update={"root": f"s3a://{bucket}/lake", "checkpoints": f"s3a://{bucket}/checkpoints"}
    )
    retention = isolated.retention.model_copy(update={"days": HOT_DAYS})
    settings = with_registry(isolated, tmp_path / "registry").model_copy(update={"lake": lake, "retention": retention})
    monkeypatch.setenv("ECOM_RETENTION__DAYS", str(HOT_DAYS))  # the same horizon for every ecom command

    producer = TransactionProducer(settings)
    generated = list(
        TransactionSimulator(settings.simulator, seed=7).backfill(ORDERS, days=DAYS, end=datetime.now(UTC))
    )
    for g in generated:
        producer.send(g)
    producer.send_raw("C-bad", MALFORMED)
    producer.close()
    assert producer.stats.failed == 0

    run_ecom(settings, "stream", "all", "--once")
    run_ecom(settings, "batch", "daily")
    moved = json.loads(run_ecom(settings, "lifecycle", "run", "--json").strip().splitlines()[-1])
    archived = sum(m["archived"] for m in moved["moves"] if m["table"] == "silver/transactions")
    assert archived > 0, moved

    # Everything is in the bucket: the Delta logs of every layer and the archive, and the stream's checkpoint.
    stored = keys(client, bucket, "")
    for table in ("bronze/transactions", "silver/transactions", "silver/quarantine", "gold/rfm", "gold/customers"):
        assert any(k.startswith(f"lake/{table}/_delta_log/") for k in stored), table
    assert any(k.startswith("lake/archive/silver/transactions/_delta_log/") for k in stored)
    assert any(k.startswith("checkpoints/") for k in stored)

    report = reconcile(settings)
    assert report.ok, report.lines()
    assert (report.produced, report.bronze, report.silver, report.quarantine, report.duplicates) == (
        ORDERS + 1, ORDERS + 1, ORDERS, 1, 0,
    )  # fmt: skip

    # ecom reconcile, and ecom sql reading the bucket's tables by name through delta-rs with the same
    # credentials: three commands that only read, run at once.
    commands = (
        ("reconcile", "--json"),
        ("sql", "select count(*) as n from silver.transactions", "--format", "json"),
        ("sql", "select count(*) as n from gold.customers", "--format", "json"),
    )
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        reconciled, hot_count, customer_count = pool.map(lambda args: json.loads(run_ecom(settings, *args)), commands)
    assert reconciled["ok"] is True
    hot = delta_table(settings.lake.table("silver", "transactions")).to_pyarrow_table(columns=["event_id"])
    assert hot_count == [{"n": hot.num_rows}]
    assert hot.num_rows == ORDERS - archived
    customers = {g.event["customer_id"] for g in generated}
    assert customer_count == [{"n": len(customers)}]
