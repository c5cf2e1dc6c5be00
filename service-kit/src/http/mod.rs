//! HTTP plumbing shared by every service, one file per part:
//!
//! - here, the router every service's routes are finished with
//!   ([`finish_router`]): health and metrics endpoints, problem+json for
//!   unknown routes and methods, and the common middleware (request span with
//!   trace context, metrics, body limit, timeout);
//! - `problem.rs`: RFC 9457 problem responses ([`Problem`]), the shape of
//!   every error;
//! - `extract.rs`: extractors that refuse bad input with a problem naming the
//!   field ([`JsonBody`], [`OptionalJsonBody`], [`QueryParams`],
//!   [`page_limit`]);
//! - `health.rs`: liveness and readiness ([`HealthState`]);
//! - `auth.rs`: who is calling ([`Caller`]) and what they may do
//!   ([`Authenticated`], [`Admin`]), from bearer tokens or, with auth off,
//!   nobody checked;
//! - `rate_limit.rs`: per-client limits on write requests ([`RateLimit`]).

pub mod auth;
mod extract;
mod health;
mod problem;
mod rate_limit;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

pub use auth::{Access, Admin, Authenticated, Authenticator, Caller};
pub use extract::{page_limit, whole_number, JsonBody, OptionalJsonBody, QueryParams};
pub use health::HealthState;
pub use problem::{Problem, PROBLEM_CONTENT_TYPE, TRANSIENT_RETRY_AFTER};
pub use rate_limit::RateLimit;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A request taking longer than this is answered 408 and abandoned. Long
/// polls must answer before it; streaming bodies are not limited by it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Who may do what over HTTP: the same for every route of a service.
#[derive(Clone, Default)]
pub struct AccessPolicy {
    /// Establishes each request's [`Caller`].
    pub authenticator: Authenticator,
    /// Limits each client's writes; `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
}

impl AccessPolicy {
    /// The policy `config` sets (`AUTH_*`, `RATE_LIMIT_*`); reads the JWKS.
    pub async fn from_config(config: &crate::config::CommonConfig) -> anyhow::Result<Self> {
        Ok(AccessPolicy {
            authenticator: Authenticator::from_config(config).await?,
            rate_limit: RateLimit::new(config.rate_limit_per_second, config.rate_limit_burst),
        })
    }
}

/// Adds the health and metrics endpoints, a problem+json 404 for unknown routes, and the
/// common middleware (request span, metrics, body limit, timeout, authentication, rate
/// limit) to a service's routes. `service` labels the HTTP metrics.
pub fn finish_router(
    routes: Router,
    health: HealthState,
    service: &str,
    policy: AccessPolicy,
) -> Router {
    let routes = routes
        .merge(health::routes(health))
        .route("/metrics", get(crate::metrics::render));
    with_common_layers(with_access_policy(routes, policy), service)
}

/// The authentication layer and, inside it (it keys on the caller), the rate limit.
pub fn with_access_policy(routes: Router, policy: AccessPolicy) -> Router {
    let routes = match policy.rate_limit {
        Some(limit) => routes.layer(axum::middleware::from_fn_with_state(
            limit,
            rate_limit::limit_writes,
        )),
        None => routes,
    };
    routes.layer(axum::middleware::from_fn_with_state(
        policy.authenticator,
        auth::authenticate,
    ))
}

/// What every service's router gets around its routes, whatever they are:
/// problem+json answers for unknown routes (404) and methods (405), the body
/// limit, the timeout, the HTTP metrics and the request span.
fn with_common_layers(routes: Router, service: &str) -> Router {
    routes
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
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // A 5xx's cause is logged where it happens (a database
                // error, with its chain); a line per failed response on top
                // of that would be one ERROR line per refused order under
                // overload. `/metrics` counts the responses by status.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
}

async fn no_such_route() -> Problem {
    Problem::not_found("no such resource")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "/problems/method-not-allowed",
        "Method not allowed",
        "this resource does not support that method",
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
