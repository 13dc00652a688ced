"""The embedded broker's cluster id is always a value the storage tool takes as one."""

from __future__ import annotations

import base64
import uuid

from ecom.runtime import kafka


def test_a_cluster_id_never_starts_with_a_dash_even_when_the_draw_does(monkeypatch):
    # 0xf8 as the first byte encodes to "-" first in URL-safe base64: the first two draws start with a dash.
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\xfb" + bytes(15)), uuid.UUID(int=7)])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(draws))
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().startswith("-")
    cluster_id = kafka.new_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(uuid.UUID(int=7).bytes).decode().rstrip("=")
    assert len(cluster_id) == 22


def test_many_cluster_ids_are_distinct_and_none_starts_with_a_dash():
    ids = {kafka.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert not [i for i in ids if i.startswith("-")]
