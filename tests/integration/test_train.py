"""``ecom train`` against real parts: a Delta silver table, labels on the real broker, a local MLflow registry."""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import UTC, datetime

import pytest

from benchmarks.fraud import simulate, with_features
from ml import registry
from ml.model import INPUT_COLUMNS
from ml.train import SILVER_COLUMNS, run_train
from tests.conftest import with_registry, with_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def trained_setup(stack, spark, tmp_path):
    """Isolated settings: a silver table from 12,000 simulated orders, their labels on a fresh topic, an empty registry."""
    from kafka import KafkaProducer

    from ecom.runtime.kafka import ensure_topics

    settings = with_registry(with_topic(stack, "labels", uuid.uuid4().hex[:8]), tmp_path).model_copy(
        update={"lake": stack.lake.model_copy(update={"root": str(tmp_path / "lake")})}
    )
    topic = settings.kafka.labels_topic
    ensure_topics(settings)
    orders = simulate(settings, seed=5, count=12_000, days=30, end=datetime(2026, 2, 1, tzinfo=UTC))
    silver = with_features(orders)
    from deltalake import write_deltalake

    write_deltalake(settings.lake.table("silver", "transactions"), silver[list(SILVER_COLUMNS)])
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    fraud = orders[orders["label_is_fraud"]]
    for row in fraud.itertuples():
        label = {"event_id": row.event_id, "transaction_id": "T", "is_fraud": True, "fraud_pattern": row.label_pattern,
                 "label_time": row.event_time.isoformat()}  # fmt: skip
        producer.send(topic, json.dumps(label).encode())
    producer.flush()
    producer.close()
    return settings, silver, len(fraud)


def args(**kw) -> argparse.Namespace:
    base = {
        "silver": None,
        "labels_topic": None,
        "holdout_fraction": None,
        "no_challenger": False,
        "promote_challenger": False,
    }
    return argparse.Namespace(**(base | kw))


def test_train_registers_a_champion_that_loads_and_scores(trained_setup, capsys):
    settings, silver, n_labels = trained_setup
    assert registry.load_champion(settings) is None  # nothing registered: no exception
    assert registry.champion_version(settings) is None

    assert run_train(settings, args()) == 0
    printed = capsys.readouterr().out
    assert f"{n_labels:,} fraud labels" in printed and "ROC-AUC" in printed and "recall account_takeover" in printed

    version = registry.champion_version(settings)
    assert version == "1"  # the forest is registered first and becomes champion
    assert registry.alias_version(settings, settings.fraud.challenger_alias) == "2"  # challenger, not serving
    scorer, loaded = registry.load_champion(settings)
    assert loaded == version and scorer.kind == "isolation_forest"
    out = scorer.score(silver.tail(500))
    assert out["fraud_score"].between(0, 100).all() and len(out) == 500

    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}@{settings.mlflow.alias}")
    inputs = {c["name"] for c in model.metadata.get_input_schema().to_dict()}
    assert inputs == set(INPUT_COLUMNS)  # no label in the model's signature
    run = mlflow.get_run(model.metadata.run_id)
    assert run.data.metrics["roc_auc"] > 0.8 and "pr_auc" in run.data.metrics
    assert "recall_account_takeover" in run.data.metrics and run.data.params["model_kind"] == "isolation_forest"

    # a second training: the challenger may only take over with the flag, and only if it wins by the rule
    assert run_train(settings, args(promote_challenger=True)) == 0
    champion = registry.champion_version(settings)
    kind = registry.load_champion(settings)[0].kind
    challenger = registry.alias_version(settings, settings.fraud.challenger_alias)
    assert challenger == "4"
    assert champion in {"3", "4"} and (kind == "gradient_boosting") == (champion == "4")


