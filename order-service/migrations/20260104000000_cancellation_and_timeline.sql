-- Cancellation, the saga deadline and the order's timeline.

ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('PENDING', 'RESERVED', 'CONFIRMED', 'REJECTED', 'PAYMENT_FAILED', 'CANCELLED'));

-- The eventId of the order's OrderCreated: every later event of the saga,
-- a cancellation included, carries it as correlationId.
ALTER TABLE orders ADD COLUMN correlation_id UUID;
-- For a CANCELLED order: CUSTOMER, SAGA_DEADLINE or RESERVATION_EXPIRY.
-- (`reason` holds the customer's words or TIMEOUT.)
ALTER TABLE orders ADD COLUMN cancelled_by TEXT;
-- When the order last reached a terminal status: the end of the saga, for
-- clients, the cancellation window and the benchmark's latency.
ALTER TABLE orders ADD COLUMN completed_at TIMESTAMPTZ;
UPDATE orders SET completed_at = updated_at
 WHERE status IN ('CONFIRMED', 'REJECTED', 'PAYMENT_FAILED');

-- The deadline sweep looks for old orders still in progress.
CREATE INDEX orders_in_progress ON orders (created_at) WHERE status IN ('PENDING', 'RESERVED');

-- Every event that touched an order, as order-service saw or wrote it.
CREATE TABLE order_events (
    seq          BIGSERIAL   PRIMARY KEY,
    event_id     UUID        NOT NULL UNIQUE,
    order_id     TEXT        NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    event_type   TEXT        NOT NULL,
    producer     TEXT        NOT NULL,
    -- e.g. RESERVED, REJECTED, APPROVED, DECLINED, REFUNDED, CANCELLED.
    outcome      TEXT,
    detail       TEXT,
    occurred_at  TIMESTAMPTZ NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX order_events_by_order ON order_events (order_id, occurred_at, seq);
