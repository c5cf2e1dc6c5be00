-- Refunds, and orders known to be cancelled.

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('APPROVED', 'DECLINED', 'REFUNDED'));
-- When an APPROVED payment was given back because its order was cancelled.
ALTER TABLE payments ADD COLUMN refunded_at TIMESTAMPTZ;

-- Orders this service heard were cancelled: a reservation arriving later is
-- never charged.
CREATE TABLE cancelled_orders (
    order_id      TEXT        PRIMARY KEY,
    user_id       TEXT        NOT NULL,
    reason        TEXT        NOT NULL,
    cancelled_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