def test_running_stream_picks_up_a_moved_alias_without_restart(trained_setup, isolated, tmp_path):
    """Train v1 -> the stream scores with it; register v2 and move the alias -> the same process scores with v2."""
    import os
    import signal
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from ecom.runtime.process import wait_until
    from ecom.settings import child_environment
    from serving.db import connection
    from simulator.generator import TransactionSimulator
    from simulator.producer import TransactionProducer

    train_settings, _, _ = trained_setup
    assert run_train(train_settings, args(no_challenger=True)) == 0
    assert registry.champion_version(train_settings) == "1"
    settings = isolated.model_copy(update={"mlflow": train_settings.mlflow})
    env = child_environment(settings)

    def served_by(version: str) -> int:
        with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM transactions WHERE model_version = %s AND fraud_score BETWEEN 0 AND 100",
                (version,),
            )
            return cur.fetchone()[0]

    def send(n: int, seed: int) -> None:
        producer = TransactionProducer(settings)
        for g in TransactionSimulator(settings.simulator, seed=seed).events(n, start=datetime.now(UTC), rate_per_s=500):
            producer.send(g)
        producer.close()
        assert producer.stats.failed == 0

    log_path = tmp_path / "stream.log"
    log_file = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecom.cli", "stream", "all"],
        env=env, start_new_session=True, stdout=log_file, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def tail() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])

    try:
        send(300, seed=1)
        assert wait_until(lambda: served_by("1") == 300, 300, interval_s=1), f"v1 scored {served_by('1')}:\n{tail()}"

        assert run_train(train_settings, args(no_challenger=True)) == 0
        client = MlflowClient(tracking_uri=settings.mlflow.tracking_uri, registry_uri=settings.mlflow.tracking_uri)
        client.set_registered_model_alias(settings.mlflow.model_name, settings.mlflow.alias, "2")
        send(300, seed=2)
        assert wait_until(lambda: served_by("2") == 300, 300, interval_s=1), f"v2 scored {served_by('2')}:\n{tail()}"
        assert proc.poll() is None  # the same process, never restarted
        assert served_by("1") == 300
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log_file.close()


def test_rescore_replaces_scores_with_the_chosen_version(trained_setup, isolated, spark):
    """Orders streamed unscored are scored afterwards by `ecom rescore`, in silver and PostgreSQL; twice is a no-op."""
    from deltalake import DeltaTable

    from pipelines.silver import job as silver_job
    from pipelines.silver.rescore import rescore
    from serving.db import connection
    from simulator.generator import TransactionSimulator
    from simulator.producer import TransactionProducer

    train_settings, _, _ = trained_setup
    settings = isolated  # no model in its registry yet: streamed rows stay unscored
    producer = TransactionProducer(settings)
    start = datetime.now(UTC)
    for g in TransactionSimulator(settings.simulator, seed=4).events(400, start=start, rate_per_s=200):
        producer.send(g)
    producer.close()
    silver_job.start(spark, settings, once=True).awaitTermination()
    path = settings.lake.table("silver", "transactions")
    assert DeltaTable(path).to_pandas(columns=["fraud_score"])["fraud_score"].isna().all()

    assert run_train(train_settings, args(no_challenger=True)) == 0
    scored = settings.model_copy(update={"mlflow": train_settings.mlflow})
    until = datetime.now(UTC).replace(year=start.year + 1)
    first = rescore(scored, start.replace(year=start.year - 1), until, version="1")
    assert first["rows"] == 400 and first["model_version"] == "1"
    table = DeltaTable(path).to_pandas(columns=["fraud_score", "model_version", "is_fraud"])
    assert table["fraud_score"].between(0, 100).all() and (table["model_version"] == "1").all()
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE is_fraud) FROM transactions WHERE model_version = '1'")
        served, flagged = cur.fetchone()
        cur.execute("SELECT count(*) FROM fraud_alerts")
        alerts = cur.fetchone()[0]
    assert served == 400 and alerts == flagged == first["alerts"] == int(table["is_fraud"].sum())

    again = rescore(scored, start.replace(year=start.year - 1), until, version="1")
    assert again == first
    assert DeltaTable(settings.lake.table("silver", "fraud_alerts")).to_pyarrow_dataset().count_rows() == alerts
