"""Run a streaming query until it stops, restarting it from its checkpoint while a service it needs is away.

A micro-batch that meets an unavailable service waits and runs again by itself (``pipelines.silver.faults``).
What it cannot cover is a failure outside a batch: Spark's Kafka source asks the broker for the latest offsets
before each batch, and gives up (the query fails) when the broker stays away for minutes. ``run`` restarts such
a query with the same waits (``faults.Backoff``, up to ``stream.outage_max_s``): a restarted query resumes
from its checkpoint, and every sink is idempotent by batch id, so the restart loses and repeats nothing. Any
other failure ends the run at once.

``ecom stream`` and every stage's ``spark-submit`` entry point run their query through it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pyspark.sql.streaming import StreamingQuery

from ecom.settings import StreamSettings
from pipelines.silver.faults import Backoff, summary, unavailable

log = logging.getLogger(__name__)

POLL_S = 1.0


class QueryFailed(RuntimeError):
    """The query failed on something a restart does not cure (the data, the code, an outage past the bound)."""


def _poll(query: StreamingQuery) -> None:
    while query.isActive:
        time.sleep(POLL_S)


def _wait(query: StreamingQuery, on_start, wait) -> BaseException | None:
    """Wait for the query to end; its failure, or None when it stopped cleanly (``once`` done, or stopped)."""
    if on_start is not None:
        on_start(query)
    try:
        (wait or _poll)(query)
    except Exception:  # noqa: BLE001 awaitTermination raises the query's failure: read it below
        if query.isActive:
            raise
    return query.exception()


def run(
    start: Callable[[], StreamingQuery],
    stream: StreamSettings,
    name: str,
    on_start: Callable[[StreamingQuery], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    wait: Callable[[StreamingQuery], None] | None = None,
) -> StreamingQuery:
    """Start the query with ``start()`` and wait for it; restart it while it fails on an unavailable Kafka
    broker. Returns the last query once it stops cleanly; raises ``QueryFailed`` (from its error) otherwise.
    ``on_start`` sees each query started (the CLI prints where it runs); ``wait(query)`` returns when the query
    ends (default: polling it every second; the CLI reports the progress of a ``--once`` run)."""
    backoff = Backoff(stream, f"query {name}", clock)
    query = start()
    while True:
        failure = _wait(query, on_start, wait)
        if failure is None:
            backoff.recovered()
            return query
        service = unavailable(failure)
        if service != "kafka":
            raise QueryFailed(f"query {name} failed: {summary(failure)}") from failure
        if query.lastProgress is not None:  # it ran batches since the last restart: a new outage begins
            backoff.recovered()
            backoff = Backoff(stream, f"query {name}", clock)
        try:
            wait_s = backoff.wait_s(service, failure)
        except RuntimeError as exc:
            raise QueryFailed(str(exc)) from failure
        sleep(wait_s)
        log.warning("query %s: restarting from its checkpoint", name)
        query = start()
