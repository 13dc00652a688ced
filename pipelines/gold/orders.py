"""Gold inputs: silver orders in the reporting currency, and their item lines.

Input: ``silver/transactions`` (one row per valid order event) and
``gold/fx_rates``. Output: ``orders`` (one row per order, with ``revenue`` in
the reporting currency) and ``order_lines`` (one row per item line of an
order, with ``line_revenue``). Every batch job of the gold layer starts from
these two frames, so all of them count the same orders the same way.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.gold.fx import to_reporting, with_reporting_amount

ORDER_COLUMNS = (
    "event_id", "customer_id", "customer_email_hash", "event_time", "event_date", "currency", "amount", "revenue",
    "payment_method", "channel", "shipping_country", "fraud_score", "is_fraud", "items",
)  # fmt: skip
LINE_COLUMNS = (
    "event_id",
    "customer_id",
    "event_time",
    "product_id",
    "category",
    "quantity",
    "unit_price",
    "line_revenue",
)


def with_order_revenue(silver: DataFrame, fx: DataFrame) -> DataFrame:
    """Silver rows -> orders (``ORDER_COLUMNS``) with ``revenue`` = ``amount`` in the reporting currency."""
    return with_reporting_amount(silver, fx, "amount", "revenue").select(*ORDER_COLUMNS)


def order_lines(orders: DataFrame, fx: DataFrame) -> DataFrame:
    """Orders -> one row per item line (``LINE_COLUMNS``), ``line_revenue`` = quantity x unit price, converted.

    Lines without a product id are left out: silver's rules make every line
    carry one, so this only guards the joins downstream.
    """
    rates = fx.select("currency", F.col("units_per_reporting_unit").alias("_units"))
    exploded = orders.select("event_id", "customer_id", "event_time", "currency", F.explode("items").alias("line"))
    return (
        exploded.join(F.broadcast(rates), "currency", "left")
        .select(
            "event_id",
            "customer_id",
            "event_time",
            F.col("line.product_id").alias("product_id"),
            F.col("line.category").alias("category"),
            F.col("line.quantity").alias("quantity"),
            to_reporting(F.col("line.unit_price"), F.col("_units")).alias("unit_price"),
            to_reporting(
                F.col("line.quantity").cast("double") * F.col("line.unit_price").cast("double"), F.col("_units")
            ).alias("line_revenue"),
        )
        .where(F.col("product_id").isNotNull())
    )
