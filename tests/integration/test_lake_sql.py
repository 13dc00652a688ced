"""``ecom sql`` on real Delta tables written with delta-rs: tables by name, time travel, formats, unknown tables.

A small lake of its own: ``gold/rfm`` with two commits (one ``as_of`` partition
each) and ``gold/cohorts`` with one, in the declared schemas. No broker or
database is needed.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ecom.cli import main
from ecom.schemas import COHORT_SCHEMA, RFM_SCHEMA, arrow_schema
from ecom.settings import child_environment

pytestmark = pytest.mark.integration

FIRST = [("c1", "Champions"), ("c2", "Lost"), ("c3", "Lost")]
SECOND = [("c1", "Champions"), ("c2", "At Risk")]


def rfm_rows(as_of: dt.date, customers: list[tuple[str, str]]) -> pa.Table:
    rows = [
        {"as_of": as_of, "customer_id": cid, "recency_days": 3, "frequency": 2, "monetary": 10.25, "r_score": 5,
         "f_score": 5, "m_score": 5, "rfm_score": "555", "segment": segment, "previous_segment": None}
        for cid, segment in customers
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=arrow_schema(RFM_SCHEMA))


@pytest.fixture(scope="module")
def lake(tmp_path_factory, settings):
    """Settings whose lake holds gold/rfm (versions 0 and 1) and gold/cohorts; the commit time of rfm v0."""
    root = tmp_path_factory.mktemp("lake-sql")
    lake_settings = settings.model_copy(update={"lake": settings.lake.model_copy(update={"root": str(root)})})
    rfm = lake_settings.lake.table("gold", "rfm")
    write_deltalake(rfm, rfm_rows(dt.date(2026, 11, 1), FIRST), partition_by=["as_of"])
    time.sleep(0.05)  # the next commit gets a later timestamp
    write_deltalake(rfm, rfm_rows(dt.date(2026, 11, 2), SECOND), partition_by=["as_of"], mode="append")
    cohorts = pa.Table.from_pylist(
        [{"cohort_month": dt.date(2026, 10, 1), "months_since_first": 0, "cohort_size": 3, "active_customers": 3,
          "retention_rate": 1.0, "orders": 4, "revenue": 41.0, "avg_order_value": 10.25,
          "orders_per_active_customer": 4 / 3}],
        schema=arrow_schema(COHORT_SCHEMA),
    )  # fmt: skip
    write_deltalake(lake_settings.lake.table("gold", "cohorts"), cohorts)
    v0 = next(c for c in DeltaTable(rfm).history() if c["version"] == 0)
    return lake_settings, dt.datetime.fromtimestamp(v0["timestamp"] / 1000, dt.UTC)


@pytest.fixture
def ecom_sql(lake, monkeypatch, capsys):
    """Runs ``ecom sql ...`` in this process against the lake; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("ECOM_LAKE__ROOT", lake[0].lake.root)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["sql", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_tables_by_name_at_their_current_version(ecom_sql):
    code, out, err = ecom_sql(
        "select r.segment, count(*) as customers, max(c.cohort_size) as cohort_size "
        "from gold.rfm r cross join gold.cohorts c group by r.segment order by r.segment"
    )
    assert code == 0, err
    assert out.splitlines() == [
        "segment    customers  cohort_size",
        "---------  ---------  -----------",
        "At Risk            1            3",
        "Champions          2            3",
        "Lost               2            3",
        "(3 rows)",
    ]


def test_only_the_tables_named_are_opened(ecom_sql, lake):
    code, out, err = ecom_sql("select count(*) as n from gold.cohorts")
    assert code == 0 and out.splitlines()[2].strip() == "1", err
    code, out, err = ecom_sql("select count(*) from silver.transactions")  # not in this lake
    assert code == 2 and out == ""
    path = lake[0].lake.table("silver", "transactions")
    assert (
        err
        == f"ecom sql: silver.transactions has no Delta table at {path} yet (the stage that writes it has not run)\n"
    )


def test_time_travel_to_a_version(ecom_sql):
    query = "select customer_id, segment from gold.rfm order by as_of, customer_id"
    code, out, err = ecom_sql(query, "--as-of-version", "0", "--format", "csv")
    assert code == 0, err
    assert out.splitlines() == ["customer_id,segment", "c1,Champions", "c2,Lost", "c3,Lost"]
    assert err == "gold.rfm: version 0\n"
    code, out, _ = ecom_sql(query, "--as-of-version", "1", "--format", "csv")
    assert out.splitlines()[-2:] == ["c1,Champions", "c2,At Risk"] and len(out.splitlines()) == 6


def test_time_travel_per_table(ecom_sql):
    query = "select (select count(*) from gold.rfm) as rfm_rows, (select count(*) from gold.cohorts) as cohort_rows"
    code, out, err = ecom_sql(query, "--as-of-version", "gold.rfm=0", "--format", "json")
    assert code == 0, err
    assert json.loads(out) == [{"rfm_rows": 3, "cohort_rows": 1}]
    code, _, err = ecom_sql(query, "--as-of-version", "gold.customers=0")
    assert code == 2 and "names gold.customers, which the query does not read" in err


def test_time_travel_to_a_timestamp(ecom_sql, lake):
    _, v0_committed = lake
    query = "select count(*) as n from gold.rfm"
    code, out, err = ecom_sql(query, "--as-of", v0_committed.isoformat(), "--format", "json")
    assert code == 0, err
    assert json.loads(out) == [{"n": 3}] and err == "gold.rfm: version 0\n"
    naive_later = (v0_committed + dt.timedelta(hours=1)).replace(tzinfo=None).isoformat()  # UTC when no zone
    code, out, _ = ecom_sql(query, "--as-of", naive_later, "--format", "json")
    assert json.loads(out) == [{"n": 5}]
    code, out, err = ecom_sql(query, "--as-of", "2001-01-01T00:00:00")
    assert code == 2 and out == "" and err.startswith("ecom sql: gold.rfm did not exist at 2001-01-01T00:00:00+00:00")
    code, _, err = ecom_sql(query, "--as-of-version", "7")
    assert code == 2 and err == "ecom sql: gold.rfm has no version 7: its versions are 0 to 1\n"


def test_each_format(ecom_sql):
    query = "select customer_id, as_of, monetary, segment from gold.rfm where as_of = date '2026-11-02' order by 1"
    code, table, _ = ecom_sql(query)
    assert code == 0 and table.splitlines()[2].split() == ["c1", "2026-11-02", "10.25", "Champions"]
    code, csv_out, _ = ecom_sql(query, "--format", "csv")
    assert csv_out == "customer_id,as_of,monetary,segment\nc1,2026-11-02,10.25,Champions\nc2,2026-11-02,10.25,At Risk\n"
    code, json_out, _ = ecom_sql(query, "--format", "json")
    assert json.loads(json_out)[1] == {"customer_id": "c2", "as_of": "2026-11-02", "monetary": 10.25,
                                       "segment": "At Risk"}  # fmt: skip
    code, table, _ = ecom_sql("select customer_id from gold.rfm", "--max-rows", "2")
    assert len(table.splitlines()) == 5 and table.splitlines()[-1].startswith("(first 2 rows;")


def test_a_failing_query_is_one_line_with_exit_1(ecom_sql):
    code, out, err = ecom_sql("select no_such_column from gold.rfm")
    assert code == 1 and out == ""
    assert err.startswith("ecom sql: Binder Error:") and err.count("\n") == 1


def ecom_sql_process(settings, query: str) -> subprocess.CompletedProcess:
    """``ecom sql QUERY`` as its own process on the lake of ``settings``."""
    return subprocess.run(
        [sys.executable, "-m", "ecom.cli", "sql", query],
        env=child_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unknown_table_is_one_line_listing_the_known_ones_with_exit_2(lake):
    done = ecom_sql_process(lake[0], "select * from gold.rfm join gold.nope using (customer_id)")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("ecom sql: unknown table gold.nope; known tables: bronze.transactions, ")
    assert "gold.rfm" in done.stderr and "silver.quarantine" in done.stderr
    done = ecom_sql_process(lake[0], "select * from rfm")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("ecom sql: unknown table rfm (lake tables are named layer.table); known tables: ")
