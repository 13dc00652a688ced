"""Pipeline health page: throughput, consumer lag, micro-batches, latency, quarantine, late events, batch jobs, model.

PostgreSQL gives the minute metrics (orders per second, late events), the
stream's micro-batch bookkeeping (``pipeline_batches``: start to PostgreSQL
commit), the newest orders' end-to-end latency, ``quarantine_counts`` and the
gold batch runs (``batch_runs``). Kafka end offsets against the stream's
checkpoint give the lag per partition, the MLflow registry the champion. A
source that does not answer is named on its panel; the rest still shows.
"""

from __future__ import annotations

import datetime as dt
import json

import dash
import dash_bootstrap_components as dbc
import pandas as pd
from dash import Input, Output, State, callback, html

from dashboard import health, ids
from dashboard.app import settings_and_reader
from dashboard.components import LOADING, graph, guarded, panel, status_area, table
from dashboard.data import Reader, refresh_now
from dashboard.figures import (
    complete_periods,
    make_batch_duration_figure,
    make_lag_figure,
    make_late_events_figure,
    make_latency_figure,
    make_quarantine_figure,
    make_throughput_figure,
)
from ecom.settings import Settings
from serving import queries

dash.register_page(__name__, path="/health", name="Pipeline health", title="Pipeline health", order=4)

JOB_COLUMNS = [
    {"name": "job", "id": "job"},
    {"name": "last success (UTC)", "id": "last_success_at"},
    {"name": "age", "id": "success_age"},
    {"name": "rows written", "id": "rows"},
    {"name": "latest run", "id": "last_status"},
    {"name": "error", "id": "last_error"},
]


def age_text(seconds: float | None) -> str:
    """``42 s``, ``7 min``, ``3.5 h``, ``2.0 days``; ``–`` when unknown."""
    if seconds is None or pd.isna(seconds):
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def job_rows(jobs: pd.DataFrame, now: dt.datetime) -> list[dict]:
    """The batch-jobs table: last success and its age, total rows it wrote, the latest run's status."""
    rows = []
    for job in jobs.itertuples():
        success = job.last_success_at if job.last_success_at is not None and not pd.isna(job.last_success_at) else None
        written = json.loads(job.last_success_rows) if isinstance(job.last_success_rows, str) else {}
        rows.append(
            {
                "job": job.job,
                "last_success_at": f"{success:%Y-%m-%d %H:%M:%S}" if success else "never",
                "success_age": age_text((now - success).total_seconds()) if success else "–",
                "rows": f"{sum(written.values()):,}" if written else "–",
                "last_status": job.last_status,
                "last_error": (job.last_error or "")[:160] or None,
            }
        )
    return rows


def health_cards(
    throughput: pd.DataFrame,
    lag: pd.DataFrame,
    batches: pd.DataFrame,
    latency: pd.DataFrame,
    model: dict | None,
    model_error: str | None,
    in_use: dict,
    now: dt.datetime,
) -> list[dbc.Col]:
    """Headline numbers: orders/s in the last complete minute, total lag, median batch, p95 latency, champion."""
    complete = throughput[throughput["period"] < pd.Timestamp(now).floor("min")].dropna(subset=["orders"])
    rate = f"{complete['orders'].iloc[-1] / 60:,.1f}" if len(complete) else "–"
    total_lag = f"{int(lag['lag'].sum()):,}" if len(lag) else "–"
    batch = f"{batches['duration_ms'].median():,.0f} ms" if len(batches) else "–"
    p95 = f"{latency['p95_s'].iloc[-1]:.1f} s" if len(latency) else "–"
    if model_error:
        champion, detail = "?", model_error
    elif model is None:
        champion, detail = "none", "no model registered: run `ecom train`"
    else:
        champion = f"v{model['version']}"
        detail = f"registered {age_text((now - model['registered_at']).total_seconds())} ago"
    used = in_use.get("model_version")
    if used:
        detail += f"; newest order scored by v{used}"

    def card(title: str, value: str, note: str, value_id: str) -> dbc.Col:
        body = [
            html.H6(title, className="text-muted"),
            html.Div(value, id=value_id, className="fs-4 fw-semibold"),
            html.Div(note, className="small text-muted"),
        ]
        return dbc.Col(dbc.Card(dbc.CardBody(body), className="h-100"), xs=6, md=4, xl=2)

    return [
        card("Orders/s", rate, "last complete minute", "health-orders-per-s"),
        card("Consumer lag", total_lag, "records, all partitions", "health-total-lag"),
        card("Micro-batch", batch, "median, start to commit", "health-batch-median"),
        card("Latency p95", p95, "order to PostgreSQL, newest minute", "health-latency-p95"),
        dbc.Col(
            dbc.Card(
                dbc.CardBody(
                    [
                        html.H6("Champion model", className="text-muted"),
                        html.Div(champion, id="health-champion", className="fs-4 fw-semibold"),
                        html.Div(detail, className="small text-muted"),
                    ]
                ),
                className="h-100",
            ),
            xs=12,
            md=8,
            xl=4,
        ),
    ]


