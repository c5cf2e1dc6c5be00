//! notification-service's HTTP API: what customers were told, and its
//! OpenAPI document ([`openapi`]).

mod notifications;
pub mod openapi;

use axum::routing::get;
use axum::Router;
use sqlx::PgPool;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/notifications", get(notifications::list))
        .with_state(state)
        .merge(service_kit::openapi::routes(&openapi::document()))
}
