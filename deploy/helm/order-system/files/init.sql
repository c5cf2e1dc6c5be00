-- One login role per service, each owning its own schema and nothing else.
--
-- The Postgres container runs this once (psql with ON_ERROR_STOP), as the
-- superuser, in the database named by POSTGRES_DB, when its data volume is
-- empty (a changed script needs `docker-compose down -v`).
-- deploy-checks/tests/compose.rs runs it against a real Postgres and starts
-- every service as its role.
--
-- A role may connect to the database and use its own schema, where its
-- migrations create the tables; it cannot create schemas, and it has no
-- privilege at all on another service's schema, so reading another service's
-- tables fails with "permission denied". The services' DATABASE_URLs in
-- docker-compose.yml name these roles and passwords: change both together
-- for anything beyond a local deployment.

-- PostgreSQL 15 and later already deny this; older servers let every role
-- create tables in `public`.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE ROLE order_service LOGIN PASSWORD 'order_service';
CREATE SCHEMA orders AUTHORIZATION order_service;

CREATE ROLE inventory_service LOGIN PASSWORD 'inventory_service';
CREATE SCHEMA inventory AUTHORIZATION inventory_service;

CREATE ROLE payment_service LOGIN PASSWORD 'payment_service';
CREATE SCHEMA payments AUTHORIZATION payment_service;

CREATE ROLE notification_service LOGIN PASSWORD 'notification_service';
CREATE SCHEMA notifications AUTHORIZATION notification_service;
