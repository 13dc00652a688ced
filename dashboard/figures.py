"""Pure figure builders: ``make_*_figure(df) -> go.Figure``, called by pages and by tests without a browser."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

TEMPLATE = "plotly_dark"


def _empty(title: str, message: str = "waiting for data") -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=title,
        template=TEMPLATE,
        annotations=[{"text": message, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}],
    )
    return fig


def make_timeseries_figure(df: pd.DataFrame) -> go.Figure:
    """Orders per minute (bars) and revenue per minute (line) from ``minute, transactions, revenue``."""
    title = "Orders and revenue per minute"
    if df.empty:
        return _empty(title)
    fig = go.Figure()
    fig.add_bar(x=df["minute"], y=df["transactions"], name="orders", marker_color="#2a9fd6")
    fig.add_scatter(x=df["minute"], y=df["revenue"], name="revenue", yaxis="y2", mode="lines", line_color="#77b300")
    fig.update_layout(
        title=title,
        template=TEMPLATE,
        yaxis={"title": "orders"},
        yaxis2={"title": "revenue", "overlaying": "y", "side": "right"},
        legend={"orientation": "h"},
        margin={"l": 50, "r": 50, "t": 50, "b": 40},
    )
    return fig


def make_payment_figure(df: pd.DataFrame) -> go.Figure:
    """Revenue share by payment method from ``payment_method, revenue``."""
    title = "Revenue by payment method"
    if df.empty:
        return _empty(title)
    fig = go.Figure(go.Pie(labels=df["payment_method"], values=df["revenue"], hole=0.45))
    fig.update_layout(title=title, template=TEMPLATE, margin={"l": 20, "r": 20, "t": 50, "b": 20})
    return fig


def make_score_histogram_figure(df: pd.DataFrame, threshold: float) -> go.Figure:
    """Scored orders per fraud-score bucket, with the alert threshold marked."""
    title = "Fraud score distribution"
    if df.empty:
        return _empty(title, "no scored orders yet")
    colors = ["#cc0000" if start >= threshold else "#2a9fd6" for start in df["bucket_start"]]
    fig = go.Figure(go.Bar(x=df["bucket_start"], y=df["orders"], marker_color=colors, name="orders"))
    fig.add_vline(x=threshold, line_dash="dash", line_color="#ff8800", annotation_text=f"alert at {threshold:g}")
    fig.update_layout(
        title=title,
        template=TEMPLATE,
        xaxis={"title": "score", "range": [0, 100]},
        yaxis={"title": "orders", "type": "log"},
    )
    return fig
