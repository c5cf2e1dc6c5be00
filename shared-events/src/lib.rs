//! The event contract shared by all services.

pub mod topics;
