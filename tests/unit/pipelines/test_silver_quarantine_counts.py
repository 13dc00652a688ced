"""The ingest stream's quarantine counts for PostgreSQL (the health page) are the metric's counts."""

import datetime as dt
from types import SimpleNamespace

import pyarrow as pa

from ecom.metrics import quarantine_counts
from pipelines.silver.sinks import quarantine_write


def test_the_batch_quarantine_goes_to_its_minute_per_reason_added_to_what_is_stored():
    reasons = [["bad_country"], ["bad_country", "missing_product"], ["sink_refused:postgres:value too long"], None]
    plan = SimpleNamespace(quarantine=pa.table({"reasons": pa.array(reasons, pa.list_(pa.string()))}))
    now = dt.datetime(2026, 11, 26, 12, 30, 41, 5000, tzinfo=dt.UTC)
    write = quarantine_write(plan, now)
    minute = dt.datetime(2026, 11, 26, 12, 30, tzinfo=dt.UTC)
    assert write.table == "quarantine_counts" and write.key == ("minute", "reason")
    assert write.accumulate == ("records",)  # a later batch in the same minute adds to it
    assert write.rows == [
        (minute, "bad_country", 2),
        (minute, "missing_product", 1),
        (minute, "sink_refused:postgres", 1),
    ]
    assert {reason: n for _, reason, n in write.rows} == quarantine_counts(reasons)
