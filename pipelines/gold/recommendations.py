"""Gold recommendations (batch): item-item similarity, frequently bought together, ranked lists.

Layer: gold, batch. Input: ``lines``, one row per order line in the
recommendation window (``gold.recommendation_window_days``): ``event_id`` (the
order), ``customer_id``, ``event_time``, ``product_id``, ``category``,
``quantity``, ``line_revenue``. Every order of the window is there, single-line
orders too. A line without a product id (null or empty) names nothing to count
or recommend, and a line without a customer id belongs to no customer:
``is_recommendable_line`` says which lines count, so the caller can count the
others. An order whose lines all lack a product still counts among all orders.

Outputs (schemas in ``ecom.schemas``):

- ``product_similarity`` -> ``gold/product_similarity``: one row per (product,
  similar product), the top N by cosine over the binary customer x product
  matrix.
- ``frequently_bought_together`` -> ``gold/frequently_bought_together``: one
  row per ordered pair (antecedent -> consequent) bought in the same order,
  with support, confidence and lift.
- ``customer_recommendations``, ``product_recommendations``,
  ``popular_by_category`` -> ``gold/recommendations``: one row per (subject,
  recommended product), ranked 1..N per subject, with the strategy that
  produced it.

How it stays fast: no Python UDF and no customer x product cross join.
Co-purchases come from each customer's (or order's) sorted set of products,
expanded to pairs by generators and counted once; the diagonal pair (a, a)
counts the baskets holding a, so sizes come from the same count, through
windows, without a second pass. Each collected set is read by exactly one
plan branch, because Spark never reuses a ``collect_list`` result (it is not
deterministic) and a second reader would compute it again.

Ranks are deterministic: every ordering ends on a product id, and summed
scores are rounded to ``SCORE_DECIMALS`` before ranking. docs/gold.md
("Recommendations") gives the formulas.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ecom.settings import GoldSettings

# subject_type values of gold/recommendations and PostgreSQL recommendations
CUSTOMER = "customer"
PRODUCT = "product"
CATEGORY = "category"
OVERALL = "all"  # subject_id of the overall list (subject_type 'category'): the last cold-start fallback

# strategy values
ITEM_SIMILARITY = "item_similarity"
POPULAR_IN_CATEGORY = "popular_in_category"
POPULAR = "popular"

SCORE_DECIMALS = 9


def _named(column: str) -> Column:
    return F.coalesce(F.col(column), F.lit("")) != ""


def is_recommendable_line() -> Column:
    """True for a line that names both its customer and its product."""
    return _named("customer_id") & _named("product_id")


# -- co-purchase counting -------------------------------------------------------------------------


def _pair_counts(baskets: DataFrame, with_total: bool = False) -> DataFrame:
    """Rows ``a, b, both`` for ``a <= b``: baskets (sorted distinct ``products``) holding both.

    ``(a, a)`` counts the baskets holding ``a``; with ``with_total`` one more
    row ``(null, null)`` counts all baskets, empty ones too.
    """
    n = F.size("products")
    element = baskets.schema["products"].dataType.elementType
    items = F.concat(F.array(F.lit(None).cast(element)), "products") if with_total else F.col("products")
    firsts = baskets.select("products", F.posexplode(items).alias("i", "a"))
    # products is 1-based for slice: element i + 1 is a itself (the diagonal), the rest come after it.
    start = F.col("i") if with_total else F.col("i") + 1
    seconds = F.slice("products", start, n - start + 1)
    if with_total:
        seconds = F.when(F.col("a").isNull(), F.array(F.lit(None).cast(element))).otherwise(seconds)
    return firsts.select("a", F.explode(seconds).alias("b")).groupBy("a", "b").agg(F.count(F.lit(1)).alias("both"))


def _with_sizes(counts: DataFrame) -> DataFrame:
    """Pair counts (``a < b``) with ``size_a`` and ``size_b``, the diagonal counts, read through windows."""
    diagonal = F.max(F.when(F.col("a") == F.col("b"), F.col("both")))
    return (
        counts.withColumn("size_a", diagonal.over(Window.partitionBy("a")))
        .withColumn("size_b", diagonal.over(Window.partitionBy("b")))
        .where(F.col("a") < F.col("b"))
    )


def _both_ways(pairs: DataFrame, first: str, second: str, *columns: str) -> DataFrame:
    """Each unordered pair ``(a, b)`` as two rows, ``first -> second`` both ways, with ``columns``."""
    forward = F.struct(F.col("a").alias(first), F.col("b").alias(second))
    backward = F.struct(F.col("b").alias(first), F.col("a").alias(second))
    return pairs.select(F.explode(F.array(forward, backward)).alias("_pair"), *columns).select("_pair.*", *columns)


# -- item-item similarity -------------------------------------------------------------------------


def _recent_first(purchases: Column, field: str) -> Column:
    """Distinct ``field`` values of an array of ``(event_time, field)`` structs, the last bought first."""
    return F.array_distinct(F.sort_array(purchases, asc=False)[field])


def product_index(lines: DataFrame) -> DataFrame:
    """One row per product on a recommendable line: ``product_id`` and ``idx``, 0, 1, ... in id order.

    Pairs are counted on these small integers: hashing, shuffling and
    sorting them costs a fraction of the same work on strings.
    """
    order = Window.partitionBy(F.lit(0)).orderBy("product_id")  # a few thousand rows: one partition is fine
    return (
        lines.where(is_recommendable_line())
        .select("product_id")
        .distinct()
        .select("product_id", (F.row_number().over(order) - 1).cast("int").alias("idx"))
    )


def product_similarity(lines: DataFrame, top_n: int, max_products_per_customer: int | None = None) -> DataFrame:
    """Top ``top_n`` similar products per product: ``|Ca ∩ Cb| / sqrt(|Ca| |Cb|)`` over customers who bought them.

    Ties go to more common customers, then the smaller product id. With
    ``max_products_per_customer``, a customer counts for their most recently
    bought products only, that many (both in the sizes and in the pairs): the
    pairs grow with the square of a customer's distinct products, and a few
    heavy buyers would otherwise make most of the work, and of the
    similarity, on their own.
    """
    index = F.broadcast(product_index(lines))
    recent = _recent_first(F.col("_bought"), "idx")
    kept = recent if max_products_per_customer is None else F.slice(recent, 1, max_products_per_customer)
    baskets = (
        lines.where(is_recommendable_line())
        .join(index, "product_id")
        .groupBy("customer_id")
        .agg(F.collect_list(F.struct("event_time", "idx")).alias("_bought"))
        .select(F.sort_array(kept).alias("products"))
    )
    pairs = _with_sizes(_pair_counts(baskets)).withColumn(
        "similarity", F.col("both") / F.sqrt(F.col("size_a") * F.col("size_b"))
    )
    order = Window.partitionBy("x").orderBy(F.col("similarity").desc(), F.col("both").desc(), F.col("y"))
    top = (
        _both_ways(pairs, "x", "y", "both", "similarity")
        .withColumn("rank", F.row_number().over(order))
        .where(F.col("rank") <= top_n)
    )
    return (
        top.join(index.toDF("product_id", "x"), "x")
        .join(index.toDF("similar_product_id", "y"), "y")
        .select(
            "product_id",
            "similar_product_id",
            F.col("both").cast("long").alias("common_customers"),
            "similarity",
            F.col("rank").cast("int"),
        )
    )


# -- frequently bought together -------------------------------------------------------------------


def frequently_bought_together(lines: DataFrame, min_support_count: int, min_confidence: float) -> DataFrame:
    """Ordered pairs bought in the same order, with support, confidence and lift; both directions are rows.

    An order counts a pair once, however many lines repeat a product. Kept:
    ``orders_with_both >= min_support_count`` and ``confidence >= min_confidence``.
    """
    orders = (
        lines.where(F.col("event_id").isNotNull())
        .groupBy("event_id")
        .agg(F.collect_set(F.when(_named("product_id"), F.col("product_id"))).alias("products"))
        .select(F.sort_array("products").alias("products"))
    )
    diagonal = F.max(F.when(F.col("a") == F.col("b"), F.col("both")))
    counts = (
        _pair_counts(orders, with_total=True)
        .where(F.col("a").isNull() | (F.col("a") == F.col("b")) | (F.col("both") >= min_support_count))
        # One partition for a small frame: the pairs left, the products and the total.
        .withColumn("all_orders", F.max(F.when(F.col("a").isNull(), F.col("both"))).over(Window.partitionBy(F.lit(0))))
        .withColumn("size_a", diagonal.over(Window.partitionBy("a")))
        .withColumn("size_b", diagonal.over(Window.partitionBy("b")))
        .where(F.col("a") < F.col("b"))
    )
    both_ways = _both_ways(counts, "antecedent", "consequent", "both", "all_orders", "size_a", "size_b")
    with_antecedent = F.when(F.col("antecedent") < F.col("consequent"), F.col("size_a")).otherwise(F.col("size_b"))
    with_consequent = F.when(F.col("antecedent") < F.col("consequent"), F.col("size_b")).otherwise(F.col("size_a"))
    confidence = F.col("both") / with_antecedent
    return both_ways.where(confidence >= min_confidence).select(
        "antecedent",
        "consequent",
        F.col("both").cast("long").alias("orders_with_both"),
        (F.col("both") / F.col("all_orders")).alias("support"),
        confidence.alias("confidence"),
        (confidence / (with_consequent / F.col("all_orders"))).alias("lift"),
    )


# -- ranked lists ---------------------------------------------------------------------------------


def product_purchases(lines: DataFrame) -> DataFrame:
    """One row per product: ``category`` (the smallest one named on its lines) and ``purchases`` (its lines)."""
    return (
        lines.where(is_recommendable_line())
        .groupBy("product_id")
        .agg(F.min("category").alias("category"), F.count(F.lit(1)).alias("purchases"))
    )


def _by_popularity() -> list[Column]:
    return [F.col("purchases").desc(), F.col("product_id")]


def _recommendation_rows(subject_type: str, subject_id: Column, strategy: Column | str) -> list[Column]:
    """The ``RECOMMENDATION_SCHEMA`` columns over rows with ``product_id``, ``rank``, ``score``."""
    return [
        F.lit(subject_type).alias("subject_type"),
        subject_id.cast("string").alias("subject_id"),
        F.col("product_id"),
        F.col("rank").cast("int").alias("rank"),
        F.col("score").cast("double").alias("score"),
        (F.lit(strategy) if isinstance(strategy, str) else strategy).alias("strategy"),
    ]


def popular_by_category(lines: DataFrame, top_n: int) -> DataFrame:
    """Cold-start lists: the ``top_n`` most purchased products per category, and overall (subject ``all``)."""
    purchases = product_purchases(lines).withColumn("score", F.col("purchases"))
    per_category = (
        purchases.where(F.col("category").isNotNull())
        .withColumn("rank", F.row_number().over(Window.partitionBy("category").orderBy(*_by_popularity())))
        .where(F.col("rank") <= top_n)
    )
    overall = purchases.withColumn(
        "rank", F.row_number().over(Window.partitionBy(F.lit(OVERALL)).orderBy(*_by_popularity()))
    ).where(F.col("rank") <= top_n)
    return per_category.select(*_recommendation_rows(CATEGORY, F.col("category"), POPULAR_IN_CATEGORY)).unionByName(
        overall.select(*_recommendation_rows(CATEGORY, F.lit(OVERALL), POPULAR))
    )


def _is_repeat(category: Column, repeat_categories: list[str]) -> Column:
    if not repeat_categories:
        return F.lit(False)
    return F.coalesce(category.isin(list(repeat_categories)), F.lit(False))


def customer_recommendations(
    lines: DataFrame,
    similarity: DataFrame,
    top_n: int,
    repeat_categories: list[str],
    seed_products: int | None = None,
) -> DataFrame:
    """Top ``top_n`` products per customer: similar to what they bought, then popular in their top category.

    Candidates are the first ``top_n`` similar products (``similarity`` rank)
    of each product the customer bought (with ``seed_products``: of their
    most recently bought products, that many); a candidate's score is the sum
    of its similarity to those products. Products already bought are left
    out unless their category is in ``repeat_categories``. When fewer than
    ``top_n`` remain, the most purchased products of the customer's top
    category (most lines, ties to the first name) follow, under the same
    exclusion, with their purchases as score.
    """
    bought = lines.where(is_recommendable_line())
    products = product_purchases(lines)
    recent = _recent_first(F.col("_bought"), "product_id")
    histories = (
        bought.groupBy("customer_id")
        .agg(
            F.collect_list(F.struct("event_time", "product_id")).alias("_bought"),
            F.mode("category", deterministic=True).alias("top_category"),
        )
        .select(
            "customer_id",
            "top_category",
            F.sort_array(F.array_distinct(F.col("_bought")["product_id"])).alias("products"),
            (recent if seed_products is None else F.slice(recent, 1, seed_products)).alias("seeds"),
        )
    )
    # Each row carries what a candidate row holds: product, summed similarity, bought?, rank in the category.
    candidate = "struct<product_id: string, score: double, is_bought: boolean, category_rank: int>"
    neighbours = (
        similarity.where(F.col("rank") <= top_n)
        .groupBy("product_id")
        .agg(
            F.collect_list(
                F.struct(
                    F.col("similar_product_id").alias("product_id"),
                    F.col("similarity").alias("score"),
                    F.lit(False).alias("is_bought"),
                    F.lit(None).cast("int").alias("category_rank"),
                )
            ).alias("neighbours")
        )
        .withColumnRenamed("product_id", "seed")
    )
    popular = (
        products.where(F.col("category").isNotNull())
        .groupBy("category")
        .agg(F.sort_array(F.collect_list(F.struct(-F.col("purchases"), F.col("product_id")))).alias("_ranked"))
        .select(F.col("category").alias("top_category"), F.col("_ranked")["product_id"].alias("popular"))
    )
    # Enough of the category to fill top_n after leaving out what was bought (at most all of it) and listed.
    fill = F.slice(F.coalesce("popular", F.array().cast("array<string>")), 1, F.lit(top_n) + F.size("products"))
    items = histories.join(F.broadcast(popular), "top_category", "left").select(
        "customer_id",
        "seeds",
        F.size("products").alias("n_bought"),
        F.posexplode(F.concat("products", fill)).alias("pos", "item"),
    )
    is_bought = F.col("pos") < F.col("n_bought")
    own = F.struct(
        F.col("item").alias("product_id"),
        F.lit(None).cast("double").alias("score"),
        is_bought.alias("is_bought"),
        F.when(~is_bought, F.col("pos") - F.col("n_bought") + 1).cast("int").alias("category_rank"),
    ).cast(candidate)
    candidates = (
        items.withColumn("seed", F.when(is_bought & F.array_contains("seeds", F.col("item")), F.col("item")))
        .join(F.broadcast(neighbours), "seed", "left")
        .select(
            "customer_id",
            F.explode(
                F.concat(
                    F.array(own),
                    F.coalesce(F.col("neighbours").cast(f"array<{candidate}>"), F.array().cast(f"array<{candidate}>")),
                )
            ).alias("c"),
        )
        .groupBy("customer_id", F.col("c.product_id").alias("product_id"))
        .agg(
            F.round(F.sum("c.score"), SCORE_DECIMALS).alias("similarity"),
            F.max("c.is_bought").alias("is_bought"),
            F.min("c.category_rank").alias("category_rank"),
        )
        .join(F.broadcast(products), "product_id", "left")
        .where(F.col("similarity").isNotNull() | F.col("category_rank").isNotNull())
        .where(~F.col("is_bought") | _is_repeat(F.col("category"), repeat_categories))
    )
    order = Window.partitionBy("customer_id").orderBy(
        F.col("similarity").desc_nulls_last(),
        F.when(F.col("similarity").isNull(), F.col("category_rank")),
        F.col("product_id"),
    )
    ranked = (
        candidates.withColumn("rank", F.row_number().over(order))
        .where(F.col("rank") <= top_n)
        .withColumn("score", F.coalesce("similarity", F.col("purchases").cast("double")))
    )
    strategy = F.when(F.col("similarity").isNotNull(), F.lit(ITEM_SIMILARITY)).otherwise(F.lit(POPULAR_IN_CATEGORY))
    return ranked.select(*_recommendation_rows(CUSTOMER, F.col("customer_id"), strategy))


def product_recommendations(similarity: DataFrame, top_n: int | None = None) -> DataFrame:
    """Recommendations for a product page: its similar products (the first ``top_n`` when given)."""
    rows = similarity if top_n is None else similarity.where(F.col("rank") <= top_n)
    return rows.select(
        F.col("product_id").alias("subject_id"),
        F.col("similar_product_id").alias("product_id"),
        "rank",
        F.col("similarity").alias("score"),
    ).select(*_recommendation_rows(PRODUCT, F.col("subject_id"), ITEM_SIMILARITY))


def recommendation_tables(lines: DataFrame, gold: GoldSettings) -> dict[str, DataFrame]:
    """The three gold tables by name: ``product_similarity``, ``frequently_bought_together``, ``recommendations``.

    ``recommendations`` reads ``product_similarity``: persist that frame (or
    read it back from gold) before writing both, or it is computed again.
    """
    n = gold.recommendations_top_n
    similarity = product_similarity(lines, gold.similar_top_n)
    recommendations = (
        customer_recommendations(lines, similarity, n, gold.repeat_purchase_categories)
        .unionByName(product_recommendations(similarity, n))
        .unionByName(popular_by_category(lines, n))
    )
    return {
        "product_similarity": similarity,
        "frequently_bought_together": frequently_bought_together(
            lines, gold.fbt_min_support_count, gold.fbt_min_confidence
        ),
        "recommendations": recommendations,
    }
