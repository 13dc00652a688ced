-- Serving schema: the six tables of the architecture, their indexes, and
-- pipeline bookkeeping. Grain of each table is stated above it.

-- One row per order event that passed silver (unique event_id).
CREATE TABLE IF NOT EXISTS transactions (
    event_id            TEXT PRIMARY KEY,
    transaction_id      TEXT NOT NULL,
    event_time          TIMESTAMPTZ NOT NULL,
    customer_id         TEXT NOT NULL,
    customer_email_hash TEXT,
    amount              NUMERIC(12, 2) NOT NULL,
    currency            TEXT NOT NULL,
    payment_method      TEXT NOT NULL,
    channel             TEXT NOT NULL,
    item_count          INTEGER NOT NULL,
    device_id           TEXT,
    ip_country          TEXT,
    shipping_country    TEXT,
    fraud_score         DOUBLE PRECISION,
    is_fraud            BOOLEAN,
    model_version       TEXT,
    kafka_partition     INTEGER,
    kafka_offset        BIGINT,
    processed_time      TIMESTAMPTZ NOT NULL,
    loaded_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS transactions_event_time_idx ON transactions (event_time);
CREATE INDEX IF NOT EXISTS transactions_customer_time_idx ON transactions (customer_id, event_time);
CREATE INDEX IF NOT EXISTS transactions_is_fraud_idx ON transactions (is_fraud) WHERE is_fraud;

-- One row per customer: running aggregates and segment.
CREATE TABLE IF NOT EXISTS customers (
    customer_id         TEXT PRIMARY KEY,
    customer_email_hash TEXT,
    first_order_time    TIMESTAMPTZ,
    last_order_time     TIMESTAMPTZ,
    order_count         BIGINT NOT NULL DEFAULT 0,
    total_amount        NUMERIC(14, 2) NOT NULL DEFAULT 0,
    avg_amount          NUMERIC(12, 2),
    rfm_segment         TEXT,
    rfm_score           TEXT,
    cohort_month        DATE,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS customers_segment_idx ON customers (rfm_segment);
CREATE INDEX IF NOT EXISTS customers_last_order_idx ON customers (last_order_time);

-- One row per product.
CREATE TABLE IF NOT EXISTS products (
    product_id          TEXT PRIMARY KEY,
    category            TEXT NOT NULL,
    order_count         BIGINT NOT NULL DEFAULT 0,
    units_sold          BIGINT NOT NULL DEFAULT 0,
    revenue             NUMERIC(14, 2) NOT NULL DEFAULT 0,
    avg_unit_price      NUMERIC(12, 2),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS products_category_idx ON products (category);

-- One row per alert (an order scored at or above the threshold).
CREATE TABLE IF NOT EXISTS fraud_alerts (
    alert_id            TEXT PRIMARY KEY,
    event_id            TEXT NOT NULL UNIQUE,
    transaction_id      TEXT NOT NULL,
    customer_id         TEXT NOT NULL,
    amount              NUMERIC(12, 2) NOT NULL,
    fraud_score         DOUBLE PRECISION NOT NULL,
    reasons             TEXT[] NOT NULL DEFAULT '{}',
    model_version       TEXT,
    event_time          TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL,
    status              TEXT NOT NULL DEFAULT 'open'
);
CREATE INDEX IF NOT EXISTS fraud_alerts_created_idx ON fraud_alerts (created_at);
CREATE INDEX IF NOT EXISTS fraud_alerts_customer_idx ON fraud_alerts (customer_id);
CREATE INDEX IF NOT EXISTS fraud_alerts_score_idx ON fraud_alerts (fraud_score DESC);

-- One row per (metric, grain, period start, dimension value).
CREATE TABLE IF NOT EXISTS analytics_summaries (
    metric              TEXT NOT NULL,
    grain               TEXT NOT NULL,
    period_start        TIMESTAMPTZ NOT NULL,
    dimension           TEXT NOT NULL DEFAULT '',
    value               DOUBLE PRECISION NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (metric, grain, period_start, dimension)
);
CREATE INDEX IF NOT EXISTS analytics_summaries_period_idx ON analytics_summaries (grain, period_start);

-- One row per (customer or product, recommended product).
CREATE TABLE IF NOT EXISTS recommendations (
    subject_type        TEXT NOT NULL,          -- 'customer' or 'product'
    subject_id          TEXT NOT NULL,
    product_id          TEXT NOT NULL,
    rank                INTEGER NOT NULL,
    score               DOUBLE PRECISION NOT NULL,
    method              TEXT NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_type, subject_id, product_id)
);
CREATE INDEX IF NOT EXISTS recommendations_subject_rank_idx ON recommendations (subject_type, subject_id, rank);

-- Bookkeeping: one row per (streaming sink, micro-batch) committed, so a
-- replayed batch is recognised and changes nothing.
CREATE TABLE IF NOT EXISTS pipeline_batches (
    sink                TEXT NOT NULL,
    batch_id            BIGINT NOT NULL,
    row_count           BIGINT NOT NULL,
    committed_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, batch_id)
);
