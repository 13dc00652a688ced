"""Dashboard benchmark: every page's data callbacks over PostgreSQL holding millions of orders and their gold.

``python -m benchmarks.dashboard`` (``--orders 5000000`` by default) builds a
scratch database and bulk-loads it with COPY:

- ``transactions``: N orders over ``--days`` days ending now (so the live
  windows have data), customers drawn with a skew, 8 currencies, scores;
- gold for them, computed here from the same orders with pandas: minute and
  day rows of ``analytics_summaries`` (orders, revenue, alerts, customers,
  average order, alert rate, late events; overall and per category, payment
  method and channel), ``customers`` with RFM segments (the rule table of
  ``pipelines.gold.rfm``) and a previous segment, ``cohorts``, ``products``,
  ``product_pairs``, ``recommendations`` (every customer and product),
  ``fx_rates`` (``ecom.reference``), ``fraud_alerts`` with reasons and triage
  states, ``fraud_labels``, ``pipeline_batches``, ``batch_runs``,
  ``quarantine_counts``;

then VACUUM ANALYZE, and times each page's data callback (the function the
Dash callback runs: every query plus the figures) ``--iterations`` times,
with the query cache off so each call really reads PostgreSQL as the
read-only role. It prints one JSON object as its last line: ``callbacks``
with p50/p95 ms for each, ``max_p95_ms``, the rows loaded, the load time and
the machine (with its load average, since the machine may be shared). Target:
p95 <= 150 ms per callback on two cores.

The database is kept between runs when ``--keep`` is given (and reused when it
holds the same number of orders), otherwise dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from benchmarks._common import bench_settings, emit, log, machine_info, percentile, services
from ecom.reference import FX_PER_USD
from ecom.schemas import CHANNELS, PAYMENT_METHODS
from ecom.settings import Settings
from serving import db

DATABASE = "bench_dashboard"
CATEGORIES = ("electronics", "fashion", "home", "beauty", "sports", "books", "toys", "grocery", "garden", "automotive")
CURRENCIES = tuple(FX_PER_USD)
CURRENCY_WEIGHTS = (0.45, 0.2, 0.1, 0.06, 0.05, 0.04, 0.05, 0.05)
PAYMENT_WEIGHTS = (0.5, 0.2, 0.15, 0.05, 0.1)
CHANNEL_WEIGHTS = (0.55, 0.45)
REASONS = (
    "amount {x}x the customer's average",
    "only {s} seconds after the customer's previous order",
    "new device and an IP in {c}, a country this customer never ordered from",
    "a device this customer never used",
    "amount {a} USD, larger than 99.{d}% of orders",
)
COUNTRIES = ("US", "GB", "DE", "FR", "CA", "AU", "JP", "BR", "IN", "ES")
JOBS = ("dimensions", "rfm", "cohorts", "recommendations", "minutes", "summaries")
THRESHOLD = 80.0


# -- loading ------------------------------------------------------------------------------------
def copy_frame(dsn: str, table: str, frame: pd.DataFrame) -> None:
    """COPY a DataFrame into ``table`` (CSV; None/NaN as NULL)."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False, header=False, na_rep="\\N", date_format="%Y-%m-%d %H:%M:%S.%f+00")
    buf.seek(0)
    with db.connection(dsn) as conn, conn.cursor() as cur:
        cur.copy_expert(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buf)


