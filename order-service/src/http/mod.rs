//! order-service's HTTP API.

mod cancel;
mod orders;
mod timeline;

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
    /// How long after confirmation a customer may still cancel (`None`: always).
    pub cancel_window: Option<std::time::Duration>,
    /// How long a new order's saga may take before it is cancelled.
    pub saga_deadline: std::time::Duration,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/orders", post(orders::create).get(orders::list))
        .route("/api/orders/{order_id}", get(orders::get))
        .route("/api/orders/{order_id}/cancel", post(cancel::cancel))
        .route("/api/orders/{order_id}/timeline", get(timeline::timeline))
        .with_state(state)
}
