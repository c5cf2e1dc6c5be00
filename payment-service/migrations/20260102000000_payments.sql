-- payment-service's own tables, in the `payments` schema.

-- A customer's credit. Created with the configured default credit the first
-- time the customer is charged (or set through the API).
CREATE TABLE accounts (
    user_id       TEXT        PRIMARY KEY,
    credit_cents  BIGINT      NOT NULL CHECK (credit_cents >= 0),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One per order that reached payment.
CREATE TABLE payments (
    order_id      TEXT        PRIMARY KEY,
    user_id       TEXT        NOT NULL,
    amount_cents  BIGINT      NOT NULL CHECK (amount_cents >= 0),
    status        TEXT        NOT NULL CHECK (status IN ('APPROVED', 'DECLINED')),
    reason        TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX payments_by_user ON payments (user_id, created_at DESC);
