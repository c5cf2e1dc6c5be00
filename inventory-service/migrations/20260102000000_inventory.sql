-- inventory-service's own tables, in the `inventory` schema.
-- Invariant per SKU: available + reserved + sold = everything ever stocked.

CREATE TABLE products (
    sku          TEXT        PRIMARY KEY,
    name         TEXT        NOT NULL,
    price_cents  BIGINT      NOT NULL CHECK (price_cents >= 0),
    -- Units that may be reserved now.
    available    INTEGER     NOT NULL CHECK (available >= 0),
    -- Units held for orders whose payment is not settled yet.
    reserved     INTEGER     NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    -- Units gone for good with a paid order.
    sold         INTEGER     NOT NULL DEFAULT 0 CHECK (sold >= 0),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One per order that got stock. HELD until the payment outcome, then SOLD
-- (approved) or RELEASED (declined: the units went back to `available`).
CREATE TABLE reservations (
    order_id     TEXT        PRIMARY KEY,
    user_id      TEXT        NOT NULL,
    status       TEXT        NOT NULL CHECK (status IN ('HELD', 'SOLD', 'RELEASED')),
    total_cents  BIGINT      NOT NULL CHECK (total_cents >= 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE reservation_lines (
    order_id          TEXT    NOT NULL REFERENCES reservations (order_id) ON DELETE CASCADE,
    sku               TEXT    NOT NULL REFERENCES products (sku),
    quantity          INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents  BIGINT  NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, sku)
);
