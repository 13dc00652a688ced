"""The silver stream's driver-side glue: Arrow routing, pandas -> PostgreSQL rows, Arrow schemas."""

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa

from ecom.schemas import SILVER_SCHEMA, arrow_schema
from pipelines.silver.plan import driver_frame, struct_rows
from pipelines.silver.sinks import rows_of, sink_id

TS = dt.datetime(2026, 11, 25, 12, 0, 0)


def test_rows_for_postgres_turn_every_missing_value_into_none():
    frame = pd.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "fraud_score": [np.nan, 91.5],  # unscored -> NULL, not 'NaN'
            "is_fraud": [None, True],
            "event_time": [pd.NaT, pd.Timestamp(TS)],
            "amount": [Decimal("1.50"), None],
        }
    )
    rows = rows_of(frame, ["event_id", "fraud_score", "is_fraud", "event_time", "amount"])
    assert rows == [("e1", None, None, None, Decimal("1.50")), ("e2", 91.5, True, pd.Timestamp(TS), None)]


def test_each_route_takes_only_its_own_rows_and_columns():
    routed = pa.table(
        {
            "payload": ["{good}", "{bad"],
            "silver__event_id": ["e1", None],
            "silver__pipeline_version": ["v", None],
            "quarantine__reasons": [None, ["malformed_json"]],
            "quarantine__pipeline_version": [None, "v"],
        }
    )
    silver = struct_rows(routed, "silver")
    quarantine = struct_rows(routed, "quarantine")
    assert silver.column_names == ["event_id", "pipeline_version"] and silver.to_pylist() == [
        {"event_id": "e1", "pipeline_version": "v"}
    ]
    assert quarantine.to_pylist() == [{"reasons": ["malformed_json"], "pipeline_version": "v"}]


def test_driver_frames_have_naive_utc_times():
    rows = pa.table({"event_time": pa.array([TS.replace(tzinfo=dt.UTC)], pa.timestamp("us", tz="UTC"))})
    frame = driver_frame(rows)
    assert frame["event_time"].dt.tz is None and frame["event_time"].iloc[0] == pd.Timestamp(TS)


def test_arrow_schema_follows_the_silver_schema():
    schema = arrow_schema(SILVER_SCHEMA)
    assert schema.names == SILVER_SCHEMA.fieldNames()
    assert schema.field("amount").type == pa.decimal128(12, 2)
    assert schema.field("event_time").type == pa.timestamp("us", tz="UTC")


def test_a_recreated_checkpoint_is_a_new_sink(tmp_path):
    """Batch ids restart with a new checkpoint: its bookkeeping must not be mistaken for the old one's."""
    checkpoint = tmp_path / "cp"
    before_any_query = sink_id(str(checkpoint))  # no metadata yet: the path alone
    checkpoint.mkdir()
    (checkpoint / "metadata").write_text('{"id":"6a1c0f4e-0000-4000-8000-000000000001"}\n')
    first = sink_id(str(checkpoint))
    assert first != before_any_query
    (checkpoint / "metadata").write_text('{"id":"6a1c0f4e-0000-4000-8000-000000000002"}\n')
    assert sink_id(str(checkpoint)) != first
    assert first.startswith("silver-") and first != sink_id(str(tmp_path / "other"))
