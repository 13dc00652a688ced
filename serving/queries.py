"""Read-side queries for the dashboard (and the demo), plus the one write of fraud triage.

Layer: serving. Input: the PostgreSQL tables of ``serving/migrations``.
Output: pandas DataFrames or dicts. Every function takes ``db``: a DSN, or an
open connection (a pool's), and runs parameterised SQL only; a filter value
never becomes SQL text (sort columns and dimension kinds come from fixed
lists). Money is in the reporting currency: order amounts are divided by
``fx_rates.units_per_reporting_unit`` (a join, no rate in the code), gold
tables hold it already. What a page refreshes reads gold tables, the minute
summaries (``analytics_summaries``) and indexed lookups only, never a scan of
``transactions``: the cost stays flat as orders grow (benchmarks/dashboard.py).

``analytics_summaries`` (written by the gold layer): one row per (metric,
grain ``minute`` | ``day``, period start, dimension), dimension ``''`` for the
whole shop or ``<kind>=<value>`` (``category=books``, ``payment_method=card``,
``channel=web``). Additive metrics (orders, revenue, alerts, late_events) are
summed over periods here; ratios are derived from the sums.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd

from serving.db import connection

MINUTE, DAY = "minute", "day"
ADDITIVE_METRICS = ("orders", "revenue", "alerts", "late_events")
DIMENSION_KINDS = ("category", "payment_method", "channel")
ALERT_STATUSES = ("open", "confirmed_fraud", "false_positive")
TRIAGE_DECISIONS = ("confirmed_fraud", "false_positive")
ANALYST_FRAUD_PATTERN = "analyst_confirmed"
# Ordered a time range into buckets: (bucket width for date_trunc, whether past days come from day rows).
BUCKETS = {"minute": ("minute", False), "hour": ("hour", False), "day": ("day", True)}


@contextmanager
def _cursor(db) -> Iterator:
    if isinstance(db, str):
        with connection(db) as conn, conn.cursor() as cur:
            yield cur
    else:
        with db.cursor() as cur:
            yield cur


def _frame(db, sql: str, params: Sequence | dict = ()) -> pd.DataFrame:
    with _cursor(db) as cur:
        cur.execute(sql, params)
        return pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])


def _one(db, sql: str, params: Sequence | dict = ()):
    with _cursor(db) as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def escape_like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (``\\`` is the escape character)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _minute(ts: dt.datetime) -> dt.datetime:
    return ts.replace(second=0, microsecond=0)


# -- overview -----------------------------------------------------------------------------------
def card_windows(now: dt.datetime) -> dict[str, tuple[dt.datetime, dt.datetime, dt.datetime, dt.datetime]]:
    """(start, end, previous start, previous end) per card window, over complete minutes up to ``now``.

    ``minute``, ``hour``, ``day``: the last 1, 60, 1440 complete minutes against
    the same span before; ``today``: midnight (UTC) to the last complete minute
    against the same hours of yesterday.
    """
    end = _minute(now)
    midnight = end.replace(hour=0, minute=0)
    windows = {}
    for name, minutes in (("minute", 1), ("hour", 60), ("day", 1440)):
        span = dt.timedelta(minutes=minutes)
        windows[name] = (end - span, end, end - 2 * span, end - span)
    day = dt.timedelta(days=1)
    windows["today"] = (midnight, end, midnight - day, end - day)
    return windows


# The whole shop per minute, with the orders that were scored: alerts / alert_rate, or every order of a
# minute without alerts; gold writes no alert_rate row for a minute without scored orders.
SHOP_MINUTES = """
    SELECT period_start, orders, revenue, alerts,
           CASE WHEN alert_rate IS NULL THEN 0 WHEN alert_rate > 0 THEN alerts / alert_rate ELSE orders END AS scored
    FROM (
        SELECT period_start,
               coalesce(sum(value) FILTER (WHERE metric = 'orders'), 0) AS orders,
               coalesce(sum(value) FILTER (WHERE metric = 'revenue'), 0) AS revenue,
               coalesce(sum(value) FILTER (WHERE metric = 'alerts'), 0) AS alerts,
               max(value) FILTER (WHERE metric = 'alert_rate') AS alert_rate
        FROM analytics_summaries
        WHERE grain = 'minute' AND dimension = '' AND metric IN ('orders', 'revenue', 'alerts', 'alert_rate')
          AND period_start >= %(since)s AND period_start < %(until)s
        GROUP BY period_start
    ) m
