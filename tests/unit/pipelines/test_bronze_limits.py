"""What bronze keeps of a Kafka record that is not UTF-8 or too big, and the records a micro-batch may hold."""

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from ecom.schemas import MAX_KEY_BYTES, MAX_PAYLOAD_BYTES
from ecom.settings import StreamSettings
from pipelines.bronze.job import kept_text, records_per_trigger


def test_kept_text_repairs_bytes_that_are_not_utf8_and_cuts_long_values_with_a_note(spark):
    rows = [
        (0, "plain \u00e9 \U0001f600".encode()),  # 13 bytes
        (1, b"bad \xff\xfe end"),  # 10 bytes, 14 once repaired
        (2, b"x" * 16),  # exactly the limit: kept
        (3, b"y" * 17),
        (4, ("a" + "\u00e9" * 9).encode()),  # 19 bytes: the cut at 16 falls inside a character
        (5, None),
    ]
    df = spark.createDataFrame(rows, "id int, data binary")
    got = df.select("id", kept_text(F.col("data"), 16).alias("text"))
    expected = spark.createDataFrame(
        [
            (0, "plain \u00e9 \U0001f600"),
            (1, "bad \ufffd\ufffd end"),
            (2, "x" * 16),
            (3, "y" * 16 + " [cut from 17 bytes]"),
            (4, "a" + "\u00e9" * 7 + "\ufffd [cut from 19 bytes]"),
            (5, None),
        ],
        "id int, text string",
    )
    assert_df_equality(got, expected, ignore_nullable=True)


def stream(max_offsets: int, max_bytes: int) -> StreamSettings:
    return StreamSettings(
        trigger_interval="0 seconds",
        max_offsets_per_trigger=max_offsets,
        max_batch_bytes=max_bytes,
        starting_offsets="earliest",
        profiles_snapshot_s=30,
    )


@pytest.mark.parametrize(
    "max_offsets, max_bytes, expected",
    [
        (100_000, 1 << 30, (1 << 30) // (2 * (16_384 + 256))),  # the byte budget decides: 32,263
        (1_000, 1 << 30, 1_000),  # the record count decides
        (100_000, 1_000, 1),  # never below one record
    ],
)
def test_records_per_trigger_keeps_a_batch_within_its_byte_budget(max_offsets, max_bytes, expected):
    assert (MAX_PAYLOAD_BYTES, MAX_KEY_BYTES) == (16_384, 256)  # the figures the expectations use
    assert records_per_trigger(stream(max_offsets, max_bytes)) == expected
