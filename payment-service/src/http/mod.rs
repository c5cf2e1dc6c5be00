//! payment-service's HTTP API: accounts and payments (read, plus setting a
//! customer's credit).

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
            get(payments::get_account).put(payments::put_account),
        )
        .route("/api/payments/{order_id}", get(payments::get_payment))
        .with_state(state)
}