"""
CARD_FIGURES = ("orders", "revenue", "alerts", "scored")


def overview_cards(db, now: dt.datetime) -> dict:
    """The whole shop's orders, revenue, alerts and scored orders per card window:
    ``{figure: {window: (current, previous)}}``, plus ``data_until``, the end of the newest minute with orders
    (None without any)."""
    windows = card_windows(now)
    params: dict = {}
    columns = []
    for name, (start, end, prev_start, prev_end) in windows.items():
        for part, (a, b) in (("current", (start, end)), ("previous", (prev_start, prev_end))):
            key = f"{name}_{part}"
            params[f"{key}_a"], params[f"{key}_b"] = a, b
            window = f"period_start >= %({key}_a)s AND period_start < %({key}_b)s"
            columns += [f"coalesce(sum({f}) FILTER (WHERE {window}), 0)::float8 AS {f}_{key}" for f in CARD_FIGURES]
    params["since"] = min(w[2] for w in windows.values())
    params["until"] = max(w[1] for w in windows.values())
    row = _frame(db, f"SELECT {', '.join(columns)} FROM ({SHOP_MINUTES}) minutes", params).iloc[0]
    cards: dict = {
        f: {name: (float(row[f"{f}_{name}_current"]), float(row[f"{f}_{name}_previous"])) for name in windows}
        for f in CARD_FIGURES
    }
    latest = _one(
        db,
        "SELECT max(period_start) FROM analytics_summaries"
        " WHERE grain = 'minute' AND metric = 'orders' AND dimension = ''",
    )[0]
    cards["data_until"] = None if latest is None else latest + dt.timedelta(minutes=1)
    return cards


def alert_rate_series(db, since: dt.datetime, until: dt.datetime, bucket: str = "hour") -> pd.DataFrame:
    """Per bucket of [since, until) with orders: ``period``, ``alerts`` and ``scored`` orders (the alert rate is
    alerts / scored; unscored orders, e.g. before the first model, do not count)."""
    unit, _ = BUCKETS[bucket]
    sql = f"""
        SELECT date_trunc('{unit}', period_start, 'UTC') AS period, sum(alerts)::float8 AS alerts,
               sum(scored)::float8 AS scored
        FROM ({SHOP_MINUTES}) minutes GROUP BY 1 ORDER BY 1
    """
    return _frame(db, sql, {"since": since, "until": until})


def _summary_rows(bucket: str, dimension_sql: str) -> str:
    """SQL of (period, metric, dimension, value) summary rows in [since, until), bucketed; past days come
    from day rows when ``bucket`` is ``day`` (the newest day from its minutes, as the day row may be partial)."""
    unit, from_days = BUCKETS[bucket]
    minute_start = "greatest(%(since)s, %(today)s)" if from_days else "%(since)s"
    minute_rows = f"""
        SELECT date_trunc('{unit}', period_start, 'UTC') AS period, metric, dimension, value
        FROM analytics_summaries
        WHERE grain = 'minute' AND metric = ANY(%(metrics)s) AND {dimension_sql}
          AND period_start >= {minute_start} AND period_start < %(until)s
    """
    if not from_days:
        return minute_rows
    return f"""
        SELECT period_start AS period, metric, dimension, value
        FROM analytics_summaries
        WHERE grain = 'day' AND metric = ANY(%(metrics)s) AND {dimension_sql}
          AND period_start >= date_trunc('day', %(since)s, 'UTC') AND period_start < %(today)s
        UNION ALL {minute_rows}
    """


def _summary_params(metrics: Sequence[str], since: dt.datetime, until: dt.datetime) -> dict:
    unknown = set(metrics) - set(ADDITIVE_METRICS)
    if unknown:
        raise ValueError(f"not additive metrics: {sorted(unknown)}")
    today = until.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"metrics": list(metrics), "since": since, "until": until, "today": today}


def _metric_columns(metrics: Sequence[str]) -> str:
    """One summed column per metric, pivoted in SQL (metric names come from ``ADDITIVE_METRICS`` only)."""
    return ", ".join(f"coalesce(sum(value) FILTER (WHERE metric = '{m}'), 0)::float8 AS {m}" for m in metrics)


def summary_series(
    db,
    since: dt.datetime,
    until: dt.datetime,
    bucket: str = "minute",
    metrics: Sequence[str] = ("orders", "revenue", "alerts"),
    dimension: str = "",
) -> pd.DataFrame:
    """One row per bucket with data in [since, until), in time order: ``period`` (UTC) and a column per metric
    (sums)."""
    params = {**_summary_params(metrics, since, until), "dimension": dimension}
    sql = f"""
        SELECT extract(epoch FROM period)::float8 AS period_s, {_metric_columns(metrics)}
        FROM ({_summary_rows(bucket, "dimension = %(dimension)s")}) rows
        GROUP BY period ORDER BY period
    """
    frame = _frame(db, sql, params)
    frame.insert(0, "period", pd.to_datetime(frame.pop("period_s"), unit="s", utc=True))
    return frame


def summary_breakdowns(
    db, since: dt.datetime, until: dt.datetime, metrics: Sequence[str] = ("orders", "revenue")
) -> dict[str, pd.DataFrame]:
    """Totals per value of every dimension kind in [since, until), in one query: ``{kind: frame}`` with
    ``name`` and a column per metric, largest revenue (or first metric) first."""
    bucket = "day" if until - since > dt.timedelta(days=2) else "minute"
    params = _summary_params(metrics, since, until)
    by = "revenue" if "revenue" in metrics else metrics[0]
    sql = f"""
        SELECT split_part(dimension, '=', 1) AS kind, substr(dimension, strpos(dimension, '=') + 1) AS name,
               {_metric_columns(metrics)}
        FROM ({_summary_rows(bucket, "dimension > ''")}) rows
        GROUP BY dimension ORDER BY {by} DESC, dimension
    """
    with _cursor(db) as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    columns = ["name", *metrics]
    return {
        kind: pd.DataFrame([row[1:] for row in rows if row[0] == kind], columns=columns) for kind in DIMENSION_KINDS
    }


def latest_order_time(db) -> dt.datetime | None:
    """Event time of the newest served order (an index lookup)."""
    return _one(db, "SELECT max(event_time) FROM transactions")[0]


def reporting_currency(db, default: str = "USD") -> str:
    """The currency of every gold figure, as the FX table says (``default`` before the first batch)."""
    row = _one(db, "SELECT reporting_currency FROM fx_rates LIMIT 1")
    return row[0] if row else default


# -- fraud --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlertFilter:
    """What the alert table shows; every field optional. ``reason`` matches a substring literally."""

    min_score: float | None = None
    reason: str | None = None
    statuses: tuple[str, ...] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def where(self) -> tuple[str, dict]:
        parts, params = ["TRUE"], {}
        if self.min_score is not None:
            parts.append("a.fraud_score >= %(min_score)s")
            params["min_score"] = float(self.min_score)
        if self.reason:
            parts.append("EXISTS (SELECT 1 FROM unnest(a.reasons) r WHERE r ILIKE %(reason)s ESCAPE '\\')")
            params["reason"] = f"%{escape_like(self.reason)}%"
        if self.statuses:
            parts.append("a.status = ANY(%(statuses)s)")
            params["statuses"] = list(self.statuses)
        if self.since is not None:
            parts.append("a.created_at >= %(since)s")
            params["since"] = self.since
        if self.until is not None:
            parts.append("a.created_at < %(until)s")
            params["until"] = self.until
        return " AND ".join(parts), params


ALERT_COUNT_CAP = 10_000
# column the table sorts by -> SQL (anything else sorts by time)
ALERT_SORT = {
    "created_at": "a.created_at",
    "fraud_score": "a.fraud_score",
    "amount": "a.amount",
    "amount_reporting": "a.amount / fx.units_per_reporting_unit",
    "customer_id": "a.customer_id",
    "status": "a.status",
    "model_version": "a.model_version",
}


def alerts_page(
    db,
    filters: AlertFilter = AlertFilter(),
    sort_by: str = "created_at",
    descending: bool = True,
    page: int = 0,
    page_size: int = 15,
) -> tuple[pd.DataFrame, int]:
    """One page of alerts matching ``filters`` (newest first by default) and how many match in all, counted up
    to ``ALERT_COUNT_CAP`` + 1 (more than the cap: "10,000+").

    Each row: alert and order ids, customer, time, score, amount with its currency
    and in the reporting currency, reasons, model version, triage status and note.
    """
    where, params = filters.where()
    order = ALERT_SORT.get(sort_by, ALERT_SORT["created_at"])
    direction = "DESC" if descending else "ASC"
    needs_fx = "fx." in order
    # alert columns are NOT NULL: plain DESC/ASC follows their indexes (NULLS LAST would not); a missing rate
    # leaves the reporting amount NULL, sorted last
    nulls = " NULLS LAST" if needs_fx else ""
    joins = """
        LEFT JOIN transactions t ON t.event_id = a.event_id
        LEFT JOIN fx_rates fx ON fx.currency = t.currency
    """
    # Sorting by alert columns picks the page first, so only its rows are joined.
    sql = f"""
        WITH page AS (
            SELECT a.* FROM fraud_alerts a {joins if needs_fx else ""}
            WHERE {where}
            ORDER BY {order} {direction}{nulls}, a.alert_id {direction}
            LIMIT %(limit)s OFFSET %(offset)s
        )
        SELECT a.alert_id, a.event_id, a.transaction_id, a.customer_id, a.created_at, a.event_time,
               a.fraud_score, a.amount::float8 AS amount, t.currency,
               (a.amount / fx.units_per_reporting_unit)::float8 AS amount_reporting,
               array_to_string(a.reasons, '; ') AS reasons, a.model_version, a.status, a.note,
               a.reviewed_by, a.reviewed_at
        FROM page a {joins}
        ORDER BY {order} {direction}{nulls}, a.alert_id {direction}
    """
    params.update(limit=int(page_size), offset=int(page) * int(page_size), cap=ALERT_COUNT_CAP + 1)
    rows = _frame(db, sql, params)
    # counting stops past the cap: a broad filter over all time costs the cap, not the table
    total = _one(db, f"SELECT count(*) FROM (SELECT 1 FROM fraud_alerts a WHERE {where} LIMIT %(cap)s) m", params)[0]
    return rows, int(total)


def alert_reasons(db, limit: int = 200) -> list[str]:
    """The distinct reason texts of the newest ``limit`` alerts, most frequent first (filter suggestions)."""
    sql = """
        SELECT r AS reason, count(*) FROM (
            SELECT reasons FROM fraud_alerts ORDER BY created_at DESC LIMIT %s
        ) a, unnest(a.reasons) r GROUP BY r ORDER BY 2 DESC, 1
    """
    return _frame(db, sql, (limit,))["reason"].tolist()


def score_distribution(db, now: dt.datetime, bins: int = 20, latest: int = 20000, hours: int = 24) -> pd.DataFrame:
    """Scored orders per score bucket of width 100/bins (``bucket_start, orders``): the newest ``latest``
    orders of the last ``hours`` hours, read backwards along the event-time index."""
    width = 100 / bins
    sql = """
        SELECT least(floor(fraud_score / %(width)s), %(bins)s - 1) * %(width)s AS bucket_start, count(*) AS orders
        FROM (
            SELECT fraud_score FROM transactions
            WHERE event_time >= %(since)s AND event_time <= %(now)s AND fraud_score IS NOT NULL
            ORDER BY event_time DESC LIMIT %(latest)s
        ) s
        GROUP BY 1 ORDER BY 1
    """
    params = {"width": width, "bins": bins, "latest": latest, "now": now, "since": now - dt.timedelta(hours=hours)}
    return _frame(db, sql, params)


def precision_recall(db, now: dt.datetime, days: int = 14) -> pd.DataFrame:
    """Per day of order time over the last ``days`` days, where labels exist (``fraud_labels``):

    precision = alerts labelled fraud / alerts with a label (confirmed + false positives);
    recall = orders labelled fraud that alerted / orders labelled fraud.
    Columns: day, labelled_alerts, true_alerts, fraud_orders, caught, precision, recall. Read from the
    labels of the period (a label comes after its order), each joined by key to its order and alert.
    """
    since = (now - dt.timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    sql = """
        SELECT date_trunc('day', t.event_time, 'UTC') AS day,
               count(a.alert_id) AS labelled_alerts,
               count(a.alert_id) FILTER (WHERE l.is_fraud) AS true_alerts,
               count(*) FILTER (WHERE l.is_fraud) AS fraud_orders,
               count(*) FILTER (WHERE l.is_fraud AND t.is_fraud) AS caught
        FROM fraud_labels l
        JOIN transactions t ON t.event_id = l.event_id
        LEFT JOIN fraud_alerts a ON a.event_id = l.event_id
        WHERE l.label_time >= %(since)s AND t.event_time >= %(since)s
        GROUP BY 1 ORDER BY 1
    """
    df = _frame(db, sql, {"since": since})
    df["precision"] = (df["true_alerts"] / df["labelled_alerts"].where(df["labelled_alerts"] > 0)).astype(float)
    df["recall"] = (df["caught"] / df["fraud_orders"].where(df["fraud_orders"] > 0)).astype(float)
    return df


def record_triage(conn, alert_id: str, decision: str, note: str, analyst: str, at: dt.datetime) -> dict:
    """Store an analyst's decision on an alert: its status and note, and the label in ``fraud_labels``.

    Runs in the caller's transaction (not committed here), so the caller can
    publish the label first and commit only then. Returns the label, with the
    ``fraud-labels`` contract (event_id, transaction_id, is_fraud, fraud_pattern,
    label_time as a datetime). Raises KeyError for an unknown alert.
    """
    if decision not in TRIAGE_DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(TRIAGE_DECISIONS)}, not {decision!r}")
    is_fraud = decision == "confirmed_fraud"
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE fraud_alerts SET status = %s, note = %s, reviewed_by = %s, reviewed_at = %s"
            " WHERE alert_id = %s RETURNING event_id, transaction_id",
            (decision, note, analyst, at, alert_id),
        )
        row = cur.fetchone()
        if row is None:
            raise KeyError(f"no alert {alert_id!r}")
        label = {
            "event_id": row[0],
            "transaction_id": row[1],
            "is_fraud": is_fraud,
            "fraud_pattern": ANALYST_FRAUD_PATTERN if is_fraud else None,
            "label_time": at,
        }
        cur.execute(
            "INSERT INTO fraud_labels (event_id, transaction_id, is_fraud, fraud_pattern, label_time, source)"
            " VALUES (%(event_id)s, %(transaction_id)s, %(is_fraud)s, %(fraud_pattern)s, %(label_time)s, %(source)s)"
            " ON CONFLICT (event_id) DO UPDATE SET is_fraud = EXCLUDED.is_fraud,"
            " fraud_pattern = EXCLUDED.fraud_pattern, label_time = EXCLUDED.label_time, source = EXCLUDED.source,"
            " updated_at = now()",
            {**label, "source": f"analyst:{analyst}"},
        )
    return label


# -- customers ----------------------------------------------------------------------------------
def rfm_segments(db) -> pd.DataFrame:
    """Customers and revenue (monetary, reporting currency) per (segment, previous segment; "" for none) of the
    latest RFM run."""
    sql = """
        SELECT rfm_segment AS segment, previous_segment, count(*) AS customers,
               coalesce(sum(monetary), 0)::float8 AS monetary
        FROM customers WHERE rfm_segment IS NOT NULL
        GROUP BY rfm_segment, previous_segment
    """
    frame = _frame(db, sql)  # grouped as the index customers_segment_move_idx is ordered: an index-only scan
    frame["previous_segment"] = frame["previous_segment"].fillna("")
    return frame


def rfm_as_of(db) -> dt.date | None:
    """The as-of date of the newest successful RFM run (None before the first)."""
    row = _one(
        db,
        "SELECT as_of FROM batch_runs WHERE job = 'rfm' AND status = 'succeeded' ORDER BY started_at DESC LIMIT 1",
    )
    return row[0] if row else None


def cohort_matrix(db, months: int = 12) -> pd.DataFrame:
    """Cohort cells of the newest ``months`` cohorts: cohort_month, months_since_first, cohort_size,
    active_customers, retention_rate, orders, revenue, avg_order_value, orders_per_active_customer."""
    sql = """
        SELECT cohort_month, months_since_first, cohort_size, active_customers, retention_rate, orders, revenue,
               avg_order_value, orders_per_active_customer
        FROM cohorts
        WHERE cohort_month >= (SELECT max(cohort_month) FROM cohorts) - make_interval(months => %s - 1)
        ORDER BY cohort_month, months_since_first
    """
    return _frame(db, sql, (months,))


def top_customers(db, limit: int = 10) -> pd.DataFrame:
    """Customers with the most revenue (reporting currency), from the daily batch's figures."""
    sql = """
        SELECT customer_id, total_revenue::float8 AS total_revenue, order_count, avg_order_value::float8
               AS avg_order_value, rfm_segment, last_order_time, home_country
        FROM customers WHERE total_revenue IS NOT NULL
        ORDER BY total_revenue DESC NULLS LAST LIMIT %s
    """
    return _frame(db, sql, (limit,))


