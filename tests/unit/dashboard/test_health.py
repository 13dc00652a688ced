"""Consumer lag from a Structured Streaming checkpoint and Kafka end offsets, without Kafka."""

import pytest

from dashboard.health import committed_offsets, lag_frame, parse_offsets_file

OFFSETS = """v1
{"batchWatermarkMs":0,"batchTimestampMs":1795660000000,"conf":{"spark.sql.shuffle.partitions":"2"}}
{"ecommerce-transactions":{"2":40,"1":17,"0":25}}
"""


def test_an_offsets_file_gives_the_next_offset_per_partition():
    assert parse_offsets_file(OFFSETS) == {"ecommerce-transactions": {0: 25, 1: 17, 2: 40}}


def test_something_that_is_not_an_offsets_file_is_an_error():
    with pytest.raises(ValueError, match="offsets file"):
        parse_offsets_file('{"a": 1}')


def test_the_newest_committed_batch_is_used_not_a_planned_one(tmp_path):
    (tmp_path / "offsets").mkdir()
    (tmp_path / "commits").mkdir()
    (tmp_path / "offsets" / "6").write_text(OFFSETS)
    (tmp_path / "offsets" / "7").write_text(OFFSETS.replace('"2":40', '"2":99'))  # planned, not committed
    (tmp_path / "commits" / "6").write_text("v1\n{}")
    (tmp_path / "commits" / ".6.crc").write_text("")
    batch, offsets = committed_offsets(str(tmp_path))
    assert batch == 6 and offsets["ecommerce-transactions"][2] == 40
    assert committed_offsets(str(tmp_path / "missing")) is None


def test_lag_is_end_minus_committed_per_partition_and_never_negative():
    frame = lag_frame({0: 30, 1: 17, 2: 45}, {0: 25, 1: 20})
    assert frame["lag"].tolist() == [5, 0, 45]
    assert frame["committed"].tolist() == [25, 20, 0]
