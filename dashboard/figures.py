"""Pure figure builders: ``make_*_figure(df, ...) -> dict``, called by the pages and by tests without a browser.

Layer: dashboard. Input: the DataFrames of ``serving.queries``. Output: Plotly
figures as plain ``{"data": [...], "layout": {...}}`` dicts, which ``dcc.Graph``
draws as they are: building ``go.Figure`` objects (validation, and a deep copy
of the dark template each time) cost most of a refresh's time, the queries
little. An empty frame gives an empty figure whose message names the command
that fills it; nothing is ever made up. Every figure keeps a ``uirevision``,
so a refresh keeps the reader's zoom and hidden traces. Times are UTC.
"""

from __future__ import annotations

import math

import pandas as pd

BLUE, GREEN, RED, ORANGE, PURPLE, GREY = "#2a9fd6", "#77b300", "#cc0000", "#ff8800", "#9933cc", "#888888"
PALETTE = [BLUE, GREEN, ORANGE, PURPLE, "#e83e8c", "#20c997", "#ffc107", "#6f42c1", "#17a2b8", "#fd7e14"]
MARGIN = {"l": 48, "r": 48, "t": 44, "b": 36}
AXIS = {"gridcolor": "#333", "zerolinecolor": "#555", "linecolor": "#444", "automargin": True}
BLUES = [[0, "#0d1b2a"], [0.5, "#1f6fa3"], [1, "#8fd3ff"]]  # dark-to-light scale for heatmaps on a dark page

# which command fills the data of a figure (empty states name it)
FILLED_BY = {
    "summaries": "ecom stream gold (live minutes) or ecom batch daily",
    "daily": "ecom batch daily",
    "stream": "ecom stream all",
    "scores": "ecom train, then ecom stream all",
    "labels": "mark alerts in the table as confirmed fraud or false positive",
}


