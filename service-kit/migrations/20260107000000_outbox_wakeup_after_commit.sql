-- The relay is now woken by the process that committed the rows, after the
-- commit (see src/outbox.rs). A NOTIFY inside the transaction made Postgres
-- serialise the commits of every outbox-writing transaction in the database.
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