def customer_profile(db, customer_id: str) -> dict | None:
    """One customer's row (running counts from the stream, figures and RFM from the batch), or None."""
    sql = """
        SELECT customer_id, first_order_time, last_order_time, order_count, total_revenue::float8 AS total_revenue,
               avg_order_value::float8 AS avg_order_value, cohort_month, home_country, rfm_segment,
               previous_segment, rfm_score, recency_days, frequency, monetary::float8 AS monetary, rfm_as_of
        FROM customers WHERE customer_id = %s
    """
    df = _frame(db, sql, (customer_id,))
    return None if df.empty else df.iloc[0].to_dict()


def customer_orders(db, customer_id: str, limit: int = 20) -> pd.DataFrame:
    """A customer's newest orders with the amount in its currency and in the reporting currency."""
    sql = """
        SELECT t.event_time, t.transaction_id, t.amount::float8 AS amount, t.currency,
               (t.amount / fx.units_per_reporting_unit)::float8 AS amount_reporting, t.payment_method, t.channel,
               t.item_count, t.fraud_score, t.is_fraud
        FROM transactions t LEFT JOIN fx_rates fx ON fx.currency = t.currency
        WHERE t.customer_id = %s ORDER BY t.event_time DESC LIMIT %s
    """
    return _frame(db, sql, (customer_id, limit))


