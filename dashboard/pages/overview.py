"""Overview page: how the shop is doing now, from the gold minute metrics (never a scan of raw orders).

Cards: orders and revenue in the last minute, hour and day; today's average
order value, alert rate and alerts; each against the period before. Charts:
orders and revenue over a chosen range, sales by category, payment method and
channel. Money in the reporting currency.
"""

from __future__ import annotations

import datetime as dt

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, html

from dashboard import ids
from dashboard.app import settings_and_reader
from dashboard.components import LOADING, graph, guarded, metric_card, metric_row, panel, status_area
from dashboard.data import Reader, refresh_now
from dashboard.figures import complete_periods, make_breakdown_figure, make_timeseries_figure
from ecom.settings import Settings
from serving import queries

dash.register_page(__name__, path="/", name="Overview", title="Overview", order=0)

# range -> (label, span, bucket of serving.queries.BUCKETS, pandas frequency)
RANGES = {
    "1h": ("1 hour", dt.timedelta(hours=1), "minute", "1min"),
    "6h": ("6 hours", dt.timedelta(hours=6), "minute", "1min"),
    "24h": ("24 hours", dt.timedelta(hours=24), "minute", "1min"),
    "7d": ("7 days", dt.timedelta(days=7), "hour", "1h"),
    "30d": ("30 days", dt.timedelta(days=30), "day", "1D"),
}
DEFAULT_RANGE = "1h"
WINDOW_LABELS = {
    "minute": ("last minute", "minute before"),
    "hour": ("last hour", "hour before"),
    "day": ("last 24 h", "24 h before"),
}


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def make_cards(cards: dict, currency: str) -> list[dbc.Col]:
    """The metric cards from ``queries.overview_cards``: each value with its change against the period before."""
    orders, revenue, alerts = cards["orders"], cards["revenue"], cards["alerts"]
    order_rows, revenue_rows = [], []
    for window, (label, before) in WINDOW_LABELS.items():
        (o_now, o_prev), (r_now, r_prev) = orders[window], revenue[window]
        order_rows.append(metric_row(label, ids.card_value("orders", window), f"{o_now:,.0f}", o_now, o_prev, before))
        revenue_rows.append(
            metric_row(label, ids.card_value("revenue", window), f"{r_now:,.2f}", r_now, r_prev, before)
        )
    (o_now, o_prev), (r_now, r_prev), (a_now, a_prev) = orders["today"], revenue["today"], alerts["today"]
    s_now, s_prev = cards["scored"]["today"]
    aov_now, aov_prev = _ratio(r_now, o_now), _ratio(r_prev, o_prev)
    rate_now, rate_prev = _ratio(a_now, s_now), _ratio(a_prev, s_prev)  # alerts per scored order
    yesterday = "same hours yesterday"
    today_rows = [
        metric_row(
            "avg order", ids.card_value("aov", "today"), f"{aov_now:,.2f} {currency}", aov_now, aov_prev, yesterday
        ),
        metric_row(
            "alert rate",
            ids.card_value("alert_rate", "today"),
            f"{100 * rate_now:.2f} %",
            rate_now,
            rate_prev,
            yesterday,
        ),
        metric_row("alerts", ids.card_value("alerts", "today"), f"{a_now:,.0f}", a_now, a_prev, yesterday),
    ]
    return [
        metric_card("Orders", order_rows),
        metric_card(f"Revenue ({currency})", revenue_rows),
        metric_card("Today (UTC)", today_rows),
    ]


def load(reader: Reader, settings: Settings, now: dt.datetime, range_key: str) -> tuple:
    """Everything the page shows, for the refresh at ``now``: cards, data-until note, four figures."""
    currency = settings.gold.reporting_currency
    cards = reader.run(queries.overview_cards, now)
    label, span, bucket, freq = RANGES.get(range_key, RANGES[DEFAULT_RANGE])
    until = now
    since = (now - span).replace(second=0, microsecond=0)
    series = reader.run(queries.summary_series, since, until, bucket, ("orders", "revenue"))
    series = complete_periods(series, since, until, freq)
    kinds = reader.run(queries.summary_breakdowns, since, until)
    data_until = cards["data_until"]
    text = (
        "No minute metrics yet: run `ecom stream gold` (live) or `ecom batch daily`."
        if data_until is None
        else f"Cards count complete minutes up to {now:%H:%M} UTC; minute metrics reach {data_until:%Y-%m-%d %H:%M} UTC."
    )
    # the cards' window end, for tests that compare them with their own SQL
    note = html.Span(text, **{"data-window-end": now.replace(second=0, microsecond=0).isoformat()})
    return (
        make_cards(cards, currency),
        note,
        make_timeseries_figure(series, currency, f"Orders and revenue, last {label}"),
        make_breakdown_figure(kinds["category"], f"Revenue by category, last {label}", currency),
        make_breakdown_figure(kinds["payment_method"], "Payment methods", currency, kind="pie"),
        make_breakdown_figure(kinds["channel"], "Channels", currency, kind="pie"),
    )


layout = html.Div(
    [
        status_area(ids.OVERVIEW_STATUS, ids.OVERVIEW_LAST_GOOD),
        dbc.Row(
            [dbc.Col(dbc.Card(dbc.CardBody(LOADING)), xs=12)],
            className="g-3",
            id=ids.OVERVIEW_CARDS,
        ),
        html.Div(LOADING, id=ids.OVERVIEW_DATA_UNTIL, className="text-muted small mt-2"),
        dbc.RadioItems(
            id=ids.OVERVIEW_RANGE,
            options=[{"label": label, "value": key} for key, (label, *_rest) in RANGES.items()],
            value=DEFAULT_RANGE,
            inline=True,
            persistence=True,
            className="mt-3 mb-2",
        ),
        dbc.Row(
            [
                dbc.Col(panel(None, graph(ids.OVERVIEW_TIMESERIES, 340)), xs=12, lg=8),
                dbc.Col(panel(None, graph(ids.OVERVIEW_CATEGORY, 340)), xs=12, lg=4),
            ],
            className="g-3",
        ),
        dbc.Row(
            [
                dbc.Col(panel(None, graph(ids.OVERVIEW_PAYMENT, 300)), xs=12, md=6),
                dbc.Col(panel(None, graph(ids.OVERVIEW_CHANNEL, 300)), xs=12, md=6),
            ],
            className="g-3 mt-1",
        ),
    ]
)


@callback(
    Output(ids.OVERVIEW_CARDS, "children"),
    Output(ids.OVERVIEW_DATA_UNTIL, "children"),
    Output(ids.OVERVIEW_TIMESERIES, "figure"),
    Output(ids.OVERVIEW_CATEGORY, "figure"),
    Output(ids.OVERVIEW_PAYMENT, "figure"),
    Output(ids.OVERVIEW_CHANNEL, "figure"),
    Output(ids.OVERVIEW_STATUS, "children"),
    Output(ids.OVERVIEW_LAST_GOOD, "data"),
    Input(ids.REFRESH, "n_intervals"),
    Input(ids.OVERVIEW_RANGE, "value"),
    State(ids.OVERVIEW_LAST_GOOD, "data"),
)
def refresh(_n: int, range_key: str, last_good: str | None):
    settings, reader = settings_and_reader()
    now = refresh_now(settings.dashboard.refresh_ms)
    return guarded(lambda: load(reader, settings, now, range_key), 6, last_good)
