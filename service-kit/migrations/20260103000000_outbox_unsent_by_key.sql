-- Lets the relay find, quickly, whether an order has an older unsent event
-- (claimed by another relay instance) that must be published first.
CREATE INDEX outbox_unsent_by_key ON outbox (message_key, id) WHERE sent_at IS NULL;