def customer_alerts(db, customer_id: str, limit: int = 20) -> pd.DataFrame:
    sql = """
        SELECT created_at, transaction_id, fraud_score, array_to_string(reasons, '; ') AS reasons, status
        FROM fraud_alerts WHERE customer_id = %s ORDER BY created_at DESC LIMIT %s
    """
    return _frame(db, sql, (customer_id, limit))


CUSTOMER_RECOMMENDATIONS_SQL = """
    SELECT product_id, rank, score, strategy FROM recommendations
    WHERE subject_type = 'customer' AND subject_id = %s ORDER BY rank LIMIT %s
"""
COLD_START_SQL = """
    SELECT product_id, rank, score, strategy FROM recommendations
    WHERE subject_type = 'category' AND subject_id = 'all' ORDER BY rank LIMIT %s
"""


def customer_recommendations(dsn_or_conn, customer_id: str, limit: int = 10) -> pd.DataFrame:
    """One customer's ranked recommendations (indexed lookup), or the shop's popular items when the customer
    has none (cold start). Accepts a DSN or an open connection (a pool's)."""
    with _cursor(dsn_or_conn) as cur:
        cur.execute(CUSTOMER_RECOMMENDATIONS_SQL, (customer_id, limit))
        rows = cur.fetchall()
        if not rows:
            cur.execute(COLD_START_SQL, (limit,))
            rows = cur.fetchall()
        return pd.DataFrame(rows, columns=["product_id", "rank", "score", "strategy"])


