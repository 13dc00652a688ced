"""``ecom.lake.read_with_archive``: a table's hot rows and its archived rows, as one frame in the hot columns."""

import datetime as dt

from chispa import assert_df_equality

from ecom.lake import read_with_archive
from ecom.settings import LakeSettings


def test_a_table_is_read_with_its_archive_in_the_hot_columns(spark, tmp_path):
    lake = LakeSettings(root=str(tmp_path / "lake"), checkpoints=str(tmp_path / "checkpoints"))
    hot = spark.createDataFrame([("e3", dt.date(2026, 11, 1)), ("e4", None)], "event_id string, event_date date")
    hot.write.format("delta").save(lake.table("silver", "orders"))
    assert_df_equality(read_with_archive(spark, lake, "silver", "orders"), hot, ignore_row_order=True)

    archived = spark.createDataFrame(
        [(dt.date(2026, 7, 1), "e1", dt.date(2026, 7, 9)), (dt.date(2026, 8, 1), "e2", dt.date(2026, 8, 2))],
        "event_month date, event_id string, event_date date",
    )
    archived.write.format("delta").partitionBy("event_month").save(lake.archive("silver", "orders"))
    expected = spark.createDataFrame(
        [("e1", dt.date(2026, 7, 9)), ("e2", dt.date(2026, 8, 2)), ("e3", dt.date(2026, 11, 1)), ("e4", None)],
        "event_id string, event_date date",
    )
    assert_df_equality(read_with_archive(spark, lake, "silver", "orders"), expected, ignore_row_order=True)
