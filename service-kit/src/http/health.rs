//! Health endpoints: liveness (`GET /health/live`: the process serves HTTP)
//! and readiness (`GET /health`, `GET /health/ready`: its database and Kafka
//! answer).
//!
//! They are kept apart so that an orchestrator restarts a process only when
//! it is itself stuck, and merely stops sending it traffic while a
//! dependency is down.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use sqlx::PgPool;

/// What readiness checks need to see.
#[derive(Clone)]
pub struct HealthState {
    /// Pinged for the `database` check.
    pub pool: PgPool,
    /// Asked for cluster metadata for the `kafka` check.
    pub producer: FutureProducer,
}

/// The health routes, with their state.
pub(super) fn routes(health: HealthState) -> Router {
    Router::new()
        .route("/health", get(ready))
        .route("/health/ready", get(ready))
        .route("/health/live", get(live))
        .with_state(health)
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    checks: Checks,
}

#[derive(Serialize)]
struct Checks {
    database: &'static str,
    kafka: &'static str,
}

fn up_or_down(up: bool) -> &'static str {
    if up {
        "UP"
    } else {
        "DOWN"
    }
}

/// `GET /health/live`: the process is running and serving HTTP.
async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "UP" }))
}

/// `GET /health/ready` and `GET /health`: 200 when the database and Kafka are
/// reachable, 503 otherwise.
async fn ready(State(state): State<HealthState>) -> Response {
    let (database, kafka) = tokio::join!(
        crate::db::ping(&state.pool),
        crate::kafka::ping(&state.producer)
    );
    let status = if database && kafka {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: up_or_down(database && kafka),
        checks: Checks {
            database: up_or_down(database),
            kafka: up_or_down(kafka),
        },
    };
    (status, Json(body)).into_response()
}
