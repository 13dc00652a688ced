"""Gold dimension ``gold/fx_rates`` and conversion into the reporting currency.

Input: the reference rates of ``ecom.reference`` (one declaration, with its
source and date). Output: one row per currency, ``units_per_reporting_unit``
of it per unit of ``gold.reporting_currency``. Every gold job converts money
with ``with_reporting_amount`` over this table, so one rate table serves the
lake, PostgreSQL ``fx_rates`` and the dashboard.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ecom.reference import FX_AS_OF, FX_PER_USD, FX_SOURCE, units_per
from ecom.schemas import FX_RATE_SCHEMA


def fx_rate_rows(reporting_currency: str) -> list[tuple]:
    """Rows of ``FX_RATE_SCHEMA`` for every reference currency."""
    if reporting_currency not in FX_PER_USD:
        raise ValueError(
            f"reporting currency {reporting_currency!r} has no reference rate; known: {', '.join(FX_PER_USD)}"
        )
    return [(code, reporting_currency, units_per(code, reporting_currency), FX_SOURCE, FX_AS_OF) for code in FX_PER_USD]


def fx_rates_frame(spark: SparkSession, reporting_currency: str) -> DataFrame:
    """The ``gold/fx_rates`` rows as a DataFrame."""
    return spark.createDataFrame(fx_rate_rows(reporting_currency), FX_RATE_SCHEMA)


def to_reporting(amount: Column, units_per_reporting_unit: Column) -> Column:
    """An amount in its own currency -> the reporting currency (double)."""
    return amount.cast("double") / units_per_reporting_unit


def with_reporting_amount(
    orders: DataFrame, fx: DataFrame, source: str = "amount", target: str = "revenue"
) -> DataFrame:
    """Add ``target`` = ``source`` converted by the order's ``currency``; an unknown currency fails loudly.

    Silver only holds known currencies (a quality rule), so a missing rate
    means the reference and the rules disagree: that must stop the job, not
    silently drop revenue.
    """
    rates = fx.select("currency", F.col("units_per_reporting_unit").alias("_units"))
    joined = orders.join(F.broadcast(rates), "currency", "left")
    rate = F.when(F.col("_units").isNotNull(), F.col("_units")).otherwise(
        F.raise_error(F.concat(F.lit("no FX rate for currency "), F.coalesce(F.col("currency"), F.lit("NULL"))))
    )
    return joined.withColumn(target, to_reporting(F.col(source), rate)).drop("_units")
