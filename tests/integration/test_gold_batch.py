"""The gold batch end to end: backfilled history through the real stream, then `ecom batch daily`.

PostgreSQL's gold rows must equal an independent recomputation from silver in
pandas (RFM, cohorts, frequently bought together, minute metrics), and a
second run must change nothing.
"""

import datetime as dt
import itertools
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from ecom.reference import FX_PER_USD
from ecom.settings import child_environment
from serving.db import connection
from tests.conftest import run_ecom as ecom

pytestmark = pytest.mark.integration

AS_OF = dt.date(2026, 11, 20)
DAYS = 120
ORDERS = 6000

# The segment table, written out again here so the test does not reuse the code under test.
SEGMENTS = [
    ("Champions", (4, 5), (4, 5), (4, 5)),
    ("Can't Lose Them", (1, 1), (4, 5), (4, 5)),
    ("Loyal Customers", (2, 5), (3, 5), (3, 5)),
    ("New Customers", (4, 5), (1, 1), (1, 1)),
    ("Promising", (3, 4), (1, 1), (1, 1)),
    ("Potential Loyalist", (3, 5), (1, 3), (1, 3)),
    ("Lost", (1, 1), (1, 1), (1, 1)),
    ("Need Attention", (2, 3), (2, 3), (2, 3)),
    ("At Risk", (1, 2), (2, 5), (2, 5)),
    ("About To Sleep", (2, 3), (1, 2), (1, 2)),
    ("Hibernating", (1, 2), (1, 2), (1, 2)),
]


def pg(settings, sql) -> pd.DataFrame:
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])