def _values(series: pd.Series) -> list:
    """JSON-ready values: NaN -> None (a gap), numpy scalars -> Python."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in series.tolist()]


def _times(series: pd.Series) -> list[int]:
    """UTC times as milliseconds since the epoch, which a Plotly date axis reads as dates (no text formatting)."""
    stamps = series if isinstance(series.dtype, pd.DatetimeTZDtype) else pd.to_datetime(series, utc=True)
    return (stamps.to_numpy(dtype="datetime64[ns]").view("int64") // 1_000_000).tolist()


def _axis(**kwargs) -> dict:
    return {**AXIS, **kwargs}


def _figure(data: list[dict], title: str, **layout) -> dict:
    """A figure with the shared dark look (transparent, compact margins, legend below); ``layout`` overrides."""
    base = {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "font": {"color": "#ddd"},
        "colorway": PALETTE,
        "margin": MARGIN,
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "legend": {"orientation": "h", "y": -0.18},
        "hoverlabel": {"bgcolor": "#222"},
        "xaxis": _axis(),
        "yaxis": _axis(),
        "uirevision": title,
    }
    return {"data": data, "layout": {**base, **layout}}


def make_empty_figure(title: str, message: str, command: str | None = None) -> dict:
    """A figure with no data and a note in the middle: what is missing, and which command fills it."""
    text = message if not command else f"{message}<br>run <b>{command}</b>"
    note = {
        "text": text,
        "showarrow": False,
        "xref": "paper",
        "yref": "paper",
        "x": 0.5,
        "y": 0.5,
        "font": {"color": GREY},
    }
    hidden = {"visible": False}
    return _figure([], title, xaxis=hidden, yaxis=hidden, annotations=[note])


def complete_periods(df: pd.DataFrame, start, end, freq: str, column: str = "period") -> pd.DataFrame:
    """``df`` with a row for every period from ``start`` to ``end`` (exclusive); periods without data get NaN,
    so lines break there instead of drawing through them."""
    index = pd.date_range(pd.Timestamp(start).floor(freq), pd.Timestamp(end), freq=freq, inclusive="left")
    if index.tz is None:
        index = index.tz_localize("UTC")
    values = df.drop(columns=[column]).astype(float)
    values.index = pd.DatetimeIndex(pd.to_datetime(df[column], utc=True))
    return values.reindex(index).rename_axis(column).reset_index()


def make_timeseries_figure(df: pd.DataFrame, currency: str = "USD", title: str = "Orders and revenue") -> dict:
    """Orders (bars, left axis) and revenue (line, right axis) per period from ``period, orders, revenue``.
    Both axes start at zero, so the two zeros line up; periods with NaN break the line."""
    if df.empty or df[["orders", "revenue"]].isna().all().all():
        return make_empty_figure(title, "no minute metrics in this range yet", FILLED_BY["summaries"])
    x = _times(df["period"])
    data = [
        {
            "type": "bar",
            "x": x,
            "y": _values(df["orders"]),
            "name": "orders",
            "marker": {"color": BLUE},
            "opacity": 0.85,
        },
        {
            "type": "scatter",
            "mode": "lines",
            "x": x,
            "y": _values(df["revenue"]),
            "name": f"revenue ({currency})",
            "yaxis": "y2",
            "line": {"color": GREEN, "width": 2},
            "connectgaps": False,
        },
    ]
    return _figure(
        data,
        title,
        xaxis=_axis(type="date"),
        yaxis=_axis(title={"text": "orders"}, rangemode="tozero"),
        yaxis2=_axis(title={"text": currency}, overlaying="y", side="right", rangemode="tozero", showgrid=False),
        bargap=0.1,
        hovermode="x unified",
    )


def make_breakdown_figure(
    df: pd.DataFrame, title: str, currency: str = "USD", kind: str = "bar", empty: str = "no sales in this range yet"
) -> dict:
    """Revenue per value (``name, orders, revenue``): horizontal bars, or a donut with ``kind='pie'``."""
    if df.empty:
        return make_empty_figure(title, empty, FILLED_BY["summaries"])
    if kind == "pie":
        pie = {
            "type": "pie",
            "labels": df["name"].tolist(),
            "values": _values(df["revenue"]),
            "hole": 0.5,
            "sort": False,
            "marker": {"colors": PALETTE},
            "customdata": _values(df["orders"]),
            "hovertemplate": "%{label}: %{value:,.0f} " + currency + " (%{percent}), %{customdata:,.0f} orders"
            "<extra></extra>",
        }
        legend = {"orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.02, "yanchor": "top"}
        return _figure([pie], title, margin={"l": 10, "r": 10, "t": 44, "b": 40}, legend=legend)
    ordered = df.sort_values("revenue")
    bar = {
        "type": "bar",
        "orientation": "h",
        "x": _values(ordered["revenue"]),
        "y": ordered["name"].tolist(),
        "marker": {"color": BLUE},
        "customdata": _values(ordered["orders"]),
        "hovertemplate": "%{y}: %{x:,.0f} " + currency + ", %{customdata:,.0f} orders<extra></extra>",
    }
    return _figure([bar], title, xaxis=_axis(title={"text": currency}, rangemode="tozero"), margin={**MARGIN, "l": 100})


def make_score_histogram_figure(df: pd.DataFrame, threshold: float) -> dict:
    """Scored orders per fraud-score bucket (``bucket_start, orders``), alert threshold marked, log scale."""
    title = "Fraud score distribution (newest orders)"
    if df.empty:
        return make_empty_figure(title, "no scored orders in the last 24 h", FILLED_BY["scores"])
    colors = [RED if start >= threshold else BLUE for start in df["bucket_start"]]
    bar = {
        "type": "bar",
        "x": _values(df["bucket_start"]),
        "y": _values(df["orders"]),
        "marker": {"color": colors},
        "name": "orders",
        "offset": 0,
        "width": float(df["bucket_start"].diff().min() or 5),
    }
    line = {
        "type": "line",
        "x0": threshold,
        "x1": threshold,
        "xref": "x",
        "y0": 0,
        "y1": 1,
        "yref": "paper",
        "line": {"color": ORANGE, "dash": "dash"},
    }
    note = {
        "text": f"alert at {threshold:g}",
        "x": threshold,
        "xref": "x",
        "y": 1,
        "yref": "paper",
        "showarrow": False,
        "xanchor": "left",
        "font": {"color": ORANGE},
    }
    return _figure(
        [bar],
        title,
        xaxis=_axis(title={"text": "score"}, range=[0, 100]),
        yaxis=_axis(title={"text": "orders"}, type="log"),
        shapes=[line],
        annotations=[note],
    )


def make_alert_rate_figure(df: pd.DataFrame) -> dict:
    """Alerts per scored order over time, from ``period, alerts, scored`` (periods without scored orders are
    gaps)."""
    title = "Alert rate, last 24 h"
    if df.empty or not (df["scored"].fillna(0) > 0).any():
        return make_empty_figure(title, "no scored orders in the minute metrics of 24 h", FILLED_BY["summaries"])
    rate = 100 * df["alerts"] / df["scored"].where(df["scored"] > 0)
    line = {
        "type": "scatter",
        "mode": "lines+markers",
        "x": _times(df["period"]),
        "y": _values(rate),
        "line": {"color": ORANGE},
        "connectgaps": False,
        "name": "alert rate",
    }
    return _figure(
        [line],
        title,
        xaxis=_axis(type="date"),
        yaxis=_axis(title={"text": "% of orders"}, rangemode="tozero"),
        hovermode="x unified",
    )


def make_precision_recall_figure(df: pd.DataFrame) -> dict:
    """Daily precision and recall (0-1) where labels exist, from ``precision_recall``."""
    title = "Precision and recall by day"
    if df.empty or df[["precision", "recall"]].isna().all().all():
        return make_empty_figure(title, "no labelled alerts or orders in the last 14 days:<br>" + FILLED_BY["labels"])
    x = _times(df["day"])
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "x": x,
            "y": _values(df["precision"]),
            "name": "precision",
            "line": {"color": BLUE},
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "x": x,
            "y": _values(df["recall"]),
            "name": "recall",
            "line": {"color": GREEN},
        },
    ]
    return _figure(
        data, title, xaxis=_axis(type="date"), yaxis=_axis(range=[0, 1.05], tickformat=".0%"), hovermode="x unified"
    )


# -- customers --------------------------------------------------------------------------------------
def segment_sizes(df: pd.DataFrame) -> pd.DataFrame:
    """(segment, previous segment) rows -> one row per segment: customers, monetary, avg_monetary."""
    sizes = df.groupby("segment", as_index=False)[["customers", "monetary"]].sum()
    sizes["avg_monetary"] = sizes["monetary"] / sizes["customers"]
    return sizes.sort_values(["customers", "segment"], ascending=[False, True], ignore_index=True)


def make_segment_treemap_figure(df: pd.DataFrame, currency: str = "USD") -> dict:
    """RFM segments sized by customers, coloured by revenue per customer."""
    title = "RFM segments: customers (size), revenue per customer (colour)"
    if df.empty:
        return make_empty_figure(title, "no RFM segments yet", FILLED_BY["daily"])
    sizes = segment_sizes(df)
    treemap = {
        "type": "treemap",
        "labels": sizes["segment"].tolist(),
        "parents": [""] * len(sizes),
        "values": _values(sizes["customers"]),
        "customdata": [[m, a] for m, a in zip(_values(sizes["monetary"]), _values(sizes["avg_monetary"]), strict=True)],
        "marker": {"colors": _values(sizes["avg_monetary"]), "colorscale": BLUES, "showscale": False},
        "texttemplate": "%{label}<br>%{value:,} customers",
        "hovertemplate": "%{label}<br>%{value:,} customers<br>%{customdata[0]:,.0f} "
        + currency
        + " (%{customdata[1]:,.0f} per customer)<extra></extra>",
    }
    return _figure([treemap], title, margin={"l": 4, "r": 4, "t": 44, "b": 4})


def make_segment_movement_figure(df: pd.DataFrame) -> dict:
    """Customers per (previous segment -> segment) since the previous RFM run; ``(new)`` had none."""
    title = "Movement between segments since the previous run"
    moved = df.assign(previous_segment=df["previous_segment"].replace("", "(new)")) if not df.empty else df
    if moved.empty or (moved["previous_segment"] == "(new)").all():
        return make_empty_figure(title, "one RFM run so far: movement shows after the next", FILLED_BY["daily"])
    matrix = moved.pivot_table(index="previous_segment", columns="segment", values="customers", aggfunc="sum")
    matrix = matrix.fillna(0)
    heatmap = {
        "type": "heatmap",
        "z": matrix.values.tolist(),
        "x": matrix.columns.tolist(),
        "y": matrix.index.tolist(),
        "colorscale": BLUES,
        "showscale": False,
        "texttemplate": "%{z:,.0f}",
        "hovertemplate": "%{y} → %{x}: %{z:,.0f} customers<extra></extra>",
    }
    return _figure(
        [heatmap],
        title,
        xaxis=_axis(title={"text": "now"}, tickangle=-35),
        yaxis=_axis(title={"text": "before"}),
        margin={**MARGIN, "l": 120, "b": 90},
    )


def make_cohort_heatmap_figure(df: pd.DataFrame) -> dict:
    """Retention (active / cohort size) per cohort month and months since the first order."""
    title = "Cohort retention"
    if df.empty:
        return make_empty_figure(title, "no cohorts yet", FILLED_BY["daily"])
    matrix = df.pivot_table(index="cohort_month", columns="months_since_first", values="retention_rate")
    z = [[None if pd.isna(v) else float(v) for v in row] for row in matrix.values]
    heatmap = {
        "type": "heatmap",
        "z": z,
        "x": [int(c) for c in matrix.columns],
        "y": [pd.Timestamp(m).strftime("%Y-%m") for m in matrix.index],
        "colorscale": BLUES,
        "zmin": 0,
        "zmax": 1,
        "texttemplate": "%{z:.0%}",
        "colorbar": {"tickformat": ".0%"},
        "hovertemplate": "cohort %{y}, month %{x}: %{z:.1%} active<extra></extra>",
    }
    return _figure(
        [heatmap],
        title,
        xaxis=_axis(title={"text": "months since the first order"}, dtick=1),
        yaxis=_axis(autorange="reversed", type="category"),
    )


def make_cohort_revenue_figure(df: pd.DataFrame, currency: str = "USD") -> dict:
    """Revenue per cohort month (all months since the first order together)."""
    title = "Revenue by cohort"
    if df.empty:
        return make_empty_figure(title, "no cohorts yet", FILLED_BY["daily"])
    totals = df.groupby("cohort_month", as_index=False)["revenue"].sum()
    bar = {
        "type": "bar",
        "x": [pd.Timestamp(m).strftime("%Y-%m") for m in totals["cohort_month"]],
        "y": _values(totals["revenue"]),
        "marker": {"color": GREEN},
    }
    return _figure(
        [bar], title, xaxis=_axis(type="category"), yaxis=_axis(title={"text": currency}, rangemode="tozero")
    )


# -- products ---------------------------------------------------------------------------------------
def make_best_sellers_figure(df: pd.DataFrame, currency: str = "USD") -> dict:
    """The best-selling products by revenue (``product_id, category, revenue, units_sold``)."""
    title = "Best sellers by revenue"
    if df.empty:
        return make_empty_figure(title, "no product sales yet", FILLED_BY["daily"])
    ordered = df.sort_values("revenue")
    bar = {
        "type": "bar",
        "orientation": "h",
        "x": _values(ordered["revenue"]),
        "y": ordered["product_id"].tolist(),
        "marker": {"color": BLUE},
        "customdata": [
            [c, u] for c, u in zip(ordered["category"].tolist(), _values(ordered["units_sold"]), strict=True)
        ],
        "hovertemplate": "%{y} (%{customdata[0]}): %{x:,.0f} " + currency + ", %{customdata[1]:,} units<extra></extra>",
    }
    return _figure(
        [bar],
        title,
        xaxis=_axis(title={"text": currency}, rangemode="tozero"),
        yaxis=_axis(type="category"),
        margin={**MARGIN, "l": 80},
    )


# -- pipeline health --------------------------------------------------------------------------------
def make_throughput_figure(df: pd.DataFrame) -> dict:
    """Orders per second, per minute (``period, orders``; NaN periods are gaps)."""
    title = "Orders per second, last hour"
    if df.empty or df["orders"].isna().all():
        return make_empty_figure(title, "no minute metrics in the last hour", FILLED_BY["summaries"])
    line = {
        "type": "scatter",
        "mode": "lines+markers",
        "x": _times(df["period"]),
        "y": _values(df["orders"] / 60),
        "line": {"color": BLUE},
        "marker": {"size": 4},
        "connectgaps": False,
        "name": "orders/s",
    }
    return _figure(
        [line],
        title,
        xaxis=_axis(type="date"),
        yaxis=_axis(title={"text": "orders/s"}, rangemode="tozero"),
        hovermode="x unified",
    )


def make_lag_figure(df: pd.DataFrame, note: str | None = None) -> dict:
    """Consumer lag per Kafka partition (``partition, lag``): records the stream has not committed yet."""
    title = "Consumer lag per partition"
    if df.empty:
        return make_empty_figure(title, note or "no stream progress found", FILLED_BY["stream"])
    lags = _values(df["lag"])
    bar = {
        "type": "bar",
        "x": [f"partition {p}" for p in df["partition"]],
        "y": lags,
        "text": lags,
        "textposition": "auto",
        "marker": {"color": PURPLE},
    }
    layout = {"yaxis": _axis(title={"text": "records behind"}, rangemode="tozero"), "margin": {**MARGIN, "b": 64}}
    if note:
        layout["annotations"] = [
            {
                "text": note,
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0,
                "y": -0.2,
                "yanchor": "top",
                "xanchor": "left",
                "font": {"size": 10, "color": GREY},
            }
        ]
    return _figure([bar], title, **layout)


def make_batch_duration_figure(df: pd.DataFrame) -> dict:
    """Micro-batch durations (start -> PostgreSQL commit) of the newest batches, with their sizes."""
    title = "Micro-batch durations (start to PostgreSQL commit)"
    if df.empty:
        return make_empty_figure(title, "no micro-batches recorded yet", FILLED_BY["stream"])
    line = {
        "type": "scatter",
        "mode": "markers+lines",
        "x": _times(df["committed_at"]),
        "y": _values(df["duration_ms"]),
        "line": {"color": GREEN, "width": 1},
        "customdata": df[["batch_id", "rows"]].to_numpy().tolist(),
        "hovertemplate": "batch %{customdata[0]}: %{y:,.0f} ms, %{customdata[1]:,} rows<extra></extra>",
    }
    return _figure([line], title, xaxis=_axis(type="date"), yaxis=_axis(title={"text": "ms"}, rangemode="tozero"))


def make_latency_figure(df: pd.DataFrame) -> dict:
    """End-to-end latency of live orders per minute (``minute, p50_s, p95_s``)."""
    title = "End-to-end latency (order to PostgreSQL)"
    if df.empty:
        return make_empty_figure(title, "no live orders in the last 10 minutes", FILLED_BY["stream"])
    x = _times(df["minute"])
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "x": x,
            "y": _values(df["p50_s"]),
            "name": "p50",
            "line": {"color": BLUE},
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "x": x,
            "y": _values(df["p95_s"]),
            "name": "p95",
            "line": {"color": ORANGE},
        },
    ]
    return _figure(
        data,
        title,
        xaxis=_axis(type="date"),
        yaxis=_axis(title={"text": "seconds"}, rangemode="tozero"),
        hovermode="x unified",
    )


def make_quarantine_figure(df: pd.DataFrame) -> dict:
    """Quarantined records per reason (``reason, records``)."""
    title = "Quarantine by reason, last 24 h"
    if df.empty:
        return make_empty_figure(title, "no quarantined records recorded in 24 h", "ecom reconcile (lake counts)")
    ordered = df.sort_values("records")
    bar = {
        "type": "bar",
        "orientation": "h",
        "x": _values(ordered["records"]),
        "y": ordered["reason"].tolist(),
        "marker": {"color": RED},
    }
    return _figure(
        [bar], title, xaxis=_axis(title={"text": "records"}, rangemode="tozero"), margin={**MARGIN, "l": 130}
    )


def make_late_events_figure(df: pd.DataFrame) -> dict:
    """Events later than the watermark per period (``period, late_events``), counted by the live metrics."""
    title = "Late events (after the watermark), last 24 h"
    if df.empty:
        return make_empty_figure(title, "no minute metrics in 24 h", FILLED_BY["summaries"])
    if not (df["late_events"].fillna(0) > 0).any():
        return make_empty_figure(title, "no late events in 24 h")
    bar = {"type": "bar", "x": _times(df["period"]), "y": _values(df["late_events"]), "marker": {"color": ORANGE}}
    return _figure([bar], title, xaxis=_axis(type="date"), yaxis=_axis(title={"text": "events"}, rangemode="tozero"))