def _lag(settings: Settings) -> tuple[pd.DataFrame, dict]:
    """Lag frame and its figure; Kafka or checkpoint trouble becomes the figure's message."""
    try:
        lag, source = health.consumer_lag(settings)
    except Exception as exc:  # noqa: BLE001 - one source down must not blank the page
        message = f"Kafka or the checkpoint did not answer ({type(exc).__name__})"
        return pd.DataFrame(columns=["partition", "lag"]), make_lag_figure(pd.DataFrame(), message)
    return lag, make_lag_figure(lag, source)


def _champion(settings: Settings) -> tuple[dict | None, str | None]:
    try:
        return health.champion(settings), None
    except Exception as exc:  # noqa: BLE001
        return None, f"MLflow registry did not answer ({type(exc).__name__})"


def load(reader: Reader, settings: Settings, now: dt.datetime) -> tuple:
    """Cards, throughput, lag, batch durations, latency, quarantine, late events, the batch-jobs table."""
    hour_ago = (now - dt.timedelta(hours=1)).replace(second=0, microsecond=0)
    day_ago = (now - dt.timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
    throughput = complete_periods(
        reader.run(queries.summary_series, hour_ago, now, "minute", ("orders",)), hour_ago, now, "1min"
    )
    late = reader.run(queries.summary_series, day_ago, now, "hour", ("late_events",))
    batches = reader.run(queries.batch_durations)
    latency = reader.run(queries.served_latency, now)
    quarantine = reader.run(queries.quarantine_by_reason, now - dt.timedelta(hours=24))
    jobs = reader.run(queries.batch_jobs)
    in_use = reader.run(queries.model_in_use)
    lag, lag_figure = _lag(settings)
    model, model_error = _champion(settings)
    return (
        health_cards(throughput, lag, batches, latency, model, model_error, in_use, now),
        make_throughput_figure(throughput),
        lag_figure,
        make_batch_duration_figure(batches),
        make_latency_figure(latency),
        make_quarantine_figure(quarantine),
        make_late_events_figure(late),
        job_rows(jobs, now),
    )


layout = html.Div(
    [
        status_area(ids.HEALTH_STATUS, ids.HEALTH_LAST_GOOD),
        dbc.Row([dbc.Col(dbc.Card(dbc.CardBody(LOADING)), xs=12)], className="g-3", id=ids.HEALTH_CARDS),
        dbc.Row(
            [
                dbc.Col(panel(None, graph(ids.HEALTH_THROUGHPUT, 280)), xs=12, lg=6),
                dbc.Col(panel(None, graph(ids.HEALTH_LAG, 280)), xs=12, lg=6),
            ],
            className="g-3 mt-1",
        ),
        dbc.Row(
            [
                dbc.Col(panel(None, graph(ids.HEALTH_BATCHES, 280)), xs=12, lg=6),
                dbc.Col(panel(None, graph(ids.HEALTH_LATENCY, 280)), xs=12, lg=6),
            ],
            className="g-3 mt-1",
        ),
        dbc.Row(
            [
                dbc.Col(panel(None, graph(ids.HEALTH_QUARANTINE, 280)), xs=12, lg=6),
                dbc.Col(panel(None, graph(ids.HEALTH_LATE, 280)), xs=12, lg=6),
            ],
            className="g-3 mt-1",
        ),
        dbc.Row(
            dbc.Col(panel("Gold batch jobs (batch_runs)", table(ids.HEALTH_JOBS, JOB_COLUMNS, page_size=10)), xs=12),
            className="g-3 mt-1",
        ),
    ]
)


@callback(
    Output(ids.HEALTH_CARDS, "children"),
    Output(ids.HEALTH_THROUGHPUT, "figure"),
    Output(ids.HEALTH_LAG, "figure"),
    Output(ids.HEALTH_BATCHES, "figure"),
    Output(ids.HEALTH_LATENCY, "figure"),
    Output(ids.HEALTH_QUARANTINE, "figure"),
    Output(ids.HEALTH_LATE, "figure"),
    Output(ids.HEALTH_JOBS, "data"),
    Output(ids.HEALTH_STATUS, "children"),
    Output(ids.HEALTH_LAST_GOOD, "data"),
    Input(ids.REFRESH, "n_intervals"),
    State(ids.HEALTH_LAST_GOOD, "data"),
)
def refresh(_n, last_good):
    settings, reader = settings_and_reader()
    now = refresh_now(settings.dashboard.refresh_ms)
    return guarded(lambda: load(reader, settings, now), 8, last_good)