# -- products -----------------------------------------------------------------------------------
def categories(db) -> list[str]:
    return _frame(db, "SELECT DISTINCT category FROM products ORDER BY 1")["category"].tolist()


def best_sellers(db, category: str | None = None, limit: int = 15) -> pd.DataFrame:
    """Products with the most revenue (reporting currency), optionally of one category."""
    sql = """
        SELECT product_id, category, revenue::float8 AS revenue, units_sold, order_count, customers,
               list_price::float8 AS list_price
        FROM products WHERE (%(category)s::text IS NULL OR category = %(category)s)
        ORDER BY revenue DESC, product_id LIMIT %(limit)s
    """
    return _frame(db, sql, {"category": category or None, "limit": limit})


def product_pairs(db, product_id: str | None = None, limit: int = 15) -> pd.DataFrame:
    """Frequently bought together: pairs with support, confidence and lift, strongest lift first;
    only those starting from ``product_id`` when given."""
    sql = """
        SELECT antecedent, consequent, orders_with_both, support, confidence, lift
        FROM product_pairs WHERE (%(product)s::text IS NULL OR antecedent = %(product)s)
        ORDER BY lift DESC, orders_with_both DESC, antecedent, consequent LIMIT %(limit)s
    """
    return _frame(db, sql, {"product": product_id or None, "limit": limit})


