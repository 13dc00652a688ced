"""Live minute metrics against the real broker, Delta tables and PostgreSQL.

Orders go through the ingest stream (``ecom stream all --once``), then the gold
stage (``ecom stream gold --once``); the minute rows of ``analytics_summaries``
must equal a recomputation from silver written here in plain pandas (its own
FX arithmetic and dimension encoding, from the issue's wording). Events sent
after their minute closed are counted as late and left out of the figures
until ``recompute_minutes`` adds them; ``daily_summaries`` gives the day rows.
A micro-batch replayed after a crash between its PostgreSQL commit and its
lake merge changes nothing.
"""

import datetime as dt
import math
from collections import defaultdict
from decimal import Decimal

import pandas as pd
import pytest
from deltalake import DeltaTable

from ecom.lake import prepare_lake
from ecom.reference import FX_PER_USD
from ecom.schemas import SILVER_SCHEMA
from pipelines.gold import live
from pipelines.gold.summaries import daily_summaries
from serving.db import connection
from simulator.generator import TransactionSimulator
from simulator.producer import TransactionProducer
from tests.conftest import with_registry
from tests.integration.test_gold_batch import ecom

pytestmark = pytest.mark.integration

FIGURES = ("orders", "revenue", "avg_order_value", "customers", "alerts", "alert_rate")


def send(settings, events) -> None:
    producer = TransactionProducer(settings)
    for generated in events:
        producer.send(generated)
    producer.close()
    assert producer.stats.failed == 0


