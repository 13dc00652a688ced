"""The per-order scoring path as a Kafka consumer of its own: an order's alert in PostgreSQL and Kafka within
milliseconds of its arrival, beside the micro-batch, which stays the record (issue 15).

Each poll (``FastPath.poll``): the records that arrived, checked with silver's rules (``validate``), their
features from the customer state and scores with the champion (``step``), then the alerts of fresh orders
written: ``fraud_alerts`` rows inserted unless the event has one already (whichever path writes first; the
same ``alert_id``), then those rows' messages sent to ``fraud-alerts``, then the consumer's offsets committed.
While orders keep coming, polls start ``fraud.fast_path_cycle_ms`` apart, so each cycle's fixed costs serve
more orders (``run``'s ``cycle_s``).

State: the stream's own (``silver.state.CustomerState``: the profile snapshot plus the silver rows after
it, and the recent orders rebuilt from silver's last hour), then every order this path takes. On start each partition is read from the first offset the state
lacks: records this path handled before a restart are folded in again, but only orders younger than
``max_age_s`` alert, and their rows exist already, so nothing is written twice. A record the micro-batch
served first (PostgreSQL holds its event at this record's Kafka coordinates) is folded in without an alert:
the micro-batch's alert is the record's. Orders that cannot alert here (served first, or older than
``max_age_s``) are folded in without being scored, so a path that fell behind catches up faster. A repeat
of an event (this path has seen it, ``seen``, bounded; or PostgreSQL holds it from another record) is not
folded in again.

I/O is at the edges (consumer, producer, connection), passed in, so tests use the real broker and database.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pandas as pd

from ecom import metrics
from ecom.settings import Settings
from ml.scoring import ChampionTracker
from pipelines.alerts import step, validate
from pipelines.silver.faults import kill_point
from pipelines.silver.sinks import ALERT_COLUMNS, FAST_PATH, alert_message, rows_of
from pipelines.silver.state import CustomerState
from serving import db

log = logging.getLogger(__name__)

GROUP_ID = "ecom-fast-alerts"
PROCESS = "stream_alerts"  # its metrics and /healthz port (metrics.ports)
# The fast path's rows carry which path wrote them and what it scored (the micro-batch compares, serving/0009).
FAST_COLUMNS = (*ALERT_COLUMNS, "source", "fast_path_score", "fast_path_model_version")
_SCORE, _VERSION = ALERT_COLUMNS.index("fraud_score"), ALERT_COLUMNS.index("model_version")
SEEN_EVENTS = 200_000  # event ids remembered to skip repeats
MODEL_REFRESH_S = 10.0


@dataclass
class Counts:
    records: int = 0
    taken: int = 0
    refused: int = 0  # left to the micro-batch (validate.Refused)
    repeats: int = 0
    behind: int = 0  # served by the micro-batch first: folded into the state, not alerted here
    stale: int = 0  # orders older than max_age_s: folded into the state, not scored (the micro-batch's)
    alerts: int = 0  # rows this path inserted
    alerts_existing: int = 0  # the event had its alert already (the micro-batch, or this path before)
    messages: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class FastPath:
    """The per-order path's state and decisions; ``poll`` handles what one consumer poll brought."""

    def __init__(
        self, settings: Settings, state: CustomerState, key: bytes, tracker=None, max_age_s: float | None = None
    ):
        self.settings = settings
        self.state = state
        self.key = key
        self.tracker = tracker if tracker is not None else ChampionTracker(settings)
        self.max_age = dt.timedelta(seconds=settings.fraud.fast_path_max_age_s if max_age_s is None else max_age_s)
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.counts = Counts()
        self._model = None
        self._model_at = float("-inf")

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs) -> FastPath:
        from ecom.secrets import pii_key

        lake = settings.lake
        state = CustomerState.load(lake.table("silver", "customer_profiles"), lake.table("silver", "transactions"))
        return cls(settings, state, pii_key(settings), **kwargs)

    def start_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        """Partition -> the first offset the state lacks (where reading starts)."""
        return {p: self.state.offsets.get(p, -1) + 1 for p in partitions}

    def model(self):
        if time.monotonic() - self._model_at >= MODEL_REFRESH_S:
            self._model = self.tracker.refresh()
            self._model_at = time.monotonic()
        return self._model

    def _remember(self, event_id: str) -> None:
        self.seen[event_id] = None
        if len(self.seen) > SEEN_EVENTS:
            self.seen.popitem(last=False)

    def decide(self, records: list, now: dt.datetime, stored=lambda event_ids: {}) -> pd.DataFrame:
        """The records of one poll -> the alerts to write (ALERT_SCHEMA rows of fresh orders); the state takes
        every order. ``stored(event_ids)``: event_id -> (partition, offset) of those PostgreSQL holds already
        (``stored_events``)."""
        checked = []
        for record in records:
            self.counts.records += 1
            try:
                checked.append((validate.order(record.value, now), record))
            except validate.Refused as exc:
                self.counts.refused += 1
                reason = str(exc).split(":")[0]
                self.counts.by_reason[reason] = self.counts.by_reason.get(reason, 0) + 1
        known = stored([order.event_id for order, _ in checked])
        taken, ids, served = [], set(), set()
        for order, record in checked:
            where = known.get(order.event_id)
            if (
                order.event_id in self.seen
                or order.event_id in ids
                or where not in (None, (record.partition, record.offset))
            ):
                self.counts.repeats += 1
                continue
            if where is not None:
                served.add(order.event_id)
            ids.add(order.event_id)
            stamp = dt.datetime.fromtimestamp(record.timestamp / 1000, dt.UTC)
            taken.append((order, (record.topic, record.partition, record.offset, stamp)))
        self.counts.taken += len(taken)
        if not taken:
            return pd.DataFrame(columns=list(ALERT_COLUMNS))
        rows = step.order_rows(taken, self.key, "fast-path", now)
        # Only an order this path can alert is scored: one the micro-batch served first, or one older than
        # max_age, is the micro-batch's, and only folded in (behind its stream, this path catches up faster).
        fresh = rows["event_time"] >= (now - self.max_age).replace(tzinfo=None)
        first = ~rows["event_id"].isin(served)
        done = step.score_step(
            rows, self.state.profiles, self.model(), self.settings.fraud.alert_threshold, self.state.recent,
            score=fresh & first,
        )  # fmt: skip
        self.state.apply(done.profiles, rows, done.recent)
        for event_id in ids:
            self._remember(event_id)
        self.counts.behind += len(served)
        self.counts.stale += int((~fresh & first).sum())
        return done.alerts

    def write(self, conn, producer, alerts: pd.DataFrame) -> int:
        """Insert the alerts PostgreSQL does not hold yet, send those to Kafka, then mark the ones Kafka
        confirmed as sent (the micro-batch sends the others itself); returns how many were new."""
        if not len(alerts):
            return 0
        rows = rows_of(alerts, ALERT_COLUMNS)
        with conn, conn.cursor() as cur:
            new = db.insert_new_rows(
                cur,
                "fraud_alerts",
                FAST_COLUMNS,
                ("event_id",),
                [(*r, FAST_PATH, r[_SCORE], r[_VERSION]) for r in rows],
            )
        committed = time.time()
        kill_point("fast_path_inserted")
        self.counts.alerts += len(new)
        self.counts.alerts_existing += len(rows) - len(new)
        fresh = [
            alert for alert in (dict(zip(ALERT_COLUMNS, row, strict=True)) for row in rows) if alert["event_id"] in new
        ]
        for alert in fresh:
            event_time = pd.Timestamp(alert["event_time"]).tz_localize("UTC").timestamp()
            metrics.FAST_PATH_LATENCY_SECONDS.observe(max(committed - event_time, 0.0))
        sends = {
            alert["event_id"]: producer.send(self.settings.kafka.alerts_topic, key=key, value=value)
            for alert in fresh
            for key, value in [alert_message(alert)]
        }
        producer.flush()
        kill_point("fast_path_sent")
        confirmed = [event_id for event_id, send in sends.items() if send.is_done and send.succeeded()]
        if confirmed:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "UPDATE fraud_alerts SET fast_path_sent_at = now() WHERE event_id = ANY(%s) AND source = %s",
                    (confirmed, FAST_PATH),
                )
        self.counts.messages += len(confirmed)
        return len(new)


