//! Plumbing shared by the four services, written once.
//!
//! A service is "configuration + migrations + HTTP routes + an event handler";
//! everything else lives here:
//!
//! - [`config`] — layered configuration (defaults → file → environment).
//! - [`telemetry`] — logging and tracing (OTLP export when configured).
//! - [`trace_context`] — W3C `traceparent` handed on through HTTP and Kafka headers.
//! - [`db`] — connection pool pinned to the service's schema; migrations.
//! - [`kafka`] — idempotent producer, manual-offset-store consumer, topic creation.
//! - [`kafka_connection`] — the brokers' address and security settings for every
//!   client, and the report of a refused login.
//! - [`dlq`] — dead-letter topics: writing, listing, replaying.
//! - [`metrics`] — Prometheus series (HTTP, events, consumer lag, outbox backlog) and `GET /metrics`.
//! - [`outbox`] — the transactional outbox and its relay.
//! - [`backend`] — what the consumer reads and the relay writes: Kafka, or a broker in the process.
//! - [`consumer`] — the consumer loop with inbox deduplication and retries.
//! - [`http`] — problem+json errors, extractors, health endpoints, middleware.
//! - [`openapi`] — the parts of every OpenAPI document that are the same, and its page.
//! - [`periodic`] — background jobs on a timer (deadline sweeps, expiries).
//! - [`host`] — runs a service's parts together and shuts them down cleanly, within a bound.
//! - [`shutdown`] — stop signals, blocking Kafka teardown off the async threads, what a shutdown abandoned.

pub mod backend;
pub mod config;
pub mod consumer;
pub mod db;
pub mod dlq;
pub mod host;
pub mod http;
pub mod kafka;
pub mod kafka_connection;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod periodic;
pub mod shutdown;
pub mod telemetry;
pub mod trace_context;

pub use config::CommonConfig;
pub use consumer::{EventHandler, HandlerError};
pub use host::{
    healthcheck, run, Infrastructure, ServiceConfig, ServiceHost, Stopped, HEALTHCHECK_ARG,
    LIVENESS_PATH, READINESS_PATH,
};
pub use http::{JsonBody, OptionalJsonBody, Problem, QueryParams};
pub use shutdown::shutdown_signal;
