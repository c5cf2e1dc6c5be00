//! HTTP plumbing shared by every service: RFC 9457 problem responses, JSON and
//! query extractors that answer bad input with a problem naming the field, the
//! common middleware stack (request span with trace context, metrics, body
//! limit, timeout), and health endpoints.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rdkafka::producer::FutureProducer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgPool;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A request taking longer than this is answered 408 and abandoned. Long
/// polls must answer before it; streaming bodies are not limited by it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An RFC 9457 problem detail. Every error response of every service is one.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI reference naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    #[serde(serialize_with = "serialize_status")]
    pub status: StatusCode,
    pub detail: String,
    /// The request field at fault, e.g. `items[0].quantity`, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    /// 400: a field is missing or invalid.
    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "/problems/invalid-field",
            title: "Invalid request field",
            status: StatusCode::BAD_REQUEST,
            detail: detail.into(),
            field: Some(field.into()),
        }
    }

    /// 400: the body is not the JSON we expect, and no single field is to blame.
    pub fn malformed(detail: impl Into<String>) -> Problem {
        Problem {
            kind: "/problems/malformed-body",
            title: "Malformed request body",
            status: StatusCode::BAD_REQUEST,
            detail: detail.into(),
            field: None,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem {
            kind: "/problems/not-found",
            title: "Not found",
            status: StatusCode::NOT_FOUND,
            detail: detail.into(),
            field: None,
        }
    }

    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem {
            kind: "/problems/conflict",
            title: "Conflict",
            status: StatusCode::CONFLICT,
            detail: detail.into(),
            field: None,
        }
    }

    /// 500. The cause is logged by the caller; the body reveals nothing.
    pub fn internal() -> Problem {
        Problem {
            kind: "/problems/internal",
            title: "Internal error",
            status: StatusCode::INTERNAL_SERVER_ERROR,
            detail: "the request could not be completed; it is safe to retry".into(),
            field: None,
        }
    }

    /// 503: a dependency is down; the request may succeed later.
    pub fn unavailable() -> Problem {
        Problem {
            kind: "/problems/unavailable",
            title: "Service unavailable",
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: "a dependency is unavailable; retry later".into(),
            field: None,
        }
    }

    fn with_status(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: String,
    ) -> Problem {
        Problem {
            kind,
            title,
            status,
            detail,
            field: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

/// Maps a database error to a response, logging the cause. Pool exhaustion
/// and lost connections mean "try later" (503); anything else is a 500.
pub fn database_problem(err: &sqlx::Error) -> Problem {
    tracing::error!(error = %err, "database error while handling a request");
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            Problem::unavailable()
        }
        _ => Problem::internal(),
    }
}

/// A JSON request body, decoded with the path of any faulty field reported.
///
/// Unlike `axum::Json`, every rejection is a [`Problem`]: wrong content type
/// (415), too large (413), malformed or mistyped (400, with `field`).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (is_json, bytes) = read_body(req, state).await?;
        decode_json(is_json, &bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], for a body the client may leave out: an empty body is
/// `None`, anything else must be valid JSON of `T`.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (is_json, bytes) = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        decode_json(is_json, &bytes).map(|value| OptionalJsonBody(Some(value)))
    }
}

/// Whether the request says its body is JSON, and the body (within the size limit).
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<(bool, Bytes), Problem> {
    let is_json = has_json_content_type(req.headers());
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(body_problem)?;
    Ok((is_json, bytes))
}

fn has_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false)
}

fn decode_json<T: DeserializeOwned>(is_json: bool, bytes: &[u8]) -> Result<T, Problem> {
    if !is_json {
        return Err(Problem::with_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "/problems/unsupported-media-type",
            "Unsupported media type",
            "send the body as Content-Type: application/json".into(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(decode_problem)
}

fn body_problem(rejection: BytesRejection) -> Problem {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "/problems/body-too-large",
            "Request body too large",
            format!("the body must not exceed {MAX_BODY_BYTES} bytes"),
        )
    } else {
        Problem::malformed(rejection.body_text())
    }
}

fn decode_problem(err: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return Problem::malformed(format!("the body is not valid JSON: {inner}"));
    }
    let message = inner.to_string();
    // serde reports unknown and missing fields against the enclosing object;
    // name the field itself.
    let field = match named_field(&message) {
        Some(name) if path == "." => name.to_owned(),
        Some(name) if !path.ends_with(name) => format!("{path}.{name}"),
        _ => path,
    };
    if field == "." {
        Problem::malformed(message)
    } else {
        Problem::invalid_field(field, message)
    }
}

