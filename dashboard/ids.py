"""Component ids of every page, in one place."""

REFRESH = "refresh-interval"

OVERVIEW_KPIS = "overview-kpis"
OVERVIEW_TX_COUNT = "overview-tx-count"
OVERVIEW_REVENUE = "overview-revenue"
OVERVIEW_AOV = "overview-aov"
OVERVIEW_ALERTS = "overview-alerts"
OVERVIEW_LAST_EVENT = "overview-last-event"
OVERVIEW_TIMESERIES = "overview-timeseries"
OVERVIEW_PAYMENT = "overview-payment"

FRAUD_ALERT_COUNT = "fraud-alert-count"
FRAUD_ALERT_RATE = "fraud-alert-rate"
FRAUD_SCORE_HISTOGRAM = "fraud-score-histogram"
FRAUD_ALERTS_TABLE = "fraud-alerts-table"