def product_recommendations(db, product_id: str, limit: int = 10) -> pd.DataFrame:
    """Products recommended with ``product_id`` (ranked, with strategy)."""
    sql = """
        SELECT product_id, rank, score, strategy FROM recommendations
        WHERE subject_type = 'product' AND subject_id = %s ORDER BY rank LIMIT %s
    """
    return _frame(db, sql, (product_id, limit))


def products_by_id(db, product_ids: Sequence[str]) -> pd.DataFrame:
    """Category and list price of the given products."""
    sql = "SELECT product_id, category, list_price::float8 AS list_price FROM products WHERE product_id = ANY(%s)"
    return _frame(db, sql, (list(product_ids),))


# -- pipeline health ----------------------------------------------------------------------------
def batch_durations(db, limit: int = 120) -> pd.DataFrame:
    """The newest streaming micro-batches: batch_id, rows, started_at, committed_at, duration_ms (from the
    batch's start to its PostgreSQL commit)."""
    sql = """
        SELECT batch_id, row_count AS rows, started_at, committed_at,
               (extract(epoch FROM committed_at - started_at) * 1000)::float8 AS duration_ms
        FROM pipeline_batches
        WHERE state = 'committed' AND sink LIKE '%%-pg' AND started_at IS NOT NULL
        ORDER BY committed_at DESC LIMIT %s
    """
    return _frame(db, sql, (limit,)).sort_values("committed_at")