/// The field in serde's "unknown field `x`" / "missing field `x`" messages.
fn named_field(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    rest.split('`').next()
}

/// Query parameters, with a [`Problem`] naming the parameter on failure.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(QueryParams)
            .map_err(|err| {
                let path = err.path().to_string();
                let message = err.into_inner().to_string();
                let field = named_field(&message).map(str::to_owned).unwrap_or(path);
                Problem::invalid_field(field, message)
            })
    }
}

/// The `limit` query parameter of a listing: `default` when absent, else it
/// must be from 1 to `max`.
pub fn page_limit(requested: Option<i64>, default: i64, max: i64) -> Result<i64, Problem> {
    let limit = requested.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::invalid_field(
            "limit",
            format!("limit must be from 1 to {max}"),
        ))
    }
}

/// What readiness checks need to see.
#[derive(Clone)]
pub struct HealthState {
    pub pool: PgPool,
    pub producer: FutureProducer,
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

async fn no_such_route() -> Problem {
    Problem::not_found("no such resource")
}

async fn method_not_allowed() -> Problem {
    Problem::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        "/problems/method-not-allowed",
        "Method not allowed",
        "this resource does not support that method".into(),
    )
}

/// The span of one HTTP request. It continues the caller's trace when the
/// request has a valid `traceparent` header (else starts one), and names the
/// route template and, when the path or query names one, the order
/// (`order_id`), so every log line while handling it says both.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let route = crate::metrics::route_of(request);
    let order_id = order_id_of(&route, request.uri());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        order_id,
        trace_id = tracing::field::Empty,
    );
    let traceparent = request
        .headers()
        .get(crate::trace_context::TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    crate::trace_context::continue_trace(&span, traceparent);
    span
}

/// Route placeholders that hold an order's id.
const ORDER_ID_PLACEHOLDERS: [&str; 2] = ["{order_id}", "{orderId}"];
/// The query parameter that names an order in listings.
const ORDER_ID_QUERY: &str = "orderId";

/// The order a request is about: the `{order_id}` (or `{orderId}`) segment
/// of its route, or else its `orderId` query parameter.
fn order_id_of(route: &str, uri: &axum::http::Uri) -> Option<String> {
    let from_path = route
        .split('/')
        .zip(uri.path().split('/'))
        .find(|(template, _)| ORDER_ID_PLACEHOLDERS.contains(template))
        .map(|(_, segment)| segment.to_owned());
    from_path.or_else(|| {
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .find(|(name, _)| name == ORDER_ID_QUERY)
            .map(|(_, value)| value.into_owned())
    })
}

/// Adds the health and metrics endpoints, a problem+json 404 for unknown routes, and the
/// common middleware (request span, metrics, body limit, timeout) to a service's routes.
/// `service` labels the HTTP metrics.
pub fn finish_router(routes: Router, health: HealthState, service: &str) -> Router {
    let health_routes = Router::new()
        .route("/health", get(ready))
        .route("/health/ready", get(ready))
        .route("/health/live", get(live))
        .with_state(health)
        .route("/metrics", get(crate::metrics::render));
    routes
        .merge(health_routes)
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::<str>::from(service),
            crate::metrics::track_http,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_from_serde_messages() {
        assert_eq!(
            named_field("unknown field `quantiy`, expected one of `sku`, `quantity`"),
            Some("quantiy")
        );
        assert_eq!(
            named_field("missing field `userId` at line 1"),
            Some("userId")
        );
        assert_eq!(named_field("invalid type: string"), None);
    }

    #[test]
    fn finds_the_order_in_the_path_or_the_query() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().unwrap();
        assert_eq!(
            order_id_of("/api/orders/{order_id}", &uri("/api/orders/o-1")).as_deref(),
            Some("o-1")
        );
        assert_eq!(
            order_id_of(
                "/api/orders/{orderId}/events",
                &uri("/api/orders/o-2/events")
            )
            .as_deref(),
            Some("o-2")
        );
        assert_eq!(
            order_id_of(
                "/api/notifications",
                &uri("/api/notifications?userId=u&orderId=o-3")
            )
            .as_deref(),
            Some("o-3")
        );
        assert_eq!(
            order_id_of("/api/inventory/{sku}", &uri("/api/inventory/widget")),
            None
        );
        assert_eq!(order_id_of("unmatched", &uri("/nowhere")), None);
    }
}