def silver_frame(settings) -> pd.DataFrame:
    columns = ["event_id", "event_time", "customer_id", "amount", "currency", "items", "payment_method", "channel"]
    frame = DeltaTable(settings.lake.table("silver", "transactions")).to_pandas(columns=[*columns, "is_fraud"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame


def recompute(silver: pd.DataFrame, period: str) -> dict[tuple, float]:
    """(metric, period start, dimension) -> value, from silver rows, by the issue's definitions."""
    groups: dict[tuple, dict] = defaultdict(lambda: {"orders": 0, "revenue": 0.0, "customers": set(), "alerts": 0, "scored": 0})  # fmt: skip
    for order in silver.itertuples():
        rate = FX_PER_USD[order.currency]
        start = order.event_time.floor(period)
        categories: dict[str, float] = defaultdict(float)
        for item in order.items:
            if item["product_id"] is not None:
                categories[item["category"] or "unknown"] += item["quantity"] * float(item["unit_price"]) / rate
        keyed = [("", float(Decimal(order.amount)) / rate), (f"payment_method={order.payment_method}", None)]
        keyed += [(f"channel={order.channel}", None)] + [(f"category={c}", r) for c, r in categories.items()]
        for dimension, revenue in keyed:
            g = groups[(start, dimension)]
            g["orders"] += 1
            g["revenue"] += keyed[0][1] if revenue is None else revenue
            g["customers"].add(order.customer_id)
            g["alerts"] += order.is_fraud is True
            g["scored"] += order.is_fraud is not None and not pd.isna(order.is_fraud)
    expected = {}
    for (start, dimension), g in groups.items():
        values = {
            "orders": g["orders"],
            "revenue": g["revenue"],
            "avg_order_value": g["revenue"] / g["orders"],
            "customers": len(g["customers"]),
            "alerts": g["alerts"],
            "alert_rate": g["alerts"] / g["scored"] if g["scored"] else None,
        }
        expected.update({(m, start, dimension): v for m, v in values.items() if v is not None})
    return expected


def summaries(settings, grain: str) -> dict[tuple, float]:
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT metric, period_start, dimension, value FROM analytics_summaries WHERE grain = %s", (grain,))
        return {(m, pd.Timestamp(p).tz_convert("UTC"), d): v for m, p, d, v in cur.fetchall()}


def assert_close(got: dict, expected: dict) -> None:
    assert set(got) == set(expected), (sorted(set(got) - set(expected))[:5], sorted(set(expected) - set(got))[:5])
    # Money is summed in millionths (pipelines/gold/summaries.py: MICROS), the recomputation here in doubles.
    wrong = [(k, got[k], v) for k, v in expected.items() if not math.isclose(got[k], v, rel_tol=1e-9, abs_tol=1e-4)]
    assert not wrong, wrong[:5]


def figures_only(rows: dict) -> dict:
    return {k: v for k, v in rows.items() if k[0] != "late_events"}


@pytest.mark.timeout(1800)  # three ingest runs, a model, two gold runs and the batch steps on two shared cores
def test_live_minutes_equal_a_recomputation_from_silver_and_late_events_are_added_later(isolated, spark, tmp_path):
    from benchmarks.fraud import register_champion
    from ml.train import fit_isolation_forest, load_silver

    settings = with_registry(isolated, tmp_path)
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)).replace(second=0, microsecond=0)
    sim = TransactionSimulator(settings.simulator, seed=5)
    # 1,000 unscored orders over minutes 0-4; a model fitted on them scores the next 600 (minutes 5-9).
    send(settings, sim.events(1000, start=start, rate_per_s=1000 / 300))
    ecom(settings, "stream", "all", "--once")
    history = load_silver(settings)
    register_champion(settings, fit_isolation_forest(history, settings.fraud), history, history)
    send(settings, sim.events(600, start=start + dt.timedelta(minutes=5), rate_per_s=2))
    ecom(settings, "stream", "all", "--once")
    ecom(settings, "stream", "gold", "--once")

    # The watermark is now past minute 1: five more orders stamped in it are late; two in minute 10 are not.
    late_minute = pd.Timestamp(start + dt.timedelta(minutes=1))
    late = list(sim.events(5, start=late_minute + pd.Timedelta(seconds=7), rate_per_s=1))
    send(settings, late + list(sim.events(2, start=start + dt.timedelta(minutes=10), rate_per_s=1)))
    ecom(settings, "stream", "all", "--once")
    live.start(spark, settings, once=True).awaitTermination()  # the same stage in this process: it resumes
    silver = silver_frame(settings)
    assert len(silver) == 1607 and silver["is_fraud"].eq(True).sum() > 0

    # PostgreSQL: the figures of every minute count the on-time orders (late ones left out), plus the two new ones.
    expected_live = recompute(silver[~silver["event_id"].isin([g.event["event_id"] for g in late])], "min")
    got = summaries(settings, "minute")
    assert_close(figures_only(got), expected_live)
    late_counts = {k[1]: v for k, v in got.items() if k[0] == "late_events"}
    assert late_counts[late_minute] == 5
    assert sum(late_counts.values()) == 5 and len(late_counts) == len({k[1] for k in expected_live})

    # The lake holds the closed minutes: the same figures as PostgreSQL, the late count on the minute's overall row.
    lake = DeltaTable(settings.lake.table("gold", "minute_metrics")).to_pandas()
    assert set(lake["source"]) == {"stream"} and len(lake) > 0
    for row in lake.itertuples():
        start_ = pd.Timestamp(row.window_start).tz_convert("UTC")
        key = "" if row.dimension == "all" else f"{row.dimension}={row.dimension_value}"
        assert math.isclose(row.orders, got[("orders", start_, key)])
        assert row.revenue == got[("revenue", start_, key)]
        assert row.late_events == (5 if (start_ == late_minute and key == "") else 0)

    # The daily recomputation includes the late orders and keeps their count; minutes the stream holds open stay.
    frontier = live.stream_frontier(settings.lake.table("gold", "minute_metrics"))
    written = live.recompute_minutes(spark, settings, start, start + dt.timedelta(hours=1))
    assert written["gold/minute_metrics"] > 0 and written["pg/analytics_summaries"] > 0
    after = summaries(settings, "minute")
    everything = recompute(silver, "min")
    closed = {k: v for k, v in everything.items() if k[1] < frontier}
    still_open = {k: v for k, v in figures_only(got).items() if k[1] >= frontier}
    assert_close(figures_only(after), {**closed, **still_open})
    assert after[("late_events", late_minute, "")] == 5
    assert after[("orders", late_minute, "")] == got[("orders", late_minute, "")] + 5
    lake = DeltaTable(settings.lake.table("gold", "minute_metrics")).to_pandas()
    assert set(lake.loc[pd.to_datetime(lake["window_start"], utc=True) < frontier, "source"]) == {"batch"}

    # Day rows, from silver, with the day's late count.
    day_start = start.replace(hour=0, minute=0)
    daily_summaries(spark, settings, day_start, day_start + dt.timedelta(days=2))
    days = summaries(settings, "day")
    assert_close(figures_only(days), recompute(silver, "D"))
    assert sum(v for k, v in days.items() if k[0] == "late_events") == 5


