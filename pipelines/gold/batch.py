"""Gold batch: the daily jobs from silver to gold Delta tables and PostgreSQL.

Input: ``silver/transactions`` (read with Spark), the FX reference. Output, per
job (grain of each table in ``ecom/schemas.py`` and docs/gold.md):

- ``dimensions``: ``gold/fx_rates``, ``gold/customers``, ``gold/products``;
  PostgreSQL ``fx_rates``, ``products`` and the gold columns of ``customers``.
- ``rfm``: ``gold/rfm`` (partition ``as_of``); the RFM columns of ``customers``.
- ``cohorts``: ``gold/cohorts``; PostgreSQL ``cohorts``.
- ``recommendations``: ``gold/product_similarity``,
  ``gold/frequently_bought_together``, ``gold/recommendations``; PostgreSQL
  ``recommendations`` and ``product_pairs``.
- ``minutes``: the minute metrics of the last ``gold.recompute_days`` days
  recomputed from silver, late events included (``pipelines.gold.live``).
- ``summaries``: the daily rows of ``analytics_summaries``.

``daily`` runs them in that order. Every job counts only orders on or before
``as_of`` (default: today, UTC), so a rerun for the same date gives the same
result. Each job's Spark result is collected once as Arrow (recommendations,
minutes and summaries collect their input rows instead and count them in the
driver, see their modules) and written from the driver: to Delta with delta-rs (overwrite, or ``replaceWhere`` on the
``as_of`` partition), to PostgreSQL with ``serving.db.sync_table`` (COPY, then
insert or update only what changed, delete what is gone), one transaction per
table (``customers`` in key-ordered chunks so the stream's upserts are never
blocked for long). Running a job twice changes nothing; a job killed half-way
and rerun leaves the same result. Each run is recorded in ``batch_runs`` and counted in the process's
Prometheus metrics (``ecom.metrics``: runs per outcome, duration, rows written, last success), which the
process serves with ``/healthz`` while it runs (port ``metrics.ports.batch``; docs/observability.md).

Runs as ``ecom batch daily|<job> [--as-of DATE]`` or
``spark-submit pipelines/gold/job.py daily|<job>``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from functools import cached_property

import pyarrow as pa
from deltalake import CommitProperties
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from ecom import metrics
from ecom.health import Check
from ecom.lake import prepare_lake, read_with_archive
from ecom.schemas import (
    COHORT_SCHEMA,
    CUSTOMER_SCHEMA,
    FBT_SCHEMA,
    FX_RATE_SCHEMA,
    PRODUCT_SCHEMA,
    RECOMMENDATION_SCHEMA,
    RFM_SCHEMA,
    SIMILARITY_SCHEMA,
    arrow_schema,
)
from ecom.settings import Settings
from ecom.storage import write_delta
from pipelines.gold import dimensions, fx, orders

log = logging.getLogger(__name__)

CUSTOMER_CHUNK = 5000  # customers rows per transaction: bounds how long a stream upsert may wait for a lock


def _partition_dates(path: str, column: str) -> set[dt.date]:
    """The distinct values of a date partition column of a Delta table, from its log (delta-rs)."""
    from ecom.storage import delta_table

    values = delta_table(path).get_add_actions(flatten=True).column(f"partition.{column}").to_pylist()
    return {v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)) for v in values if v is not None}


def _date_literal(day: dt.date) -> str:
    return day.isoformat()


class GoldBatch:
    """One run of gold batch jobs as of a date; silver is read once and shared by the jobs."""

    def __init__(self, spark: SparkSession, settings: Settings, as_of: dt.date | None = None):
        self.spark = spark
        self.settings = settings
        self.gold = settings.gold
        self.as_of = as_of or dt.datetime.now(dt.UTC).date()
        self.dsn = settings.postgres.dsn
        prepare_lake(spark, settings)

    # -- inputs, computed once per run ---------------------------------------------------------
    @cached_property
    def fx(self) -> DataFrame:
        return fx.fx_rates_frame(self.spark, self.gold.reporting_currency).cache()

    @cached_property
    def orders(self) -> DataFrame:
        """Silver orders (hot and archived) up to the end of ``as_of``, with revenue in the reporting currency
        (cached): RFM, cohorts and recommendations look back further than the hot horizon."""
        silver = read_with_archive(self.spark, self.settings.lake, "silver", "transactions")
        silver = silver.where(F.col("event_date") <= F.lit(self.as_of))
        return orders.with_order_revenue(silver, self.fx).cache()

    @cached_property
    def lines(self) -> DataFrame:
        """Order lines of ``orders`` (exploded from the cache at each use: caching them saves nothing)."""
        return orders.order_lines(self.orders, self.fx)

    @cached_property
    def customers(self) -> DataFrame:
        return dimensions.customer_dimension(self.orders).cache()

    def window_start(self, days: int) -> dt.date:
        """First day of a window of ``days`` days ending with ``as_of`` (both included)."""
        return self.as_of - dt.timedelta(days=days - 1)

    # -- writing ----------------------------------------------------------------------------------
    def to_lake(self, df: DataFrame, table: str, schema: StructType, predicate: str | None = None) -> pa.Table:
        """Collect ``df`` as Arrow and overwrite ``gold/<table>`` with it (only ``predicate``'s rows if given)."""
        return self.write_lake(df.select(*schema.fieldNames()).toArrow(), table, schema, predicate)

    def write_lake(self, data: pa.Table, table: str, schema: StructType, predicate: str | None = None) -> pa.Table:
        """Overwrite ``gold/<table>`` with ``data`` (only ``predicate``'s rows if given); returns what was written."""
        data = data.select(schema.fieldNames()).cast(arrow_schema(schema))
        tag = json.dumps({"job": "gold-batch", "table": table, "as_of": _date_literal(self.as_of)})
        write_delta(
            self.settings.lake.table("gold", table),
            data,
            mode="overwrite",
            predicate=predicate,
            commit_properties=CommitProperties(custom_metadata={"userMetadata": tag}),
        )
        return data

    def to_postgres(
        self,
        table: str,
        data: pa.Table,
        columns: Sequence[str],
        key: Sequence[str],
        rename: dict[str, str] | None = None,
        scope: str | None = "TRUE",
        chunk: int | None = None,
    ) -> int:
        """Sync ``data``'s ``columns`` (renamed to PostgreSQL's names by ``rename``) into ``table``; rows changed."""
        from serving import db

        rename = rename or {}
        values = [data.column(c).to_pylist() for c in columns]
        rows = list(zip(*values, strict=True))
        pg_columns = [rename.get(c, c) for c in columns]
        pg_key = [rename.get(c, c) for c in key]
        if chunk:  # key order: the stream upserts in key order too, so the two never deadlock
            if scope is not None:
                raise ValueError("a chunked sync cannot delete rows outside its chunk: use scope=None")
            positions = [columns.index(k) for k in key]
            rows.sort(key=lambda row: tuple(row[p] for p in positions))
        changed = 0
        parts = [rows[i : i + chunk] for i in range(0, len(rows), chunk)] if chunk else [rows]
        conn = db.connect(self.dsn)
        try:
            for part in parts or [[]]:
                with conn, conn.cursor() as cur:  # one transaction per part
                    upserted, deleted = db.sync_table(cur, table, pg_columns, pg_key, part, scope)
                    changed += upserted + deleted
        finally:
            conn.close()
        return changed

    # -- jobs -------------------------------------------------------------------------------------
    def dimensions(self) -> dict[str, int]:
        """FX rates, customers and products, in gold and PostgreSQL."""
        written: dict[str, int] = {}
        rates = self.to_lake(self.fx, "fx_rates", FX_RATE_SCHEMA)
        written["gold/fx_rates"] = rates.num_rows
        written["pg/fx_rates"] = self.to_postgres("fx_rates", rates, FX_RATE_SCHEMA.fieldNames(), ["currency"])
        customers = self.to_lake(self.customers, "customers", CUSTOMER_SCHEMA)
        written["gold/customers"] = customers.num_rows
        # The stream keeps first/last order and counts current; the batch adds what only it knows.
        written["pg/customers"] = self.to_postgres(
            "customers",
            customers,
            ["customer_id", "total_revenue", "avg_order_value", "cohort_month", "home_country"],
            ["customer_id"],
            scope=None,
            chunk=CUSTOMER_CHUNK,
        )
        products = self.to_lake(dimensions.product_dimension(self.lines), "products", PRODUCT_SCHEMA)
        written["gold/products"] = products.num_rows
        written["pg/products"] = self.to_postgres("products", products, PRODUCT_SCHEMA.fieldNames(), ["product_id"])
        return written

    def rfm(self) -> dict[str, int]:
        """RFM scores and segments as of the run's date; every known customer's RFM columns in PostgreSQL."""
        from pipelines.gold import rfm

        table = self.settings.lake.table("gold", "rfm")
        # The previous run is the latest earlier as_of partition (found from the Delta log, not a scan).
        earlier = [d for d in _partition_dates(table, "as_of") if d < self.as_of]
        previous = (
            self.spark.read.format("delta").load(table).where(F.col("as_of") == F.lit(max(earlier)))
            if earlier
            else None
        )
        result = rfm.rfm_table(self.orders, self.as_of, self.gold.rfm_window_days, previous).cache()
        data = self.to_lake(result, "rfm", RFM_SCHEMA, predicate=f"as_of = '{_date_literal(self.as_of)}'")
        # Customers with no order in the window get their RFM columns cleared, not left from an older run.
        columns = ["customer_id", *[c for c in RFM_SCHEMA.fieldNames() if c != "customer_id"]]
        served = self.customers.select("customer_id").join(result, "customer_id", "left").select(*columns).toArrow()
        result.unpersist()
        rename = {"as_of": "rfm_as_of", "segment": "rfm_segment"}
        pg = self.to_postgres("customers", served, columns, ["customer_id"], rename, scope=None, chunk=CUSTOMER_CHUNK)
        return {"gold/rfm": data.num_rows, "pg/customers": pg}

    def cohorts(self) -> dict[str, int]:
        """The cohort retention matrix."""
        from pipelines.gold import cohorts

        data = self.to_lake(cohorts.cohort_table(self.orders), "cohorts", COHORT_SCHEMA)
        pg = self.to_postgres("cohorts", data, COHORT_SCHEMA.fieldNames(), ["cohort_month", "months_since_first"])
        return {"gold/cohorts": data.num_rows, "pg/cohorts": pg}

    def recommendations(self) -> dict[str, int]:
        """Item-item similarity, frequently bought together, per-customer, per-product and cold-start lists."""
        from pipelines.gold import recommendations as rec

        start = self.window_start(self.gold.recommendation_window_days)
        lines = self.lines.where(F.col("event_time") >= F.lit(dt.datetime.combine(start, dt.time())))
        purchases = rec.Purchases.from_lines(lines.select(*rec.LINE_COLUMNS).toArrow())
        similarity = self.write_lake(
            rec.product_similarity(purchases, self.gold.similar_top_n), "product_similarity", SIMILARITY_SCHEMA
        )
        fbt = self.write_lake(
            rec.frequently_bought_together(purchases, self.gold.fbt_min_support_count, self.gold.fbt_min_confidence),
            "frequently_bought_together",
            FBT_SCHEMA,
        )
        lists = rec.recommendation_lists(
            purchases, similarity, self.gold.recommendations_top_n, self.gold.repeat_purchase_categories
        )
        recs = self.write_lake(lists, "recommendations", RECOMMENDATION_SCHEMA)
        return {
            "gold/product_similarity": similarity.num_rows,
            "gold/frequently_bought_together": fbt.num_rows,
            "gold/recommendations": recs.num_rows,
            "pg/product_pairs": self.to_postgres(
                "product_pairs", fbt, FBT_SCHEMA.fieldNames(), ["antecedent", "consequent"]
            ),
            "pg/recommendations": self.to_postgres(
                "recommendations",
                recs,
                RECOMMENDATION_SCHEMA.fieldNames(),
                ["subject_type", "subject_id", "product_id"],
            ),
        }

    def minutes(self) -> dict[str, int]:
        """Recompute the minute metrics of the last ``gold.recompute_days`` days from silver (late events in)."""
        from pipelines.gold import live

        since = dt.datetime.combine(self.window_start(self.gold.recompute_days), dt.time(), dt.UTC)
        until = dt.datetime.combine(self.as_of + dt.timedelta(days=1), dt.time(), dt.UTC)
        return live.recompute_minutes(self.spark, self.settings, since, until)

    def summaries(self) -> dict[str, int]:
        """Daily rows of ``analytics_summaries`` for the recomputed days."""
        from pipelines.gold import summaries

        since = dt.datetime.combine(self.window_start(self.gold.recompute_days), dt.time(), dt.UTC)
        until = dt.datetime.combine(self.as_of + dt.timedelta(days=1), dt.time(), dt.UTC)
        return summaries.daily_summaries(self.spark, self.settings, since, until)

    def jobs(self) -> dict[str, Callable[[], dict[str, int]]]:
        return {name: getattr(self, name) for name in JOBS}


JOBS = ("dimensions", "rfm", "cohorts", "recommendations", "minutes", "summaries")


def _record_start(dsn: str, job: str, as_of: dt.date) -> int:
    from serving import db

    with db.connection(dsn) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO batch_runs (job, as_of) VALUES (%s, %s) RETURNING run_id", (job, as_of))
        return cur.fetchone()[0]


def _record_end(dsn: str, run_id: int, written: dict[str, int] | None, error: str | None = None) -> None:
    from serving import db

    with db.connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE batch_runs SET finished_at = now(), status = %s, rows_written = %s, error = %s WHERE run_id = %s",
            ("failed" if error else "succeeded", json.dumps(written or {}), error, run_id),
        )


