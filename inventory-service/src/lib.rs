//! inventory-service: owns the catalog and the stock.
//!
//! On `OrderCreated` it prices the order from the catalog and reserves every
//! line or none ([`domain::reserve`]), locking the catalog rows so that several
//! instances never sell the same unit twice, and answers `InventoryReserved`.
//! On `PaymentProcessed` it turns the reservation into a sale or releases it
//! ([`domain::ReservationStatus`] is the reservation's lifecycle).
//!
//! Layout, the same in every service: [`config`], [`app`], [`http`],
//! [`consumer`], [`domain`], [`db`], `migrations/`; and here [`expiry`] (the
//! reservation expiry job) and [`demo_catalog`].

pub mod app;
pub mod config;
pub mod consumer;
pub mod db;
pub mod demo_catalog;
pub mod domain;
pub mod expiry;
pub mod http;

pub use app::Application;
pub use config::Config;
