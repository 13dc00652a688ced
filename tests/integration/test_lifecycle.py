"""The data lifecycle end to end: 120 days of backfill, `ecom lifecycle run` with the streams running.

The ingest stream (Kafka -> bronze + silver + PostgreSQL) and the live gold stream (a Delta stream over
silver) run as processes while live orders arrive and the lifecycle archives and deletes. Then: the hot
tables hold only the horizon, the archive holds the rest, reconcile is exact counting the archive, a rerun
changes nothing, a duplicate of an archived event is a duplicate, and reconcile still works once Kafka has
trimmed old offsets.
"""

import datetime as dt
import json
import subprocess
import sys
import time

import duckdb
import pytest
from deltalake import DeltaTable

from ecom.reconcile import reconcile
from ecom.runtime.process import stop_group, wait_until
from ecom.settings import child_environment
from pipelines.lifecycle.policy import LAKE_POLICIES, cutoff, cutoff_instant
from serving.db import connection
from simulator.generator import TransactionSimulator, format_event_time
from simulator.producer import TransactionProducer

pytestmark = pytest.mark.integration

DAYS = 120
ORDERS = 3000


def ecom(settings, *args, timeout=600) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ecom.cli", *args],
        env=child_environment(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"ecom {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def lifecycle(settings, *args) -> dict:
    """`ecom lifecycle run --json`: its report (the last line)."""
    return json.loads(ecom(settings, "lifecycle", "run", "--json", *args).strip().splitlines()[-1])


def start(settings, log_dir, name, *args) -> subprocess.Popen:
    log = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "ecom.cli", *args],
        env=child_environment(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def caught_up(settings) -> bool:
    """Every record Kafka holds is in bronze, and every layer agrees (the tables exist once the stream started)."""
    try:
        report = reconcile(settings, allow_pending=True)
    except Exception:  # noqa: BLE001 (no tables yet)
        return False
    return report.pending == 0 and report.ok


def minute_rows(settings, since_sql: str = "'-infinity'") -> int:
    """Minute rows the live gold stream has written to PostgreSQL since ``since_sql``."""
    return pg_one(
        settings, f"SELECT count(*) FROM analytics_summaries WHERE grain = 'minute' AND period_start >= {since_sql}"
    )[0]


def versions(settings) -> dict[str, int]:
    """Delta version of every hot and archive table of the lifecycle."""
    found = {}
    for p in LAKE_POLICIES:
        for kind, path in (
            ("hot", settings.lake.table(p.layer, p.table)),
            ("archive", settings.lake.archive(p.layer, p.table)),
        ):
            try:
                found[f"{kind}:{p.name}"] = DeltaTable(path).version()
            except Exception:  # noqa: BLE001 (no archive yet)
                found[f"{kind}:{p.name}"] = -1
    return found


def lifecycle_commits(settings) -> int:
    """Commits of the lifecycle (tagged in their userMetadata) in the hot tables."""
    return sum(
        '"lifecycle"' in (c.get("userMetadata") or "")
        for p in LAKE_POLICIES
        for c in DeltaTable(settings.lake.table(p.layer, p.table)).history()
    )


def ages(path: str, age: str) -> tuple:
    """(rows, oldest event date, newest event date) of a table, by a policy's age expression."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("t", DeltaTable(path).to_pyarrow_dataset())
    return con.execute(f"SELECT count(*), min({age}), max({age}) FROM t").fetchone()


def pg_one(settings, sql, params=()):
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


@pytest.fixture(scope="module")
def run(tmp_path_factory, stack):
    """A 120-day shop streamed in; the lifecycle run (dry, then for real) while both streams run and live orders
    arrive; then run again once all is caught up."""
    import uuid

    from ecom.runtime.kafka import ensure_topics
    from serving.db import drop_database, recreate_database
    from tests.conftest import isolated_settings

    root = tmp_path_factory.mktemp("lifecycle")
    settings = isolated_settings(stack, root, "life" + uuid.uuid4().hex[:8])
    recreate_database(settings.postgres.dsn)
    ensure_topics(settings)
    ecom(settings, "generate", "--backfill-days", str(DAYS), "--count", str(ORDERS), "--seed", "12", "--no-progress")
    streams = [start(settings, root, "ingest", "stream", "all")]
    try:
        assert wait_until(lambda: caught_up(settings), 300, 2), "the stream did not take in the backfill"
        streams.append(start(settings, root, "gold", "stream", "gold"))  # once silver exists
        assert wait_until(lambda: minute_rows(settings) > 0, 240, 2), "the live gold stream did not start"
        live = start(settings, root, "live", "generate", "--rate", "20", "--duration", "25", "--no-progress")
        time.sleep(4)  # live orders are arriving
        before_dry = versions(settings)
        dry = lifecycle(settings, "--dry-run")
        after_dry = versions(settings)
        dry_commits = lifecycle_commits(settings)
        first = lifecycle(settings)
        assert live.wait(120) == 0
        assert wait_until(lambda: caught_up(settings), 120, 2), "the stream did not take in the live orders"
        alive = [s.poll() is None for s in streams]
        before_rerun = versions(settings)
        second = lifecycle(settings)
        yield {
            "settings": settings,
            "dry": dry,
            "dry_versions": (before_dry, after_dry),
            "dry_lifecycle_commits": dry_commits,
            "first": first,
            "second": second,
            "rerun_versions": (before_rerun, versions(settings)),
            "alive": alive,
            "streams": streams,
            "root": root,
        }
    finally:
        for s in streams:
            stop_group(s.pid)
            s.wait()
        drop_database(settings.postgres.dsn)


def moved(report: dict, table: str) -> int:
    return sum(m["rows"] for m in report["moves"] if m["table"] == table)


def test_the_dry_run_says_what_would_move_and_changes_nothing(run):
    dry = run["dry"]
    assert dry["dry_run"] and not dry["changed"]
    assert moved(dry, "bronze/transactions") > ORDERS * 0.15  # 30 of 120 days
    assert moved(dry, "silver/transactions") > ORDERS * 0.15
    before, after = run["dry_versions"]  # (the stream appends live orders meanwhile)
    assert {k: v for k, v in after.items() if k.startswith("archive:")} == dict.fromkeys(
        (k for k in before if k.startswith("archive:")), -1
    )  # no archive made
    assert run["dry_lifecycle_commits"] == 0


def test_the_streams_keep_running_through_the_deletes(run):
    assert run["alive"] == [True, True], [(run["root"] / f"{n}.log").read_text()[-2000:] for n in ("ingest", "gold")]
    settings = run["settings"]
    # the live gold stream takes in the live orders that arrived during and after the lifecycle's deletes
    assert wait_until(lambda: minute_rows(settings, "now() - interval '3 minutes'") > 0, 60, 1)
    assert [s.poll() for s in run["streams"]] == [None, None]


def test_hot_tables_hold_only_the_horizon_and_the_archive_the_rest(run):
    settings, first = run["settings"], run["first"]
    today = dt.datetime.now(dt.UTC).date()
    for p in LAKE_POLICIES:
        first_kept = cutoff(today, p.days(settings.retention))
        n, oldest, _ = ages(settings.lake.table(p.layer, p.table), p.age)
        assert n == 0 or oldest >= first_kept, p.name
        if p.name in ("bronze/transactions", "silver/transactions"):  # (the backfill has no other old rows)
            archived, _, newest = ages(settings.lake.archive(p.layer, p.table), p.age)
            assert archived == moved(first, p.name) > 0, p.name
            assert newest < first_kept, p.name
    archive = DeltaTable(settings.lake.archive("silver", "transactions"))
    assert archive.metadata().partition_columns == ["event_month"]
    assert archive.to_pandas(columns=["event_month"])["event_month"].nunique() >= 2  # 30 days span two months
    (oldest_served,) = pg_one(settings, "SELECT min(event_time) FROM transactions")
    assert oldest_served >= cutoff_instant(cutoff(today, settings.retention.days))
    pruned = {p["table"]: p["rows"] for p in first["pruned"]}
    assert pruned["transactions"] == moved(first, "silver/transactions")


def test_reconcile_is_exact_counting_the_archive(run):
    report = reconcile(run["settings"])
    assert report.ok, report.lines()
    assert report.pending == 0 and report.in_both == 0
    assert report.archived["bronze"] == moved(run["first"], "bronze/transactions")
    assert report.archived["silver"] == moved(run["first"], "silver/transactions")
    assert report.bronze == report.produced == report.silver + report.quarantine + report.duplicates
    assert report.bronze > ORDERS


def test_a_rerun_changes_nothing(run):
    second = run["second"]
    assert not second["changed"], second
    assert all(m["rows"] == 0 for m in second["moves"]) and all(p["rows"] == 0 for p in second["pruned"])
    before, after = run["rerun_versions"]
    assert before == after


def test_a_duplicate_of_an_archived_event_is_a_duplicate_and_an_old_order_is_archived_next(run):
    """Rule (docs/lifecycle.md): an event older than the hot horizon is looked up in the archive too, so its
    repeat is a duplicate; a new order older than the horizon is taken in and moves to the archive next run."""
    settings = run["settings"]
    archived = DeltaTable(settings.lake.archive("bronze", "transactions")).to_pandas(columns=["kafka_key", "payload"])
    resent = archived.head(3)
    old_event = TransactionSimulator(settings.simulator, seed=77).generate(dt.datetime.now(dt.UTC)).event
    old_event["event_time"] = format_event_time(dt.datetime.now(dt.UTC) - dt.timedelta(days=DAYS - 10))
    producer = TransactionProducer(settings)
    for key, payload in zip(resent["kafka_key"], resent["payload"], strict=True):
        producer.send_raw(key, payload.encode())
    producer.send_raw(old_event["customer_id"], json.dumps(old_event).encode())
    producer.close()
    assert wait_until(lambda: caught_up(settings), 120, 2)

    ids = [json.loads(p)["event_id"] for p in resent["payload"]]
    duplicates = DeltaTable(settings.lake.table("silver", "duplicates")).to_pandas(columns=["event_id"])
    silver = DeltaTable(settings.lake.table("silver", "transactions")).to_pandas(columns=["event_id"])
    assert sorted(duplicates["event_id"]) == sorted(ids)
    assert not set(ids) & set(silver["event_id"])
    assert old_event["event_id"] in set(silver["event_id"])
    assert reconcile(settings).ok

    again = lifecycle(settings)
    assert moved(again, "silver/duplicates") == 3 and moved(again, "silver/transactions") == 1
    report = reconcile(settings)
    assert report.ok, report.lines()
    assert report.archived["duplicates"] == 3


def test_reconcile_reports_what_kafka_no_longer_holds(run):
    """Kafka trims old records (its retention): reconcile checks the rest and counts those in the lake only."""
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient

    settings = run["settings"]
    full = reconcile(settings)
    topic = settings.kafka.transactions_topic
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers.split(","))
    try:
        admin.delete_records({TopicPartition(topic, p): 500 for p in range(3)})
    finally:
        admin.close()
    report = reconcile(settings)
    assert report.ok, report.lines()
    assert report.out_of_retention == 1500
    assert report.produced == full.produced - 1500
    assert report.bronze == full.bronze
    assert any("older than Kafka's retention" in line for line in report.lines())
