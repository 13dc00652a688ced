"""Fraud page: the alert table with filters and triage, the score distribution, alert rate, precision and recall.

The table is newest first, sortable and paged in PostgreSQL (only the shown
page is read), filtered by score, reason (a literal substring), status and
time. An analyst selects an alert and marks it confirmed fraud or a false
positive with a note: the status is stored and the decision is published as a
label on ``fraud-labels`` (``dashboard.triage``), which ``ecom train`` reads.
"""

from __future__ import annotations

import datetime as dt

import dash
import dash_bootstrap_components as dbc
import pandas as pd
from dash import Input, Output, State, callback, ctx, html, no_update

from dashboard import auth, ids
from dashboard.app import settings_and_reader
from dashboard.components import graph, guarded, panel, status_area, table
from dashboard.data import Reader, refresh_now
from dashboard.figures import (
    complete_periods,
    make_alert_rate_figure,
    make_precision_recall_figure,
    make_score_histogram_figure,
)
from ecom.settings import Settings
from serving import queries

dash.register_page(__name__, path="/fraud", name="Fraud", title="Fraud alerts", order=1)

PAGE_SIZE = 15
SINCE = {
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(days=1),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
    "all": None,
}
SINCE_LABELS = {"1h": "last hour", "24h": "last 24 h", "7d": "last 7 days", "30d": "last 30 days", "all": "all time"}
STATUS_LABELS = {"open": "open", "confirmed_fraud": "confirmed fraud", "false_positive": "false positive"}
FILTER_IDS = {ids.FRAUD_MIN_SCORE, ids.FRAUD_REASON, ids.FRAUD_STATUS_FILTER, ids.FRAUD_SINCE}


def alert_columns(currency: str) -> list[dict]:
    return [
        {"name": "time (UTC)", "id": "created_at"},
        {"name": "score", "id": "fraud_score", "type": "numeric", "format": {"specifier": ".1f"}},
        {"name": "amount", "id": "amount_text"},
        {"name": currency, "id": "amount_reporting", "type": "numeric", "format": {"specifier": ",.2f"}},
        {"name": "customer", "id": "customer_id"},
        {"name": "why", "id": "reasons"},
        {"name": "model", "id": "model_version"},
        {"name": "status", "id": "status"},
        {"name": "note", "id": "note"},
    ]


