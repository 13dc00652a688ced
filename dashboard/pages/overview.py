"""Overview page: live order count, revenue, average order value, alerts, and charts."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import pandas as pd
from dash import Input, Output, callback, dcc, html

from dashboard import ids
from dashboard.components import kpi_card
from dashboard.figures import make_payment_figure, make_timeseries_figure
from ecom.settings import get_settings
from serving import queries

dash.register_page(__name__, path="/", name="Overview", title="Overview", order=0)


layout = html.Div(
    [
        dbc.Row(
            [
                dbc.Col(kpi_card("Orders", ids.OVERVIEW_TX_COUNT), md=3),
                dbc.Col(kpi_card("Revenue (USD)", ids.OVERVIEW_REVENUE), md=3),
                dbc.Col(kpi_card("Average order (USD)", ids.OVERVIEW_AOV), md=3),
                dbc.Col(kpi_card("Fraud alerts", ids.OVERVIEW_ALERTS), md=3),
            ],
            className="g-3",
            id=ids.OVERVIEW_KPIS,
        ),
        html.Div(id=ids.OVERVIEW_LAST_EVENT, className="text-muted small mt-2"),
        dbc.Row(
            [
                dbc.Col(dcc.Graph(id=ids.OVERVIEW_TIMESERIES), md=8),
                dbc.Col(dcc.Graph(id=ids.OVERVIEW_PAYMENT), md=4),
            ],
            className="mt-3",
        ),
    ]
)


@callback(
    Output(ids.OVERVIEW_TX_COUNT, "children"),
    Output(ids.OVERVIEW_REVENUE, "children"),
    Output(ids.OVERVIEW_AOV, "children"),
    Output(ids.OVERVIEW_ALERTS, "children"),
    Output(ids.OVERVIEW_LAST_EVENT, "children"),
    Output(ids.OVERVIEW_TIMESERIES, "figure"),
    Output(ids.OVERVIEW_PAYMENT, "figure"),
    Input(ids.REFRESH, "n_intervals"),
)
def refresh(_n: int):
    dsn = get_settings().postgres.dsn
    kpis = queries.overview_kpis(dsn)
    last = kpis["last_event_time"]
    return (
        f"{int(kpis['transactions']):,}",
        f"{kpis['revenue']:,.2f}",
        f"{kpis['avg_order_value']:,.2f}",
        f"{int(kpis['alerts']):,}",
        "no orders yet" if pd.isna(last) else f"latest order at {last:%Y-%m-%d %H:%M:%S} UTC",
        make_timeseries_figure(queries.transactions_per_minute(dsn)),
        make_payment_figure(queries.revenue_by_payment_method(dsn)),
    )
