//! order-service's HTTP API.

mod orders;

use axum::routing::{get, post};
use axum::Router;
use shared_events::Topics;
use sqlx::PgPool;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub topics: Topics,
    /// Written as the `producer` of the events this service emits.
    pub service_name: String,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/orders", post(orders::create).get(orders::list))
        .route("/api/orders/{order_id}", get(orders::get))
        .with_state(state)
}
