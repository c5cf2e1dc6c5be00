//! `GET /api/orders/{orderId}/timeline`: what happened to an order, event by event.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use service_kit::http::Authenticated;
use service_kit::Problem;
use shared_events::OrderId;

use super::view::TimelineEntry;
use super::AppState;
use crate::db;

/// `GET /api/orders/{orderId}/timeline`.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/orders/{order_id}/timeline", get(timeline))
}

/// An order's story: every event that touched it, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub order_id: String,
    pub status: String,
    pub events: Vec<TimelineEntry>,
}

#[utoipa::path(get, path = "/api/orders/{order_id}/timeline", tag = "orders",
    params(("order_id" = inline(OrderId), Path, description = "The order's id")),
    responses(
        (status = 200, description = "Every event that touched the order, in the order they happened", body = Timeline),
        (status = 400, description = "Invalid orderId", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable for the moment; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub async fn timeline(
    State(state): State<AppState>,
    Authenticated(access): Authenticated,
    Path(order_id): Path<String>,
) -> Result<Json<Timeline>, Problem> {
    let order_id = super::parse_order_id(&order_id)?;
    let order = super::orders::visible(&state.pool, order_id.as_str(), &access).await?;
    let events = db::timeline(&state.pool, order_id.as_str()).await?;
    Ok(Json(Timeline {
        order_id: order.order_id,
        status: order.status.to_string(),
        events,
    }))
}