def stored_events(conn, event_ids: list[str]) -> dict[str, tuple[int, int]]:
    """event_id -> (Kafka partition, offset) of the events among ``event_ids`` that PostgreSQL
    ``transactions`` holds (the micro-batch served them)."""
    if not event_ids:
        return {}
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT event_id, kafka_partition, kafka_offset FROM transactions WHERE event_id = ANY(%s)", (event_ids,)
        )
        return {r[0]: (r[1], r[2]) for r in cur.fetchall()}


def consumer_for(settings: Settings, partitions: list[int] | None = None):
    """A consumer of the orders topic assigned ``partitions`` (default: all), offsets committed by hand under
    ``GROUP_ID`` (for lag; where reading starts comes from the state)."""
    from kafka import KafkaConsumer, TopicPartition

    from ecom.kafka_config import client_kwargs

    consumer = KafkaConsumer(
        **client_kwargs(settings),
        group_id=GROUP_ID,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    topic = settings.kafka.transactions_topic
    known = consumer.partitions_for_topic(topic)
    if not known:
        raise RuntimeError(f"topic {topic} has no partitions (or Kafka is unreachable)")
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions if partitions is not None else known)])
    return consumer


def run(
    settings: Settings,
    path: FastPath,
    consumer,
    stop,
    max_records: int = 2000,
    retry_s: float = 1.0,
    on_poll: Callable[[Counts], None] | None = None,
    cycle_s: float = 0.0,
) -> Counts:
    """Poll, decide, write and commit until ``stop()``; alerts a write could not finish are tried again (a
    database or broker away) before anything newer is read. ``on_poll(counts)`` after every poll.

    ``cycle_s``: a poll that brought records is followed by the next one ``cycle_s`` after it at the earliest.
    Each cycle has fixed costs (a database lookup and insert, a producer flush, an offset commit, pandas set-up),
    so under load a longer cycle shares them among more orders, at up to ``cycle_s`` of added alert latency."""
    import psycopg2
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from ecom.kafka_config import producer_kwargs

    for tp in consumer.assignment():
        consumer.seek(tp, path.start_offsets([tp.partition])[tp.partition])
    producer = KafkaProducer(**producer_kwargs(settings))
    conn = None
    pending = pd.DataFrame(columns=list(ALERT_COLUMNS))
    try:
        while not stop():
            try:
                if conn is None:
                    conn = db.connect(settings.postgres.dsn)
                if len(pending):
                    path.write(conn, producer, pending)
                    pending = pending.iloc[0:0]
                    consumer.commit()
                before = {tp: consumer.position(tp) for tp in consumer.assignment()}
                polled_at = time.monotonic()
                batches = consumer.poll(timeout_ms=100, max_records=max_records)
                records = [r for part in batches.values() for r in part]
                if on_poll is not None:
                    on_poll(path.counts)
                if not records:
                    continue
                try:
                    pending = path.decide(records, dt.datetime.now(dt.UTC), lambda ids, c=conn: stored_events(c, ids))
                except Exception:  # the state takes a poll's orders last: it took none, so read them again
                    for tp, offset in before.items():
                        consumer.seek(tp, offset)
                    raise
                path.write(conn, producer, pending)
                pending = pending.iloc[0:0]
                consumer.commit()
                time.sleep(max(0.0, cycle_s - (time.monotonic() - polled_at)))
            except (psycopg2.OperationalError, psycopg2.InterfaceError, KafkaError) as exc:
                log.warning("fast path: %s; trying again in %.1f s", str(exc).strip().splitlines()[0], retry_s)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(retry_s)
    finally:
        producer.close(timeout=5)
        if conn is not None:
            conn.close()
    return path.counts


