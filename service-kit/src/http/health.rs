//! Health endpoints: liveness (`GET /health/live`: the process serves HTTP)
//! and readiness (`GET /health`, `GET /health/ready`: its database and Kafka
//! answer; when Kafka refuses the service's login, `reasons` says so).
//!
//! They are kept apart so that an orchestrator restarts a process only when
//! it is itself stuck, and merely stops sending it traffic while a
//! dependency is down.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sqlx::PgPool;

/// What readiness checks need to see.
#[derive(Clone)]
pub struct HealthState {
    /// Pinged for the `database` check.
    pub pool: PgPool,
    /// Asked for cluster metadata for the `kafka` check.
    pub producer: crate::kafka::EventProducer,
    /// Whether Kafka refuses the service's login, and why: the reason a
    /// `kafka` check that is down gives.
    pub kafka_login: std::sync::Arc<crate::kafka::LoginWatch>,
}

/// The health routes, with their state.
pub(super) fn routes(health: HealthState) -> Router {
    Router::new()
        .route("/health", get(ready))
        .route(crate::host::READINESS_PATH, get(ready))
        .route(crate::host::LIVENESS_PATH, get(live))
        .with_state(health)
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    checks: Checks,
    /// Why a check is down, when that is known (a refused Kafka login).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<String>,
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
    let (database, kafka_check) = tokio::join!(
        crate::db::ping(&state.pool),
        crate::kafka::ping(&state.producer, &state.kafka_login)
    );
    let kafka = kafka_check.is_ok();
    let reasons: Vec<String> = kafka_check
        .err()
        .map(|reason| format!("kafka: {reason}"))
        .into_iter()
        .collect();
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
        reasons,
    };
    (status, Json(body)).into_response()
}
