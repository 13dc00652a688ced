"""Walking skeleton end to end: simulator -> Kafka -> bronze -> silver -> PostgreSQL.

Real broker, real Delta tables, real PostgreSQL. A few thousand events plus
bad messages; the counts must agree at every layer.
"""

from datetime import UTC, datetime

import pytest
from deltalake import DeltaTable
from kafka import KafkaConsumer, TopicPartition

from ecom.reconcile import reconcile
from pipelines.silver import job as silver
from serving.db import connection
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer

pytestmark = pytest.mark.e2e

EVENTS = 3000


def end_offsets_total(settings) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        topic = settings.kafka.transactions_topic
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def delta_rows(path: str) -> int:
    return DeltaTable(path).to_pyarrow_dataset().count_rows()


def test_counts_agree_in_kafka_bronze_silver_and_postgres(isolated, spark):
    settings = isolated

    sim = TransactionSimulator(settings.simulator, seed=42)
    events = list(sim.events(EVENTS, start=datetime.now(UTC), rate_per_s=1000))
    producer = TransactionProducer(settings)
    for generated in events:
        producer.send(generated)
    producer.send(events[0])  # a re-sent event: must collapse to one silver row
    producer.send_raw("C-bad", b'{"event_id": "broken", "amount": ')  # truncated JSON
    producer.send_raw("C-bad", b"\xff\xfe not utf-8 json")
    producer.close()
    assert producer.stats.failed == 0

    silver.start(spark, settings, once=True).awaitTermination()  # ingest: Kafka -> bronze + silver

    produced = end_offsets_total(settings)
    bronze_n = delta_rows(settings.lake.table("bronze", "transactions"))
    silver_n = delta_rows(settings.lake.table("silver", "transactions"))
    quarantine_n = delta_rows(settings.lake.table("silver", "quarantine"))
    ids = [g.event["event_id"] for g in events]
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM transactions WHERE event_id = ANY(%s)", (ids,))
        pg_n = cur.fetchone()[0]

    duplicates_n = delta_rows(settings.lake.table("silver", "duplicates"))
    assert produced == EVENTS + 3
    assert bronze_n == produced
    assert quarantine_n == 2
    assert duplicates_n == 1
    assert silver_n == EVENTS
    assert bronze_n == silver_n + quarantine_n + duplicates_n
    assert pg_n == EVENTS

    # Running again finds nothing new and changes nothing.
    silver.start(spark, settings, once=True).awaitTermination()
    assert delta_rows(settings.lake.table("silver", "transactions")) == EVENTS
    assert delta_rows(settings.lake.table("bronze", "transactions")) == produced

    report = reconcile(settings)
    assert report.ok, report.lines()
    assert (report.produced, report.silver, report.quarantine, report.duplicates, report.postgres) == (
        EVENTS + 3, EVENTS, 2, 1, EVENTS,
    )  # fmt: skip


def test_silver_can_be_rebuilt_from_bronze(isolated, spark):
    """`ecom stream silver`: bronze is the source of truth; silver deleted and rebuilt comes back the same."""
    import shutil

    settings = isolated
    sim = TransactionSimulator(settings.simulator, seed=9)
    events = list(sim.events(500, start=datetime.now(UTC), rate_per_s=1000))
    producer = TransactionProducer(settings)
    for generated in events[:400]:
        producer.send(generated)
    producer.send(events[0])
    producer.send_raw("C-bad", b"{nope")
    producer.close()
    silver.start(spark, settings, once=True).awaitTermination()
    before = {t: delta_rows(settings.lake.table("silver", t)) for t in ("transactions", "quarantine", "duplicates")}
    assert before == {"transactions": 400, "quarantine": 1, "duplicates": 1}

    for table in ("transactions", "quarantine", "duplicates", "customer_profiles", "fraud_alerts"):
        shutil.rmtree(settings.lake.table("silver", table))
    silver.start(spark, settings, once=True, mode="silver").awaitTermination()
    after = {t: delta_rows(settings.lake.table("silver", t)) for t in ("transactions", "quarantine", "duplicates")}
    assert after == before
    profiles = DeltaTable(settings.lake.table("silver", "customer_profiles")).to_pandas(columns=["tx_count"])
    assert int(profiles["tx_count"].sum()) == 400
    report = reconcile(settings)
    assert report.ok, report.lines()
