//! payment-service: charges customers.
//!
//! On a RESERVED `InventoryReserved` it charges the order total against the
//! customer's credit ([`domain::charge`]) and answers `PaymentProcessed`:
//! APPROVED, or DECLINED when the credit is insufficient. The account row is
//! locked while charging, so concurrent orders of one customer never spend the
//! same credit twice. On `OrderCancelled` it refunds an approved payment
//! ([`domain::PaymentStatus`]).
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
