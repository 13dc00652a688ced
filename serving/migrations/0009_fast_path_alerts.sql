-- The per-order scoring path (pipelines.alerts, `ecom stream alerts`) writes an order's alert before the
-- micro-batch does. Which path wrote a row first, and the score that path gave, so that the micro-batch,
-- whose values are authoritative, can overwrite them, count the differences and skip the Kafka messages
-- the fast path already sent (pipelines.silver.sinks).
ALTER TABLE fraud_alerts ADD COLUMN IF NOT EXISTS source TEXT NOT NULL DEFAULT 'micro-batch';
ALTER TABLE fraud_alerts ADD COLUMN IF NOT EXISTS fast_path_score DOUBLE PRECISION;
ALTER TABLE fraud_alerts ADD COLUMN IF NOT EXISTS fast_path_model_version TEXT;
-- When Kafka confirmed the fast path's message of the alert (NULL: not sent, or not confirmed before a crash).
ALTER TABLE fraud_alerts ADD COLUMN IF NOT EXISTS fast_path_sent_at TIMESTAMPTZ;
-- When the row was first written (its transaction's start; NULL for rows older than this migration). The
-- micro-batch's upsert of a fast-path row keeps it.
ALTER TABLE fraud_alerts ADD COLUMN IF NOT EXISTS written_at TIMESTAMPTZ;
ALTER TABLE fraud_alerts ALTER COLUMN written_at SET DEFAULT now();
-- When the micro-batch confirmed or corrected a fast-path row (NULL: not yet, or written by the micro-batch).
ALTER TABLE fraud_alerts ADD COLUMN IF NOT EXISTS reconciled_at TIMESTAMPTZ;
-- One row per micro-batch of the agreement between the paths (counts per outcome).
CREATE TABLE IF NOT EXISTS alert_path_agreement (
    sink                TEXT NOT NULL,
    batch_id            BIGINT NOT NULL,
    confirmed           INTEGER NOT NULL,   -- the fast path wrote the same score and model version
    corrected           INTEGER NOT NULL,   -- the fast path wrote another score or model version
    withdrawn           INTEGER NOT NULL,   -- the fast path alerted, the micro-batch did not: row deleted
    micro_batch_only    INTEGER NOT NULL,   -- no fast-path row (it was down, behind, or scored below)
    committed_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, batch_id)
);
