import datetime as dt

from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ecom.schemas import BRONZE_SCHEMA
from pipelines.bronze.job import with_bronze_columns

KAFKA_SOURCE = T.StructType(
    [
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("timestamp", T.TimestampType()),
        T.StructField("timestampType", T.IntegerType()),
    ]
)


def test_bronze_keeps_payload_as_received_with_kafka_coordinates(spark):
    ts = dt.datetime(2026, 11, 25, 12, 0, 0)
    rows = [
        (b"C1", b'{"event_id": "e1"}', "t", 0, 10, ts, 0),
        (None, b"not json at all", "t", 2, 11, ts, 0),  # bad payload, no key: kept as is
        (b"C3", None, "t", 1, 12, ts, 0),  # tombstone: kept, silver quarantines it
    ]
    kafka_df = spark.createDataFrame(rows, KAFKA_SOURCE)
    got = kafka_df.transform(with_bronze_columns)
    assert got.columns == BRONZE_SCHEMA.fieldNames()
    expected = spark.createDataFrame(
        [
            ("C1", '{"event_id": "e1"}', "t", 0, 10, ts),
            (None, "not json at all", "t", 2, 11, ts),
            ("C3", None, "t", 1, 12, ts),
        ],
        "kafka_key string, payload string, kafka_topic string, kafka_partition int, kafka_offset long, kafka_timestamp timestamp",
    )
    assert_df_equality(got.drop("ingest_time", "ingest_date"), expected, ignore_nullable=True, ignore_row_order=True)
    assert got.filter(F.col("ingest_time").isNull() | F.col("ingest_date").isNull()).count() == 0
