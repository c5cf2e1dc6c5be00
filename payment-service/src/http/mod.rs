//! payment-service's HTTP API: accounts (`accounts.rs`: read, and set a
//! customer's credit), payments (`payments.rs`: read), and the OpenAPI
//! document of both ([`openapi`]).

mod accounts;
pub mod openapi;
mod payments;

use axum::routing::get;
use axum::Router;
use sqlx::PgPool;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Shown for customers who have no account yet.
    pub default_credit_cents: i64,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/accounts/{user_id}",
            get(accounts::get_account).put(accounts::put_account),
        )
        .route("/api/payments/{order_id}", get(payments::get_payment))
        .with_state(state)
        .merge(service_kit::openapi::routes(&openapi::document()))
}