def silver_rows(spark, settings, orders, first_offset):
    """Full silver rows for (event_id, seconds after 10:00, customer, amount USD), appended to silver."""
    t0 = dt.datetime(2026, 11, 20, 10, 0)
    rows = []
    for i, (event_id, seconds, customer, amount) in enumerate(orders, first_offset):
        at = t0 + dt.timedelta(seconds=seconds)
        values = {f.name: None for f in SILVER_SCHEMA.fields}
        values.update(
            event_id=event_id, transaction_id=event_id, event_time=at, customer_id=customer, item_count=1,
            items=[("P1", "books", 1, Decimal(amount))], amount=Decimal(amount), currency="USD",
            payment_method="card", channel="web", schema_version=1, event_date=at.date(), kafka_topic="t",
            kafka_partition=0, kafka_offset=i, processed_time=at + dt.timedelta(seconds=1), pipeline_version="test",
        )  # fmt: skip
        rows.append(tuple(values[f.name] for f in SILVER_SCHEMA.fields))
    df = spark.createDataFrame(rows, SILVER_SCHEMA)
    df.write.format("delta").mode("append").save(settings.lake.table("silver", "transactions"))
    return df.select(*live.LIVE_COLUMNS)


def test_a_batch_replayed_after_a_crash_before_its_lake_merge_changes_nothing(isolated, spark, monkeypatch):
    settings = isolated
    prepare_lake(spark, settings)
    first = silver_rows(spark, settings, [("a1", 5, "C1", "10.00"), ("a2", 30, "C2", "20.00")], 0)
    # 10:03:00 moves the watermark (2 minutes) to 10:01:00: minute 10:00 closes in batch 1.
    second = silver_rows(spark, settings, [("a3", 180, "C1", "5.00")], 2)

    def snapshot():
        with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT metric, grain, period_start, dimension, value FROM analytics_summaries ORDER BY 1, 2, 3, 4"
            )
            pg = cur.fetchall()
            cur.execute("SELECT batch_id, progress FROM stream_progress ORDER BY batch_id")
            progress = cur.fetchall()
        lake = DeltaTable(settings.lake.table("gold", "minute_metrics")).to_pandas().drop(columns="updated_at")
        return pg, progress, lake.sort_values(["window_start", "dimension", "dimension_value"]).reset_index(drop=True)

    batch = live.MinuteBatch(settings)
    batch(first, 0)
    with monkeypatch.context() as patch:
        patch.setattr(live, "merge_into_lake", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash")))
        with pytest.raises(RuntimeError, match="crash"):
            batch(second, 1)  # PostgreSQL committed, the lake merge never happened
    assert DeltaTable(settings.lake.table("gold", "minute_metrics")).to_pandas().empty

    restarted = live.MinuteBatch(settings)  # a new process: the state comes back from PostgreSQL and silver
    restarted(second, 1)
    after_replay = snapshot()
    pg, progress, lake = after_replay
    assert (
        len(lake) == 4 and set(lake["orders"]) == {2} and lake["revenue"].max() == 30.0
    )  # 10:00 overall/books/card/web
    assert [b for b, _ in progress] == [0, 1]
    restarted(second, 1)  # and once more: nothing moves
    live.MinuteBatch(settings)(second, 1)
    pd.testing.assert_frame_equal(snapshot()[2], lake)
    assert snapshot()[:2] == (pg, progress)
