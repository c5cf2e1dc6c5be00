//! `POST /api/orders`, `GET /api/orders` and `GET /api/orders/{orderId}` (a
//! plain read, or a long poll with `?waitFor=`).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use service_kit::http::auth::forbidden;
use service_kit::http::{page_limit, Access, Authenticated};
use service_kit::{JsonBody, Problem, QueryParams};
use shared_events::events::MAX_LINES;
use shared_events::{OrderCreated, OrderId, OrderLine, Quantity, Sku, UserId};
use sqlx::PgPool;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use uuid::Uuid;

use super::view::Order;
use super::watch::{self, WaitQuery};
use super::AppState;
use crate::commands::{self, NewOrder, Placement};
use crate::db::{self, ListFilter};
use crate::domain::OrderStatus;

/// `POST /api/orders`, `GET /api/orders` and `GET /api/orders/{orderId}`
/// (with its long poll, answered by [`watch::long_poll`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/orders", post(create).get(list))
        .route("/api/orders/{order_id}", get(get_order))
}

/// The body of `POST /api/orders`, as received. Validated into a [`NewOrder`].
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrder {
    /// Yours (1-64 characters of `A-Z a-z 0-9 . _ -`), or a generated UUID.
    #[schema(value_type = Option<OrderId>)]
    order_id: Option<String>,
    /// The customer. With `AUTH_MODE=jwt` it may be left out (the token's
    /// subject is the customer), and a customer may only name themself.
    #[schema(required = true, value_type = UserId)]
    user_id: Option<String>,
    /// At most 100 lines (`MAX_LINES`), each SKU on one line only (a SKU
    /// repeated on a second line is refused with 400); none is a valid
    /// (free) order.
    #[schema(max_items = 100)]
    items: Option<Vec<CreateOrderItem>>,
    /// Accepted for compatibility with clients that send it; the server owns
    /// the status, so only `PENDING` makes sense.
    #[schema(value_type = Option<NewOrderStatus>)]
    status: Option<String>,
}

/// One line of `POST /api/orders`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrderItem {
    #[schema(value_type = Sku)]
    sku: String,
    #[schema(value_type = Quantity)]
    #[serde(deserialize_with = "service_kit::http::whole_number")]
    quantity: i64,
}

/// The one status a client may send with a new order (documentation only).
pub struct NewOrderStatus;

impl utoipa::PartialSchema for NewOrderStatus {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A new order is PENDING; the server owns the status."))
            .enum_values(Some([OrderStatus::Pending.as_str()]))
            .into()
    }
}

impl utoipa::ToSchema for NewOrderStatus {}

impl CreateOrder {
    /// The order this body asks for, placed by a caller with `access`.
    fn validate(self, access: &Access) -> Result<NewOrder, Problem> {
        let order_id = match self.order_id {
            Some(raw) => {
                OrderId::parse(&raw).map_err(|e| Problem::invalid_field("orderId", e.0))?
            }
            None => {
                OrderId::parse(&Uuid::new_v4().to_string()).expect("a UUID is a valid order id")
            }
        };
        let user_id = match (access.own_user(), self.user_id) {
            (Some(own), Some(named)) if own != named => {
                return Err(Problem {
                    field: Some("userId".to_owned()),
                    ..forbidden("a customer places orders only for themself")
                });
            }
            (Some(own), _) => own.to_owned(),
            (None, named) => named.unwrap_or_default(),
        };
        let user_id = UserId::parse(&user_id).map_err(|e| Problem::invalid_field("userId", e.0))?;
        if let Some(status) = self.status {
            if status != OrderStatus::Pending.as_str() {
                return Err(Problem::invalid_field(
                    "status",
                    format!("status is set by the server; a new order can only be PENDING, got {status:?}"),
                ));
            }
        }
        let raw_items = self.items.unwrap_or_default();
        if raw_items.len() > MAX_LINES {
            return Err(Problem::invalid_field(
                "items",
                format!("an order may have at most {MAX_LINES} lines"),
            ));
        }
        let mut items: Vec<OrderLine> = Vec::with_capacity(raw_items.len());
        for (i, item) in raw_items.into_iter().enumerate() {
            let sku = Sku::parse(&item.sku)
                .map_err(|e| Problem::invalid_field(format!("items[{i}].sku"), e.0))?;
            if items.iter().any(|line| line.sku == sku) {
                return Err(Problem::invalid_field(
                    format!("items[{i}].sku"),
                    format!("sku {sku} appears on more than one line; put the total on one line"),
                ));
            }
            let quantity = Quantity::parse(item.quantity)
                .map_err(|e| Problem::invalid_field(format!("items[{i}].quantity"), e.0))?;
            items.push(OrderLine { sku, quantity });
        }
        Ok(NewOrder {
            order_id,
            created: OrderCreated { user_id, items },
        })
    }
}