class Shop:
    """The generated orders, kept as compact arrays for the gold computations."""

    def __init__(self, orders: int, customers: int, products: int, days: int, now: dt.datetime, seed: int):
        rng = np.random.default_rng(seed)
        self.rng, self.n, self.now = rng, orders, now
        self.n_customers, self.n_products = customers, products
        start = now - dt.timedelta(days=days)
        span = (now - start).total_seconds() - 1
        # event times: uniform with a daily wave, sorted (as a stream appends them)
        u = np.sort(rng.random(orders))
        seconds = u * span
        self.event_time = pd.to_datetime(start) + pd.to_timedelta(seconds, unit="s")
        self.customer = (rng.random(orders) ** 2 * customers).astype(np.int64)  # a few loyal, a long tail
        self.currency = rng.choice(len(CURRENCIES), orders, p=CURRENCY_WEIGHTS)
        self.amount_usd = np.round(np.exp(rng.normal(3.8, 0.8, orders)), 2)
        rates = np.array([FX_PER_USD[c] for c in CURRENCIES])
        self.amount = np.round(self.amount_usd * rates[self.currency], 2)
        self.amount_usd = self.amount / rates[self.currency]
        self.payment = rng.choice(len(PAYMENT_METHODS), orders, p=PAYMENT_WEIGHTS)
        self.channel = rng.choice(len(CHANNELS), orders, p=CHANNEL_WEIGHTS)
        self.category = rng.choice(len(CATEGORIES), orders)
        self.items = rng.integers(1, 5, orders)
        suspicious = rng.random(orders) < 0.02  # about the configured alert rate scores at or over the threshold
        self.score = np.round(
            np.where(suspicious, rng.uniform(THRESHOLD, 100, orders), 100 * rng.beta(1.2, 9, orders)), 2
        )
        self.is_alert = self.score >= THRESHOLD
        self.minute = self.event_time.floor("min")

    def transactions_chunk(self, lo: int, hi: int) -> pd.DataFrame:
        idx = np.arange(lo, hi)
        t = self.event_time[lo:hi]
        customer = pd.Series(self.customer[lo:hi]).map("C{:07d}".format)
        return pd.DataFrame(
            {
                "event_id": pd.Series(idx).map("e{:010d}".format),
                "transaction_id": pd.Series(idx).map("t{:010d}".format),
                "event_time": t,
                "customer_id": customer,
                "customer_email_hash": customer.str.replace("C", "h", regex=False),
                "amount": self.amount[lo:hi],
                "currency": np.array(CURRENCIES)[self.currency[lo:hi]],
                "payment_method": np.array(PAYMENT_METHODS)[self.payment[lo:hi]],
                "channel": np.array(CHANNELS)[self.channel[lo:hi]],
                "item_count": self.items[lo:hi],
                "device_id": pd.Series(self.customer[lo:hi]).map("d{:07d}".format),
                "ip_country": np.array(COUNTRIES)[self.customer[lo:hi] % len(COUNTRIES)],
                "shipping_country": np.array(COUNTRIES)[self.customer[lo:hi] % len(COUNTRIES)],
                "fraud_score": self.score[lo:hi],
                "is_fraud": self.is_alert[lo:hi],
                "model_version": "3",
                "kafka_partition": idx % 3,
                "kafka_offset": idx // 3,
                "processed_time": t + pd.Timedelta(milliseconds=700),
                "loaded_at": t + pd.Timedelta(milliseconds=900),
            }
        )

    def orders_frame(self) -> pd.DataFrame:
        """One row per order with what gold needs (reporting currency)."""
        return pd.DataFrame(
            {
                "minute": self.minute,
                "customer": self.customer,
                "revenue": self.amount_usd,
                "alert": self.is_alert.astype(np.int64),
                "category": pd.Categorical.from_codes(self.category, CATEGORIES),
                "payment_method": pd.Categorical.from_codes(self.payment, PAYMENT_METHODS),
                "channel": pd.Categorical.from_codes(self.channel, CHANNELS),
            }
        )


def summaries(orders: pd.DataFrame, grain: str) -> Iterator[pd.DataFrame]:
    """analytics_summaries rows (metric, grain, period_start, dimension, value) for minute or day periods,
    one frame per dimension kind (overall, category, payment method, channel), to keep memory flat."""
    period = orders["minute"] if grain == "minute" else orders["minute"].dt.floor("D")
    for kind in (None, "category", "payment_method", "channel"):
        keys = [period.rename("period")] if kind is None else [period.rename("period"), orders[kind]]
        agg = (
            orders.groupby(keys, sort=False, observed=True)
            .agg(
                orders=("revenue", "size"),
                revenue=("revenue", "sum"),
                alerts=("alert", "sum"),
                customers=("customer", "nunique"),
            )
            .reset_index()
        )
        agg["dimension"] = "" if kind is None else kind + "=" + agg[kind].astype(str)
        agg["avg_order_value"] = agg["revenue"] / agg["orders"]
        agg["alert_rate"] = agg["alerts"] / agg["orders"]
        agg["late_events"] = 0
        wide = agg.drop(columns=[kind] if kind else []).rename(columns={"period": "period_start"})
        long = wide.melt(id_vars=["period_start", "dimension"], var_name="metric", value_name="value")
        long["grain"] = grain
        yield long[["metric", "grain", "period_start", "dimension", "value"]]


