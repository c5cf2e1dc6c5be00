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
use strum::VariantArray;
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
    /// A `timeout` without `waitFor` is checked, then ignored: a schema
    /// cannot tie one query parameter to another, so a client may send it.
    pub(super) fn validate(self, max: Duration) -> Result<Option<Wait>, Problem> {
        let timeout = match self.timeout {
            Some(raw) => {
                parse_timeout(&raw, max).map_err(|e| Problem::invalid_field("timeout", e))?
            }
            None => max,
        };
        let Some(raw_statuses) = self.wait_for else {
            return Ok(None);
        };
        let statuses = raw_statuses
            .split(',')
            .map(|s| OrderStatus::parse(s.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Problem::invalid_field("waitFor", e))?;
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

/// The statuses `waitFor` accepts, as a pattern: names of [`OrderStatus`]
/// separated by commas, each with optional surrounding whitespace.
pub(super) fn wait_for_pattern() -> String {
    let ws = shared_events::values::WHITESPACE_CLASS;
    let names: Vec<&str> = OrderStatus::VARIANTS.iter().map(|s| s.as_str()).collect();
    let status = format!("[{ws}]*(?:{})[{ws}]*", names.join("|"));
    format!("^{status}(?:,{status})*$")
}

/// The timeouts [`parse_timeout`] accepts below `max`, as a pattern:
/// `<n>ms`, `<n>s` or `<n>` (seconds), leading zeros allowed.
pub(super) fn timeout_pattern(max: Duration) -> String {
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    format!(
        "^0*(?:(?:{})ms|(?:{})s?)$",
        at_most(max_ms),
        at_most(max_ms / 1000)
    )
}

/// A regex matching the decimal numbers from 0 to `n` written without
/// leading zeros.
fn at_most(n: u64) -> String {
    let digits: Vec<u8> = n.to_string().bytes().map(|b| b - b'0').collect();
    let len = digits.len();
    let mut alternatives = Vec::new();
    if len > 1 {
        alternatives.push("[0-9]".to_owned());
    }
    if len > 2 {
        alternatives.push(format!("[1-9][0-9]{{1,{}}}", len - 2));
    }
    // As many digits as `n`: the same first digits, then a smaller one, then any.
    let mut prefix = String::new();
    for (i, &digit) in digits.iter().enumerate() {
        let lowest = if i == 0 && len > 1 { 1 } else { 0 };
        if digit > lowest {
            let rest = len - i - 1;
            let tail = if rest > 0 {
                format!("[0-9]{{{rest}}}")
            } else {
                String::new()
            };
            alternatives.push(format!("{prefix}[{lowest}-{}]{tail}", digit - 1));
        }
        prefix.push(char::from(b'0' + digit));
    }
    alternatives.push(prefix);
    alternatives.join("|")
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

/// One event of `GET /api/orders/{orderId}/events` (documentation only).
///
/// Before OpenAPI 3.2's `itemSchema`, the schema of a `text/event-stream`
/// response describes one event with its fields `event`, `id` and `data`, as
/// an EventSource delivers it; `data` is text, here an [`Order`] as JSON.
pub struct StatusEvent;

impl utoipa::PartialSchema for StatusEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let statuses = OrderStatus::VARIANTS.iter().map(|status| status.as_str());
        ObjectBuilder::new()
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([STATUS_EVENT])),
            )
            .required("event")
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("The order's status, for `Last-Event-ID`"))
                    .enum_values(Some(statuses)),
            )
            .required("id")
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/json")
                    .description(Some(
                        "The order as `GET /api/orders/{orderId}` returns it (the `Order` schema), as JSON",
                    )),
            )
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for StatusEvent {}

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
        ("order_id" = inline(OrderId), Path, description = "The order's id"),
        ("Last-Event-ID" = Option<String>, Header,
            description = "Sent by a reconnecting EventSource: the last status it received"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `event: status`, `id: <status>`, `data: <the order as JSON>`; comments as keep-alives; ends after a terminal status",
            body = StatusEvent, content_type = "text/event-stream"),
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
        assert_eq!(field_of(query(None, Some("soon")).validate(MAX)), timeout);
        assert_eq!(query(None, Some("5s")).validate(MAX).unwrap(), None);
    }

    #[test]
    fn the_documented_patterns_accept_what_validation_accepts() {
        for max in [
            MAX,
            Duration::from_secs(1),
            Duration::from_secs(10),
            Duration::from_secs(29),
        ] {
            let pattern = regex::Regex::new(&timeout_pattern(max)).unwrap();
            for n in (0..=35_000)
                .step_by(7)
                .chain([0, 1, 9, 10, 25, 26, 1000, 25_000])
            {
                for raw in [
                    format!("{n}"),
                    format!("{n}s"),
                    format!("{n}ms"),
                    format!("0{n}s"),
                ] {
                    assert_eq!(
                        pattern.is_match(&raw),
                        parse_timeout(&raw, max).is_ok(),
                        "{raw:?} with max {max:?}"
                    );
                }
            }
            for raw in ["", "s", "ms", "-1s", "1.5s", "5 s", "99999999999999999999"] {
                assert!(
                    !pattern.is_match(raw) && parse_timeout(raw, max).is_err(),
                    "{raw:?}"
                );
            }
        }
        let pattern = regex::Regex::new(&wait_for_pattern()).unwrap();
        for raw in [
            "CONFIRMED",
            "CONFIRMED, REJECTED",
            " PENDING ,\u{a0}CANCELLED",
            "SHIPPED",
            "",
            "CONFIRMED,",
            "confirmed",
        ] {
            assert_eq!(
                pattern.is_match(raw),
                query(Some(raw), None).validate(MAX).is_ok(),
                "{raw:?}"
            );
        }
    }
}