/// Stores the order and announces it. The same orderId with the same body is
/// answered 200 with the stored order (a safe retry); with a different body, 409.
#[utoipa::path(post, path = "/api/orders", tag = "orders",
    request_body = CreateOrder,
    responses(
        (status = 201, description = "Stored as PENDING and announced; `Location` names it", body = Order,
            headers(("Location" = String, description = "/api/orders/{orderId}"))),
        (status = 200, description = "The same orderId with the same body was placed before: the stored order", body = Order),
        (status = 400, description = "Malformed JSON or an invalid field; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The orderId exists with a different userId or items", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body exceeds 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable for the moment, or the saga backlog is too large or too old (`type` `/problems/overloaded`, nothing stored); retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
#[tracing::instrument(skip_all, fields(order_id))]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(access): Authenticated,
    JsonBody(body): JsonBody<CreateOrder>,
) -> Result<Response, Problem> {
    let new = body.validate(&access)?;
    tracing::Span::current().record("order_id", new.order_id.as_str());
    state.admission.check()?;
    let placement = commands::place(&state.pool, &state.outbox, &new, state.saga_deadline).await?;
    match placement {
        Placement::Created(order) => {
            tracing::info!(user_id = %order.user_id, items = order.items.len(), "order accepted");
            let location = format!("/api/orders/{}", order.order_id);
            Ok((
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(order),
            )
                .into_response())
        }
        Placement::Existing(order) if commands::same_request(&order, &new) => {
            Ok((StatusCode::OK, Json(order)).into_response())
        }
        Placement::Existing(order) => Err(Problem::conflict(format!(
            "order {} already exists with a different userId or items",
            order.order_id
        ))),
    }
}

/// The order. With `waitFor`, answers as soon as the order is in one of the
/// listed statuses, or with its current state when `timeout` runs out; the
/// `Wait-Result` header says which.
#[utoipa::path(get, path = "/api/orders/{order_id}", tag = "orders",
    params(
        ("order_id" = inline(OrderId), Path, description = "The order's id"),
        ("waitFor" = Option<String>, Query,
            description = "Comma-separated statuses, e.g. `CONFIRMED,REJECTED,PAYMENT_FAILED`: wait until the order is in one of them (a long poll)",
            example = "CONFIRMED,REJECTED,PAYMENT_FAILED"),
        ("timeout" = Option<String>, Query,
            description = "With `waitFor`: how long to wait, `5s`, `500ms` or `5` (seconds), at most ORDER_LIVE_MAX_WAIT_SECS (default 25 s), which is also the default. Ignored without `waitFor`",
            example = "5s"),
    ),
    responses(
        (status = 200, description = "The order. After a long poll, whether it reached a `waitFor` status or the timeout ran out",
            body = Order,
            headers(("Wait-Result" = String,
                description = "Only with `waitFor`: `reached`, `timeout`, or `unreachable` (the order ended in a status not waited for)"))),
        (status = 400, description = "Invalid orderId, waitFor or timeout; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable for the moment (with `Retry-After`), or too many long polls are open", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "When the database is unavailable: seconds to wait before retrying"))),
    ))]
pub async fn get_order(
    State(state): State<AppState>,
    Authenticated(access): Authenticated,
    Path(raw_id): Path<String>,
    QueryParams(query): QueryParams<WaitQuery>,
) -> Result<Response, Problem> {
    let wait = query.validate(state.live.max_wait())?;
    let order_id = super::parse_order_id(&raw_id)?;
    let order = visible(&state.pool, order_id.as_str(), &access).await?;
    match wait {
        None => Ok(Json(order).into_response()),
        Some(wait) => watch::long_poll(&state, &order_id, wait).await,
    }
}

/// The order as stored now, or 404.
pub(super) async fn current(pool: &PgPool, order_id: &str) -> Result<Order, Problem> {
    db::find(pool, order_id)
        .await?
        .ok_or_else(|| no_such_order(order_id))
}

/// The order as stored now, if the caller may see it; 404 alike for an
/// order that does not exist and for someone else's, so a customer cannot
/// tell the two apart.
pub(super) async fn visible(
    pool: &PgPool,
    order_id: &str,
    access: &Access,
) -> Result<Order, Problem> {
    let order = current(pool, order_id).await?;
    if access.may_see(&order.user_id) {
        Ok(order)
    } else {
        Err(no_such_order(order_id))
    }
}

fn no_such_order(order_id: &str) -> Problem {
    Problem::not_found(format!("no order {order_id}"))
}

/// Default and largest page size of `GET /api/orders`.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

/// The schema of `GET /api/orders`' `limit`: the bounds [`list`] enforces.
type ListLimit = service_kit::openapi::PageLimit<DEFAULT_LIMIT, MAX_LIMIT>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    user_id: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

/// Orders, newest first.
#[utoipa::path(get, path = "/api/orders", tag = "orders",
    params(
        ("userId" = inline(Option<UserId>), Query, description = "Only this customer's orders (with `AUTH_MODE=jwt`, a customer's own by default and only theirs)"),
        ("status" = Option<OrderStatus>, Query, description = "Only orders in this status"),
        ("limit" = inline(Option<ListLimit>), Query, description = "At most this many, 1-500 (default 50)"),
    ),
    responses(
        (status = 200, description = "Matching orders, newest first", body = Vec<Order>),
        (status = 400, description = "An invalid userId, status or limit; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable for the moment; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(access): Authenticated,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Vec<Order>>, Problem> {
    let status = query
        .status
        .map(|s| OrderStatus::parse(&s))
        .transpose()
        .map_err(|e| Problem::invalid_field("status", e))?;
    let user_id = query
        .user_id
        .map(|raw| UserId::parse(&raw).map_err(|e| Problem::invalid_field("userId", e.0)))
        .transpose()?;
    let limit = page_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let filter = ListFilter {
        user_id: access.user_filter(user_id.map(String::from), "userId")?,
        status,
        limit,
    };
    Ok(Json(db::list(&state.pool, &filter).await?))
}

#[cfg(test)]
mod fuzz;
