-- Gold serving tables (pipelines/gold, docs/gold.md). Every money figure is in
-- the reporting currency (gold.reporting_currency, USD by default), converted
-- with fx_rates. Grain of each table is stated above it.

-- One row per currency: units of it per one unit of the reporting currency.
CREATE TABLE IF NOT EXISTS fx_rates (
    currency                 TEXT PRIMARY KEY,
    reporting_currency       TEXT NOT NULL,
    units_per_reporting_unit DOUBLE PRECISION NOT NULL CHECK (units_per_reporting_unit > 0),
    source                   TEXT NOT NULL,
    as_of                    DATE NOT NULL,
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- customers: the stream keeps the running totals (total_amount in order
-- currencies mixed, kept for compatibility); the daily batch adds the
-- reporting-currency figures, cohort and RFM.
ALTER TABLE customers
    ADD COLUMN IF NOT EXISTS total_revenue    DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS avg_order_value  DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS home_country     TEXT,
    ADD COLUMN IF NOT EXISTS rfm_as_of        DATE,
    ADD COLUMN IF NOT EXISTS recency_days     INTEGER,
    ADD COLUMN IF NOT EXISTS frequency        BIGINT,
    ADD COLUMN IF NOT EXISTS monetary         DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS r_score          SMALLINT,
    ADD COLUMN IF NOT EXISTS f_score          SMALLINT,
    ADD COLUMN IF NOT EXISTS m_score          SMALLINT,
    ADD COLUMN IF NOT EXISTS previous_segment TEXT;

-- products: catalogue attributes plus sales; revenue and prices in the reporting currency.
ALTER TABLE products
    ADD COLUMN IF NOT EXISTS list_price     DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS customers      BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS first_sold_at  TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS last_sold_at   TIMESTAMPTZ;
ALTER TABLE products ALTER COLUMN revenue TYPE DOUBLE PRECISION;
ALTER TABLE products ALTER COLUMN avg_unit_price TYPE DOUBLE PRECISION;

-- recommendations: the column says which strategy produced the row.
ALTER TABLE recommendations RENAME COLUMN method TO strategy;

-- One row per (cohort month, months since the first order): a retention heatmap cell.
CREATE TABLE IF NOT EXISTS cohorts (
    cohort_month               DATE NOT NULL,
    months_since_first         INTEGER NOT NULL,
    cohort_size                BIGINT NOT NULL,
    active_customers           BIGINT NOT NULL,
    retention_rate             DOUBLE PRECISION NOT NULL,
    orders                     BIGINT NOT NULL,
    revenue                    DOUBLE PRECISION NOT NULL,
    avg_order_value            DOUBLE PRECISION,
    orders_per_active_customer DOUBLE PRECISION,
    updated_at                 TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (cohort_month, months_since_first)
);

-- One row per ordered product pair bought in the same order (antecedent -> consequent).
CREATE TABLE IF NOT EXISTS product_pairs (
    antecedent       TEXT NOT NULL,
    consequent       TEXT NOT NULL,
    orders_with_both BIGINT NOT NULL,
    support          DOUBLE PRECISION NOT NULL,
    confidence       DOUBLE PRECISION NOT NULL,
    lift             DOUBLE PRECISION NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (antecedent, consequent)
);

-- One row per run of a batch job: what it wrote, when, and whether it finished.
CREATE TABLE IF NOT EXISTS batch_runs (
    run_id      BIGSERIAL PRIMARY KEY,
    job         TEXT NOT NULL,
    as_of       DATE,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    status      TEXT NOT NULL DEFAULT 'running',   -- running, succeeded, failed
    rows_written JSONB NOT NULL DEFAULT '{}',
    error       TEXT
);
CREATE INDEX IF NOT EXISTS batch_runs_job_idx ON batch_runs (job, started_at DESC);
