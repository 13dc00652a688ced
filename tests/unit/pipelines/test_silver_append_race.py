"""The stream's lake append survives a concurrent delete (the lifecycle) that commits first."""

from __future__ import annotations

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from pipelines.silver import sinks


def _table(ids: list[int]) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "day": pa.array(["d1"] * len(ids))})


def test_an_append_that_loses_a_commit_race_is_tried_again_and_lands_once(tmp_path, monkeypatch):
    path = str(tmp_path / "t")
    write_deltalake(path, _table([1, 2, 3]))
    real = sinks.write_delta
    calls = []

    def racing_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # another writer deletes rows first; this commit is refused, as delta-rs refuses it
            DeltaTable(path).delete("id = 1")
            raise CommitFailedError("Commit failed: a concurrent transaction deleted data this operation read.")
        return real(*args, **kwargs)

    monkeypatch.setattr(sinks, "write_delta", racing_write)
    monkeypatch.setattr(sinks.time, "sleep", lambda s: None)
    sinks.append_retrying(path, _table([4, 5]), tag="ingest-7")
    assert len(calls) == 2
    rows = sorted(DeltaTable(path).to_pyarrow_table().column("id").to_pylist())
    assert rows == [2, 3, 4, 5]  # the delete stands, the append landed once
    tags = [c.get("userMetadata") for c in DeltaTable(path).history() if c.get("operation") == "WRITE"]
    assert tags.count("ingest-7") == 1


def test_an_append_that_keeps_losing_fails_the_batch(tmp_path, monkeypatch):
    path = str(tmp_path / "t")
    write_deltalake(path, _table([1]))

    def always_refused(*args, **kwargs):
        raise CommitFailedError("Commit failed")

    monkeypatch.setattr(sinks, "write_delta", always_refused)
    monkeypatch.setattr(sinks.time, "sleep", lambda s: None)
    try:
        sinks.append_retrying(path, _table([2]), tag="ingest-8", attempts=3)
    except CommitFailedError:
        pass
    else:
        raise AssertionError("a commit refused on every attempt must fail the batch (it is replayed)")
    assert DeltaTable(path).to_pyarrow_table().num_rows == 1
