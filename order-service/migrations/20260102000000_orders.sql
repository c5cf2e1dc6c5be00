-- order-service's own tables, in the `orders` schema.

CREATE TABLE orders (
    order_id       TEXT        PRIMARY KEY,
    user_id        TEXT        NOT NULL,
    status         TEXT        NOT NULL
        CHECK (status IN ('PENDING', 'RESERVED', 'CONFIRMED', 'REJECTED', 'PAYMENT_FAILED')),
    -- Machine-readable reason of a REJECTED or PAYMENT_FAILED order, e.g. OUT_OF_STOCK.
    reason         TEXT,
    reason_detail  TEXT,
    -- Known once inventory-service has priced the order.
    total_cents    BIGINT      CHECK (total_cents >= 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX orders_by_user ON orders (user_id, created_at DESC);
CREATE INDEX orders_by_status ON orders (status, created_at DESC);
CREATE INDEX orders_by_created ON orders (created_at DESC);

CREATE TABLE order_items (
    order_id          TEXT    NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    line_no           INTEGER NOT NULL,
    sku               TEXT    NOT NULL,
    quantity          INTEGER NOT NULL CHECK (quantity > 0),
    -- Filled in from InventoryReserved.
    unit_price_cents  BIGINT  CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_no),
    UNIQUE (order_id, sku)
);
