//! order-service: accepts orders and follows each through the saga.
//!
//! `POST /api/orders` stores a PENDING order and, in the same transaction, an
//! `OrderCreated` event in the outbox ([`commands::place`]); the relay publishes it.
//! The consumer ([`consumer`]) applies `InventoryReserved` and
//! `PaymentProcessed` to the order's state machine ([`domain`]) until the order
//! is CONFIRMED, REJECTED or PAYMENT_FAILED. [`status_feed`] tells waiting clients
//! (event streams, long polls) of each change, through Postgres `LISTEN/NOTIFY`.
//!
//! Layout, the same in every service: [`config`], [`app`] (build/run),
//! [`http`] (routes), [`consumer`] (event effects), [`domain`] (pure rules),
//! [`db`] (SQL), `migrations/`; plus [`commands`] (placing and cancelling an
//! order, for the API and the jobs), the job [`deadline`] (the saga deadline)
//! and [`admission`] (refusing new orders while too many are in progress).

pub mod admission;
pub mod app;
pub mod commands;
pub mod config;
pub mod consumer;
pub mod db;
pub mod deadline;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod status_feed;

pub use app::Application;
pub use config::Config;
