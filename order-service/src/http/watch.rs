//! Watching an order: `GET /api/orders/{orderId}/events` (Server-Sent Events,
//! routed here) and the long poll behind `GET /api/orders/{orderId}?waitFor=…&timeout=…`
//! (routed by [`super::orders`]), both fed by the process's
//! [`StatusFeed`](crate::status_feed::StatusFeed).
//!
//! A stream or long poll holds no database connection while it waits: it
//! reads the order once at the start and again only when told it changed.

use std::convert::Infallible;
use std::time::Duration;

use super::parse_order_id;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use axum::Router;
use futures::Stream;
use serde::Deserialize;
use service_kit::http::Authenticated;
use service_kit::Problem;
use shared_events::OrderId;
use sqlx::PgPool;
use tokio::time::Instant;

use super::orders::current;
use super::view::Order;
use super::AppState;
use crate::db;
use crate::domain::OrderStatus;
use crate::status_feed::{Busy, Change, Subscription};

/// Response header of a long poll: did the order reach a `waitFor` status?
pub const WAIT_RESULT_HEADER: HeaderName = HeaderName::from_static("wait-result");
/// The SSE event name of a status change.
const STATUS_EVENT: &str = "status";

/// How a long poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitResult {
    /// The order is in one of the statuses waited for.
    Reached,
    /// The order is in a terminal status that is not one of them: it never will be.
    Unreachable,
    /// The timeout ran out first.
    Timeout,
}

impl WaitResult {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitResult::Reached => "reached",
            WaitResult::Unreachable => "unreachable",
            WaitResult::Timeout => "timeout",
        }
    }
}

/// Query parameters of `GET /api/orders/{orderId}`: a long poll when `waitFor` is given.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitQuery {
    wait_for: Option<String>,
    timeout: Option<String>,
}

/// A validated long poll.
#[derive(Debug, PartialEq)]
pub(super) struct Wait {
    statuses: Vec<OrderStatus>,
    timeout: Duration,
}

impl WaitQuery {
    /// `None` for a plain read. Without `timeout`, a long poll waits up to `max`.
    pub(super) fn validate(self, max: Duration) -> Result<Option<Wait>, Problem> {
        let Some(raw_statuses) = self.wait_for else {
            return match self.timeout {
                Some(_) => Err(Problem::invalid_field(
                    "timeout",
                    "timeout applies only together with waitFor",
                )),
                None => Ok(None),
            };
        };
        let statuses = raw_statuses
            .split(',')
            .map(|s| OrderStatus::parse(s.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Problem::invalid_field("waitFor", e))?;
        let timeout = match self.timeout {
            Some(raw) => {
                parse_timeout(&raw, max).map_err(|e| Problem::invalid_field("timeout", e))?
            }
            None => max,
        };
        Ok(Some(Wait { statuses, timeout }))
    }
}

/// `5s`, `500ms` or `5` (seconds), from zero to `max`.
fn parse_timeout(raw: &str, max: Duration) -> Result<Duration, String> {
    let (digits, unit_ms) = if let Some(ms) = raw.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = raw.strip_suffix('s') {
        (s, 1_000)
    } else {
        (raw, 1_000)
    };
    let amount: u64 = digits
        .parse()
        .ok()
        .filter(|_| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            format!("timeout must be a whole number of seconds or milliseconds, e.g. 5s or 500ms, got {raw:?}")
        })?;
    let timeout = amount
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .filter(|t| *t <= max)
        .ok_or_else(|| format!("timeout must not exceed {}s", max.as_secs()))?;
    Ok(timeout)
}

/// 503: this instance serves as many streams and polls as it may.
impl From<Busy> for Problem {
    fn from(err: Busy) -> Problem {
        tracing::warn!(error = %err, "refusing a live subscriber");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "/problems/too-many-subscribers",
            "Too many live subscribers",
            err.to_string(),
        )
    }
}

/// Answers a long poll of `GET /api/orders/{orderId}` (see
/// [`super::orders::get_order`]): the order once it is in one of the statuses
/// waited for, or as it is when the timeout runs out; the `Wait-Result`
/// header says which.
pub(super) async fn long_poll(
    state: &AppState,
    order_id: &OrderId,
    wait: Wait,
) -> Result<Response, Problem> {
    let deadline = Instant::now() + wait.timeout;
    let mut subscription = state.feed.subscribe(order_id.as_str())?;
    let order = current(&state.pool, order_id.as_str()).await?;
    let (order, result) = wait_for_status(
        &state.pool,
        &mut subscription,
        order,
        &wait.statuses,
        deadline,
    )
    .await?;
    Ok((
        [(
            WAIT_RESULT_HEADER,
            HeaderValue::from_static(result.as_str()),
        )],
        Json(order),
    )
        .into_response())
}

async fn wait_for_status(
    pool: &PgPool,
    subscription: &mut Subscription,
    mut order: Order,
    wanted: &[OrderStatus],
    deadline: Instant,
) -> Result<(Order, WaitResult), Problem> {
    loop {
        if wanted.contains(&order.status) {
            return Ok((order, WaitResult::Reached));
        }
        if order.status.is_terminal() {
            return Ok((order, WaitResult::Unreachable));
        }
        let change = tokio::select! {
            change = subscription.next() => change,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        match change {
            // A step that decides nothing: no need to read the order for it.
            Some(Change::Status(status)) if !wanted.contains(&status) && !status.is_terminal() => {}
            Some(_) => order = current(pool, &order.order_id).await?,
            // Out of time, or shutting down: answer with the order as it is now.
            None => {
                let order = current(pool, &order.order_id).await?;
                let result = if wanted.contains(&order.status) {
                    WaitResult::Reached
                } else {
                    WaitResult::Timeout
                };
                return Ok((order, result));
            }
        }
    }
}

/// `GET /api/orders/{orderId}/events`.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/orders/{order_id}/events", get(events))
}

