"""Gold recommendations (batch): item-item similarity, frequently bought together, ranked lists.

Layer: gold, batch. Input: the order lines of the recommendation window
(``gold.recommendation_window_days``) as an Arrow table with ``LINE_COLUMNS``:
``event_id`` (the order), ``customer_id``, ``event_time``, ``product_id``,
``category``. Every order of the window is there, single-line orders too. A
line without a product id (null or empty) names nothing to count or
recommend, and a line without a customer id belongs to no customer:
``recommendable`` says which lines count. An order whose lines all lack a
product still counts among all orders.

Outputs (Arrow tables with the schemas of ``ecom.schemas``):

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

How it stays fast: the lines come to the driver once (Spark reads and
explodes silver, ``toArrow`` hands them over) and ``Purchases`` numbers the
products (in id order), customers and orders. The counting is then sparse
matrix algebra on those integers (scipy): with ``B`` the binary customer x
product matrix, ``B^T B`` holds the customers in common of every pair of
products and, on its diagonal, the customers of each product; with ``O`` the
binary order x product matrix, ``O^T O`` holds the orders with both. A
customer's candidate scores are one row of ``S N``: ``S`` marks the
customer's seed products, ``N`` holds each product's top N similarities.
Counts are exact integers and every ratio is the same double division the
formulas name, so the figures do not depend on how the work is split.

Ranks are deterministic: every ordering ends on a product id, and summed
scores are rounded to ``SCORE_DECIMALS`` (half up, as Spark's ``round``)
before ranking. docs/gold.md ("Recommendations") gives the formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse

from ecom.schemas import FBT_SCHEMA, RECOMMENDATION_SCHEMA, SIMILARITY_SCHEMA, arrow_schema

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

# What the recommendations read of an order line.
LINE_COLUMNS = ("event_id", "customer_id", "event_time", "product_id", "category")

_NO_TIME = -(2**63) + 1  # a line without a time sorts as the oldest (and can be negated)


def _flat(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _named(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """True where a string is neither null nor empty."""
    values = _flat(values)
    return pc.fill_null(pc.and_kleene(pc.is_valid(values), pc.not_equal(values, "")), False)


def recommendable(lines: pa.Table) -> pa.Array:
    """True for a line that names both its customer and its product."""
    return pc.and_(_named(lines["customer_id"]), _named(lines["product_id"]))


def _sorted_unique(values: pa.Array) -> pa.Array:
    """The distinct non-null values in ascending (byte) order, as Spark orders strings."""
    distinct = pc.drop_null(pc.unique(values))
    return distinct.take(pc.array_sort_indices(distinct))


def _codes(values: pa.Array, dictionary: pa.Array) -> np.ndarray:
    """Each value's position in ``dictionary`` (int64), -1 where it is null or not there."""
    return pc.fill_null(pc.index_in(values, value_set=dictionary), -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _distinct(keys: np.ndarray) -> np.ndarray:
    """The distinct values, ascending (a sort: many times faster than ``np.unique`` on integers here)."""
    ordered = np.sort(keys)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


def _distinct_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values, ascending, and how often each occurs."""
    ordered = np.sort(keys)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else np.zeros(0, np.int64)
    return ordered[starts], np.diff(np.r_[starts, len(ordered)])


def _ranks_within(groups: np.ndarray) -> np.ndarray:
    """1, 2, ... within each run of equal values of ``groups`` (sorted by group)."""
    if not len(groups):
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    return np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)])) + 1


def _binary(rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int]) -> sparse.csr_matrix:
    """A 0/1 matrix (int64) with a one at each (row, column) given, however often it is given."""
    matrix = sparse.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, columns)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1
    return matrix


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Whether each of ``keys`` is in ``sorted_keys`` (ascending, distinct)."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def round_half_up(values: np.ndarray, decimals: int) -> np.ndarray:
    """Spark's ``round`` of doubles: each value's shortest decimal form rounded half up (away from zero).

    ``floor(|x| * 10^d + 0.5)`` gives the same digits except where ``x * 10^d``
    lies within a few units in the last place of a half: those few values
    are rounded from their decimal form, exactly as Spark does.
    """
    scale = 10.0**decimals
    scaled = np.abs(values) * scale
    whole = np.floor(scaled + 0.5)
    near_half = np.abs(scaled - np.floor(scaled) - 0.5) <= 8 * np.spacing(scaled)
    for i in np.flatnonzero(near_half):
        whole[i] = abs(Decimal(repr(float(values[i]))).scaleb(decimals).quantize(Decimal(1), ROUND_HALF_UP))
    return np.copysign(whole / scale, values)


@dataclass(frozen=True)
class Purchases:
    """The lines of the window as integers: products numbered in id order, customers and orders as met.

    ``product_ids`` holds every product named on a line (index = product
    number); ``purchases`` counts each product's recommendable lines (0: not
    in the catalogue of recommendable products), ``category`` is the smallest
    category named on them (-1 for none; ``categories`` holds the names in
    order). The ``line_*`` arrays have one entry per recommendable line. For
    frequently bought together, ``basket_order`` and ``basket_product`` pair
    each order with each product named on its lines, and ``orders`` counts
    all orders, those without a named product too.
    """

    product_ids: pa.Array
    purchases: np.ndarray
    category: np.ndarray
    categories: pa.Array
    customer_ids: pa.Array
    line_customer: np.ndarray
    line_product: np.ndarray
    line_time: np.ndarray  # epoch microseconds
    line_category: np.ndarray  # position in categories, -1 for none
    basket_order: np.ndarray
    basket_product: np.ndarray
    orders: int

    @classmethod
    def from_lines(cls, lines: pa.Table) -> Purchases:
        """Number the lines (``LINE_COLUMNS``) of the window."""
        lines = lines.select(list(LINE_COLUMNS)).combine_chunks()
        has_product = _named(lines["product_id"])
        product_ids = _sorted_unique(_flat(lines["product_id"]).filter(has_product))

        in_order = lines.filter(pc.is_valid(lines["event_id"]))
        order_codes = pc.dictionary_encode(_flat(in_order["event_id"]))
        named = _named(in_order["product_id"])
        basket_order = order_codes.indices.filter(named).to_numpy(zero_copy_only=False).astype(np.int64)
        basket_product = _codes(_flat(in_order["product_id"]).filter(named), product_ids)

        kept = lines.filter(recommendable(lines))
        customers = pc.dictionary_encode(_flat(kept["customer_id"]))
        line_product = _codes(_flat(kept["product_id"]), product_ids)
        categories = _sorted_unique(_flat(kept["category"]))
        line_category = _codes(_flat(kept["category"]), categories)
        times = pc.cast(_flat(kept["event_time"]), pa.timestamp("us", "UTC")).cast(pa.int64())
        n = len(product_ids)
        category = np.full(n, len(categories), dtype=np.int64)
        named_category = line_category >= 0
        np.minimum.at(category, line_product[named_category], line_category[named_category])
        category[category == len(categories)] = -1
        return cls(
            product_ids=product_ids,
            purchases=np.bincount(line_product, minlength=n).astype(np.int64),
            category=category,
            categories=categories,
            customer_ids=customers.dictionary,
            line_customer=customers.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            line_product=line_product,
            line_time=pc.fill_null(times, _NO_TIME).to_numpy(zero_copy_only=False),
            line_category=line_category,
            basket_order=basket_order,
            basket_product=basket_product,
            orders=len(order_codes.dictionary),
        )

    @property
    def shape(self) -> tuple[int, int]:
        """Customers x products."""
        return len(self.customer_ids), len(self.product_ids)

    def bought(self, most_recent: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distinct (customer, product) pairs bought; with ``most_recent``, the customer's last that many products.

        A product's recency is its latest line; ties go to the larger product id.
        """
        n_products = self.shape[1]
        if most_recent is None:
            keys = _distinct(self.line_customer * n_products + self.line_product)
            return keys // n_products, keys % n_products
        order = np.lexsort((-self.line_product, -self.line_time, self.line_customer))
        keys = (self.line_customer * n_products + self.line_product)[order]
        by_key = np.argsort(keys, kind="stable")
        ordered = keys[by_key]
        first = np.sort(by_key[np.r_[True, ordered[1:] != ordered[:-1]]])  # each pair at its latest line, recent first
        customer, product = keys[first] // n_products, keys[first] % n_products
        kept = _ranks_within(customer) <= most_recent
        return customer[kept], product[kept]

    def top_category(self) -> np.ndarray:
        """Each customer's top category (most lines; ties: the first name), -1 where no line names one."""
        n_categories = len(self.categories)
        named = self.line_category >= 0
        keys, counts = _distinct_counts(self.line_customer[named] * n_categories + self.line_category[named])
        customer, category = keys // n_categories, keys % n_categories
        order = np.lexsort((category, -counts, customer))
        first = order[_ranks_within(customer[order]) == 1]
        top = np.full(self.shape[0], -1, dtype=np.int64)
        top[customer[first]] = category[first]
        return top

    def popular(self) -> tuple[np.ndarray, np.ndarray]:
        """The catalogue by category, most purchased first (ties: product id): products, and where each category
        starts in them (``starts[c]:starts[c + 1]``)."""
        listed = np.flatnonzero((self.purchases > 0) & (self.category >= 0))
        ordered = listed[np.lexsort((listed, -self.purchases[listed], self.category[listed]))]
        starts = np.searchsorted(self.category[ordered], np.arange(len(self.categories) + 1))
        return ordered, starts


