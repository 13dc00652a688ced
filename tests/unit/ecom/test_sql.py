"""``ecom sql``'s pure parts: which tables a query names, time-travel options, the text table, CSV and JSON."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json

import pytest

from ecom.sql import (
    LakeSqlError,
    TimeTravel,
    format_table,
    known_tables,
    referenced_tables,
    time_travel,
    write_csv,
    write_json,
)

LAYERS = {"bronze", "silver", "gold"}


def test_known_tables_are_the_lake_tables_by_layer_and_name():
    from ecom.lake import TABLES

    assert known_tables()[:2] == ["bronze.transactions", "silver.transactions"]
    assert len(known_tables()) == len(TABLES) and "gold.rfm" in known_tables()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("select * from gold.rfm", ["gold.rfm"]),
        (
            "with x as (select 1) select * from silver.transactions t join gold.rfm r using (customer_id), x "
            "where t.currency = 'gold.not_a_table' and exists (select 1 from GOLD.Cohorts)",
            ["silver.transactions", "gold.rfm", "gold.cohorts"],
        ),
        ('select * from "gold"."rfm" union all select * from gold.rfm', ["gold.rfm"]),
        ("select * from gold.nope", ["gold.nope"]),
        ("select * from rfm", []),  # not a lake name: DuckDB reports it
        ("select 1", []),
        ("describe gold.rfm", ["gold.rfm"]),  # not a SELECT: names found by their layer
        ("summarize silver.quarantine", ["silver.quarantine"]),
    ],
)
def test_referenced_tables_are_the_layer_qualified_names_read(query, expected):
    assert referenced_tables(query, LAYERS) == expected


def test_time_travel_applies_to_every_table_or_to_the_one_named():
    tables = ["silver.transactions", "gold.rfm"]
    assert time_travel(tables) == {}
    assert time_travel(tables, versions=["3"]) == {t: TimeTravel(version=3) for t in tables}
    got = time_travel(tables, versions=["gold.rfm=2"], timestamps=["silver.transactions=2026-11-01T00:00:00"])
    assert got == {
        "gold.rfm": TimeTravel(version=2),
        "silver.transactions": TimeTravel(timestamp=dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
    }
    zoned = time_travel(["gold.rfm"], timestamps=["2026-11-01T01:00:00+01:00"])
    assert zoned["gold.rfm"].timestamp == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("versions", "timestamps", "message"),
    [
        (["gold.cohorts=1"], [], "names gold.cohorts, which the query does not read"),
        (["x"], [], "not a table version"),
        (["-1"], [], "not a table version"),
        ([], ["yesterday"], "not a timestamp"),
        (["1"], ["gold.rfm=2026-11-01"], "more than one version or timestamp"),
    ],
)
def test_time_travel_rejects_what_it_cannot_read(versions, timestamps, message):
    with pytest.raises(LakeSqlError, match=message):
        time_travel(["gold.rfm"], versions, timestamps)


def test_text_table_aligns_numbers_right_cuts_long_cells_and_counts_rows():
    rows = [("Champions", 12, decimal.Decimal("10.50")), ("x" * 60, None, decimal.Decimal("2.00"))]
    text = format_table(["segment", "n", "amount"], rows)
    lines = text.splitlines()
    assert lines[0].split() == ["segment", "n", "amount"]
    assert lines[2] == "Champions".ljust(48) + "  12   10.50"
    assert lines[3] == "x" * 47 + "…" + "  " + "  " + "    2.00"
    assert lines[-1] == "(2 rows)"
    assert format_table(["a"], [(1,)], more=True).splitlines()[-1].startswith("(first 1 row;")


def test_csv_and_json_keep_nested_values_times_and_nulls():
    columns = ["id", "at", "items", "score"]
    rows = [("e1", dt.datetime(2026, 11, 1, 12, 30), [{"product_id": "p1", "quantity": 2}], None)]
    out = io.StringIO()
    assert write_csv(columns, [rows], out) == 1
    assert out.getvalue().splitlines() == [
        "id,at,items,score",
        'e1,2026-11-01T12:30:00,"[{""product_id"": ""p1"", ""quantity"": 2}]",',
    ]
    out = io.StringIO()
    assert write_json(columns, [rows, []], out) == 1
    assert json.loads(out.getvalue()) == [
        {"id": "e1", "at": "2026-11-01T12:30:00", "items": [{"product_id": "p1", "quantity": 2}], "score": None}
    ]
    empty = io.StringIO()
    write_json(columns, [], empty)
    assert json.loads(empty.getvalue()) == []
