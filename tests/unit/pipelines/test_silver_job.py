"""The silver stream's driver-side glue: Arrow routing, pandas -> PostgreSQL rows, Arrow schemas."""

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa

from ecom.schemas import SILVER_SCHEMA, arrow_schema
from pipelines.silver.checkpoint import sink_id
from pipelines.silver.plan import driver_frame, struct_rows
from pipelines.silver.sinks import rows_of

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


def test_the_stream_is_named_by_checkpoint_location_and_query_id_for_any_location():
    """Batch ids restart with a new query on a checkpoint (deleted and started again): its bookkeeping must not be
    mistaken for the old one's. The id comes from the running query, so object-store locations work too."""
    first, second = "6a1c0f4e-0000-4000-8000-000000000001", "6a1c0f4e-0000-4000-8000-000000000002"
    for location in ("/data/checkpoints/ingest_transactions", "s3a://bucket/checkpoints/ingest_transactions"):
        names = {sink_id(location, first), sink_id(location, second), sink_id(location)}
        assert len(names) == 3 and all(n.startswith("silver-") for n in names)
    assert sink_id("s3a://bucket/a", first) != sink_id("s3a://bucket/b", first)
