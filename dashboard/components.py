"""Layout pieces shared by the pages, and the guard every refresh callback runs its queries under.

Layer: dashboard. Pure builders (data in, components out), tested without a browser.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import dash_bootstrap_components as dbc
import pandas as pd
import psycopg2
from dash import dash_table, dcc, html, no_update

from serving import queries

log = logging.getLogger(__name__)

LOADING = "loading…"
TABLE_STYLE = {
    "style_table": {"overflowX": "auto"},
    "style_cell": {
        "backgroundColor": "#222",
        "color": "#ddd",
        "textAlign": "left",
        "whiteSpace": "normal",
        "height": "auto",
        "fontSize": "0.85rem",
        "fontFamily": "var(--bs-body-font-family)",
        "padding": "4px 8px",
        "border": "1px solid #333",
    },
    "style_header": {"backgroundColor": "#111", "fontWeight": "bold", "border": "1px solid #333"},
    "style_data_conditional": [
        {"if": {"state": "selected"}, "backgroundColor": "#2a9fd633", "border": "1px solid #2a9fd6"}
    ],
}


REC_COLUMNS = [
    {"name": "#", "id": "rank"},
    {"name": "product", "id": "product_id"},
    {"name": "category", "id": "category"},
    {"name": "price", "id": "list_price", "type": "numeric", "format": {"specifier": ",.2f"}},
    {"name": "score", "id": "score", "type": "numeric", "format": {"specifier": ".3f"}},
    {"name": "strategy", "id": "strategy"},
]


def records(df: pd.DataFrame, time_columns: tuple[str, ...] = ()) -> list[dict]:
    """DataTable rows: times as ``YYYY-MM-DD HH:MM:SS``, missing values as None."""
    out = df.copy()
    for column in time_columns:
        out[column] = pd.to_datetime(out[column], utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
    return out.astype(object).where(out.notna(), None).to_dict("records")


def with_products(reader, recs: pd.DataFrame) -> pd.DataFrame:
    """Recommendations with each product's category and list price."""
    if recs.empty:
        return recs.assign(category=[], list_price=[])
    info = reader.run(queries.products_by_id, tuple(recs["product_id"]))
    return recs.merge(info, on="product_id", how="left")


def table(table_id: str, columns: list[dict], page_size: int = 10, **kwargs) -> dash_table.DataTable:
    """A dark, horizontally scrollable DataTable (usable at 390 px)."""
    return dash_table.DataTable(id=table_id, columns=columns, data=[], page_size=page_size, **TABLE_STYLE, **kwargs)


def graph(graph_id: str, height: int = 320) -> dcc.Loading:
    """A responsive graph; its spinner shows only when a refresh is slow (no flicker every 5 s)."""
    return dcc.Loading(
        dcc.Graph(
            id=graph_id,
            config={"displayModeBar": False, "responsive": True},
            style={"height": f"{height}px"},
            figure={"layout": {"template": "plotly_dark", "title": {"text": LOADING}}},
        ),
        delay_show=600,
        type="dot",
    )


def status_area(status_id: str, store_id: str) -> html.Div:
    """Where a failed query says so, and the store of the time of the page's last good data."""
    return html.Div([html.Div(id=status_id), dcc.Store(id=store_id)])


def panel(title: str | None, *children, footer: str | None = None, **kwargs) -> dbc.Card:
    """A card around a graph or table (the figure carries its own title when ``title`` is None)."""
    body = [html.H6(title, className="card-title text-muted mb-2")] if title else []
    body += children
    if footer:
        body.append(html.Div(footer, className="small text-muted mt-1"))
    return dbc.Card(dbc.CardBody(body), className="h-100", **kwargs)


def empty_state(message: str, command: str | None = None) -> html.Div:
    """A 'nothing here yet' note naming the command that fills it."""
    parts: list = [message]
    if command:
        parts += [" Run ", html.Code(command), "."]
    return html.Div(parts, className="text-muted small py-3 empty-state")


# -- metric cards -----------------------------------------------------------------------------------
def change_text(current: float, previous: float) -> tuple[str, str]:
    """The change against the previous period as text and a Bootstrap text class."""
    if previous == 0:
        return ("new" if current else "–", "text-muted")
    change = (current - previous) / previous
    if abs(change) < 0.0005:
        return ("±0.0 %", "text-muted")
    arrow = "▲" if change > 0 else "▼"
    css = "text-success" if change > 0 else "text-danger"
    if change >= 9:  # ten times or more: a factor reads better than "▲ 14640.0 %"
        return (f"{arrow} ×{current / previous:,.0f}", css)
    return (f"{arrow} {abs(change) * 100:.1f} %", css)


def metric_row(label: str, value_id: str, value: str, current: float, previous: float, period: str) -> html.Div:
    """One line of a card: label, value (with an id for tests) and the change against ``period``."""
    text, css = change_text(current, previous)
    return html.Div(
        [
            html.Span(label, className="text-muted me-2"),
            html.Span(value, id=value_id, className="fs-5 fw-semibold me-2"),
            html.Span(text, className=f"small {css}", title=f"against the {period}"),
        ],
        className="d-flex align-items-baseline flex-wrap",
    )


def metric_card(title: str, rows: Sequence[html.Div]) -> dbc.Col:
    return dbc.Col(dbc.Card(dbc.CardBody([html.H6(title, className="text-muted"), *rows])), xs=12, md=6, xl=4)


# -- the refresh guard ------------------------------------------------------------------------------
def failure_message(exc: BaseException, last_good: str | None) -> dbc.Alert:
    """What a reader sees when a refresh failed: what went wrong in a line, and the age of what is shown."""
    if isinstance(exc, psycopg2.OperationalError):
        what = "The database cannot be reached"
    elif isinstance(exc, psycopg2.Error):
        what = f"A query failed ({type(exc).__name__})"
    else:
        what = f"The page could not be refreshed ({type(exc).__name__})"
    first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    since = (
        f"Showing the data of {last_good} UTC; it refreshes by itself when the problem is gone."
        if last_good
        else "No data could be read yet; the page retries by itself."
    )
    return dbc.Alert(
        [html.Strong(f"{what}. "), html.Span(f"{first_line} " if first_line else ""), html.Br(), since],
        color="warning",
        className="py-2 small refresh-failure",
    )


def guarded(build: Callable[[], tuple], outputs: int, last_good: str | None, now: datetime | None = None) -> tuple:
    """Run a page's ``build`` (queries + figures): its outputs, no status and the new last-good time; or, if
    it raises, unchanged outputs, a failure message naming the time of the last good data, no new time."""
    try:
        values = build()
    except Exception as exc:  # noqa: BLE001 - any failure becomes a message on the page, never a traceback
        log.warning("dashboard refresh failed: %s: %s", type(exc).__name__, exc)
        return (*([no_update] * outputs), failure_message(exc, last_good), no_update)
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S")
    return (*values, None, stamp)


def guarded_section(build: Callable[[], tuple], fallback: tuple, message_at: int) -> tuple:
    """For a part of a page without its own status area: ``build()``'s values, or ``fallback`` with the
    failure message put at position ``message_at``."""
    values = guarded(build, len(fallback), None)
    if values[-2] is None:
        return values[:-2]
    return tuple(values[-2] if i == message_at else value for i, value in enumerate(fallback))
