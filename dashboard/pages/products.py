"""Products and recommendations page: best sellers, frequently bought together, recommendations with strategies.

All from the daily batch's gold tables in PostgreSQL (``products``,
``product_pairs``, ``recommendations``): best sellers by revenue (reporting
currency), pairs with support, confidence and lift, and the ranked
recommendations for a product or a customer with the strategy behind each.
"""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, html

from dashboard import ids
from dashboard.app import settings_and_reader
from dashboard.components import (
    REC_COLUMNS,
    empty_state,
    graph,
    guarded,
    guarded_section,
    panel,
    records,
    status_area,
    table,
    with_products,
)
from dashboard.data import Reader
from dashboard.figures import make_best_sellers_figure
from ecom.settings import Settings
from serving import queries

dash.register_page(__name__, path="/products", name="Products", title="Products & recommendations", order=3)

ALL = "__all__"
BEST_COLUMNS = [
    {"name": "product", "id": "product_id"},
    {"name": "category", "id": "category"},
    {"name": "revenue", "id": "revenue", "type": "numeric", "format": {"specifier": ",.2f"}},
    {"name": "units", "id": "units_sold", "type": "numeric", "format": {"specifier": ","}},
    {"name": "orders", "id": "order_count", "type": "numeric", "format": {"specifier": ","}},
    {"name": "customers", "id": "customers", "type": "numeric", "format": {"specifier": ","}},
]
PAIR_COLUMNS = [
    {"name": "if bought", "id": "antecedent"},
    {"name": "also bought", "id": "consequent"},
    {"name": "orders", "id": "orders_with_both", "type": "numeric", "format": {"specifier": ","}},
    {"name": "support", "id": "support", "type": "numeric", "format": {"specifier": ".4%"}},
    {"name": "confidence", "id": "confidence", "type": "numeric", "format": {"specifier": ".1%"}},
    {"name": "lift", "id": "lift", "type": "numeric", "format": {"specifier": ".2f"}},
]
STRATEGY_NOTES = {
    "item_similarity": "item similarity: cosine over who bought what",
    "popular_in_category": "popular in the category (cold start)",
    "popular": "popular in the shop (cold start)",
}


def load(reader: Reader, settings: Settings, category: str | None) -> tuple:
    """Category options, best-seller figure and table."""
    chosen = None if category in (None, ALL) else category
    best = reader.batch(queries.best_sellers, chosen)
    options = [{"label": "all categories", "value": ALL}] + [
        {"label": c, "value": c} for c in reader.batch(queries.categories)
    ]
    return options, make_best_sellers_figure(best, settings.gold.reporting_currency), records(best)


def load_recommendations(reader: Reader, kind: str, subject: str) -> tuple:
    """Recommendations for a product or a customer, the strategies explained, and the pairs to show."""
    if not subject:
        pairs = reader.batch(queries.product_pairs)
        note = empty_state("Type a product id (e.g. from the best sellers) or a customer id.")
        return [], note, records(pairs), "Strongest pairs in the shop"
    if kind == "customer":
        recs = reader.run(queries.customer_recommendations, subject)
        pairs, pairs_title = reader.batch(queries.product_pairs), "Strongest pairs in the shop"
    else:
        recs = reader.batch(queries.product_recommendations, subject)
        pairs, pairs_title = reader.batch(queries.product_pairs, subject), f"Bought together with {subject}"
    recs = with_products(reader, recs)
    if recs.empty:
        note = empty_state(f"No recommendations for {kind} {subject!r}.", "ecom batch daily")
    else:
        used = [STRATEGY_NOTES.get(s, s) for s in dict.fromkeys(recs["strategy"])]
        note = html.Div("Strategy: " + "; ".join(used), className="small text-muted")
    return records(recs), note, records(pairs), pairs_title


layout = html.Div(
    [
        status_area(ids.PRODUCTS_STATUS, ids.PRODUCTS_LAST_GOOD),
        dbc.Row(
            dbc.Col(
                dbc.Select(
                    id=ids.PRODUCTS_CATEGORY,
                    options=[{"label": "all categories", "value": ALL}],
                    value=ALL,
                    persistence=True,
                ),
                xs=12,
                sm=6,
                lg=3,
            ),
            className="mb-2",
        ),
        dbc.Row(
            [
                dbc.Col(panel(None, graph(ids.PRODUCTS_BEST_SELLERS, 420)), xs=12, lg=6),
                dbc.Col(panel("Best sellers", table(ids.PRODUCTS_BEST_TABLE, BEST_COLUMNS, page_size=15)), xs=12, lg=6),
            ],
            className="g-3",
        ),
        dbc.Row(
            [
                dbc.Col(
                    panel(
                        "Recommendations",
                        dbc.RadioItems(
                            id=ids.PRODUCTS_REC_KIND,
                            options=[
                                {"label": "for a product", "value": "product"},
                                {"label": "for a customer", "value": "customer"},
                            ],
                            value="product",
                            inline=True,
                            persistence=True,
                            className="mb-2",
                        ),
                        dbc.Input(
                            id=ids.PRODUCTS_REC_SUBJECT,
                            placeholder="product or customer id",
                            debounce=True,
                            type="search",
                            persistence=True,
                            className="mb-2",
                        ),
                        html.Div(id=ids.PRODUCTS_REC_NOTE, className="mb-2"),
                        table(ids.PRODUCTS_RECOMMENDATIONS, REC_COLUMNS, page_size=10),
                    ),
                    xs=12,
                    lg=5,
                ),
                dbc.Col(
                    panel(
                        None,
                        html.H6("Strongest pairs in the shop", id=ids.PRODUCTS_PAIRS_TITLE, className="text-muted"),
                        table(ids.PRODUCTS_PAIRS, PAIR_COLUMNS, page_size=15),
                        footer="support = orders with both / all orders; confidence = orders with both / orders "
                        "with the first; lift = confidence / share of orders with the second.",
                    ),
                    xs=12,
                    lg=7,
                ),
            ],
            className="g-3 mt-1",
        ),
    ]
)


@callback(
    Output(ids.PRODUCTS_CATEGORY, "options"),
    Output(ids.PRODUCTS_BEST_SELLERS, "figure"),
    Output(ids.PRODUCTS_BEST_TABLE, "data"),
    Output(ids.PRODUCTS_STATUS, "children"),
    Output(ids.PRODUCTS_LAST_GOOD, "data"),
    Input(ids.REFRESH, "n_intervals"),
    Input(ids.PRODUCTS_CATEGORY, "value"),
    State(ids.PRODUCTS_LAST_GOOD, "data"),
)
def refresh(_n, category, last_good):
    settings, reader = settings_and_reader()
    return guarded(lambda: load(reader, settings, category), 3, last_good)


@callback(
    Output(ids.PRODUCTS_RECOMMENDATIONS, "data"),
    Output(ids.PRODUCTS_REC_NOTE, "children"),
    Output(ids.PRODUCTS_PAIRS, "data"),
    Output(ids.PRODUCTS_PAIRS_TITLE, "children"),
    Input(ids.PRODUCTS_REC_KIND, "value"),
    Input(ids.PRODUCTS_REC_SUBJECT, "value"),
    Input(ids.REFRESH, "n_intervals"),
)
def recommendations(kind, subject, _n):
    _, reader = settings_and_reader()
    subject = (subject or "").strip()
    fallback = ([], None, [], "Strongest pairs in the shop")
    return guarded_section(lambda: load_recommendations(reader, kind or "product", subject), fallback, 1)