/// The order's status as Server-Sent Events: the current state at once, then
/// each change, and the stream ends after a terminal status.
///
/// Each event is `event: status`, `id: <status>` and the order as
/// `GET /api/orders/{orderId}` returns it. A client reconnecting with
/// `Last-Event-ID` is not sent the status it already has; if that status is
/// terminal it is answered 204, which tells an `EventSource` to stop
/// reconnecting. A status overtaken by the next before this instance read the
/// order is skipped; the terminal status is always sent.
#[utoipa::path(get, path = "/api/orders/{order_id}/events", tag = "orders",
    params(
        ("order_id" = String, Path, description = "The order's id"),
        ("Last-Event-ID" = Option<String>, Header,
            description = "Sent by a reconnecting EventSource: the last status it received"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `event: status`, `id: <status>`, `data: <the order as JSON>`; comments as keep-alives; ends after a terminal status",
            body = Order, content_type = "text/event-stream"),
        (status = 204, description = "Last-Event-ID is the order's terminal status: nothing more will come"),
        (status = 400, description = "Invalid orderId", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable for the moment (with `Retry-After`), or too many streams are open", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "When the database is unavailable: seconds to wait before retrying"))),
    ))]
pub async fn events(
    State(state): State<AppState>,
    Authenticated(access): Authenticated,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let order_id = parse_order_id(&raw_id)?;
    let subscription = state.feed.subscribe(order_id.as_str())?;
    let order = super::orders::visible(&state.pool, order_id.as_str(), &access).await?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok());
    let already_seen = last_event_id == Some(order.status.as_str());
    if already_seen && order.status.is_terminal() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let stream = StatusStream {
        pool: state.pool.clone(),
        subscription,
        last: order.status,
        ended: false,
        first: (!already_seen).then_some(order),
    };
    Ok(Sse::new(stream.into_stream())
        .keep_alive(KeepAlive::new().interval(state.live.keepalive()))
        .into_response())
}

/// One client's event stream.
struct StatusStream {
    pool: PgPool,
    subscription: Subscription,
    /// The status last sent (or known to the client).
    last: OrderStatus,
    /// A terminal status was sent.
    ended: bool,
    /// The current state, still to be sent.
    first: Option<Order>,
}

impl StatusStream {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut stream| async move {
            let event = stream.next_event().await?;
            Some((Ok(event), stream))
        })
    }

    async fn next_event(&mut self) -> Option<Event> {
        if let Some(order) = self.first.take() {
            return Some(self.send(order));
        }
        while !self.ended {
            match self.subscription.next().await? {
                Change::Status(status) if status == self.last => continue,
                Change::Status(_) | Change::Resync => {}
            }
            let order_id = self.subscription.order_id().to_owned();
            match db::find(&self.pool, &order_id).await {
                Ok(Some(order)) if order.status != self.last => return Some(self.send(order)),
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(err) => {
                    // The client reconnects (an EventSource does so by itself)
                    // and is sent the state as it is then.
                    tracing::warn!(%order_id, error = %err, "ending an order event stream: cannot read the order");
                    return None;
                }
            }
        }
        None
    }

    fn send(&mut self, order: Order) -> Event {
        self.last = order.status;
        self.ended = order.status.is_terminal();
        Event::default()
            .event(STATUS_EVENT)
            .id(order.status.as_str())
            .json_data(&order)
            .expect("an order serialises to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(25);

    fn query(wait_for: Option<&str>, timeout: Option<&str>) -> WaitQuery {
        WaitQuery {
            wait_for: wait_for.map(str::to_owned),
            timeout: timeout.map(str::to_owned),
        }
    }

    fn field_of(result: Result<Option<Wait>, Problem>) -> Option<String> {
        result.err().and_then(|problem| problem.field)
    }

    #[test]
    fn parses_statuses_and_timeouts() {
        assert_eq!(
            query(Some("CONFIRMED, REJECTED"), Some("5s"))
                .validate(MAX)
                .unwrap(),
            Some(Wait {
                statuses: vec![OrderStatus::Confirmed, OrderStatus::Rejected],
                timeout: Duration::from_secs(5),
            })
        );
        assert_eq!(parse_timeout("250ms", MAX), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("7", MAX), Ok(Duration::from_secs(7)));
        assert_eq!(parse_timeout("0s", MAX), Ok(Duration::ZERO));
        assert_eq!(
            query(Some("CONFIRMED"), None)
                .validate(MAX)
                .unwrap()
                .unwrap()
                .timeout,
            MAX
        );
        assert_eq!(query(None, None).validate(MAX).unwrap(), None);
    }

    #[test]
    fn names_the_parameter_at_fault() {
        let timeout = Some("timeout".to_owned());
        let wait_for = Some("waitFor".to_owned());
        assert_eq!(
            field_of(query(Some("SHIPPED"), None).validate(MAX)),
            wait_for
        );
        assert_eq!(field_of(query(Some(""), None).validate(MAX)), wait_for);
        assert_eq!(
            field_of(query(Some("CONFIRMED,"), None).validate(MAX)),
            wait_for
        );
        for bad in [
            "26s",
            "soon",
            "-1s",
            "1.5s",
            "s",
            "",
            "99999999999999999999",
        ] {
            assert_eq!(
                field_of(query(Some("CONFIRMED"), Some(bad)).validate(MAX)),
                timeout,
                "{bad:?}"
            );
        }
        assert_eq!(field_of(query(None, Some("5s")).validate(MAX)), timeout);
    }
}
