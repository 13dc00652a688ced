"""Rows for real Delta tables in the lifecycle tests: bronze records and silver orders of any schema version."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pyarrow as pa
from pyspark.sql import types as T

from ecom.schemas import BRONZE_SCHEMA, arrow_schema
from ecom.settings import Settings


def lake_settings(settings: Settings, root) -> Settings:
    """Settings whose lake and checkpoint roots are under ``root``."""
    lake = {"root": f"{root}/lake", "checkpoints": f"{root}/checkpoints"}
    return settings.model_copy(update={"lake": settings.lake.model_copy(update=lake)})


def bronze_rows(first_offset: int, count: int, day: dt.date = dt.date(2026, 11, 20)) -> pa.Table:
    """``count`` bronze records at Kafka offsets ``first_offset``, ``first_offset + 1``, ... of one ingest day."""
    at = dt.datetime.combine(day, dt.time(12), dt.UTC)
    rows = [
        {
            "kafka_key": f"C{o % 7}",
            "payload": json.dumps({"event_id": f"e{o}", "amount": o % 100}),
            "kafka_topic": "t",
            "kafka_partition": 0,
            "kafka_offset": o,
            "kafka_timestamp": at,
            "ingest_time": at,
            "ingest_date": day,
        }
        for o in range(first_offset, first_offset + count)
    ]
    return pa.Table.from_pylist(rows, schema=arrow_schema(BRONZE_SCHEMA))


def _value(field: T.StructField, i: int):
    kind = field.dataType
    if isinstance(kind, T.StringType):
        return f"{field.name}-{i}"
    if isinstance(kind, T.IntegerType | T.LongType):
        return i
    if isinstance(kind, T.DoubleType):
        return i + 0.5
    if isinstance(kind, T.DecimalType):
        return Decimal(f"{i}.25")
    if isinstance(kind, T.BooleanType):
        return i % 2 == 0
    if isinstance(kind, T.TimestampType):
        return dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC) + dt.timedelta(seconds=i)
    if isinstance(kind, T.DateType):
        return dt.date(2026, 11, 20)
    if isinstance(kind, T.ArrayType):
        return []
    raise TypeError(f"no sample value for {field}")


def sample_rows(schema: T.StructType, first: int, count: int) -> pa.Table:
    """``count`` rows of ``schema`` (every column filled, ``kafka_offset`` = ``first`` ...), in Arrow."""
    rows = [{f.name: _value(f, i) for f in schema.fields} for i in range(first, first + count)]
    return pa.Table.from_pylist(rows, schema=arrow_schema(schema))
