//! A whole order system for one test: [`TestStack::start`] gives each test its
//! own database, its own Kafka topics and the four services running in-process
//! on free ports, and helpers to drive and inspect them over HTTP and SQL.
//!
//! Infrastructure is embedded unless the environment points elsewhere:
//! - `DATABASE_URL` set: each stack creates a fresh database on that server;
//!   otherwise one temporary Postgres cluster serves the whole test binary.
//! - `KAFKA_BOOTSTRAP_SERVERS` set: each stack uses uniquely named topics and
//!   consumer groups on that broker.
//! - Otherwise `TEST_KAFKA` picks the broker (`local_infra::TestKafka`): unset,
//!   each stack gets its own embedded broker (librdkafka's mock cluster);
//!   `apache`, the stacks of a test binary share one real Apache Kafka, with
//!   topics and groups of their own. A stack that stops its broker, or needs
//!   three nodes, asks for a broker of its own
//!   ([`StackOptions::own_kafka_nodes`]).
//!
//! Layout: `stack` (the stack itself: start, stop, restart its services),
//! `api` (the services' HTTP APIs), `kafka` (producing, reading and
//! watching offsets on the stack's topics), `infra` (its database and broker),
//! `processes` (the real service binaries as child processes), `faults`
//! (load under a fault and the invariants after it), `multihost` (the
//! system spread over test hosts, one per process).

mod api;
pub mod faults;
mod infra;
mod kafka;
pub mod multihost;
pub mod processes;
mod stack;

use std::future::Future;
use std::time::{Duration, Instant};

pub use api::Api;
pub use infra::Infra;
pub use stack::{
    RateLimitOptions, RunningService, StackAuth, StackConfigs, StackOptions, TestIssuer, TestStack,
    TEST_TOKEN_TTL, WAKE_UPS_ONLY,
};

/// How long a test waits for an outcome before failing.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// Pause between two looks at a state that is expected to change.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Statuses that end an order's saga.
pub const TERMINAL: [&str; 4] = ["CONFIRMED", "REJECTED", "PAYMENT_FAILED", "CANCELLED"];

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Some`, and fails the
/// test, naming `what`, if that takes longer than [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
