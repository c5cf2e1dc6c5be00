//! `GET /api/notifications?orderId=&userId=&limit=`.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use service_kit::http::{page_limit, Authenticated};
use service_kit::{Problem, QueryParams};
use shared_events::{OrderId, UserId};

use super::AppState;
use crate::db::{self, Notification};

/// Default and largest page size of `GET /api/notifications`.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

/// The schema of `GET /api/notifications`' `limit`: the bounds [`list`] enforces.
type ListLimit = service_kit::openapi::PageLimit<DEFAULT_LIMIT, MAX_LIMIT>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    order_id: Option<String>,
    user_id: Option<String>,
    limit: Option<i64>,
}

/// What customers were told, in the order the events happened.
#[utoipa::path(get, path = "/api/notifications", tag = "notifications",
    params(
        ("orderId" = inline(Option<OrderId>), Query, description = "Only this order's notifications"),
        ("userId" = inline(Option<UserId>), Query, description = "Only this customer's notifications"),
        ("limit" = inline(Option<ListLimit>), Query, description = "At most this many, 1-1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "Matching notifications, oldest first", body = Vec<Notification>),
        (status = 400, description = "An invalid orderId, userId or limit; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable for the moment; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
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
