-- Cancellation and reservation expiry.
--
-- A reservation now ends in one of:
--   SOLD       paid; units moved from reserved to sold
--   RELEASED   payment declined, order cancelled or reservation expired while
--              held; units went back to available
--   RETURNED   order cancelled after the sale; units went from sold back to available
--   CANCELLED  the order was cancelled before any stock was reserved: a marker
--              so that a late OrderCreated reserves nothing

ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('HELD', 'SOLD', 'RELEASED', 'RETURNED', 'CANCELLED'));

-- The saga's correlationId, for the OrderCancelled an expiry publishes.
ALTER TABLE reservations ADD COLUMN correlation_id UUID;
-- A HELD reservation still held at this time is released and its order cancelled.
ALTER TABLE reservations ADD COLUMN expires_at TIMESTAMPTZ;
-- Why the reservation ended: PAYMENT_APPROVED, PAYMENT_DECLINED, ORDER_CANCELLED, EXPIRED.
ALTER TABLE reservations ADD COLUMN ended_by TEXT;

CREATE INDEX reservations_held_by_expiry ON reservations (expires_at) WHERE status = 'HELD';
