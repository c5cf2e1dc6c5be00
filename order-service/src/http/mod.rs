//! order-service's HTTP API.

mod live;
pub mod openapi;
mod orders;

use axum::routing::{get, post};
use axum::Router;
use shared_events::Topics;
use sqlx::PgPool;

use crate::live::{LiveConfig, StatusFeed};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub topics: Topics,
    /// Written as the `producer` of the events this service emits.
    pub service_name: String,
    /// Wakes event streams and long polls when an order changes.
    pub feed: StatusFeed,
    pub live: LiveConfig,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/orders", post(orders::create).get(orders::list))
        .route("/api/orders/{order_id}", get(live::get_order))
        .route("/api/orders/{order_id}/events", get(live::events))
        .with_state(state)
        .merge(service_kit::openapi::routes(&openapi::document()))
}