class Progress:
    """``run``'s ``on_poll``: the counts as Prometheus counters (the increase since the last poll), the poll
    time for ``/healthz``, and a progress line on stderr every ``every_s``."""

    def __init__(self, every_s: float = 10.0, clock=time.monotonic):
        self.every_s = every_s
        self.clock = clock
        self.last_poll = time.time()
        self._logged_at = clock()
        self._seen = Counts()

    def __call__(self, counts: Counts) -> None:
        self.last_poll = time.time()
        metrics.FAST_PATH_LAST_POLL.set(self.last_poll)
        for outcome in ("taken", "refused", "repeats", "behind", "stale"):
            metrics.FAST_PATH_RECORDS.labels(outcome).inc(getattr(counts, outcome) - getattr(self._seen, outcome))
        for outcome, name in (("new", "alerts"), ("existing", "alerts_existing")):
            metrics.FAST_PATH_ALERTS.labels(outcome).inc(getattr(counts, name) - getattr(self._seen, name))
        self._seen = Counts(**{**counts.__dict__, "by_reason": dict(counts.by_reason)})
        if self.clock() - self._logged_at >= self.every_s:
            self._logged_at = self.clock()
            log.info(
                "fast path: %d records, %d taken, %d left to the micro-batch, %d alerts written, %d found written",
                counts.records, counts.taken, counts.refused, counts.alerts, counts.alerts_existing,
            )  # fmt: skip

    def check(self, stale_s: float = 30.0):
        """``/healthz``: the consumer polled within ``stale_s``."""
        from ecom.health import Check

        def polled() -> Check:
            age = time.time() - self.last_poll
            return Check(age < stale_s, f"last poll {age:.1f} s ago")

        return polled


def serve(settings: Settings, stop, partitions: list[int] | None = None, retry_s: float = 5.0) -> Counts:
    """``ecom stream alerts``: metrics and ``/healthz`` on ``metrics.ports.stream_alerts``, the state loaded and
    the consumer assigned (tried again every ``retry_s`` while the lake or Kafka is not there yet), then
    ``run`` until ``stop()``. ``partitions``: this process's share of the orders topic (default all)."""
    health = metrics.serve(settings, PROCESS)
    progress = Progress()
    health.add("polling", progress.check())
    path = consumer = None
    while not stop() and consumer is None:
        try:
            path = path or FastPath.from_settings(settings)
            consumer = consumer_for(settings, partitions)
        except Exception as exc:  # noqa: BLE001 - not there yet: say why and try again
            log.warning("fast path not started: %s; trying again in %.0f s", str(exc).strip()[:300], retry_s)
            progress.last_poll = time.time()  # starting is not being stuck
            time.sleep(retry_s)
    if consumer is None:
        return Counts()
    log.info("fast path: reading %s from %s", settings.kafka.transactions_topic, path.start_offsets(sorted(
        tp.partition for tp in consumer.assignment())))  # fmt: skip
    try:
        return run(settings, path, consumer, stop, on_poll=progress, cycle_s=settings.fraud.fast_path_cycle_ms / 1000)
    finally:
        consumer.close()
