"""The job files under the real ``spark-submit``, with ``--once``: Kafka -> bronze + silver + PostgreSQL, and bronze.

The children get the test's own topic, lake and database through the environment (``child_environment``) and
run the project's interpreter, whose editable install makes ``ecom`` importable (no ``--py-files`` needed locally).
"""

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable

from ecom.jars import spark_jars
from ecom.reconcile import reconcile
from ecom.settings import ROOT, Settings, child_environment
from serving.db import connection
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from tests.conftest import with_registry
from tests.faults import run_to_end

pytestmark = pytest.mark.integration

ORDERS = 300
MALFORMED = b'{"event_id": "broken", "amount": '  # truncated JSON
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def spark_submit(settings: Settings, job: str, cwd: Path, timeout_s: float = 240) -> None:
    """Run ``spark-submit <job> --profile <profile> --once`` with ``settings``' topic, lake and database; fail with
    the end of its log unless it stops by itself and exits 0."""
    env = {
        **child_environment(settings),
        "PYSPARK_PYTHON": sys.executable,  # also how the launcher finds SPARK_HOME (pyspark's own install)
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    cmd = [
        str(SPARK_SUBMIT), "--master", "local[2]", "--jars", ",".join(spark_jars(settings)),
        str(ROOT / job), "--profile", settings.profile, "--once",
    ]  # fmt: skip
    run_to_end(cmd, env, cwd, timeout_s, f"{job} --once")


def bronze_records(settings: Settings) -> list[tuple]:
    """(partition, offset, payload) of every bronze row, in Kafka order."""
    table = DeltaTable(settings.lake.table("bronze", "transactions")).to_pyarrow_table(
        columns=["kafka_partition", "kafka_offset", "payload"]
    )
    return sorted(tuple(row.values()) for row in table.to_pylist())


def test_spark_submit_runs_silver_and_bronze_once(isolated, tmp_path):
    # An empty model registry of its own: no champion, so the result does not depend on what other tests trained.
    settings = with_registry(isolated, tmp_path / "registry")
    sim = TransactionSimulator(settings.simulator, seed=5)
    generated = list(sim.events(ORDERS, start=datetime.now(UTC), rate_per_s=500))
    producer = TransactionProducer(settings)
    for g in generated:
        producer.send(g)
    producer.send_raw("C-bad", MALFORMED)
    producer.close()
    assert producer.stats.failed == 0

    # spark-submit from a folder outside the repository: imports must not depend on the working directory.
    work = tmp_path / "cwd"
    work.mkdir()
    spark_submit(settings, "pipelines/silver/job.py", work)
    # Bronze alone, into a lake and checkpoints of its own, from the same topic. (One after the other: two
    # Spark drivers at once on two cores take twice as long as in turn.)
    bronze_root = tmp_path / "bronze-only"
    lake = settings.lake.model_copy(update={"root": f"{bronze_root}/lake", "checkpoints": f"{bronze_root}/checkpoints"})
    bronze_settings = settings.model_copy(update={"lake": lake})
    spark_submit(bronze_settings, "pipelines/bronze/job.py", work)

    report = reconcile(settings)
    assert report.ok, report.lines()
    counts = (report.produced, report.bronze, report.silver, report.quarantine, report.duplicates, report.postgres)
    assert counts == (ORDERS + 1, ORDERS + 1, ORDERS, 1, 0, ORDERS)
    quarantine = DeltaTable(settings.lake.table("silver", "quarantine")).to_pyarrow_table(
        columns=["payload", "reasons"]
    )
    assert quarantine.to_pylist() == [{"payload": MALFORMED.decode(), "reasons": ["malformed_json"]}]
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id FROM transactions")
        assert {row[0] for row in cur.fetchall()} == {g.event["event_id"] for g in generated}

    # The bronze job alone holds exactly the Kafka records the ingest query wrote to bronze, payloads as sent.
    bronze_only = bronze_records(bronze_settings)
    assert len(bronze_only) == ORDERS + 1
    assert bronze_only == bronze_records(settings)
