//! The event contract shared by all services.
//!
//! - [`events`]: the envelope and the three events of the order saga
//!   (`OrderCreated`, `InventoryReserved`, `PaymentProcessed`), with strict decoding.
//! - [`topics`]: topic names (configuration, with defaults) and partition count.
//! - [`values`]: validated value types (`OrderId`, `Sku`, `Quantity`, `Cents`, ...).
//!
//! Money is always integer minor units ([`Cents`]); there are no floats anywhere
//! in the contract.

pub mod events;
pub mod topics;
pub mod values;

pub use events::{
    DeclineReason, DecodeError, Envelope, Event, EventType, InventoryReserved, OrderCreated,
    OrderLine, Payment, PaymentProcessed, PricedLine, RejectionReason, Reservation,
};
pub use topics::Topics;
pub use values::{Cents, InvalidValue, OrderId, Quantity, Sku, UserId};
