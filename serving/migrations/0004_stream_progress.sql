-- One row per (streaming sink, micro-batch): the state a stateful stream holds
-- after that batch, written in the same transaction as the batch's rows, so a
-- restarted stream resumes exactly where its last committed batch left it
-- (the live minute metrics keep their watermark and folded Kafka offsets here:
-- pipelines/gold/live.py). Old rows are pruned by the stream.
CREATE TABLE IF NOT EXISTS stream_progress (
    sink         TEXT NOT NULL,
    batch_id     BIGINT NOT NULL,
    progress     JSONB NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, batch_id)
);
