//! The console's HTTP side: pages (server-rendered HTML, a little
//! JavaScript for live updates) and the JSON endpoints beside them, one file
//! per area with its routes next to its handlers:
//!
//! - `kafka.rs`: brokers, topics, a topic's messages and live tail, consumer groups;
//! - `orders.rs`: orders (live), the order form, one order's saga picture;
//! - `stock.rs`: stock per SKU;
//! - `dlq.rs`: dead letters and their replay;
//! - `overview.rs`: the home page and the throughput/lag chart;
//! - `layout.rs`: the page shell, and `assets.rs` its embedded CSS and JS;
//! - `access.rs`: who may use the console (administrators, with auth on), signing in.
//!
//! Errors: handlers return [`ConsoleError`]; a page answers it with an error
//! page, a JSON endpoint (`/api/...`) with problem+json, both with the same
//! status. Nothing a user can type reaches a 500.

pub mod access;
mod assets;
mod dlq;
mod kafka;
mod layout;
mod orders;
mod overview;
mod stock;

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use service_kit::http::TRANSIENT_RETRY_AFTER;
use service_kit::Problem;
use tokio_util::sync::CancellationToken;

use crate::kafka::{KafkaReadError, KafkaView};
use crate::metrics_history::MetricsHistory;
use crate::services::{ServiceError, Services};

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    pub kafka: KafkaView,
    pub services: Services,
    pub history: MetricsHistory,
    /// Most messages per page.
    pub page_size: usize,
    /// Most bytes shown of one message.
    pub max_message_bytes: usize,
    /// Most messages per partition a key search reads.
    pub search_depth: i64,
    /// How often live pages ask order-service again.
    pub live_poll: Duration,
    /// Cancelled at shutdown: every live stream ends, so the server can drain.
    pub shutdown: CancellationToken,
    /// The system's topic names (configurable, e.g. prefixed on a shared cluster).
    pub topics: shared_events::topics::Topics,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(overview::routes())
        .merge(kafka::routes())
        .merge(orders::routes())
        .merge(stock::routes())
        .merge(dlq::routes())
        .merge(assets::routes())
        .merge(access::routes())
        .route("/health", get(ready))
        .route(service_kit::READINESS_PATH, get(ready))
        .route(service_kit::LIVENESS_PATH, get(|| async { "ok" }))
        .fallback(|| async { PageError(ConsoleError::NotFound("no such page".to_owned())) })
        .with_state(state)
}

/// Ready while the broker answers.
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.kafka.brokers().await {
        Ok(_) => "ready".into_response(),
        Err(error) => Problem::from(ConsoleError::from(error)).into_response(),
    }
}

/// Everything that can go wrong in a request, with the status it answers.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Kafka(#[from] KafkaReadError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A parameter or form field that cannot be used; which, and why.
    #[error("{field}: {reason}")]
    BadInput { field: &'static str, reason: String },
    #[error("{0}")]
    NotFound(String),
    /// Replaying dead letters failed (the broker, usually).
    #[error("replaying dead letters failed: {0}")]
    Replay(String),
}

impl ConsoleError {
    pub fn bad_input(field: &'static str, reason: impl Into<String>) -> ConsoleError {
        ConsoleError::BadInput {
            field,
            reason: reason.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::Kafka(KafkaReadError::UnknownTopic(_))
            | ConsoleError::Kafka(KafkaReadError::UnknownPartition { .. })
            | ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Kafka(KafkaReadError::OffsetOutOfRange { .. })
            | ConsoleError::BadInput { .. } => StatusCode::BAD_REQUEST,
            ConsoleError::Kafka(KafkaReadError::Unavailable(_))
            | ConsoleError::Service(ServiceError::Unavailable { .. })
            | ConsoleError::Replay(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Service(ServiceError::Refused { status, .. }) => match *status {
                400 | 401 | 403 | 404 | 409 | 422 | 429 => {
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
                }
                503 => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
        }
    }

    fn title(&self) -> &'static str {
        match self.status() {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
                "Cannot do that"
            }
            StatusCode::SERVICE_UNAVAILABLE => "Unavailable for the moment",
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests; wait a moment",
            _ => "A service failed",
        }
    }
}

impl From<ConsoleError> for Problem {
    fn from(error: ConsoleError) -> Problem {
        let status = error.status();
        if status.is_server_error() {
            tracing::warn!(error = %error, "request failed");
        }
        let kind = match status {
            StatusCode::NOT_FOUND => "/problems/not-found",
            StatusCode::BAD_REQUEST => "/problems/invalid-field",
            StatusCode::SERVICE_UNAVAILABLE => "/problems/unavailable",
            _ => "/problems/upstream",
        };
        let mut problem = Problem::new(status, kind, error.title(), error.to_string());
        if let ConsoleError::BadInput { field, .. } = &error {
            problem.field = Some((*field).to_owned());
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            problem.retry_after = Some(TRANSIENT_RETRY_AFTER);
        }
        problem
    }
}

impl From<KafkaReadError> for Problem {
    fn from(error: KafkaReadError) -> Problem {
        ConsoleError::from(error).into()
    }
}

impl From<ServiceError> for Problem {
    fn from(error: ServiceError) -> Problem {
        ConsoleError::from(error).into()
    }
}

/// A [`ConsoleError`] answered as an HTML page.
#[derive(Debug)]
pub struct PageError(pub ConsoleError);

impl<E: Into<ConsoleError>> From<E> for PageError {
    fn from(error: E) -> Self {
        PageError(error.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status.is_server_error() {
            tracing::warn!(error = %self.0, "page failed");
        }
        let page = layout::page(
            self.0.title(),
            maud::html! {
                div.problem role="alert" {
                    h2 { (self.0.title()) " (" (status.as_u16()) ")" }
                    p.detail { (self.0.to_string()) }
                    p { a href="/" { "Back to the overview" } }
                }
            },
        );
        (status, page).into_response()
    }
}

/// A query parameter that may be absent or blank (an untouched form field).
pub(crate) fn filled(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Parses an optional number parameter, naming it on failure.
pub(crate) fn number<T: std::str::FromStr>(
    field: &'static str,
    value: &Option<String>,
) -> Result<Option<T>, ConsoleError> {
    filled(value)
        .map(|v| {
            v.parse()
                .map_err(|_| ConsoleError::bad_input(field, format!("{v:?} is not a whole number")))
        })
        .transpose()
}

/// A live stream as a response: it ends when the console shuts down, and it
/// calls the services with the token of the request that opened it (the
/// body is polled after the handler has returned, outside the request's
/// [`crate::services::as_caller`] scope).
pub(crate) fn until_shutdown<S: futures::Stream>(
    stream: S,
    state: &AppState,
) -> impl futures::Stream<Item = S::Item> {
    use futures::StreamExt;
    crate::services::keep_caller(stream.take_until(state.shutdown.clone().cancelled_owned()))
}

#[cfg(test)]
mod tests;
