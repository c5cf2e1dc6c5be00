//! payment-service's HTTP API: accounts (`accounts.rs`: read, and set a
//! customer's credit) and payments (`payments.rs`: read).

mod accounts;
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
}
