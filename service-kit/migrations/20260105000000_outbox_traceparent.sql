-- The W3C trace context (traceparent) of the transaction that wrote the
-- event; the relay publishes it as the Kafka header `traceparent`, so the
-- consumers' work joins the same trace. NULL when there was none.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