def run(
    spark: SparkSession,
    settings: Settings,
    names: Sequence[str],
    as_of: dt.date | None = None,
    echo: Callable[[str], None] = print,
    seconds: dict[str, float] | None = None,
) -> dict[str, dict[str, int]]:
    """Run the named jobs in order with progress lines; returns rows written per job and table.

    ``seconds``, if given, receives each job's wall time.

    A failing job is recorded as failed in ``batch_runs`` and its exception
    raised: the jobs after it do not run (they read what it writes).
    """
    metrics.serve(settings, "batch").add("jobs", lambda: Check(True, f"gold batch jobs: {', '.join(names)}"))
    batch = GoldBatch(spark, settings, as_of)
    jobs = batch.jobs()
    unknown = [n for n in names if n not in jobs]
    if unknown:
        raise ValueError(f"unknown gold job(s) {', '.join(unknown)}; known: {', '.join(JOBS)}")
    results: dict[str, dict[str, int]] = {}
    started = time.monotonic()
    for i, name in enumerate(names, 1):
        echo(f"[{i}/{len(names)}] {name} (as of {batch.as_of}) ...")
        t0 = time.monotonic()
        run_id = _record_start(batch.dsn, name, batch.as_of)
        try:
            written = jobs[name]()
        except Exception as exc:
            _record_end(batch.dsn, run_id, None, f"{type(exc).__name__}: {exc}"[:2000])
            metrics.record_batch_job(name, time.monotonic() - t0, None)
            raise
        _record_end(batch.dsn, run_id, written)
        metrics.record_batch_job(name, time.monotonic() - t0, written)
        results[name] = written
        if seconds is not None:
            seconds[name] = time.monotonic() - t0
        echo(
            f"      {name} done in {time.monotonic() - t0:.1f}s: " + ", ".join(f"{k} {v:,}" for k, v in written.items())
        )
    echo(f"gold batch done in {time.monotonic() - started:.1f}s")
    return results


def summary_lines(results: dict[str, dict[str, int]]) -> list[str]:
    """Rows written per table, one line each, for the end of ``ecom batch daily``."""
    width = max((len(t) for r in results.values() for t in r), default=10)
    lines = [f"{'table':<{width}}  rows written"]
    for job, written in results.items():
        for table, rows in written.items():
            lines.append(f"{table:<{width}}  {rows:>12,}   ({job})")
    return lines
