-- Which event caused each timeline entry (the envelope's causationId), so a
-- reader can draw the saga as a chain of causes. Entries recorded before this
-- column existed keep NULL, as does an order's first event.
ALTER TABLE order_events ADD COLUMN causation_id UUID;
