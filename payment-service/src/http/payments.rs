//! `GET /api/payments/{orderId}`: an order's payment.

use axum::extract::{Path, State};
use axum::Json;
use service_kit::http::Authenticated;
use service_kit::Problem;
use shared_events::OrderId;

use super::AppState;
use crate::db::{self, PaymentRecord};

/// The order's payment: its amount, status (`APPROVED`, `DECLINED` or
/// `REFUNDED`) and, when declined, the reason.
#[utoipa::path(get, path = "/api/payments/{order_id}", tag = "payments",
    params(("order_id" = inline(OrderId), Path, description = "The order")),
    responses(
        (status = 200, description = "The order's payment", body = PaymentRecord),
        (status = 400, description = "An invalid orderId", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No payment for this order (yet)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable for the moment; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub async fn get_payment(
    State(state): State<AppState>,
    Authenticated(access): Authenticated,
    Path(order_id): Path<String>,
) -> Result<Json<PaymentRecord>, Problem> {
    let order_id = OrderId::parse(&order_id).map_err(|e| Problem::invalid_field("orderId", e.0))?;
    // Someone else's payment is answered as if there were none.
    db::find_payment(&state.pool, order_id.as_str())
        .await?
        .filter(|payment| access.may_see(&payment.user_id))
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no payment for order {order_id}")))
}
