-- A micro-batch is first marked 'started', then 'committed' together with its
-- rows. A batch found 'started' is a retry after a crash: the pipeline then
-- checks each sink for what the first attempt already wrote.
ALTER TABLE pipeline_batches ADD COLUMN IF NOT EXISTS state TEXT NOT NULL DEFAULT 'committed';
