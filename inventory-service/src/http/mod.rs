//! inventory-service's HTTP API: the catalog and its stock levels.

mod inventory;
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
        .route("/api/inventory", get(inventory::list))
        .route(
            "/api/inventory/{sku}",
            get(inventory::get).put(inventory::put),
        )
        .with_state(state)
        .merge(service_kit::openapi::routes(&openapi::document()))
}
