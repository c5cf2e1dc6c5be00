//! order-service's HTTP API. Each module routes its own paths (`router()`),
//! next to their handlers: [`orders`] (placing, listing, reading, and the
//! long poll of `GET /api/orders/{orderId}`), [`watch`] (event streams and the
//! long poll's waiting), [`cancel`], [`timeline`]; [`view`] holds the JSON the
//! API returns.

mod cancel;
pub mod openapi;
mod orders;
mod timeline;
pub mod view;
mod watch;

use axum::Router;
use service_kit::outbox::Outbox;
use sqlx::PgPool;

use crate::admission::Admission;
use crate::status_feed::{LiveConfig, StatusFeed};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Where placed orders and cancellations are announced; committing
    /// through it wakes the relay, so the event leaves at once.
    pub outbox: Outbox,
    /// How long after confirmation a customer may still cancel (`None`: always).
    pub cancel_window: Option<std::time::Duration>,
    /// How long a new order's saga may take before it is cancelled.
    pub saga_deadline: std::time::Duration,
    /// Wakes event streams and long polls when an order changes.
    pub feed: StatusFeed,
    pub live: LiveConfig,
    /// Refuses new orders while too many are in progress.
    pub admission: Admission,
}

pub fn router(state: AppState) -> Router {
    let document = openapi::document(state.live.max_wait());
    Router::new()
        .merge(orders::router())
        .merge(watch::router())
        .merge(cancel::router())
        .merge(timeline::router())
        .with_state(state)
        .merge(service_kit::openapi::routes(&document))
}

/// The `{order_id}` path segment, validated; a 400 naming `orderId` otherwise.
fn parse_order_id(raw: &str) -> Result<shared_events::OrderId, service_kit::Problem> {
    shared_events::OrderId::parse(raw)
        .map_err(|e| service_kit::Problem::invalid_field("orderId", e.0))
}
