-- customers.total_amount is a customer's running sum of order amounts (each at
-- most DECIMAL(12,2), the event contract). NUMERIC(14,2) overflowed after about a
-- hundred orders of the largest amount, and that stopped the stream (ecom/schemas.py
-- bounds); NUMERIC(20,2) holds more orders than a customer can place. Widening
-- the precision at the same scale does not rewrite the table.
ALTER TABLE customers ALTER COLUMN total_amount TYPE NUMERIC(20, 2);
