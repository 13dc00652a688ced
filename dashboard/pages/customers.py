"""Customers page: RFM segments and their movement, cohort retention and revenue, top customers, a lookup.

Segments, cohorts and the top customers come from the daily batch (gold in
PostgreSQL) and are read again only after a newer batch run; the lookup reads
one customer's rows by index: profile, newest orders, alerts, recommendations.
"""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import pandas as pd
from dash import Input, Output, State, callback, html, no_update

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
from dashboard.figures import (
    make_cohort_heatmap_figure,
    make_cohort_revenue_figure,
    make_segment_movement_figure,
    make_segment_treemap_figure,
)
from ecom.settings import Settings
from serving import queries

dash.register_page(__name__, path="/customers", name="Customers", title="Customers", order=2)

TOP_COLUMNS = [
    {"name": "customer", "id": "customer_id"},
    {"name": "revenue", "id": "total_revenue", "type": "numeric", "format": {"specifier": ",.2f"}},
    {"name": "orders", "id": "order_count", "type": "numeric", "format": {"specifier": ","}},
    {"name": "avg order", "id": "avg_order_value", "type": "numeric", "format": {"specifier": ",.2f"}},
    {"name": "segment", "id": "rfm_segment"},
    {"name": "country", "id": "home_country"},
]
ORDER_COLUMNS = [
    {"name": "time (UTC)", "id": "event_time"},
    {"name": "amount", "id": "amount_text"},
    {"name": "reporting", "id": "amount_reporting", "type": "numeric", "format": {"specifier": ",.2f"}},
    {"name": "payment", "id": "payment_method"},
    {"name": "channel", "id": "channel"},
    {"name": "items", "id": "item_count"},
    {"name": "score", "id": "fraud_score", "type": "numeric", "format": {"specifier": ".1f"}},
]
ALERT_COLUMNS = [
    {"name": "time (UTC)", "id": "created_at"},
    {"name": "score", "id": "fraud_score", "type": "numeric", "format": {"specifier": ".1f"}},
    {"name": "why", "id": "reasons"},
    {"name": "status", "id": "status"},
]


def as_of_text(segments: pd.DataFrame, as_of) -> str:
    if segments.empty:
        return "No RFM segments yet: run `ecom batch daily`."
    return f"RFM as of {as_of:%Y-%m-%d}, from the daily batch." if as_of else "RFM from the daily batch."


def load(reader: Reader, settings: Settings) -> tuple:
    """Segments, movement, cohort heatmap and revenue, top customers, the as-of note."""
    currency = settings.gold.reporting_currency
    segments = reader.batch(queries.rfm_segments)
    cohorts = reader.batch(queries.cohort_matrix)
    top = reader.batch(queries.top_customers, 15)
    return (
        make_segment_treemap_figure(segments, currency),
        make_segment_movement_figure(segments),
        make_cohort_heatmap_figure(cohorts),
        make_cohort_revenue_figure(cohorts, currency),
        records(top, ("last_order_time",)),
        as_of_text(segments, reader.batch(queries.rfm_as_of)),
    )


def profile_view(profile: dict, currency: str) -> html.Div:
    """A customer's figures in a few lines."""

    def fmt(value, pattern: str = "{}") -> str:
        return "–" if value is None or (isinstance(value, float) and pd.isna(value)) else pattern.format(value)

    segment = fmt(profile.get("rfm_segment"))
    previous = profile.get("previous_segment")
    moved = f" (was {previous})" if previous and previous != profile.get("rfm_segment") else ""
    return html.Div(
        [
            html.H5(profile["customer_id"], className="mb-1"),
            html.Div(f"segment {segment}{moved} · RFM {fmt(profile.get('rfm_score'))}", className="mb-1"),
            html.Div(
                f"{fmt(profile.get('order_count'), '{:,}')} orders · {fmt(profile.get('total_revenue'), '{:,.2f}')} "
                f"{currency} · avg {fmt(profile.get('avg_order_value'), '{:,.2f}')} · cohort "
                f"{fmt(profile.get('cohort_month'))} · {fmt(profile.get('home_country'))}",
                className="text-muted small",
            ),
            html.Div(
                f"first order {fmt(profile.get('first_order_time'), '{:%Y-%m-%d}')}, last "
                f"{fmt(profile.get('last_order_time'), '{:%Y-%m-%d %H:%M}')} UTC",
                className="text-muted small",
            ),
        ]
    )