# -- item-item similarity -------------------------------------------------------------------------


def _codes_in_order(values: np.ndarray, bits: int = 31) -> np.ndarray:
    """Integers in [0, 2^bits) that never decrease as ``values`` grow (equal values, equal codes)."""
    if not len(values):
        return np.zeros(0, dtype=np.int64)
    low, high = values.min(), values.max()
    top = 2**bits - 1
    if high == low:
        return np.zeros(len(values), dtype=np.int64)
    return np.clip(np.floor((values - low) * (top / (high - low))), 0, top).astype(np.int64)


def _top_per_row(rows: np.ndarray, score: np.ndarray, *ties: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the first ``top_n`` entries of each row by ``score`` (highest first), then by ``ties``
    (ascending, the first first), and their ranks: ``(positions, ranks)`` in row and rank order.

    One sort of integer keys (row, then ``score`` in coarse codes) finds each
    row's ``top_n``-th code; only the entries at or above it (the top ones and
    the few that tie with them in code) are then sorted exactly.
    """
    codes = _codes_in_order(score)
    order = np.argsort((rows << 31) | (2**31 - 1 - codes))
    nth = order[_ranks_within(rows[order]) == top_n]
    floor = np.full(int(rows.max()) + 1 if len(rows) else 0, -1, dtype=np.int64)
    floor[rows[nth]] = codes[nth]
    near = np.flatnonzero(codes >= floor[rows])
    exact = near[np.lexsort((*(key[near] for key in reversed(ties)), -score[near], rows[near]))]
    ranks = _ranks_within(rows[exact])
    kept = ranks <= top_n
    return exact[kept], ranks[kept]


def product_similarity(purchases: Purchases, top_n: int, max_products_per_customer: int | None = None) -> pa.Table:
    """Top ``top_n`` similar products per product: ``|Ca ∩ Cb| / sqrt(|Ca| |Cb|)`` over customers who bought them.

    Ties go to more common customers, then the smaller product id. With
    ``max_products_per_customer``, a customer counts for their most recently
    bought products only, that many (both in the sizes and in the pairs): the
    pairs grow with the square of a customer's distinct products, and a few
    heavy buyers would otherwise make most of the work, and of the
    similarity, on their own.
    """
    customer, product = purchases.bought(max_products_per_customer)
    bought = _binary(customer, product, purchases.shape)
    common = (bought.T.tocsr() @ bought).tocoo()
    sizes = common.diagonal()
    pair = common.row != common.col
    x, y, both = common.row[pair].astype(np.int64), common.col[pair].astype(np.int64), common.data[pair]
    similarity = both.astype(np.float64) / np.sqrt((sizes[x] * sizes[y]).astype(np.float64))
    top, rank = _top_per_row(x, similarity, -both, y, top_n=top_n)
    ids = purchases.product_ids
    return pa.table(
        [ids.take(x[top]), ids.take(y[top]), both[top], similarity[top], rank.astype(np.int32)],
        schema=arrow_schema(SIMILARITY_SCHEMA),
    )


# -- frequently bought together -------------------------------------------------------------------


def frequently_bought_together(purchases: Purchases, min_support_count: int, min_confidence: float) -> pa.Table:
    """Ordered pairs bought in the same order, with support, confidence and lift; both directions are rows.

    An order counts a pair once, however many lines repeat a product. Kept:
    ``orders_with_both >= min_support_count`` and ``confidence >= min_confidence``.
    """
    baskets = _binary(purchases.basket_order, purchases.basket_product, (purchases.orders, purchases.shape[1]))
    together = (baskets.T.tocsr() @ baskets).tocoo()
    sizes = together.diagonal()
    pair = (together.row != together.col) & (together.data >= min_support_count)
    a, b, both = together.row[pair], together.col[pair], together.data[pair]
    confidence = both / sizes[a]
    kept = confidence >= min_confidence
    a, b, both, confidence = a[kept], b[kept], both[kept], confidence[kept]
    ids = purchases.product_ids
    return pa.table(
        [
            ids.take(a),
            ids.take(b),
            both,
            both / purchases.orders,
            confidence,
            confidence / (sizes[b] / purchases.orders),
        ],
        schema=arrow_schema(FBT_SCHEMA),
    )


# -- ranked lists ---------------------------------------------------------------------------------


def _recommendation_rows(
    subject_type: str, subject_ids: pa.Array, products: pa.Array, ranks, scores, strategies
) -> pa.Table:
    """``RECOMMENDATION_SCHEMA`` rows; ``strategies`` is one name or one per row."""
    n = len(products)
    strategy = pa.array([strategies] * n, pa.string()) if isinstance(strategies, str) else strategies
    return pa.table(
        [
            pa.array([subject_type] * n, pa.string()),
            subject_ids,
            products,
            pa.array(np.asarray(ranks, dtype=np.int32)),
            pa.array(np.asarray(scores, dtype=np.float64)),
            strategy,
        ],
        schema=arrow_schema(RECOMMENDATION_SCHEMA),
    )


def popular_by_category(purchases: Purchases, top_n: int) -> pa.Table:
    """Cold-start lists: the ``top_n`` most purchased products per category, and overall (subject ``all``)."""
    ordered, starts = purchases.popular()
    category = purchases.category[ordered]
    rank = np.arange(len(ordered)) - starts[category] + 1
    per_category = ordered[rank <= top_n]
    catalogue = np.flatnonzero(purchases.purchases > 0)
    overall = catalogue[np.lexsort((catalogue, -purchases.purchases[catalogue]))][:top_n]
    ids, scores = purchases.product_ids, purchases.purchases.astype(np.float64)
    return pa.concat_tables(
        [
            _recommendation_rows(
                CATEGORY,
                purchases.categories.take(purchases.category[per_category]),
                ids.take(per_category),
                rank[rank <= top_n],
                scores[per_category],
                POPULAR_IN_CATEGORY,
            ),
            _recommendation_rows(
                CATEGORY,
                pa.array([OVERALL] * len(overall), pa.string()),
                ids.take(overall),
                np.arange(1, len(overall) + 1),
                scores[overall],
                POPULAR,
            ),
        ]
    )


def _neighbours(purchases: Purchases, similarity: pa.Table, top_n: int) -> sparse.csr_matrix:
    """Products x products: the similarity of each product's first ``top_n`` similar products (catalogue only)."""
    rows = similarity.filter(pc.less_equal(similarity["rank"], top_n))
    seed = _codes(_flat(rows["product_id"]), purchases.product_ids)
    similar = _codes(_flat(rows["similar_product_id"]), purchases.product_ids)
    listed = purchases.purchases > 0
    known = (seed >= 0) & (similar >= 0)
    known[known] = listed[seed[known]] & listed[similar[known]]
    values = _flat(rows["similarity"]).to_numpy(zero_copy_only=False)[known]
    n = purchases.shape[1]
    return sparse.csr_matrix((values, (seed[known], similar[known])), shape=(n, n))


