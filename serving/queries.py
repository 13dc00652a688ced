"""Read-side queries for the dashboard and the command line.

Each function takes a DSN, runs one query and returns a pandas DataFrame or a
dict; the dashboard reads PostgreSQL only through this module.
"""

from __future__ import annotations

import pandas as pd

from ecom.reference import FX_PER_USD
from serving.db import connection

# amount converted to US dollars, for totals across currencies
AMOUNT_USD = (
    "(amount / CASE currency "
    + " ".join(f"WHEN '{code}' THEN {rate}" for code, rate in FX_PER_USD.items())
    + " ELSE NULL END)"
)


def _frame(dsn: str, sql: str, params: tuple = ()) -> pd.DataFrame:
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        columns = [d[0] for d in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=columns)


def overview_kpis(dsn: str) -> dict:
    """Totals over all served orders: count, revenue, average order value, customers, alerts."""
    sql = f"""
        SELECT count(*) AS transactions,
               coalesce(sum({AMOUNT_USD}), 0)::float AS revenue,
               coalesce(avg({AMOUNT_USD}), 0)::float AS avg_order_value,
               count(DISTINCT customer_id) AS customers,
               max(event_time) AS last_event_time,
               (SELECT count(*) FROM fraud_alerts) AS alerts
        FROM transactions
    """
    return _frame(dsn, sql).iloc[0].to_dict()


def transactions_per_minute(dsn: str, minutes: int = 60) -> pd.DataFrame:
    """Orders and revenue per minute of event time, for the last ``minutes`` of data."""
    sql = f"""
        WITH latest AS (SELECT max(event_time) AS t FROM transactions)
        SELECT date_trunc('minute', event_time) AS minute,
               count(*) AS transactions,
               sum({AMOUNT_USD})::float AS revenue
        FROM transactions, latest
        WHERE event_time > latest.t - make_interval(mins => %s)
        GROUP BY 1 ORDER BY 1
    """
    return _frame(dsn, sql, (minutes,))


def revenue_by_payment_method(dsn: str) -> pd.DataFrame:
    sql = f"""
        SELECT payment_method, count(*) AS transactions, sum({AMOUNT_USD})::float AS revenue
        FROM transactions GROUP BY 1 ORDER BY 3 DESC
    """
    return _frame(dsn, sql)


def recent_alerts(dsn: str, limit: int = 20) -> pd.DataFrame:
    sql = """
        SELECT created_at, transaction_id, customer_id, amount::float AS amount, fraud_score,
               array_to_string(reasons, '; ') AS reasons, model_version
        FROM fraud_alerts ORDER BY created_at DESC LIMIT %s
    """
    return _frame(dsn, sql, (limit,))


def table_counts(dsn: str) -> dict[str, int]:
    tables = ("transactions", "customers", "products", "fraud_alerts", "analytics_summaries", "recommendations")
    with connection(dsn) as conn, conn.cursor() as cur:
        counts = {}
        for table in tables:
            cur.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cur.fetchone()[0]
        return counts


def fraud_summary(dsn: str) -> dict:
    """Alert count, scored orders and the share of scored orders that alerted."""
    sql = """
        SELECT (SELECT count(*) FROM fraud_alerts) AS alerts,
               count(*) FILTER (WHERE fraud_score IS NOT NULL) AS scored,
               count(*) AS orders
        FROM transactions
    """
    row = _frame(dsn, sql).iloc[0].to_dict()
    row["alert_rate"] = row["alerts"] / row["scored"] if row["scored"] else 0.0
    return row


def fraud_score_distribution(dsn: str, bins: int = 20) -> pd.DataFrame:
    """Scored orders per score bucket of width 100/bins: ``bucket_start, orders``."""
    width = 100 / bins
    sql = """
        SELECT least(floor(fraud_score / %s), %s - 1) * %s AS bucket_start, count(*) AS orders
        FROM transactions WHERE fraud_score IS NOT NULL GROUP BY 1 ORDER BY 1
    """
    return _frame(dsn, sql, (width, bins, width))


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

    def run(conn) -> pd.DataFrame:
        with conn.cursor() as cur:
            cur.execute(CUSTOMER_RECOMMENDATIONS_SQL, (customer_id, limit))
            rows = cur.fetchall()
            if not rows:
                cur.execute(COLD_START_SQL, (limit,))
                rows = cur.fetchall()
            return pd.DataFrame(rows, columns=["product_id", "rank", "score", "strategy"])

    if isinstance(dsn_or_conn, str):
        with connection(dsn_or_conn) as conn:
            return run(conn)
    return run(dsn_or_conn)
