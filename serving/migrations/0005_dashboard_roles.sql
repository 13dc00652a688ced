-- Dashboard and database roles (docs/dashboard.md). Grain of each new table is
-- stated above it.

-- Fraud triage: an analyst's decision on an alert (status open, confirmed_fraud
-- or false_positive), with a note, who and when.
ALTER TABLE fraud_alerts
    ADD COLUMN IF NOT EXISTS note        TEXT,
    ADD COLUMN IF NOT EXISTS reviewed_by TEXT,
    ADD COLUMN IF NOT EXISTS reviewed_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS fraud_alerts_status_created_idx ON fraud_alerts (status, created_at DESC);

-- One row per labelled order event: fraud ground truth with the contract of the
-- Kafka topic fraud-labels, plus where it came from ('analyst:<user>' for a
-- triage decision; a chargeback feed may load the topic here too).
CREATE TABLE IF NOT EXISTS fraud_labels (
    event_id       TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    is_fraud       BOOLEAN NOT NULL,
    fraud_pattern  TEXT,
    label_time     TIMESTAMPTZ NOT NULL,
    source         TEXT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS fraud_labels_time_idx ON fraud_labels (label_time);

-- One row per (minute of quarantine, reason): records the stream rejected.
CREATE TABLE IF NOT EXISTS quarantine_counts (
    minute     TIMESTAMPTZ NOT NULL,
    reason     TEXT NOT NULL,
    records    BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (minute, reason)
);

-- Micro-batch durations: begin_batch inserts the row when a batch starts, the
-- commit keeps started_at. Rows from before this migration have none.
ALTER TABLE pipeline_batches ADD COLUMN IF NOT EXISTS started_at TIMESTAMPTZ;
ALTER TABLE pipeline_batches ALTER COLUMN started_at SET DEFAULT now();
CREATE INDEX IF NOT EXISTS pipeline_batches_committed_idx ON pipeline_batches (committed_at DESC);

-- The dashboard's reads: summaries by metric and dimension over a time range,
-- index-only; top customers; pairs by lift.
CREATE INDEX IF NOT EXISTS analytics_summaries_metric_idx
    ON analytics_summaries (grain, metric, dimension, period_start) INCLUDE (value);
CREATE INDEX IF NOT EXISTS customers_revenue_idx ON customers (total_revenue DESC NULLS LAST);
CREATE INDEX IF NOT EXISTS product_pairs_lift_idx ON product_pairs (lift DESC);

-- Roles (cluster-wide; created once, granted per database). Passwords never live
-- here: they come from the environment (docs/dashboard.md).
--   ecom_reader   the dashboard: SELECT only, read-only transactions
--   ecom_analyst  fraud triage: SELECT, alert status and note, labels
--   ecom_writer   the pipeline: writes its tables; no DROP, TRUNCATE or CREATE
DO $$
DECLARE
    role_name TEXT;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['ecom_reader', 'ecom_analyst', 'ecom_writer'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE', role_name);
                IF role_name = 'ecom_reader' THEN
                    ALTER ROLE ecom_reader SET default_transaction_read_only = on;
                    ALTER ROLE ecom_reader SET statement_timeout = '10s';
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by the migration of another database
            END;
        END IF;
    END LOOP;
END $$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO ecom_reader, ecom_analyst, ecom_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO ecom_reader, ecom_analyst, ecom_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO ecom_reader, ecom_analyst, ecom_writer;

GRANT UPDATE (status, note, reviewed_by, reviewed_at) ON fraud_alerts TO ecom_analyst;
GRANT INSERT, UPDATE ON fraud_labels TO ecom_analyst;

-- The pipeline's tables are every table but the migration ledger.
GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ecom_writer;
REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM ecom_writer;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ecom_writer;
-- Tables and sequences of later migrations belong to the pipeline too.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT INSERT, UPDATE, DELETE ON TABLES TO ecom_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO ecom_writer;
