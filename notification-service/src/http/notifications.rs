//! `GET /api/notifications?orderId=&userId=&limit=`.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use service_kit::http::{page_limit, Authenticated};
use service_kit::{Problem, QueryParams};
use shared_events::{OrderId, UserId};

use super::AppState;
use crate::db::{self, Notification};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    order_id: Option<String>,
    user_id: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    Authenticated(access): Authenticated,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Vec<Notification>>, Problem> {
    let order_id = query
        .order_id
        .map(|raw| OrderId::parse(&raw).map_err(|e| Problem::invalid_field("orderId", e.0)))
        .transpose()?;
    let user_id = access
        .user_filter(query.user_id, "userId")?
        .map(|raw| UserId::parse(&raw).map_err(|e| Problem::invalid_field("userId", e.0)))
        .transpose()?;
    let limit = page_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let notifications = db::list(
        &state.pool,
        order_id.as_ref().map(OrderId::as_str),
        user_id.as_ref().map(UserId::as_str),
        limit,
    )
    .await?;
    Ok(Json(notifications))
}
