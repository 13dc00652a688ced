-- The dashboard's reads, second part (docs/dashboard.md).

-- Customers page: customers and revenue per (segment, previous segment) from an
-- index-only scan instead of the whole table.
CREATE INDEX IF NOT EXISTS customers_segment_move_idx
    ON customers (rfm_segment, previous_segment) INCLUDE (monetary) WHERE rfm_segment IS NOT NULL;

-- The dashboard reads cached, SSD-backed pages: plan its index scans at their
-- real cost. Set per database, so that migrations of several databases never
-- update one catalog row at the same time.
DO $$
BEGIN
    EXECUTE format('ALTER ROLE ecom_reader IN DATABASE %I SET random_page_cost = 1.1', current_database());
END $$;