def load_lookup(reader: Reader, settings: Settings, customer_id: str) -> tuple:
    """One customer: profile, newest orders, alerts, recommendations (or a note when unknown)."""
    profile = reader.run(queries.customer_profile, customer_id)
    if profile is None:
        return (empty_state(f"No customer with id {customer_id!r}."), [], [], [])
    orders = reader.run(queries.customer_orders, customer_id)
    orders["amount_text"] = [f"{a:,.2f} {c}" for a, c in zip(orders["amount"], orders["currency"], strict=True)]
    alerts = reader.run(queries.customer_alerts, customer_id)
    recs = with_products(reader, reader.run(queries.customer_recommendations, customer_id))
    return (
        profile_view(profile, settings.gold.reporting_currency),
        records(orders, ("event_time",)),
        records(alerts, ("created_at",)),
        records(recs),
    )


layout = html.Div(
    [
        status_area(ids.CUSTOMERS_STATUS, ids.CUSTOMERS_LAST_GOOD),
        html.Div(id=ids.CUSTOMERS_AS_OF, className="text-muted small mb-2"),
        dbc.Row(
            [
                dbc.Col(panel(None, graph(ids.CUSTOMERS_SEGMENTS, 360)), xs=12, lg=6),
                dbc.Col(panel(None, graph(ids.CUSTOMERS_MOVEMENT, 360)), xs=12, lg=6),
            ],
            className="g-3",
        ),
        dbc.Row(
            [
                dbc.Col(panel(None, graph(ids.CUSTOMERS_COHORTS, 380)), xs=12, lg=7),
                dbc.Col(panel(None, graph(ids.CUSTOMERS_COHORT_REVENUE, 380)), xs=12, lg=5),
            ],
            className="g-3 mt-1",
        ),
        dbc.Row(
            [
                dbc.Col(
                    panel(
                        "Top customers (click one to look it up)",
                        table(ids.CUSTOMERS_TOP, TOP_COLUMNS, page_size=15),
                    ),
                    xs=12,
                    lg=6,
                ),
                dbc.Col(
                    panel(
                        "Customer lookup",
                        dbc.Input(
                            id=ids.CUSTOMERS_LOOKUP,
                            placeholder="customer id, e.g. C0000042",
                            debounce=True,
                            type="search",
                            persistence=True,
                            className="mb-2",
                        ),
                        html.Div(id=ids.CUSTOMERS_PROFILE, className="mb-2"),
                        html.H6("Newest orders", className="text-muted small mt-2"),
                        table(ids.CUSTOMERS_ORDERS, ORDER_COLUMNS, page_size=5),
                        html.H6("Alerts", className="text-muted small mt-2"),
                        table(ids.CUSTOMERS_ALERTS, ALERT_COLUMNS, page_size=5),
                        html.H6("Recommendations", className="text-muted small mt-2"),
                        table(ids.CUSTOMERS_RECOMMENDATIONS, REC_COLUMNS, page_size=10),
                    ),
                    xs=12,
                    lg=6,
                ),
            ],
            className="g-3 mt-1",
        ),
    ]
)


@callback(
    Output(ids.CUSTOMERS_SEGMENTS, "figure"),
    Output(ids.CUSTOMERS_MOVEMENT, "figure"),
    Output(ids.CUSTOMERS_COHORTS, "figure"),
    Output(ids.CUSTOMERS_COHORT_REVENUE, "figure"),
    Output(ids.CUSTOMERS_TOP, "data"),
    Output(ids.CUSTOMERS_AS_OF, "children"),
    Output(ids.CUSTOMERS_STATUS, "children"),
    Output(ids.CUSTOMERS_LAST_GOOD, "data"),
    Input(ids.REFRESH, "n_intervals"),
    State(ids.CUSTOMERS_LAST_GOOD, "data"),
)
def refresh(_n, last_good):
    settings, reader = settings_and_reader()
    return guarded(lambda: load(reader, settings), 6, last_good)


@callback(
    Output(ids.CUSTOMERS_PROFILE, "children"),
    Output(ids.CUSTOMERS_ORDERS, "data"),
    Output(ids.CUSTOMERS_ALERTS, "data"),
    Output(ids.CUSTOMERS_RECOMMENDATIONS, "data"),
    Input(ids.CUSTOMERS_LOOKUP, "value"),
    Input(ids.REFRESH, "n_intervals"),
)
def lookup(customer_id, _n):
    customer_id = (customer_id or "").strip()
    if not customer_id:
        return empty_state("Type a customer id, or click a top customer."), [], [], []
    settings, reader = settings_and_reader()
    return guarded_section(lambda: load_lookup(reader, settings, customer_id), (None, [], [], []), 0)


@callback(
    Output(ids.CUSTOMERS_LOOKUP, "value"),
    Input(ids.CUSTOMERS_TOP, "active_cell"),
    State(ids.CUSTOMERS_TOP, "data"),
    prevent_initial_call=True,
)
def pick_top_customer(cell, rows):
    if not cell or not rows or cell["row"] >= len(rows):
        return no_update
    return rows[cell["row"]]["customer_id"]
