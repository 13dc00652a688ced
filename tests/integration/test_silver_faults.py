"""The silver stream against faults: records a sink refuses, PostgreSQL stopped and started, a failing alert
producer, kill -9 at many points, a second stream on a checkpoint in use. Real broker, Delta tables, PostgreSQL.

Each check leaves ``ecom reconcile`` exact. The kill -9 points and the longer runs are marked ``chaos``
(``make chaos``); one kill -9 point and the others run in the default suite (``fault``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from deltalake import DeltaTable

from ecom.lake import prepare_lake
from ecom.reconcile import reconcile
from ecom.runtime.kafka import ensure_topics
from pipelines.silver.job import SilverBatch
from pipelines.silver.sinks import LakeSink, Sinks
from serving.db import connection
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from tests.conftest import with_topic

pytestmark = [pytest.mark.integration, pytest.mark.fault]

REFUSED_DEVICE = "refused-by-a-check"  # a value every rule accepts and the test's CHECK constraint refuses


def kafka_records(spark, settings):
    """Every record of the settings' orders topic, as the stream's Kafka source gives them."""
    return (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("subscribe", settings.kafka.transactions_topic)
        .option("startingOffsets", "earliest")
        .load()
    )


def quarantine_reasons(settings) -> dict[int, list[str]]:
    """Kafka offset -> reasons, for every quarantined record (one partition)."""
    rows = DeltaTable(settings.lake.table("silver", "quarantine")).to_pyarrow_table(columns=["kafka_offset", "reasons"])
    return {r["kafka_offset"]: r["reasons"] for r in rows.to_pylist()}


def one_partition(settings):
    """The settings with an orders topic of one partition (so Kafka offsets are the order of sending)."""
    settings = with_topic(settings, "transactions", "p1", partitions=1)
    ensure_topics(settings)
    return settings


class LakeFailingOnce(LakeSink):
    """A lake that fails its first write: a crash after PostgreSQL committed the batch, before the lake."""

    def __init__(self, lake):
        super().__init__(lake)
        self.failed = False

    def write(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            raise OSError("injected: the lake is unreachable")
        return super().write(*args, **kwargs)


def test_a_record_postgres_refuses_is_quarantined_and_the_rest_goes_through(isolated, spark):
    """One order passes every rule but PostgreSQL refuses it (a CHECK constraint stands in for any value a sink
    cannot store). It goes to quarantine naming the sink; the other orders are served; the batch is not retried
    forever. A crash after the PostgreSQL commit and the replay route that record the same way."""
    settings = one_partition(isolated)
    prepare_lake(spark, settings)
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f"ALTER TABLE transactions ADD CONSTRAINT test_refuses CHECK (device_id IS DISTINCT FROM '{REFUSED_DEVICE}')"
        )
    sim = TransactionSimulator(settings.simulator, seed=31)
    events = [g.event for g in sim.events(60, start=datetime.now(UTC), rate_per_s=100)]
    refused = events[17]
    refused["device_id"] = REFUSED_DEVICE
    producer = TransactionProducer(settings)
    for event in events:
        producer.send_raw(event["customer_id"], json.dumps(event).encode())
    producer.send_raw("C-raw", b"{broken")
    producer.close()
    assert producer.stats.failed == 0
    records = kafka_records(spark, settings)

    checkpoint = f"{settings.lake.checkpoints}/refusals"
    serving_only = Sinks.from_settings(settings)
    crashing = SilverBatch(
        settings,
        checkpoint,
        write_bronze=True,
        sinks=Sinks(LakeFailingOnce(settings.lake), serving_only.serving, serving_only.alerts),
    )
    with pytest.raises(OSError, match="injected"):
        crashing(records, 0)  # PostgreSQL committed (without the refused order), then the lake failed
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE event_id = %s) FROM transactions", (refused["event_id"],))
        assert cur.fetchone() == (59, 0)

    restarted = SilverBatch(settings, checkpoint, write_bronze=True)  # the replay, as after a crash
    restarted(records, 0)

    report = reconcile(settings)
    assert report.ok, report.lines()
    assert (report.produced, report.bronze, report.silver, report.quarantine, report.postgres) == (61, 61, 59, 2, 59)
    reasons = quarantine_reasons(settings)
    assert reasons[60] == ["malformed_json"]
    assert len(reasons[17]) == 1 and reasons[17][0].startswith("sink_refused:postgres:transactions:")
    assert "test_refuses" in reasons[17][0]

    restarted(records, 0)  # once more: everything recorded, nothing changes
    assert reconcile(settings).quarantine == 2
