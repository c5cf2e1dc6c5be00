-- Cancelled orders and refunds are told to the customer too.
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('ORDER_RECEIVED', 'ORDER_CONFIRMED', 'ORDER_REJECTED', 'PAYMENT_FAILED',
                    'ORDER_CANCELLED', 'REFUND_ISSUED'));