def score(values: np.ndarray, worse_is_greater: bool) -> np.ndarray:
    """1 + min(4, floor(5 w / N)), w = customers with a strictly worse value."""
    n = len(values)
    ordered = np.sort(values)
    if worse_is_greater:
        worse = n - np.searchsorted(ordered, values, side="right")
    else:
        worse = np.searchsorted(ordered, values, side="left")
    return 1 + np.minimum(4, (5 * worse) // n)


def segment(r: int, f: int, m: int) -> str:
    for name, (r0, r1), (f0, f1), (m0, m1) in SEGMENTS:
        if r0 <= r <= r1 and f0 <= f <= f1 and m0 <= m <= m1:
            return name
    return "Others"


@pytest.fixture(scope="module")
def gold_run(tmp_path_factory, stack):
    """Isolated settings with 120 days of backfill streamed into silver and the daily batch run once."""
    import uuid

    from ecom.runtime.kafka import ensure_topics
    from serving.db import drop_database, recreate_database
    from tests.conftest import isolated_settings

    settings = isolated_settings(stack, tmp_path_factory.mktemp("gold"), "gold" + uuid.uuid4().hex[:8])
    recreate_database(settings.postgres.dsn)
    ensure_topics(settings)
    end = f"{AS_OF.isoformat()}T20:00:00Z"
    ecom(
        settings,
        "generate",
        "--backfill-days",
        str(DAYS),
        "--count",
        str(ORDERS),
        "--end",
        end,
        "--seed",
        "5",
        "--no-progress",
    )
    ecom(settings, "stream", "all", "--once")
    out = ecom(settings, "batch", "daily", "--as-of", AS_OF.isoformat())
    silver = DeltaTable(settings.lake.table("silver", "transactions")).to_pandas()
    silver["event_time"] = pd.to_datetime(silver["event_time"], utc=True).dt.tz_convert(None)
    silver["revenue"] = [float(a) / FX_PER_USD[c] for a, c in zip(silver["amount"], silver["currency"], strict=True)]
    # Gold sums revenue in whole millionths (docs/gold.md), so equal baskets tie whatever order they are added in.
    silver["micros"] = np.round(silver["revenue"] * 1e6).astype("int64")
    yield settings, silver, out
    drop_database(settings.postgres.dsn)


def test_daily_batch_reports_rows_per_table(gold_run):
    _, silver, out = gold_run
    assert len(silver) > ORDERS * 0.9
    for job in ("dimensions", "rfm", "cohorts", "recommendations", "minutes", "summaries"):
        assert f"{job} done" in out
    assert "gold/rfm" in out and "pg/recommendations" in out


def test_rfm_in_postgres_equals_a_recomputation(gold_run):
    settings, silver, _ = gold_run
    start = pd.Timestamp(AS_OF - dt.timedelta(days=364))
    window = silver[
        (silver["event_time"] >= start) & (silver["event_time"] < pd.Timestamp(AS_OF + dt.timedelta(days=1)))
    ]
    per = window.groupby("customer_id").agg(
        last=("event_time", "max"), frequency=("event_id", "count"), micros=("micros", "sum")
    )
    per["monetary"] = per["micros"] / 1e6
    per["recency_days"] = (pd.Timestamp(AS_OF) - per["last"].dt.normalize()).dt.days
    per["r"] = score(per["recency_days"].to_numpy(), worse_is_greater=True)
    per["f"] = score(per["frequency"].to_numpy(), worse_is_greater=False)
    per["m"] = score(per["micros"].to_numpy(), worse_is_greater=False)
    per["segment"] = [segment(r, f, m) for r, f, m in zip(per["r"], per["f"], per["m"], strict=True)]

    got = pg(
        settings,
        "SELECT customer_id, recency_days, frequency, monetary, r_score, f_score, m_score, rfm_segment, rfm_as_of "
        "FROM customers WHERE rfm_segment IS NOT NULL",
    ).set_index("customer_id")
    assert len(got) == len(per)
    joined = per.join(got, how="inner", lsuffix="_x", rsuffix="_y")
    assert len(joined) == len(per)
    assert (joined["rfm_as_of"] == AS_OF).all()
    assert (joined["recency_days_x"] == joined["recency_days_y"]).all()
    assert (joined["frequency_x"] == joined["frequency_y"]).all()
    assert np.allclose(joined["monetary_x"], joined["monetary_y"], rtol=1e-9)
    assert (joined["r"] == joined["r_score"]).all()
    assert (joined["f"] == joined["f_score"]).all()
    assert (joined["m"] == joined["m_score"]).all()
    assert (joined["segment"] == joined["rfm_segment"]).all()
    assert joined["rfm_segment"].nunique() >= 5  # a 120-day shop has a spread of segments


def test_cohorts_in_postgres_equal_a_recomputation(gold_run):
    settings, silver, _ = gold_run
    orders = silver[silver["event_time"] < pd.Timestamp(AS_OF + dt.timedelta(days=1))].copy()
    month = orders["event_time"].dt.to_period("M")
    orders["month"] = month
    orders["cohort"] = orders.groupby("customer_id")["month"].transform("min")
    orders["age"] = [(m - c).n for m, c in zip(orders["month"], orders["cohort"], strict=True)]
    sizes = orders.groupby("cohort")["customer_id"].nunique()
    cells = orders.groupby(["cohort", "age"]).agg(
        active=("customer_id", "nunique"), orders=("event_id", "count"), micros=("micros", "sum")
    )
    got = pg(
        settings,
        "SELECT cohort_month, months_since_first, cohort_size, active_customers, retention_rate, orders, revenue "
        "FROM cohorts",
    )
    got["cohort"] = pd.to_datetime(got["cohort_month"]).dt.to_period("M")
    got = got.set_index(["cohort", "months_since_first"])
    active_cells = got[got["active_customers"] > 0]
    assert len(active_cells) == len(cells)
    for (cohort, age), row in cells.iterrows():
        cell = got.loc[(cohort, age)]
        assert cell["cohort_size"] == sizes[cohort]
        assert cell["active_customers"] == row["active"]
        assert cell["orders"] == row["orders"]
        assert math.isclose(cell["revenue"], row["micros"] / 1e6, rel_tol=1e-12)
        assert math.isclose(cell["retention_rate"], row["active"] / sizes[cohort], rel_tol=1e-12)


def test_frequently_bought_together_equals_a_recomputation(gold_run):
    settings, silver, _ = gold_run
    gold = settings.gold
    start = pd.Timestamp(AS_OF - dt.timedelta(days=gold.recommendation_window_days - 1))
    window = silver[
        (silver["event_time"] >= start) & (silver["event_time"] < pd.Timestamp(AS_OF + dt.timedelta(days=1)))
    ]
    baskets = [sorted({line["product_id"] for line in items}) for items in window["items"]]
    total = len(baskets)
    with_product = Counter(p for b in baskets for p in b)
    both = Counter(pair for b in baskets for pair in itertools.permutations(b, 2))
    expected = {}
    for (a, b), n in both.items():
        confidence = n / with_product[a]
        if n >= gold.fbt_min_support_count and confidence >= gold.fbt_min_confidence:
            expected[(a, b)] = (n, n / total, confidence, confidence / (with_product[b] / total))
    got = pg(settings, "SELECT antecedent, consequent, orders_with_both, support, confidence, lift FROM product_pairs")
    assert expected, "the backfill has repeated baskets"
    assert len(got) == len(expected)
    for row in got.itertuples():
        n, support, confidence, lift = expected[(row.antecedent, row.consequent)]
        assert row.orders_with_both == n
        assert math.isclose(row.support, support, rel_tol=1e-12)
        assert math.isclose(row.confidence, confidence, rel_tol=1e-12)
        assert math.isclose(row.lift, lift, rel_tol=1e-12)


def test_minute_metrics_equal_a_recomputation(gold_run):
    settings, silver, _ = gold_run
    since = pd.Timestamp(AS_OF - dt.timedelta(days=settings.gold.recompute_days - 1))
    until = pd.Timestamp(AS_OF + dt.timedelta(days=1))
    recent = silver[(silver["event_time"] >= since) & (silver["event_time"] < until)].copy()
    recent["minute"] = recent["event_time"].dt.floor("min")
    expected = recent.groupby("minute").agg(orders=("event_id", "count"), micros=("micros", "sum"))
    expected["revenue"] = expected["micros"] / 1e6
    got = pg(
        settings,
        "SELECT period_start, metric, value FROM analytics_summaries "
        "WHERE grain = 'minute' AND dimension = '' AND metric IN ('orders', 'revenue')",
    )
    got["minute"] = pd.to_datetime(got["period_start"], utc=True).dt.tz_convert(None)
    got = got[(got["minute"] >= since) & (got["minute"] < until)]
    wide = got.pivot_table(index="minute", columns="metric", values="value")
    assert len(expected) > 0
    assert len(wide) == len(expected)
    assert (wide["orders"].round().astype(int) == expected["orders"].reindex(wide.index)).all()
    revenue = pd.DataFrame({"got": wide["revenue"], "expected": expected["revenue"].reindex(wide.index)})
    off = revenue[~np.isclose(revenue["got"], revenue["expected"], rtol=1e-9)]
    assert off.empty, (off["got"] - off["expected"]).to_string()


def test_customer_recommendations_are_an_indexed_lookup(gold_run):
    settings, _, _ = gold_run
    customer = pg(settings, "SELECT subject_id FROM recommendations WHERE subject_type = 'customer' LIMIT 1")
    assert len(customer) == 1
    cid = customer.iloc[0, 0]
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SET enable_seqscan = off")
        cur.execute(
            "EXPLAIN SELECT product_id, rank, score, strategy FROM recommendations "
            "WHERE subject_type = 'customer' AND subject_id = %s ORDER BY rank",
            (cid,),
        )
        plan = " ".join(r[0] for r in cur.fetchall())
    assert "Index" in plan and "Seq Scan" not in plan


KEYS = {
    "customers": ["customer_id"],
    "products": ["product_id"],
    "cohorts": ["cohort_month", "months_since_first"],
    "product_pairs": ["antecedent", "consequent"],
    "recommendations": ["subject_type", "subject_id", "product_id"],
    "fx_rates": ["currency"],
    "analytics_summaries": ["metric", "grain", "period_start", "dimension"],
}


def test_a_second_run_changes_nothing(gold_run):
    """Same rows, same values, and (for the batch's own tables) the same updated_at: no row was even rewritten."""
    settings, _, _ = gold_run

    def snapshot():
        frames = {t: pg(settings, f"SELECT * FROM {t}") for t in KEYS}
        frames["analytics_summaries"] = frames["analytics_summaries"].drop(columns=["updated_at"])
        return {t: f.sort_values(KEYS[t]).reset_index(drop=True) for t, f in frames.items()}

    before = snapshot()
    ecom(settings, "batch", "daily", "--as-of", AS_OF.isoformat())
    after = snapshot()
    for table in KEYS:
        assert len(before[table]) > 0, table
        pd.testing.assert_frame_equal(before[table], after[table], check_exact=False, rtol=1e-12, obj=table)
    runs = pg(settings, "SELECT job, status FROM batch_runs")
    assert (runs["status"] == "succeeded").all()
    assert runs["job"].value_counts().min() >= 2


def test_a_job_runs_alone_under_spark_submit(gold_run, tmp_path):
    from ecom.jars import spark_jars
    from ecom.settings import ROOT

    settings, _, _ = gold_run
    before = pg(settings, "SELECT count(*) AS n FROM batch_runs WHERE job = 'cohorts' AND status = 'succeeded'")
    env = {
        **child_environment(settings),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    cmd = [
        str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]", "--jars", ",".join(spark_jars(settings)),
        str(ROOT / "pipelines/gold/job.py"), "cohorts", "--as-of", AS_OF.isoformat(), "--profile", settings.profile,
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "gold/cohorts" in done.stdout
    after = pg(settings, "SELECT count(*) AS n FROM batch_runs WHERE job = 'cohorts' AND status = 'succeeded'")
    assert after["n"][0] == before["n"][0] + 1
