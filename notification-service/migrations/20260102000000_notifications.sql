-- notification-service's own tables, in the `notifications` schema.

-- What the customer was told, one row per event they should hear about.
CREATE TABLE notifications (
    id          BIGSERIAL   PRIMARY KEY,
    event_id    UUID        NOT NULL UNIQUE,
    order_id    TEXT        NOT NULL,
    user_id     TEXT        NOT NULL,
    kind        TEXT        NOT NULL
        CHECK (kind IN ('ORDER_RECEIVED', 'ORDER_CONFIRMED', 'ORDER_REJECTED', 'PAYMENT_FAILED')),
    message     TEXT        NOT NULL,
    -- When the event happened, per its producer: listings follow the saga's
    -- order even though the three topics are consumed independently.
    occurred_at TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX notifications_by_order ON notifications (order_id, occurred_at);
CREATE INDEX notifications_by_user ON notifications (user_id, occurred_at);
