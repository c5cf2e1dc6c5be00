//! notification-service: tells customers what happened to their orders.
//!
//! It consumes all three saga topics and records one notification per event a
//! customer should hear about ([`domain::notice_for`]): order received,
//! confirmed, rejected, payment failed.
//!
//! Layout, the same in every service: [`config`], [`app`], [`http`],
//! [`consumer`], [`domain`], [`db`], `migrations/`.

pub mod app;
pub mod config;
pub mod consumer;
pub mod db;
pub mod domain;
pub mod http;

pub use app::Application;
pub use config::Config;
