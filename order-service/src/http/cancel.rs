//! `POST /api/orders/{orderId}/cancel`: the customer calls the saga off.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use service_kit::http::Authenticated;
use service_kit::{OptionalJsonBody, Problem};
use shared_events::{CancelReason, OrderId};

use super::view::Order;
use super::AppState;
use crate::commands::{self, CancelError};

/// `POST /api/orders/{orderId}/cancel`.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/orders/{order_id}/cancel", post(cancel))
}

/// The optional body: `{"reason": "..."}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelRequest {
    /// Why, in the customer's words (1-200 characters); `CUSTOMER_REQUEST` if left out.
    #[schema(value_type = Option<CancelReason>)]
    reason: Option<String>,
}

/// Cancels the order: 202 with the order (now CANCELLED) while the other
/// services release its stock and refund its payment; 409 when it is too late.
/// Repeating a cancellation answers 202 again and changes nothing.
#[utoipa::path(post, path = "/api/orders/{order_id}/cancel", tag = "orders",
    params(("order_id" = inline(OrderId), Path, description = "The order's id")),
    request_body(content = Option<CancelRequest>, description = "Optional; the body may be empty"),
    responses(
        (status = 202, description = "Cancelled (or already cancelled by the customer): the order, now CANCELLED; stock and payment are given back asynchronously", body = Order),
        (status = 400, description = "Invalid orderId or reason; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Too late: the order is REJECTED or PAYMENT_FAILED, was cancelled by a deadline, or was confirmed longer ago than the cancellation window", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body exceeds 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable for the moment; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
pub async fn cancel(
    State(state): State<AppState>,
    Authenticated(access): Authenticated,
    Path(order_id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<CancelRequest>,
) -> Result<(StatusCode, Json<Order>), Problem> {
    let order_id = super::parse_order_id(&order_id)?;
    // Whose an order is never changes, so checking first is as good as
    // checking inside the cancellation's transaction.
    super::orders::visible(&state.pool, order_id.as_str(), &access).await?;
    let reason = match body.and_then(|b| b.reason) {
        Some(text) => {
            CancelReason::parse(&text).map_err(|e| Problem::invalid_field("reason", e.0))?
        }
        None => CancelReason::customer_request(),
    };
    let order = commands::cancel_by_customer(
        &state.pool,
        &state.outbox,
        &order_id,
        &reason,
        state.cancel_window,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(order)))
}

/// 404, 409, or what the database error means ([`Problem`]'s `From<sqlx::Error>`).
impl From<CancelError> for Problem {
    fn from(err: CancelError) -> Problem {
        match err {
            CancelError::NotFound(_) => Problem::not_found(err.to_string()),
            CancelError::Refused(..) => Problem::conflict(err.to_string()),
            CancelError::Database(err) => err.into(),
        }
    }
}