def table_rows(alerts: pd.DataFrame) -> list[dict]:
    """Alert rows for the DataTable: row ``id`` = alert id (selection survives refreshes), readable values."""
    if alerts.empty:
        return []
    out = alerts.copy()
    out["id"] = out["alert_id"]
    out["created_at"] = pd.to_datetime(out["created_at"], utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
    out["amount_text"] = [
        f"{amount:,.2f} {currency}" if isinstance(currency, str) else f"{amount:,.2f}"
        for amount, currency in zip(out["amount"], out["currency"], strict=True)
    ]
    out["status"] = out["status"].map(lambda s: STATUS_LABELS.get(s, s))
    columns = [
        "id",
        "alert_id",
        "created_at",
        "fraud_score",
        "amount_text",
        "amount_reporting",
        "customer_id",
        "reasons",
        "model_version",
        "status",
        "note",
    ]
    return out[columns].astype(object).where(out[columns].notna(), None).to_dict("records")


def alert_filter(now: dt.datetime, min_score, reason, statuses, since_key) -> queries.AlertFilter:
    """The table's filters from the form values (empty values filter nothing)."""
    try:
        score = float(min_score) if min_score not in (None, "") else None
    except (TypeError, ValueError):
        score = None
    span = SINCE.get(since_key or "24h")
    return queries.AlertFilter(
        min_score=score,
        reason=(reason or "").strip() or None,
        statuses=tuple(s for s in (statuses or ()) if s in queries.ALERT_STATUSES),
        since=None if span is None else now - span,
    )


def load_table(
    reader: Reader,
    settings: Settings,
    now: dt.datetime,
    filters: queries.AlertFilter,
    sort_by,
    page: int,
    selected_ids,
) -> tuple:
    """The alerts of ``page`` (or the last page, if fewer match), the page shown, the page count, the matching
    count and the selection kept on the same alert."""
    sort = (sort_by or [{"column_id": "created_at", "direction": "desc"}])[0]
    column = {"amount_text": "amount", "amount_reporting": "amount_reporting"}.get(sort["column_id"], sort["column_id"])
    descending = sort["direction"] == "desc"
    alerts, total = reader.run(queries.alerts_page, filters, column, descending, page, PAGE_SIZE)
    pages = max(1, -(-min(total, queries.ALERT_COUNT_CAP) // PAGE_SIZE))
    if page >= pages:  # fewer alerts match than before: show the last page
        page = pages - 1
        alerts, total = reader.run(queries.alerts_page, filters, column, descending, page, PAGE_SIZE)
    rows = table_rows(alerts)
    selected = [i for i, row in enumerate(rows) if row["id"] in (selected_ids or [])]
    matching = (
        f"{queries.ALERT_COUNT_CAP:,}+ alerts match" if total > queries.ALERT_COUNT_CAP else f"{total:,} alerts match"
    )
    return rows, page, pages, matching, selected


def load_charts(reader: Reader, settings: Settings, now: dt.datetime) -> tuple:
    """Score distribution, alert rate over the last 24 h, precision and recall over 14 days."""
    since = (now - dt.timedelta(hours=24)).replace(second=0, microsecond=0)
    scores = reader.run(queries.score_distribution, now)
    rate = reader.run(queries.alert_rate_series, since, now, "hour")
    pr = reader.run(queries.precision_recall, now)
    return (
        make_score_histogram_figure(scores, settings.fraud.alert_threshold),
        make_alert_rate_figure(complete_periods(rate, since, now, "1h")),
        make_precision_recall_figure(pr),
    )


def _filters() -> dbc.Row:
    return dbc.Row(
        [
            dbc.Col(
                dbc.InputGroup(
                    [
                        dbc.InputGroupText("score ≥"),
                        dbc.Input(
                            id=ids.FRAUD_MIN_SCORE,
                            type="number",
                            min=0,
                            max=100,
                            step=1,
                            debounce=True,
                            persistence=True,
                            placeholder="any",
                        ),
                    ]
                ),
                xs=12,
                sm=6,
                lg=2,
            ),
            dbc.Col(
                dbc.Input(
                    id=ids.FRAUD_REASON,
                    placeholder="reason contains…",
                    debounce=True,
                    persistence=True,
                    list=ids.FRAUD_REASON_OPTIONS,
                    type="search",
                ),
                xs=12,
                sm=6,
                lg=3,
            ),
            dbc.Col(
                dbc.Checklist(
                    id=ids.FRAUD_STATUS_FILTER,
                    options=[{"label": label, "value": value} for value, label in STATUS_LABELS.items()],
                    value=list(STATUS_LABELS),
                    inline=True,
                    persistence=True,
                ),
                xs=12,
                lg=4,
                className="pt-2",
            ),
            dbc.Col(
                dbc.Select(
                    id=ids.FRAUD_SINCE,
                    options=[{"label": label, "value": key} for key, label in SINCE_LABELS.items()],
                    value="24h",
                    persistence=True,
                ),
                xs=12,
                sm=6,
                lg=3,
            ),
            html.Datalist(id=ids.FRAUD_REASON_OPTIONS),
        ],
        className="g-2 align-items-center",
    )


def _triage_panel() -> dbc.Card:
    return panel(
        "Triage",
        html.Div("Select an alert in the table.", id=ids.FRAUD_TRIAGE_SELECTED, className="small mb-2"),
        dbc.Textarea(id=ids.FRAUD_TRIAGE_NOTE, placeholder="note (what you checked)", rows=2, className="mb-2"),
        html.Div(
            [
                dbc.Button(
                    "Confirmed fraud",
                    id=ids.FRAUD_TRIAGE_CONFIRM,
                    color="danger",
                    size="sm",
                    className="me-2 mb-1",
                    disabled=True,
                ),
                dbc.Button(
                    "False positive",
                    id=ids.FRAUD_TRIAGE_FALSE_POSITIVE,
                    color="success",
                    size="sm",
                    className="mb-1",
                    disabled=True,
                ),
            ]
        ),
        html.Div(id=ids.FRAUD_TRIAGE_RESULT, className="small mt-2"),
        footer="A decision is stored and published to Kafka fraud-labels for the next `ecom train`.",
    )


def layout() -> html.Div:
    settings, _ = settings_and_reader()
    return html.Div(
        [
            status_area(ids.FRAUD_STATUS, ids.FRAUD_LAST_GOOD),
            dash.dcc.Store(id=ids.FRAUD_TRIAGE_DONE, data=0),
            _filters(),
            html.Div(id=ids.FRAUD_MATCHING, className="text-muted small my-2"),
            dbc.Row(
                [
                    dbc.Col(
                        table(
                            ids.FRAUD_ALERTS_TABLE,
                            alert_columns(settings.gold.reporting_currency),
                            page_size=PAGE_SIZE,
                            page_action="custom",
                            page_current=0,
                            page_count=1,
                            sort_action="custom",
                            sort_mode="single",
                            sort_by=[{"column_id": "created_at", "direction": "desc"}],
                            row_selectable="single",
                            selected_rows=[],
                        ),
                        xs=12,
                        xl=9,
                    ),
                    dbc.Col(_triage_panel(), xs=12, xl=3),
                ],
                className="g-3",
            ),
            dbc.Row(
                [
                    dbc.Col(panel(None, graph(ids.FRAUD_SCORE_HISTOGRAM, 300)), xs=12, lg=4),
                    dbc.Col(panel(None, graph(ids.FRAUD_ALERT_RATE, 300)), xs=12, lg=4),
                    dbc.Col(
                        panel(
                            None,
                            graph(ids.FRAUD_PRECISION_RECALL, 300),
                            footer="Precision: alerts labelled fraud / labelled alerts. Recall: orders labelled fraud "
                            "that alerted / orders labelled fraud. Labels: analysts' decisions (fraud_labels).",
                        ),
                        xs=12,
                        lg=4,
                    ),
                ],
                className="g-3 mt-1",
            ),
        ]
    )


@callback(
    Output(ids.FRAUD_ALERTS_TABLE, "data"),
    Output(ids.FRAUD_ALERTS_TABLE, "page_current"),
    Output(ids.FRAUD_ALERTS_TABLE, "page_count"),
    Output(ids.FRAUD_MATCHING, "children"),
    Output(ids.FRAUD_ALERTS_TABLE, "selected_rows"),
    Output(ids.FRAUD_SCORE_HISTOGRAM, "figure"),
    Output(ids.FRAUD_ALERT_RATE, "figure"),
    Output(ids.FRAUD_PRECISION_RECALL, "figure"),
    Output(ids.FRAUD_REASON_OPTIONS, "children"),
    Output(ids.FRAUD_STATUS, "children"),
    Output(ids.FRAUD_LAST_GOOD, "data"),
    Input(ids.REFRESH, "n_intervals"),
    Input(ids.FRAUD_MIN_SCORE, "value"),
    Input(ids.FRAUD_REASON, "value"),
    Input(ids.FRAUD_STATUS_FILTER, "value"),
    Input(ids.FRAUD_SINCE, "value"),
    Input(ids.FRAUD_ALERTS_TABLE, "page_current"),
    Input(ids.FRAUD_ALERTS_TABLE, "sort_by"),
    Input(ids.FRAUD_TRIAGE_DONE, "data"),
    State(ids.FRAUD_ALERTS_TABLE, "selected_row_ids"),
    State(ids.FRAUD_LAST_GOOD, "data"),
)
def refresh(_n, min_score, reason, statuses, since_key, page, sort_by, _done, selected_ids, last_good):
    settings, reader = settings_and_reader()
    now = refresh_now(settings.dashboard.refresh_ms)
    filters = alert_filter(now, min_score, reason, statuses, since_key)
    if ctx.triggered_id in FILTER_IDS:  # new filters start at the first page
        page = 0

    def build() -> tuple:
        table_part = load_table(reader, settings, now, filters, sort_by, int(page or 0), selected_ids)
        reasons = [html.Option(value=r) for r in reader.run(queries.alert_reasons)]
        return (*table_part, *load_charts(reader, settings, now), reasons)

    return guarded(build, 9, last_good)


@callback(
    Output(ids.FRAUD_TRIAGE_SELECTED, "children"),
    Output(ids.FRAUD_TRIAGE_CONFIRM, "disabled"),
    Output(ids.FRAUD_TRIAGE_FALSE_POSITIVE, "disabled"),
    Input(ids.FRAUD_ALERTS_TABLE, "selected_rows"),
    State(ids.FRAUD_ALERTS_TABLE, "data"),
)
def show_selection(selected_rows, rows):
    if not selected_rows or not rows or selected_rows[0] >= len(rows):
        return "Select an alert in the table.", True, True
    row = rows[selected_rows[0]]
    return (
        [
            html.Strong(f"{row['customer_id']} · score {row['fraud_score']:.1f} · {row['amount_text']}"),
            html.Br(),
            html.Span(f"{row['created_at']} UTC, now {row['status']}", className="text-muted"),
        ],
        False,
        False,
    )


@callback(
    Output(ids.FRAUD_TRIAGE_RESULT, "children"),
    Output(ids.FRAUD_TRIAGE_DONE, "data"),
    Output(ids.FRAUD_TRIAGE_NOTE, "value"),
    Input(ids.FRAUD_TRIAGE_CONFIRM, "n_clicks"),
    Input(ids.FRAUD_TRIAGE_FALSE_POSITIVE, "n_clicks"),
    State(ids.FRAUD_ALERTS_TABLE, "selected_row_ids"),
    State(ids.FRAUD_TRIAGE_NOTE, "value"),
    State(ids.FRAUD_TRIAGE_DONE, "data"),
    prevent_initial_call=True,
)
def decide(_confirm, _false_positive, selected_ids, note, done):
    from dashboard.triage import triage

    if not selected_ids:
        return dbc.Alert("Select an alert first.", color="secondary", className="py-1"), no_update, no_update
    decision = "confirmed_fraud" if ctx.triggered_id == ids.FRAUD_TRIAGE_CONFIRM else "false_positive"
    settings, _ = settings_and_reader()
    analyst = auth.current_user() or "anonymous"
    try:
        message = triage(settings, selected_ids[0], decision, note or "", analyst)
    except Exception as exc:  # noqa: BLE001 - shown to the analyst, never a traceback
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return dbc.Alert(f"Not saved: {first}", color="danger", className="py-1"), no_update, no_update
    text = f"Saved as {STATUS_LABELS[decision]}; label sent for {message['transaction_id']}."
    return dbc.Alert(text, color="success", className="py-1 triage-saved"), (done or 0) + 1, ""