def rfm_segments(r: np.ndarray, f: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The segment of each customer by the first matching rule of ``pipelines.gold.rfm.SEGMENT_RULES``."""
    from pipelines.gold.rfm import SEGMENT_RULES

    segment = np.full(len(r), "Others", dtype=object)
    free = np.ones(len(r), dtype=bool)
    for rule in SEGMENT_RULES:
        hit = free & (r >= rule.r[0]) & (r <= rule.r[1]) & (f >= rule.f[0]) & (f <= rule.f[1])
        hit &= (m >= rule.m[0]) & (m <= rule.m[1])
        segment[hit] = rule.segment
        free &= ~hit
    return segment


def score(values: np.ndarray, better_is_higher: bool) -> np.ndarray:
    """1-5 by the share of customers with a strictly worse value (issue 9's tie-fair formula)."""
    ordered = np.sort(values if better_is_higher else -values)
    worse = np.searchsorted(ordered, values if better_is_higher else -values, side="left")
    return 1 + np.minimum(4, (5 * worse) // len(values))


@contextmanager
def indexes_built_after(dsn: str, tables: tuple[str, ...]) -> Iterator[None]:
    """Drop the secondary indexes of ``tables`` for a bulk load and build them again afterwards (as the
    migrations define them), which is much faster than maintaining them row by row."""
    with db.connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i JOIN pg_class c ON c.relname = i.indexname"
            " JOIN pg_index x ON x.indexrelid = c.oid WHERE i.schemaname = 'public' AND i.tablename = ANY(%s)"
            " AND NOT x.indisprimary AND NOT x.indisunique",
            (list(tables),),
        )
        found = cur.fetchall()
        for name, _ in found:
            cur.execute(f'DROP INDEX "{name}"')
    yield
    log(f"  building {len(found)} indexes ...")
    with db.connection(dsn) as conn, conn.cursor() as cur:
        for _, definition in found:
            cur.execute(definition)


def load_shop(dsn: str, shop: Shop, log_every: int = 500_000) -> dict[str, int]:
    """COPY the orders and their gold into ``dsn``; returns rows per table."""
    with indexes_built_after(dsn, ("transactions", "analytics_summaries", "customers", "recommendations")):
        return _load_shop(dsn, shop, log_every)


def _load_shop(dsn: str, shop: Shop, log_every: int) -> dict[str, int]:
    rows: dict[str, int] = {}
    now = shop.now
    for lo in range(0, shop.n, log_every):
        hi = min(shop.n, lo + log_every)
        copy_frame(dsn, "transactions", shop.transactions_chunk(lo, hi))
        log(f"  transactions {hi:,}/{shop.n:,}")
    rows["transactions"] = shop.n
    copy_frame(
        dsn,
        "fx_rates",
        pd.DataFrame(
            {
                "currency": CURRENCIES,
                "reporting_currency": "USD",
                "units_per_reporting_unit": [FX_PER_USD[c] for c in CURRENCIES],
                "source": "ecom.reference",
                "as_of": dt.date(2024, 6, 3),
            }
        ),
    )
    orders = shop.orders_frame()
    log("  analytics_summaries ...")
    rows["analytics_summaries"] = 0
    for grain in ("minute", "day"):
        for frame in summaries(orders, grain):
            for lo in range(0, len(frame), 2_000_000):
                copy_frame(dsn, "analytics_summaries", frame.iloc[lo : lo + 2_000_000])
            rows["analytics_summaries"] += len(frame)

    log("  customers, cohorts ...")
    g = orders.groupby("customer")
    cust = pd.DataFrame(
        {
            "first": g["minute"].min(),
            "last": g["minute"].max(),
            "frequency": g.size(),
            "monetary": g["revenue"].sum(),
        }
    )
    recency = (pd.Timestamp(now) - cust["last"]).dt.days.to_numpy()
    r, f, m = score(-recency, True), score(cust["frequency"].to_numpy(), True), score(cust["monetary"].to_numpy(), True)
    segment = rfm_segments(r, f, m)
    rng = shop.rng
    previous = np.where(rng.random(len(cust)) < 0.75, segment, rng.choice(segment, len(cust)))
    as_of = now.date()
    customers = pd.DataFrame(
        {
            "customer_id": [f"C{c:07d}" for c in cust.index],
            "customer_email_hash": [f"h{c:07d}" for c in cust.index],
            "first_order_time": cust["first"].to_numpy(),
            "last_order_time": cust["last"].to_numpy(),
            "order_count": cust["frequency"].to_numpy(),
            "total_amount": cust["monetary"].round(2).to_numpy(),
            "avg_amount": (cust["monetary"] / cust["frequency"]).round(2).to_numpy(),
            "rfm_segment": segment,
            "rfm_score": [f"{a}{b}{c}" for a, b, c in zip(r, f, m, strict=True)],
            "cohort_month": [dt.date(t.year, t.month, 1) for t in cust["first"]],
            "total_revenue": cust["monetary"].to_numpy(),
            "avg_order_value": (cust["monetary"] / cust["frequency"]).to_numpy(),
            "home_country": np.array(COUNTRIES)[cust.index.to_numpy() % len(COUNTRIES)],
            "rfm_as_of": as_of,
            "recency_days": recency,
            "frequency": cust["frequency"].to_numpy(),
            "monetary": cust["monetary"].to_numpy(),
            "r_score": r,
            "f_score": f,
            "m_score": m,
            "previous_segment": previous,
        }
    )
    copy_frame(dsn, "customers", customers)
    rows["customers"] = len(customers)

    def month_number(times: pd.Series) -> np.ndarray:
        return (times.dt.year * 12 + times.dt.month - 1).to_numpy()

    first_of_customer = pd.Series(month_number(cust["first"]), index=cust.index)
    first_month = first_of_customer.reindex(orders["customer"]).to_numpy()
    cells = (
        pd.DataFrame(
            {
                "cohort": first_month,
                "since": month_number(orders["minute"]) - first_month,
                "customer": orders["customer"].to_numpy(),
                "revenue": orders["revenue"].to_numpy(),
            }
        )
        .groupby(["cohort", "since"])
        .agg(active=("customer", "nunique"), n=("revenue", "size"), revenue=("revenue", "sum"))
        .reset_index()
    )
    cells["cohort_size"] = cells["cohort"].map(first_of_customer.value_counts())
    cohorts = pd.DataFrame(
        {
            "cohort_month": [dt.date(int(m) // 12, int(m) % 12 + 1, 1) for m in cells["cohort"]],
            "months_since_first": cells["since"],
            "cohort_size": cells["cohort_size"],
            "active_customers": cells["active"],
            "retention_rate": cells["active"] / cells["cohort_size"],
            "orders": cells["n"],
            "revenue": cells["revenue"],
            "avg_order_value": cells["revenue"] / cells["n"],
            "orders_per_active_customer": cells["n"] / cells["active"],
        }
    )
    copy_frame(dsn, "cohorts", cohorts)
    rows["cohorts"] = len(cohorts)

    log("  products, pairs, recommendations ...")
    n_products = shop.n_products
    pids = np.array([f"P{i:05d}" for i in range(n_products)])
    popularity = 1 / np.arange(1, n_products + 1) ** 0.9
    popularity /= popularity.sum()
    units = rng.multinomial(int(orders["revenue"].size * 1.8), popularity)
    price = np.round(np.exp(rng.normal(3.3, 0.8, n_products)), 2)
    products = pd.DataFrame(
        {
            "product_id": pids,
            "category": np.array(CATEGORIES)[np.arange(n_products) % len(CATEGORIES)],
            "order_count": np.maximum(1, (units * 0.8).astype(np.int64)),
            "units_sold": units,
            "revenue": units * price,
            "avg_unit_price": price,
            "list_price": price,
            "customers": np.maximum(1, (units * 0.6).astype(np.int64)),
            "first_sold_at": pd.Timestamp(now) - pd.Timedelta(days=90),
            "last_sold_at": pd.Timestamp(now),
        }
    )
    copy_frame(dsn, "products", products)
    rows["products"] = n_products

    per = 20
    antecedent = np.repeat(np.arange(n_products), per)
    consequent = (antecedent + rng.integers(1, n_products, antecedent.size)) % n_products
    pairs = pd.DataFrame({"a": pids[antecedent], "c": pids[consequent]}).drop_duplicates()
    both = rng.integers(3, 400, len(pairs))
    total_orders = shop.n
    support = both / total_orders
    confidence = np.minimum(1.0, both / rng.integers(400, 20_000, len(pairs)))
    copy_frame(
        dsn,
        "product_pairs",
        pd.DataFrame(
            {
                "antecedent": pairs["a"],
                "consequent": pairs["c"],
                "orders_with_both": both,
                "support": support,
                "confidence": confidence,
                "lift": confidence / rng.uniform(0.001, 0.05, len(pairs)),
            }
        ),
    )
    rows["product_pairs"] = len(pairs)

    top_n = 10
    n_cust = len(customers)
    recs_customer = pd.DataFrame(
        {
            "subject_type": "customer",
            "subject_id": np.repeat(customers["customer_id"].to_numpy(), top_n),
            "product_id": pids[
                (np.repeat(np.arange(n_cust), top_n) * 7 + np.tile(np.arange(top_n), n_cust) * 13) % n_products
            ],  # fmt: skip
            "rank": np.tile(np.arange(1, top_n + 1), n_cust),
            "score": np.tile(np.linspace(0.9, 0.1, top_n), n_cust),
            "strategy": "item_similarity",
        }
    )
    recs_product = pd.DataFrame(
        {
            "subject_type": "product",
            "subject_id": np.repeat(pids, top_n),
            "product_id": pids[
                (np.repeat(np.arange(n_products), top_n) + np.tile(np.arange(1, top_n + 1), n_products)) % n_products
            ],  # fmt: skip
            "rank": np.tile(np.arange(1, top_n + 1), n_products),
            "score": np.tile(np.linspace(0.8, 0.2, top_n), n_products),
            "strategy": "item_similarity",
        }
    )
    popular = pd.DataFrame(
        {
            "subject_type": "category",
            "subject_id": "all",
            "product_id": pids[:top_n],
            "rank": np.arange(1, top_n + 1),
            "score": units[:top_n].astype(float),
            "strategy": "popular",
        }
    )
    recs = pd.concat([recs_customer, recs_product, popular], ignore_index=True)
    for lo in range(0, len(recs), 1_000_000):
        copy_frame(dsn, "recommendations", recs.iloc[lo : lo + 1_000_000])
    rows["recommendations"] = len(recs)

    log("  alerts, labels, bookkeeping ...")
    alert_idx = np.flatnonzero(shop.is_alert)
    k = len(alert_idx)
    created = shop.event_time[alert_idx] + pd.Timedelta(milliseconds=800)
    reason_texts = np.array(
        [
            REASONS[0].format(x=12),
            REASONS[1].format(s=4),
            REASONS[2].format(c="NG"),
            REASONS[3],
            REASONS[4].format(a="2,450.00", d=7),
        ]
    )
    first_reason = rng.integers(0, len(reason_texts), k)
    second_reason = (first_reason + rng.integers(1, len(reason_texts), k)) % len(reason_texts)
    reasons = [
        "{" + f'"{reason_texts[a]}","{reason_texts[b]}"' + "}" for a, b in zip(first_reason, second_reason, strict=True)
    ]
    status = rng.choice(["open", "confirmed_fraud", "false_positive"], k, p=[0.8, 0.12, 0.08])
    alerts = pd.DataFrame(
        {
            "alert_id": pd.Series(alert_idx).map("a{:010d}".format),
            "event_id": pd.Series(alert_idx).map("e{:010d}".format),
            "transaction_id": pd.Series(alert_idx).map("t{:010d}".format),
            "customer_id": pd.Series(shop.customer[alert_idx]).map("C{:07d}".format),
            "amount": shop.amount[alert_idx],
            "fraud_score": shop.score[alert_idx],
            "reasons": reasons,
            "model_version": "3",
            "event_time": shop.event_time[alert_idx],
            "created_at": created,
            "status": status,
        }
    )
    copy_frame(dsn, "fraud_alerts", alerts)
    rows["fraud_alerts"] = k
    reviewed = status != "open"
    labels = pd.DataFrame(
        {
            "event_id": alerts["event_id"][reviewed],
            "transaction_id": alerts["transaction_id"][reviewed],
            "is_fraud": status[reviewed] == "confirmed_fraud",
            "fraud_pattern": np.where(status[reviewed] == "confirmed_fraud", "analyst_confirmed", None),
            "label_time": created[reviewed] + pd.Timedelta(hours=2),
            "source": "analyst:bench",
        }
    )
    copy_frame(dsn, "fraud_labels", labels)
    rows["fraud_labels"] = len(labels)

    n_batches = 50_000
    ends = pd.Timestamp(now) - pd.to_timedelta(np.arange(n_batches)[::-1] * 1.2, unit="s")
    duration = pd.to_timedelta(rng.gamma(4, 150, n_batches), unit="ms")
    copy_frame(
        dsn,
        "pipeline_batches",
        pd.DataFrame(
            {
                "sink": "/bench/checkpoints/ingest_transactions@q-pg",
                "batch_id": np.arange(n_batches),
                "row_count": rng.integers(50, 2000, n_batches),
                "committed_at": ends,
                "state": "committed",
                "started_at": ends - duration,
            }
        ),
    )
    rows["pipeline_batches"] = n_batches
    day_count = int((pd.Timestamp(now) - shop.event_time[0]).days) + 1
    runs = []
    for d in range(day_count):
        start = pd.Timestamp(now) - pd.Timedelta(days=day_count - d, hours=-2)
        for j, job in enumerate(JOBS):
            runs.append((job, start.date(), start + pd.Timedelta(minutes=j), start + pd.Timedelta(minutes=j + 1),
                         "succeeded", '{"pg/x": 100}'))  # fmt: skip
    copy_frame(
        dsn,
        "batch_runs",
        pd.DataFrame(runs, columns=["job", "as_of", "started_at", "finished_at", "status", "rows_written"]),
    )
    rows["batch_runs"] = len(runs)
    hours = pd.date_range(end=pd.Timestamp(now).floor("h"), periods=day_count * 24, freq="h")
    quarantine = pd.DataFrame(
        [(h, reason, int(rng.integers(1, 30))) for h in hours for reason in ("malformed_json", "amount_matches_items")],
        columns=["minute", "reason", "records"],
    )
    copy_frame(dsn, "quarantine_counts", quarantine)
    rows["quarantine_counts"] = len(quarantine)
    return rows


def prepare(settings: Settings, args: argparse.Namespace, now: dt.datetime) -> tuple[dict, float, dt.datetime | None]:
    """The scratch database, loaded now or reused (``--keep`` with the same sizes): rows, seconds, and for a
    reused one the time its data ends at (the benchmark then measures as of that time)."""
    dsn = settings.postgres.dsn
    marker = f"benchmarks.dashboard orders={args.orders} customers={args.customers} days={args.days}"
    try:
        with db.connection(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                        (settings.postgres.database,))  # fmt: skip
            found = cur.fetchone()
            if args.keep and found and found[0] and found[0].startswith(marker + " "):
                loaded_at = dt.datetime.fromisoformat(found[0].rsplit(" ", 1)[1])
                log(
                    f"reusing {settings.postgres.database} (loaded {loaded_at:%Y-%m-%d %H:%M} UTC; measured as of then)"
                )
                return {}, 0.0, loaded_at
    except Exception:  # noqa: BLE001 - no such database yet
        pass
    started = time.monotonic()
    log(f"loading {args.orders:,} orders and their gold into {settings.postgres.database} ...")
    db.recreate_database(dsn)
    shop = Shop(args.orders, args.customers, args.products, args.days, now, args.seed)
    rows = load_shop(dsn, shop)
    log("  VACUUM ANALYZE ...")
    conn = db.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
            cur.execute(f'COMMENT ON DATABASE "{settings.postgres.database}" IS %s', (f"{marker} {now.isoformat()}",))
    finally:
        conn.close()
    return rows, time.monotonic() - started, None


# -- measuring ----------------------------------------------------------------------------------
def page_callbacks(
    settings: Settings, reader, customer: str, product: str
) -> dict[str, Callable[[dt.datetime], object]]:
    """Each page's data callback (queries + figures), as the Dash callbacks call them."""
    from dashboard.pages import customers, fraud, health, overview, products

    def fraud_table(now, **filters):
        f = fraud.alert_filter(now, filters.get("score"), filters.get("reason"), filters.get("statuses"),
                               filters.get("since", "24h"))  # fmt: skip
        return fraud.load_table(reader, settings, now, f, filters.get("sort"), 0, [])

    return {
        "overview_1h": lambda now: overview.load(reader, settings, now, "1h"),
        "overview_24h": lambda now: overview.load(reader, settings, now, "24h"),
        "overview_7d": lambda now: overview.load(reader, settings, now, "7d"),
        "overview_30d": lambda now: overview.load(reader, settings, now, "30d"),
        "fraud_table": lambda now: fraud_table(now),
        "fraud_table_filtered_all_time": lambda now: fraud_table(
            now,
            score=90,
            reason="device",
            statuses=["open"],
            since="all",
            sort=[{"column_id": "fraud_score", "direction": "desc"}],
        ),  # fmt: skip
        "fraud_charts": lambda now: fraud.load_charts(reader, settings, now),
        "customers": lambda now: customers.load(reader, settings),
        "customer_lookup": lambda now: customers.load_lookup(reader, settings, customer),
        "products": lambda now: products.load(reader, settings, None),
        "product_recommendations": lambda now: products.load_recommendations(reader, "product", product),
        "customer_recommendations": lambda now: products.load_recommendations(reader, "customer", customer),
        "health": lambda now: health.load(reader, settings, now),
    }


def measure(settings: Settings, iterations: int, data_now: dt.datetime) -> dict:
    """p50/p95 per callback, each called as of ``data_now`` plus the seconds since the measuring started."""
    from dashboard.app import create_app
    from dashboard.data import READER_ROLE, Reader, role_dsn

    app = create_app(settings, users={})
    reader = Reader(role_dsn(settings, READER_ROLE), max_connections=4, ttl_s=0.0)  # cache off: every call queries
    with db.connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT customer_id FROM customers ORDER BY total_revenue DESC LIMIT 1")
        customer = cur.fetchone()[0]
    callbacks = page_callbacks(settings, reader, customer, "P00001")
    results: dict = {}
    offset = time.monotonic()

    def as_of() -> dt.datetime:
        return data_now + dt.timedelta(seconds=time.monotonic() - offset)

    with app.server.app_context():
        for name, fn in callbacks.items():
            fn(as_of())  # warm-up: imports, connections, plans
            times = []
            for _ in range(iterations):
                reader.cache.clear()
                started = time.perf_counter()
                fn(as_of())
                times.append((time.perf_counter() - started) * 1000)
            results[name] = {
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": percentile(times, 95),
                "max_ms": round(max(times), 1),
            }
            log(f"  {name:<32} p50 {results[name]['p50_ms']:>7.1f} ms   p95 {results[name]['p95_ms']:>7.1f} ms")
        # the same callbacks as a refresh runs them: cache on, identical queries shared within the period
        cached = Reader(reader.dsn, max_connections=4, ttl_s=settings.dashboard.refresh_ms / 1000)
        warm = page_callbacks(settings, cached, customer, "P00001")
        now = as_of()
        for fn in warm.values():
            fn(now)
        started = time.perf_counter()
        for fn in warm.values():
            fn(now)
        cached_ms = (time.perf_counter() - started) * 1000
    reader.close()
    cached.close()
    return {"callbacks": results, "second_tab_all_callbacks_ms": round(cached_ms, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=5_000_000, help="orders to load (default 5,000,000)")
    parser.add_argument("--customers", type=int, default=200_000, help="customer pool (default 200,000)")
    parser.add_argument("--products", type=int, default=2_000, help="products (default 2,000)")
    parser.add_argument("--days", type=int, default=90, help="days of history ending now (default 90)")
    parser.add_argument("--iterations", type=int, default=30, help="timed calls per callback (default 30)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the database (and reuse it next time)")
    args = parser.parse_args(argv)

    base = bench_settings()
    settings = base.model_copy(update={"postgres": base.postgres.model_copy(update={"database": DATABASE})})
    machine = machine_info()
    now = dt.datetime.now(dt.UTC)
    with services(base):
        rows, load_s, data_end = prepare(settings, args, now)
        try:
            log(f"timing each page's data callbacks, {args.iterations} calls each, query cache off ...")
            measured = measure(settings, args.iterations, data_end or now)
        finally:
            if not args.keep:
                db.drop_database(settings.postgres.dsn)
    p95s = [c["p95_ms"] for c in measured["callbacks"].values()]
    if hasattr(os, "getloadavg"):
        machine["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    emit(
        {
            "benchmark": "dashboard",
            "orders": args.orders,
            "customers": args.customers,
            "products": args.products,
            "days": args.days,
            "iterations": args.iterations,
            "rows_loaded": rows,
            "load_seconds": round(load_s, 1),
            "reused_database": data_end is not None,
            "measured_as_of": (data_end or now).isoformat(timespec="seconds"),
            **measured,
            "max_p95_ms": max(p95s),
            "target_p95_ms": 150,
            "machine": machine,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
