//! order-service's HTTP API.

mod cancel;
mod live;
pub mod openapi;
mod orders;
mod timeline;

use axum::routing::{get, post};
use axum::Router;
use service_kit::outbox::Outbox;
use sqlx::PgPool;

use crate::live::{LiveConfig, StatusFeed};

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
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/orders", post(orders::create).get(orders::list))
        .route("/api/orders/{order_id}", get(live::get_order))
        .route("/api/orders/{order_id}/events", get(live::events))
        .route("/api/orders/{order_id}/cancel", post(cancel::cancel))
        .route("/api/orders/{order_id}/timeline", get(timeline::timeline))
        .with_state(state)
        .merge(service_kit::openapi::routes(&openapi::document()))
}

/// The `{order_id}` path segment, validated; a 400 naming `orderId` otherwise.
fn parse_order_id(raw: &str) -> Result<shared_events::OrderId, service_kit::Problem> {
    shared_events::OrderId::parse(raw)
        .map_err(|e| service_kit::Problem::invalid_field("orderId", e.0))
}
