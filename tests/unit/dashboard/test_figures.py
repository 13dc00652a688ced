import pandas as pd

from dashboard.figures import make_payment_figure, make_timeseries_figure


def test_timeseries_figure_plots_orders_and_revenue():
    df = pd.DataFrame(
        {
            "minute": pd.to_datetime(["2026-11-25 10:00", "2026-11-25 10:01"]),
            "transactions": [3, 5],
            "revenue": [30.0, 55.5],
        }
    )
    fig = make_timeseries_figure(df)
    assert [trace.name for trace in fig.data] == ["orders", "revenue"]
    assert list(fig.data[0].y) == [3, 5]
    assert list(fig.data[1].y) == [30.0, 55.5]


def test_empty_data_shows_a_waiting_message_not_an_error():
    fig = make_timeseries_figure(pd.DataFrame(columns=["minute", "transactions", "revenue"]))
    assert len(fig.data) == 0
    assert fig.layout.annotations[0].text == "waiting for data"


def test_payment_figure_uses_revenue_per_method():
    df = pd.DataFrame({"payment_method": ["card", "paypal"], "revenue": [70.0, 30.0]})
    fig = make_payment_figure(df)
    assert list(fig.data[0].labels) == ["card", "paypal"]
    assert list(fig.data[0].values) == [70.0, 30.0]


def test_score_histogram_marks_buckets_over_the_threshold():
    from dashboard.figures import make_score_histogram_figure

    df = pd.DataFrame({"bucket_start": [0.0, 40.0, 80.0, 95.0], "orders": [900, 80, 15, 5]})
    fig = make_score_histogram_figure(df, threshold=80)
    assert list(fig.data[0].y) == [900, 80, 15, 5]
    assert list(fig.data[0].marker.color) == ["#2a9fd6", "#2a9fd6", "#cc0000", "#cc0000"]