def _candidate_scores(seeds: sparse.csr_matrix, neighbours: sparse.csr_matrix):
    """(customer, product, summed similarity) of every product similar to one of the customer's seeds."""
    scores = (seeds @ neighbours).tocoo()
    if (neighbours.data > 0).all():  # positive terms: no candidate sums to zero, so none was dropped
        return scores.row.astype(np.int64), scores.col.astype(np.int64), scores.data
    # scipy leaves out entries that sum to zero: take the candidates from the 0/1 pattern, the sums from the values
    listed = neighbours.tocoo()
    pattern = seeds @ _binary(listed.row, listed.col, neighbours.shape)
    found = pattern.tocoo()
    n = neighbours.shape[1]
    keys, found_keys = scores.row.astype(np.int64) * n + scores.col, found.row.astype(np.int64) * n + found.col
    sums = np.zeros(len(found_keys))
    order = np.argsort(keys)
    at = np.searchsorted(keys[order], found_keys)
    hit = _contains(keys[order], found_keys)
    sums[hit] = scores.data[order][at[hit]]
    return found.row.astype(np.int64), found.col.astype(np.int64), sums


def customer_recommendations(
    purchases: Purchases,
    similarity: pa.Table,
    top_n: int,
    repeat_categories: list[str],
    seed_products: int | None = None,
) -> pa.Table:
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
    n_customers, n_products = purchases.shape
    customer, product = bought = purchases.bought()
    n_bought = np.bincount(customer, minlength=n_customers)
    repeat = _codes(pa.array(list(repeat_categories), pa.string()), purchases.categories)
    is_repeat = np.isin(purchases.line_category, repeat[repeat >= 0])
    repeats = _distinct(purchases.line_customer[is_repeat] * n_products + purchases.line_product[is_repeat])
    left_out = np.setdiff1d(customer * n_products + product, repeats, assume_unique=True)

    seeds = _binary(*(bought if seed_products is None else purchases.bought(seed_products)), purchases.shape)
    rows, items, sums = _candidate_scores(seeds, _neighbours(purchases, similarity, top_n))
    keys = rows * n_products + items
    kept = ~_contains(left_out, keys)
    rows, items, keys, scores = rows[kept], items[kept], keys[kept], round_half_up(sums[kept], SCORE_DECIMALS)
    top, rank = _top_per_row(rows, scores, items, top_n=top_n)
    listed = np.bincount(rows[top], minlength=n_customers)

    # The fill: the customer's top category, most purchased first, leaving out what was bought (unless a repeat
    # purchase) or is listed already. Bought and listed products are at most n_bought + top_n of the category.
    top_category = purchases.top_category()
    popular, starts = purchases.popular()
    short = np.flatnonzero((listed < top_n) & (top_category >= 0))
    first, last = starts[top_category[short]], starts[top_category[short] + 1]
    reach = np.minimum(last - first, top_n + n_bought[short])
    fill_customer = np.repeat(short, reach)
    fill_item = popular[np.repeat(first, reach) + _ranks_within(fill_customer) - 1]
    fill_keys = fill_customer * n_products + fill_item
    fill_kept = ~_contains(left_out, fill_keys) & ~_contains(np.sort(keys), fill_keys)
    fill_customer, fill_item = fill_customer[fill_kept], fill_item[fill_kept]
    fill_rank = listed[fill_customer] + _ranks_within(fill_customer)
    fill = fill_rank <= top_n

    ids = purchases.product_ids
    return pa.concat_tables(
        [
            _recommendation_rows(
                CUSTOMER,
                purchases.customer_ids.take(rows[top]),
                ids.take(items[top]),
                rank,
                scores[top],
                ITEM_SIMILARITY,
            ),
            _recommendation_rows(
                CUSTOMER,
                purchases.customer_ids.take(fill_customer[fill]),
                ids.take(fill_item[fill]),
                fill_rank[fill],
                purchases.purchases[fill_item[fill]],
                POPULAR_IN_CATEGORY,
            ),
        ]
    )


def product_recommendations(similarity: pa.Table, top_n: int | None = None) -> pa.Table:
    """Recommendations for a product page: its similar products (the first ``top_n`` when given)."""
    rows = similarity if top_n is None else similarity.filter(pc.less_equal(similarity["rank"], top_n))
    return _recommendation_rows(
        PRODUCT,
        _flat(rows["product_id"]),
        _flat(rows["similar_product_id"]),
        _flat(rows["rank"]).to_numpy(zero_copy_only=False),
        _flat(rows["similarity"]).to_numpy(zero_copy_only=False),
        ITEM_SIMILARITY,
    )


def recommendation_lists(purchases: Purchases, similarity: pa.Table, top_n: int, repeat_categories: list[str]):
    """All of ``gold/recommendations``: per customer, per product page, per category and overall."""
    return pa.concat_tables(
        [
            customer_recommendations(purchases, similarity, top_n, repeat_categories),
            product_recommendations(similarity, top_n),
            popular_by_category(purchases, top_n),
        ]
    )
