-- When an order reached its terminal status: the end of the saga, for
-- clients and the benchmark's POST-to-terminal latency.
ALTER TABLE orders ADD COLUMN completed_at TIMESTAMPTZ;
