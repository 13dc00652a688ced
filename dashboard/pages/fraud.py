"""Fraud page: alert count and rate, score distribution, and the latest alerts with their reasons."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dash_table, dcc, html

from dashboard import ids
from dashboard.components import kpi_card
from dashboard.figures import make_score_histogram_figure
from ecom.settings import get_settings
from serving import queries

dash.register_page(__name__, path="/fraud", name="Fraud", title="Fraud alerts", order=1)

ALERT_COLUMNS = [
    {"name": "time (UTC)", "id": "created_at"},
    {"name": "transaction", "id": "transaction_id"},
    {"name": "customer", "id": "customer_id"},
    {"name": "amount", "id": "amount", "type": "numeric", "format": {"specifier": ",.2f"}},
    {"name": "score", "id": "fraud_score", "type": "numeric", "format": {"specifier": ".1f"}},
    {"name": "why", "id": "reasons"},
    {"name": "model", "id": "model_version"},
]


layout = html.Div(
    [
        dbc.Row(
            [
                dbc.Col(kpi_card("Alerts", ids.FRAUD_ALERT_COUNT), md=3),
                dbc.Col(kpi_card("Alert rate", ids.FRAUD_ALERT_RATE), md=3),
            ],
            className="g-3",
        ),
        dcc.Graph(id=ids.FRAUD_SCORE_HISTOGRAM, className="mt-3"),
        html.H5("Latest alerts", className="mt-3"),
        dash_table.DataTable(
            id=ids.FRAUD_ALERTS_TABLE,
            columns=ALERT_COLUMNS,
            page_size=15,
            style_cell={"backgroundColor": "#222", "color": "#ddd", "textAlign": "left", "whiteSpace": "normal"},
            style_header={"backgroundColor": "#111", "fontWeight": "bold"},
        ),
    ]
)


@callback(
    Output(ids.FRAUD_ALERT_COUNT, "children"),
    Output(ids.FRAUD_ALERT_RATE, "children"),
    Output(ids.FRAUD_SCORE_HISTOGRAM, "figure"),
    Output(ids.FRAUD_ALERTS_TABLE, "data"),
    Input(ids.REFRESH, "n_intervals"),
)
def refresh(_n: int):
    settings = get_settings()
    dsn = settings.postgres.dsn
    summary = queries.fraud_summary(dsn)
    alerts = queries.recent_alerts(dsn, limit=100)
    alerts["created_at"] = alerts["created_at"].astype(str).str.slice(0, 19)
    return (
        f"{int(summary['alerts']):,}",
        f"{100 * summary['alert_rate']:.2f} %",
        make_score_histogram_figure(queries.fraud_score_distribution(dsn), settings.fraud.alert_threshold),
        alerts.to_dict("records"),
    )
