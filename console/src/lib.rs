//! The console: a web view of the system for people who would rather look
//! than read. Kafka's brokers, topics, messages and consumer groups (what
//! Kafdrop shows), and what no Kafka UI shows: every order's saga, live.
//!
//! It only reads, through Kafka (an assign-only consumer that never joins a
//! group nor commits) and the services' public HTTP APIs; it has no database.
//! Replaying dead letters is its one write, the same code as `devstack dlq replay`.
//!
//! Layout, the same rooms as the services: [`config`], [`app`], [`http`]
//! (pages and JSON endpoints), [`kafka`] (what it reads from the broker),
//! [`services`] (the services' APIs), and pure parts unit-tested on their
//! own: [`decode`] (message bytes to what a page shows), [`saga`] (the
//! picture's layout), [`metrics_history`] (the chart's samples).

pub mod app;
pub mod config;
pub mod decode;
pub mod http;
pub mod kafka;
pub mod metrics_history;
pub mod saga;
pub mod services;

pub use app::Application;
pub use config::Config;
