"""The stages on a Spark standalone cluster equal a local-mode run; the project works as a wheel.

A master and two workers (1 core, 1 GB each) start from pyspark's own Spark distribution on 127.0.0.1, on free
ports. The project goes to the driver and the executors as its wheel (``--py-files``), run by an interpreter
that cannot import the checkout; the job files are the wheel's. The same orders go through the ingest stream
(Kafka -> bronze + silver + PostgreSQL, ``--once``), the live minute metrics (``--once``) and the daily gold
batch, each into a lake, a database and a model registry of its own on this machine's disk (the workers share
it): on the cluster, each stage its own ``spark-submit`` (an application of the cluster); and, at the same
time, with ``--master local[2]``, every stage in one driver (``stages.py``). Reconcile must be exact for both,
and every lake table and the PostgreSQL tables must hold the same rows (counts and a checksum of the rows
without their processing times).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ecom.jars import spark_jars
from ecom.lake import TABLES
from ecom.reconcile import reconcile
from ecom.settings import ROOT, Settings, child_environment
from ecom.storage import delta_table, is_delta_table
from serving.db import connection, drop_database, recreate_database
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from tests.conftest import with_registry
from tests.integration.standalone import StandaloneCluster, build_wheel, clean_python, spark_submit, unpack

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

ORDERS = 400
MALFORMED = b'{"event_id": "broken", "amount": '
PII_KEY = "cluster-test-key"  # both runs pseudonymise e-mails alike
# Columns that say when a row was processed, or a random id: not part of what a run computes.
VOLATILE = {
    "ingest_time", "ingest_date", "processed_time", "quarantined_time", "detected_time", "updated_time",
    "updated_at", "created_at", "loaded_at", "alert_id",
}  # fmt: skip
PG_TABLES = {
    "transactions": "event_id",
    "customers": "customer_id",
    "products": "product_id",
    "cohorts": "cohort_month, months_since_first",
    "recommendations": "subject_type, subject_id, product_id",
    "product_pairs": "antecedent, consequent",
    "fx_rates": "currency",
}
STAGES = (
    ("pipelines/silver/job.py", ["--once"]),  # Kafka -> bronze + silver + PostgreSQL
    ("pipelines/gold/live.py", ["--once"]),  # silver -> live minute metrics
    ("pipelines/gold/job.py", ["daily"]),  # the daily gold batch
)
IN_ONE_DRIVER = Path(__file__).with_name("stages.py")  # job files one after another in one driver


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """(wheel as a zip for --py-files, its unpacked files, an interpreter without the checkout)."""
    root = tmp_path_factory.mktemp("shipped")
    wheel = build_wheel(ROOT, root / "dist")
    # Spark puts .zip/.egg files of --py-files on the executors' path (a wheel is a zip by another name).
    archive = shutil.copy(wheel, root / "ecom_lakehouse.zip")
    return Path(archive), unpack(wheel, root / "app"), clean_python(root / "venv")


def test_the_wheel_loads_its_settings_outside_the_checkout(shipped, tmp_path):
    archive, app, python = shipped
    probe = (
        "import json, ecom, ecom.settings as s; c = s.load_settings('test'); "
        "print(json.dumps({'module': ecom.__file__, 'data_dir': c.data_dir, 'pom': c.jars.pom, 'conf': str(s.CONF_DIR),"
        " 'has_pom': __import__('os').path.isfile(c.jars.pom)}))"
    )
    for path in (app, archive):  # installed files, and the zip itself (as --py-files hands it over)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(path), "HOME": str(tmp_path)}
        out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        found = json.loads(out.stdout)
        assert found["module"].startswith(str(path)) and found["has_pom"]
        assert found["data_dir"] == f"{tmp_path}/data/test"  # {root}: the working directory outside a checkout
        assert not found["conf"].startswith(str(ROOT))
        home = {**env, "ECOM_HOME": str(tmp_path / "home")}
        out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=home, capture_output=True, text=True)
        assert json.loads(out.stdout)["data_dir"] == f"{tmp_path}/home/data/test"


def canonical(table: pa.Table) -> pa.Table:
    """The table without volatile columns, floats rounded (a sum's last bits depend on the order of its parts)."""
    columns = {}
    for name in table.column_names:
        if name in VOLATILE:
            continue
        column = table[name]
        columns[name] = pc.round(column, 6) if pa.types.is_floating(column.type) else column
    return pa.table(columns)


def fingerprint(rows: list[dict]) -> tuple[int, str]:
    """(rows, sha256 of the sorted rows as JSON): equal for equal multisets of rows."""
    lines = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def lake_fingerprints(settings: Settings) -> dict[str, tuple[int, str]]:
    found = {}
    for layer, name in TABLES:
        path = settings.lake.table(layer, name)
        if is_delta_table(path):
            found[f"{layer}/{name}"] = fingerprint(canonical(delta_table(path).to_pyarrow_table()).to_pylist())
    return found


def pg_fingerprints(settings: Settings) -> dict[str, tuple[int, str]]:
    found = {}
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        for table, key in PG_TABLES.items():
            cur.execute(f"SELECT * FROM {table} ORDER BY {key}")
            names = [d[0] for d in cur.description]
            rows = [
                {n: (round(v, 6) if isinstance(v, float) else v) for n, v in zip(names, row, strict=True)}
                for row in cur.fetchall()
            ]
            found[table] = fingerprint([{k: v for k, v in r.items() if k not in VOLATILE} for r in rows])
    return found


def stage_runs(settings: Settings, app: Path, as_of: str) -> list[list[str]]:
    """Each stage's job file (the wheel's) and arguments, in order."""
    runs = []
    for job, args in STAGES:
        args = [*args, "--as-of", as_of] if job.endswith("gold/job.py") else args
        runs.append([str(app / job), *args, "--profile", settings.profile])
    return runs


def submit(settings: Settings, master: str, shipped, work: Path, run: list[str], timeout_s: float) -> None:
    """``spark-submit JOB ARGS`` (``run``) on ``master`` with the shipped wheel, in ``work`` (its own
    ``ECOM_HOME``)."""
    archive, _, python = shipped
    work.mkdir(parents=True, exist_ok=True)
    env = {**child_environment(settings), "ECOM_PII_KEY": PII_KEY, "ECOM_HOME": str(work / "home")}
    job, *args = run
    spark_submit(
        Path(job), args, master=master, python=python, py_files=archive, jars=spark_jars(settings), env=env,
        cwd=work, timeout_s=timeout_s,
    )  # fmt: skip


def run_on_cluster(settings: Settings, url: str, shipped, work: Path, as_of: str) -> float:
    """Every stage on the cluster, each its own application; seconds taken."""
    started = time.monotonic()
    for run in stage_runs(settings, shipped[1], as_of):
        submit(settings, url, shipped, work, run, timeout_s=600)
    return time.monotonic() - started


def run_in_local_mode(settings: Settings, shipped, work: Path, as_of: str) -> float:
    """Every stage with ``local[2]``, one after another in one driver (``stages.py``); seconds taken."""
    started = time.monotonic()
    in_one = [str(IN_ONE_DRIVER)]
    for i, run in enumerate(stage_runs(settings, shipped[1], as_of)):
        in_one += [*(["--"] if i else []), *run]
    submit(settings, "local[2]", shipped, work, in_one, timeout_s=600 * len(STAGES))
    return time.monotonic() - started


@pytest.fixture
def cluster(tmp_path):
    """A standalone master and two workers, starting (``wait_for_workers``); stopped afterwards."""
    cluster = StandaloneCluster(tmp_path / "cluster")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def test_stages_on_a_standalone_cluster_equal_local_mode(cluster, isolated, shipped, tmp_path):
    settings = with_registry(isolated, tmp_path / "registry")  # no champion: both runs score alike (not at all)
    producer = TransactionProducer(settings)
    for g in TransactionSimulator(settings.simulator, seed=11).backfill(ORDERS, days=20):
        producer.send(g)
    producer.send_raw("C-bad", MALFORMED)
    producer.close()
    assert producer.stats.failed == 0

    # The local-mode run: the same topic into a lake, a database and an (empty) registry of its own.
    local_lake = settings.lake.model_copy(
        update={"root": f"{tmp_path}/local/lake", "checkpoints": f"{tmp_path}/local/checkpoints"}
    )
    local_db = settings.postgres.model_copy(update={"database": f"{settings.postgres.database}_local"})
    local = with_registry(settings, tmp_path / "local" / "registry").model_copy(
        update={"lake": local_lake, "postgres": local_db}
    )
    recreate_database(local.postgres.dsn)
    as_of = dt.datetime.now(dt.UTC).date().isoformat()
    work = tmp_path / "work"
    try:
        # Both runs at once: the machine's cores are idle for much of either (JVM start-ups, scheduling).
        with ThreadPoolExecutor(max_workers=1) as background:
            local_run = background.submit(run_in_local_mode, local, shipped, work / "local", as_of)
            cluster.wait_for_workers()
            cluster_s = run_on_cluster(settings, cluster.url, shipped, work / "cluster", as_of)
            state = cluster.state()
            cluster.stop()
            local_s = local_run.result()
        print(f"stages on the cluster {cluster_s:.0f} s, in local mode (at the same time) {local_s:.0f} s")

        # Every stage ran as an application of the cluster, with executors on both workers.
        apps = state["completedapps"] + state["activeapps"]
        assert len(apps) == len(STAGES), apps
        assert {w["state"] for w in state["workers"]} == {"ALIVE"} and len(state["workers"]) == 2

        for run in (settings, local):
            report = reconcile(run)
            assert report.ok, report.lines()
            counts = (report.produced, report.bronze, report.silver, report.quarantine, report.duplicates)
            assert counts == (ORDERS + 1, ORDERS + 1, ORDERS, 1, 0)
            assert report.postgres == ORDERS

        on_cluster, in_local = lake_fingerprints(settings), lake_fingerprints(local)
        assert set(on_cluster) == {f"{layer}/{name}" for layer, name in TABLES}
        assert on_cluster == in_local
        for table in ("gold/customers", "gold/products", "gold/rfm", "gold/cohorts", "gold/minute_metrics"):
            assert on_cluster[table][0] > 0, f"{table} is empty"
        assert pg_fingerprints(settings) == pg_fingerprints(local)
    finally:
        drop_database(local.postgres.dsn)
