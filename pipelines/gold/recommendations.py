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

# Tasks for the large aggregations (product pairs, customer candidates). Many small tasks keep each
# hash map small enough for the CPU caches: at a million orders, 16 tasks took half the CPU time of 2.
AGGREGATION_PARTITIONS = 16


def _named(column: str) -> Column:
    return F.col(column).isNotNull() & (F.col(column) != "")


def is_recommendable_line() -> Column:
    """True for a line that names both its customer and its product."""
    return _named("customer_id") & _named("product_id")


# -- co-purchase counting -------------------------------------------------------------------------


def _pair_counts(baskets: DataFrame, with_total: bool = False, spread: bool = False) -> DataFrame:
    """Rows ``a, b, both`` for ``a <= b``: baskets (sorted distinct ``products``) holding both.

    ``(a, a)`` counts the baskets holding ``a``; with ``with_total`` one more
    row ``(null, null)`` counts all baskets, empty ones too. ``spread`` sends
    each ``a`` with its partners to one of ``AGGREGATION_PARTITIONS`` tasks
    before expanding, so each task counts the pairs of a few products in a
    small hash map: worth its shuffle when pairs are many per basket.
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
    tails = firsts.select("a", seconds.alias("seconds"))
    if spread:
        tails = tails.repartition(AGGREGATION_PARTITIONS, "a")
    return tails.select("a", F.explode("seconds").alias("b")).groupBy("a", "b").agg(F.count(F.lit(1)).alias("both"))


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


def product_catalogue(lines: DataFrame) -> DataFrame:
    """One row per product on a recommendable line: ``idx``, ``category`` and ``purchases``.

    ``idx`` numbers the products 0, 1, ... in id order: pairs and candidates
    are counted on these small integers, which hash, shuffle and sort in a
    fraction of the time strings take. ``category`` is the smallest one
    named on the product's lines; ``purchases`` is the number of its lines.
    """
    order = Window.partitionBy(F.lit(0)).orderBy("product_id")  # a few thousand rows: one partition is fine
    return (
        lines.where(is_recommendable_line())
        .groupBy("product_id")
        .agg(F.min("category").alias("category"), F.count(F.lit(1)).alias("purchases"))
        .withColumn("idx", (F.row_number().over(order) - 1).cast("int"))
    )


def _catalogue_once(lines: DataFrame) -> DataFrame:
    """``product_catalogue``, computed now and kept: several joins read it, and Spark would compute it for each."""
    return product_catalogue(lines).localCheckpoint()


def _with_indices(df: DataFrame, catalogue: DataFrame, **columns: str) -> DataFrame:
    """``df`` with each ``idx`` column named by a key of ``columns`` in place of the product id column named by its value."""
    for idx, name in columns.items():
        ids = F.broadcast(catalogue.select(F.col("product_id").alias(name), F.col("idx").alias(idx)))
        df = df.join(ids, name).drop(name)
    return df


def _with_product_ids(df: DataFrame, catalogue: DataFrame, **columns: str) -> DataFrame:
    """``df`` with each product id column named by a key of ``columns`` from the ``idx`` column named by its value."""
    for name, idx in columns.items():
        ids = F.broadcast(catalogue.select(F.col("idx").alias(idx), F.col("product_id").alias(name)))
        df = df.join(ids, idx)
    return df


def product_similarity(lines: DataFrame, top_n: int, max_products_per_customer: int | None = None) -> DataFrame:
    """Top ``top_n`` similar products per product: ``|Ca ∩ Cb| / sqrt(|Ca| |Cb|)`` over customers who bought them.

    Ties go to more common customers, then the smaller product id. With
    ``max_products_per_customer``, a customer counts for their most recently
    bought products only, that many (both in the sizes and in the pairs): the
    pairs grow with the square of a customer's distinct products, and a few
    heavy buyers would otherwise make most of the work, and of the
    similarity, on their own.
    """
    catalogue = _catalogue_once(lines)
    recent = _recent_first(F.col("_bought"), "idx")
    kept = recent if max_products_per_customer is None else F.slice(recent, 1, max_products_per_customer)
    baskets = (
        lines.where(is_recommendable_line())
        .join(F.broadcast(catalogue.select("product_id", "idx")), "product_id")
        .groupBy("customer_id")
        .agg(F.collect_list(F.struct("event_time", "idx")).alias("_bought"))
        .select(F.sort_array(kept).alias("products"))
    )
    pairs = _with_sizes(_pair_counts(baskets, spread=True)).withColumn(
        "similarity", F.col("both") / F.sqrt(F.col("size_a") * F.col("size_b"))
    )
    order = Window.partitionBy("x").orderBy(F.col("similarity").desc(), F.col("both").desc(), F.col("y"))
    top = (
        _both_ways(pairs, "x", "y", "both", "similarity")
        .withColumn("rank", F.row_number().over(order))
        .where(F.col("rank") <= top_n)
    )
    return _with_product_ids(top, catalogue, product_id="x", similar_product_id="y").select(
        "product_id",
        "similar_product_id",
        F.col("both").cast("long").alias("common_customers"),
        "similarity",
        F.col("rank").cast("int"),
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
    purchases = product_catalogue(lines).withColumn("score", F.col("purchases"))
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
    out unless the customer's lines name them in one of ``repeat_categories``.
    When fewer than ``top_n`` remain, the most purchased products of the
    customer's top category (most lines, ties to the first name) follow,
    under the same exclusion, with their purchases as score.
    """
    catalogue = _catalogue_once(lines)
    ids = F.broadcast(catalogue.select("product_id", "idx"))
    recent = _recent_first(F.col("_bought"), "idx")
    is_repeat = F.col("category").isin(list(repeat_categories)) if repeat_categories else F.lit(False)
    histories = (
        lines.where(is_recommendable_line())
        .join(ids, "product_id")
        .repartition(AGGREGATION_PARTITIONS, "customer_id")
        .groupBy("customer_id")
        .agg(
            F.collect_list(F.struct("event_time", "idx")).alias("_bought"),
            F.collect_set(F.when(is_repeat, F.col("idx"))).alias("repeats"),
            F.mode("category", deterministic=True).alias("top_category"),
        )
        .select(
            "customer_id",
            "top_category",
            "repeats",
            F.sort_array(F.array_distinct(F.col("_bought")["idx"])).alias("products"),
            (recent if seed_products is None else F.slice(recent, 1, seed_products)).alias("seeds"),
        )
    )
    # One candidate: product, similarity, left out (bought, not a repeat purchase), rank in the customer's
    # top category and purchases (for the fill).
    candidate = "struct<idx: int, similarity: double, is_left_out: boolean, category_rank: int, purchases: long>"
    neighbours = (
        _with_indices(similarity.where(F.col("rank") <= top_n), catalogue, seed="product_id", idx="similar_product_id")
        .groupBy("seed")
        .agg(
            F.collect_list(
                F.struct("idx", "similarity", F.lit(False), F.lit(None).cast("int"), F.lit(None).cast("long")).cast(
                    candidate
                )
            ).alias("neighbours")
        )
    )
    popular = (
        catalogue.where(F.col("category").isNotNull())
        .groupBy(F.col("category").alias("top_category"))
        .agg(F.sort_array(F.collect_list(F.struct(-F.col("purchases"), "idx", "purchases"))).alias("_p"))
        .select("top_category", F.col("_p")["idx"].alias("popular"), F.col("_p")["purchases"].alias("counts"))
    )
    # Enough of the category to fill top_n after leaving out what was bought (at most all of it) and listed.
    reach = F.lit(top_n) + F.size("products")
    items = histories.join(F.broadcast(popular), "top_category", "left").select(
        "customer_id",
        "seeds",
        "repeats",
        "counts",
        F.size("products").alias("n_bought"),
        F.posexplode(
            F.concat("products", F.slice(F.coalesce("popular", F.array().cast("array<int>")), 1, reach))
        ).alias("pos", "item"),
    )
    is_bought = F.col("pos") < F.col("n_bought")
    category_rank = F.when(~is_bought, F.col("pos") - F.col("n_bought") + 1)
    own = F.struct(
        "item",
        F.lit(None).cast("double"),
        is_bought & ~F.array_contains("repeats", F.col("item")),
        category_rank,
        F.element_at("counts", category_rank),
    ).cast(candidate)
    no_neighbours = F.array().cast(f"array<{candidate}>")
    candidates = (
        items.withColumn("seed", F.when(is_bought & F.array_contains("seeds", F.col("item")), F.col("item")))
        .join(F.broadcast(neighbours), "seed", "left")
        .select("customer_id", F.explode(F.concat(F.array(own), F.coalesce("neighbours", no_neighbours))).alias("c"))
        .groupBy("customer_id", F.col("c.idx").alias("idx"))
        .agg(
            F.round(F.sum("c.similarity"), SCORE_DECIMALS).alias("similarity"),
            F.max("c.is_left_out").alias("is_left_out"),
            F.min("c.category_rank").alias("category_rank"),
            F.max("c.purchases").alias("purchases"),
        )
        .where(~F.col("is_left_out") & (F.col("similarity").isNotNull() | F.col("category_rank").isNotNull()))
    )
    order = Window.partitionBy("customer_id").orderBy(
        F.col("similarity").desc_nulls_last(),
        F.when(F.col("similarity").isNull(), F.col("category_rank")),
        F.col("idx"),
    )
    ranked = (
        candidates.withColumn("rank", F.row_number().over(order))
        .where(F.col("rank") <= top_n)
        .withColumn("score", F.coalesce("similarity", F.col("purchases").cast("double")))
    )
    strategy = F.when(F.col("similarity").isNotNull(), F.lit(ITEM_SIMILARITY)).otherwise(F.lit(POPULAR_IN_CATEGORY))
    return _with_product_ids(ranked, catalogue, product_id="idx").select(
        *_recommendation_rows(CUSTOMER, F.col("customer_id"), strategy)
    )


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
