//! The event contract shared by all services.
//!
//! - [`events`]: the envelope and the events of the order saga (`OrderCreated`,
//!   `InventoryReserved`, `PaymentProcessed`, `PaymentRefunded`, `OrderCancelled`),
//!   with strict decoding.
//! - [`topics`]: topic names (configuration, with defaults) and partition count.
//! - [`access`]: which service publishes and consumes each topic, and the
//!   Kafka ACL grants derived from that.
//! - [`values`]: validated value types (`OrderId`, `Sku`, `Quantity`, `Cents`, ...).
//! - `fuzzing` (feature `fuzzing`, tests only): generators of hostile input
//!   shared by the fuzz tests of the decoder and of the request bodies.
//! - `openapi` (feature `openapi`): the same types' schemas for OpenAPI
//!   documents, taken from their JSON Schemas so the two cannot differ.
//!
//! Money is always integer minor units ([`Cents`]); there are no floats anywhere
//! in the contract.

pub mod access;
pub mod events;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod schema;
pub mod topics;
pub mod values;

pub use events::{
    CancelInitiator, DeclineReason, DecodeError, Envelope, Event, EventType, InventoryReserved,
    OrderCancelled, OrderCreated, OrderLine, Payment, PaymentProcessed, PaymentRefunded,
    PricedLine, RejectionReason, Reservation,
};
pub use topics::Topics;
pub use values::{CancelReason, Cents, InvalidValue, OrderId, Quantity, Sku, UserId};
