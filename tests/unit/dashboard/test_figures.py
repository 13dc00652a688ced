"""Figure builders, without a browser: what each draws from a tiny frame, and the empty states."""

import datetime as dt
import math

import pandas as pd

from dashboard import figures as f


def ms(text: str) -> int:
    """Milliseconds since the epoch of a UTC time, worked out with the standard library."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


def test_timeseries_plots_orders_and_revenue_on_axes_that_both_start_at_zero():
    df = pd.DataFrame(
        {"period": pd.to_datetime(["2026-11-25 10:00", "2026-11-25 10:01"], utc=True), "orders": [3, 5],
         "revenue": [30.0, 55.5]}
    )  # fmt: skip
    fig = f.make_timeseries_figure(df, "EUR")
    assert [trace["name"] for trace in fig["data"]] == ["orders", "revenue (EUR)"]
    assert fig["data"][0]["y"] == [3, 5] and fig["data"][1]["y"] == [30.0, 55.5]
    assert fig["data"][1]["yaxis"] == "y2"
    layout = fig["layout"]
    assert layout["yaxis"]["rangemode"] == "tozero" and layout["yaxis2"]["rangemode"] == "tozero"
    assert fig["data"][0]["x"] == [ms("2026-11-25 10:00"), ms("2026-11-25 10:01")]
    assert layout["xaxis"]["type"] == "date"  # milliseconds since the epoch on a date axis


def test_a_minute_without_data_breaks_the_revenue_line_instead_of_bridging_it():
    df = pd.DataFrame(
        {"period": pd.to_datetime(["2026-11-25 10:00", "2026-11-25 10:02"], utc=True), "orders": [3, 4],
         "revenue": [30.0, 40.0]}
    )  # fmt: skip
    start = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
    complete = f.complete_periods(df, start, start + dt.timedelta(minutes=3), "1min")
    fig = f.make_timeseries_figure(complete)
    revenue = fig["data"][1]
    assert revenue["x"] == [ms("2026-11-25 10:00"), ms("2026-11-25 10:01"), ms("2026-11-25 10:02")]
    assert revenue["y"] == [30.0, None, 40.0]
    assert revenue["connectgaps"] is False


def test_complete_periods_fills_missing_buckets_with_nan_and_keeps_known_ones():
    df = pd.DataFrame({"period": pd.to_datetime(["2026-11-25 10:00"], utc=True), "orders": [7]})
    start = dt.datetime(2026, 11, 25, 9, 59, 30, tzinfo=dt.UTC)  # rounded down to the bucket
    out = f.complete_periods(df, start, start + dt.timedelta(minutes=2), "1min")
    assert list(out["period"].dt.strftime("%H:%M")) == ["09:59", "10:00", "10:01"]
    assert math.isnan(out["orders"][0]) and out["orders"][1] == 7.0 and math.isnan(out["orders"][2])


def test_empty_data_shows_which_command_fills_it_not_an_error():
    fig = f.make_timeseries_figure(pd.DataFrame(columns=["period", "orders", "revenue"]))
    assert fig["data"] == []
    text = fig["layout"]["annotations"][0]["text"]
    assert "ecom batch daily" in text and "no minute metrics" in text


def test_breakdown_bars_are_sorted_by_revenue_and_the_pie_keeps_query_order():
    df = pd.DataFrame({"name": ["books", "toys", "home"], "orders": [5, 1, 2], "revenue": [50.0, 10.0, 80.0]})
    bars = f.make_breakdown_figure(df, "Revenue by category")
    assert bars["data"][0]["y"] == ["toys", "books", "home"]
    assert bars["data"][0]["x"] == [10.0, 50.0, 80.0]
    pie = f.make_breakdown_figure(df, "Payment methods", kind="pie")
    assert pie["data"][0]["labels"] == ["books", "toys", "home"]
    assert pie["data"][0]["customdata"] == [5, 1, 2]


def test_score_histogram_colours_buckets_at_or_over_the_threshold_and_marks_it():
    df = pd.DataFrame({"bucket_start": [0.0, 40.0, 80.0, 95.0], "orders": [900, 80, 15, 5]})
    fig = f.make_score_histogram_figure(df, threshold=80)
    assert fig["data"][0]["y"] == [900, 80, 15, 5]
    assert fig["data"][0]["marker"]["color"] == [f.BLUE, f.BLUE, f.RED, f.RED]
    assert fig["layout"]["shapes"][0]["x0"] == 80


def test_alert_rate_is_alerts_per_scored_order_in_percent_with_gaps_where_none_was_scored():
    df = pd.DataFrame(
        {"period": pd.to_datetime(["2026-11-25 10:00", "2026-11-25 11:00", "2026-11-25 12:00"], utc=True),
         "scored": [200.0, 0.0, float("nan")], "alerts": [3.0, 0.0, float("nan")]}
    )  # fmt: skip
    fig = f.make_alert_rate_figure(df)
    assert fig["data"][0]["y"] == [1.5, None, None]


def test_precision_recall_plots_both_and_is_empty_without_labels():
    df = pd.DataFrame(
        {"day": pd.to_datetime(["2026-11-24", "2026-11-25"], utc=True), "precision": [0.5, float("nan")],
         "recall": [0.75, 1.0]}
    )  # fmt: skip
    fig = f.make_precision_recall_figure(df)
    assert fig["data"][0]["y"] == [0.5, None] and fig["data"][1]["y"] == [0.75, 1.0]
    empty = f.make_precision_recall_figure(df.assign(precision=float("nan"), recall=float("nan")))
    assert empty["data"] == [] and "confirmed fraud or false positive" in empty["layout"]["annotations"][0]["text"]


def test_segment_sizes_add_up_the_movement_rows_of_each_segment():
    df = pd.DataFrame(
        {"segment": ["Champions", "Champions", "Lost"], "previous_segment": ["Champions", "At Risk", ""],
         "customers": [10, 5, 4], "monetary": [1000.0, 250.0, 40.0]}
    )  # fmt: skip
    sizes = f.segment_sizes(df)
    assert sizes["segment"].tolist() == ["Champions", "Lost"]
    assert sizes["customers"].tolist() == [15, 4]
    assert sizes["avg_monetary"].tolist() == [1250.0 / 15, 10.0]
    treemap = f.make_segment_treemap_figure(df)["data"][0]
    assert treemap["labels"] == ["Champions", "Lost"] and treemap["values"] == [15, 4]


def test_movement_matrix_puts_customers_without_a_previous_segment_under_new():
    df = pd.DataFrame(
        {"segment": ["Champions", "Champions", "Lost"], "previous_segment": ["Champions", "At Risk", ""],
         "customers": [10, 5, 4], "monetary": [1.0, 1.0, 1.0]}
    )  # fmt: skip
    heatmap = f.make_segment_movement_figure(df)["data"][0]
    assert heatmap["y"] == ["(new)", "At Risk", "Champions"]
    assert heatmap["x"] == ["Champions", "Lost"]
    assert heatmap["z"] == [[0.0, 4.0], [5.0, 0.0], [10.0, 0.0]]
    first_run = df.assign(previous_segment="")
    assert f.make_segment_movement_figure(first_run)["data"] == []


def test_cohort_heatmap_has_one_row_per_cohort_and_blank_cells_where_months_are_missing():
    df = pd.DataFrame(
        {"cohort_month": [dt.date(2026, 9, 1), dt.date(2026, 9, 1), dt.date(2026, 10, 1)],
         "months_since_first": [0, 1, 0], "retention_rate": [1.0, 0.25, 1.0], "revenue": [100.0, 20.0, 50.0]}
    )  # fmt: skip
    heatmap = f.make_cohort_heatmap_figure(df)["data"][0]
    assert heatmap["y"] == ["2026-09", "2026-10"] and heatmap["x"] == [0, 1]
    assert heatmap["z"] == [[1.0, 0.25], [1.0, None]]
    revenue = f.make_cohort_revenue_figure(df)["data"][0]
    assert revenue["x"] == ["2026-09", "2026-10"] and revenue["y"] == [120.0, 50.0]


def test_lag_bars_per_partition_and_the_note_says_where_progress_came_from():
    df = pd.DataFrame({"partition": [0, 1], "lag": [0, 42]})
    fig = f.make_lag_figure(df, "committed batch 7")
    assert fig["data"][0]["x"] == ["partition 0", "partition 1"] and fig["data"][0]["y"] == [0, 42]
    assert fig["layout"]["annotations"][0]["text"] == "committed batch 7"
    down = f.make_lag_figure(pd.DataFrame(), "Kafka did not answer")
    assert down["data"] == [] and "Kafka did not answer" in down["layout"]["annotations"][0]["text"]


def test_throughput_is_orders_per_second_of_each_minute():
    df = pd.DataFrame({"period": pd.to_datetime(["2026-11-25 10:00", "2026-11-25 10:01"], utc=True),
                       "orders": [600.0, float("nan")]})  # fmt: skip
    assert f.make_throughput_figure(df)["data"][0]["y"] == [10.0, None]
