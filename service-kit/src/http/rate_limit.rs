//! Per-client limits on write requests (`RATE_LIMIT_PER_SECOND`,
//! `RATE_LIMIT_BURST`): a client that writes faster than its share is
//! answered 429 with `Retry-After`, and nothing it sent is stored.
//!
//! A client is the token's subject when the request carries one (so
//! customers behind one proxy do not share a budget), else the peer address.
//! Reads are not limited: they change nothing, and admission control and the
//! request timeout already bound what they cost. Behind a load balancer the
//! peer address is the balancer's; deployments there run `AUTH_MODE=jwt`,
//! where the subject is the key.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::auth::Caller;
use super::Problem;

/// Clients tracked before those that have caught up with their budget are
/// forgotten (a forgotten client starts again with a full burst, which is
/// what it would have anyway).
const TRACKED_CLIENTS: usize = 10_000;

/// The write budget of every client; cheap to clone.
#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
}

impl RateLimit {
    /// `per_second` writes per client on average, `burst` at once; `None`
    /// when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<RateLimit> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Some(RateLimit {
            limiter: Arc::new(RateLimiter::keyed(quota)),
        })
    }

    /// `Err(wait)` when `client` has spent its budget and must wait `wait`.
    fn check(&self, client: String) -> Result<(), Duration> {
        if self.limiter.len() > TRACKED_CLIENTS {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Middleware: 429 for a write from a client over its budget.
pub async fn limit_writes(
    State(limit): State<RateLimit>,
    request: Request,
    next: Next,
) -> Response {
    if !is_write(request.method()) {
        return next.run(request).await;
    }
    let client = match request.extensions().get::<Caller>().and_then(Caller::user) {
        Some(user) => format!("user:{}", user.id),
        None => match request.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(peer)) => format!("ip:{}", peer.ip()),
            None => "unknown".to_owned(),
        },
    };
    match limit.check(client) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            crate::metrics::count_rate_limited();
            Problem {
                retry_after: Some(Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64)),
                ..Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "/problems/rate-limited",
                    "Too many requests",
                    "this client sent more write requests than it may; nothing was stored, retry later",
                )
            }
            .into_response()
        }
    }
}
