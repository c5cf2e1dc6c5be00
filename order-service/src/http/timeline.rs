//! `GET /api/orders/{orderId}/timeline`: what happened to an order, event by event.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use service_kit::http::database_problem;
use service_kit::Problem;
use shared_events::OrderId;

use super::AppState;
use crate::db::{self, TimelineEntry};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub order_id: String,
    pub status: String,
    pub events: Vec<TimelineEntry>,
}

pub async fn timeline(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Json<Timeline>, Problem> {
    let order_id = OrderId::parse(&order_id).map_err(|e| Problem::invalid_field("orderId", e.0))?;
    let order = db::find(&state.pool, order_id.as_str())
        .await
        .map_err(|err| database_problem(&err))?
        .ok_or_else(|| Problem::not_found(format!("no order {order_id}")))?;
    let events = db::timeline(&state.pool, order_id.as_str())
        .await
        .map_err(|err| database_problem(&err))?;
    Ok(Json(Timeline {
        order_id: order.order_id,
        status: order.status.to_string(),
        events,
    }))
}
