-- Live order status: every committed status change is announced on the
-- channel `order_status_<schema>` with {"orderId", "status"}. Each
-- order-service process LISTENs on one connection and wakes the event
-- streams and long polls waiting on that order (src/live.rs).
-- Notifications are delivered at commit, and only for committed changes.

CREATE FUNCTION order_status_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'order_status_' || TG_TABLE_SCHEMA,
        json_build_object('orderId', NEW.order_id, 'status', NEW.status)::text
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER order_status_notify AFTER UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION order_status_notify();