def served_latency(db, now: dt.datetime, minutes: int = 10, latest: int = 5000) -> pd.DataFrame:
    """End-to-end latency of the newest live orders (event time -> queryable in PostgreSQL):
    per minute of event time, p50 and p95 in seconds and the orders measured."""
    sql = """
        SELECT date_trunc('minute', event_time, 'UTC') AS minute, count(*) AS orders,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM loaded_at - event_time))::float8
                   AS p50_s,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM loaded_at - event_time))::float8
                   AS p95_s
        FROM (
            SELECT event_time, loaded_at FROM transactions
            WHERE event_time >= %(since)s AND event_time <= %(now)s
            ORDER BY event_time DESC LIMIT %(latest)s
        ) t
        GROUP BY 1 ORDER BY 1
    """
    return _frame(db, sql, {"since": now - dt.timedelta(minutes=minutes), "now": now, "latest": latest})


def quarantine_by_reason(db, since: dt.datetime) -> pd.DataFrame:
    """Records quarantined since ``since`` per reason (``quarantine_counts``), most first."""
    sql = """
        SELECT reason, sum(records)::bigint AS records FROM quarantine_counts
        WHERE minute >= %s GROUP BY reason ORDER BY 2 DESC, 1
    """
    return _frame(db, sql, (since,))


def batch_jobs(db) -> pd.DataFrame:
    """Per gold batch job: its latest run (status, start, end, error) and its latest successful run's end and
    rows written; index lookups per job (the jobs are found by a loose index scan)."""
    sql = """
        WITH RECURSIVE jobs AS (
            (SELECT job FROM batch_runs ORDER BY job LIMIT 1)
            UNION ALL
            SELECT (SELECT r.job FROM batch_runs r WHERE r.job > jobs.job ORDER BY r.job LIMIT 1)
            FROM jobs WHERE jobs.job IS NOT NULL
        )
        SELECT j.job, last.status AS last_status, last.started_at AS last_started_at,
               last.finished_at AS last_finished_at, last.error AS last_error,
               ok.finished_at AS last_success_at, ok.rows_written::text AS last_success_rows
        FROM jobs j
        CROSS JOIN LATERAL (
            SELECT status, started_at, finished_at, error FROM batch_runs
            WHERE job = j.job ORDER BY started_at DESC LIMIT 1
        ) last
        LEFT JOIN LATERAL (
            SELECT finished_at, rows_written FROM batch_runs
            WHERE job = j.job AND status = 'succeeded' ORDER BY started_at DESC LIMIT 1
        ) ok ON TRUE
        WHERE j.job IS NOT NULL
        ORDER BY j.job
    """
    return _frame(db, sql)


def gold_version(db) -> dt.datetime | None:
    """When the latest gold batch job finished successfully: batch-computed figures change only then."""
    return _one(db, "SELECT max(finished_at) FROM batch_runs WHERE status = 'succeeded'")[0]


def model_in_use(db) -> dict:
    """The model version that scored the newest order, and that order's event time."""
    row = _one(db, "SELECT model_version, event_time FROM transactions ORDER BY event_time DESC LIMIT 1")
    return {"model_version": row[0] if row else None, "event_time": row[1] if row else None}
