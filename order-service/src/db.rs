//! SQL for orders. Every function takes the pool or the caller's transaction;
//! the schema comes from the connection's search_path.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use service_kit::outbox::{Outbox, OutboxTx};
use shared_events::{
    CancelInitiator, CancelReason, Envelope, Event, OrderCancelled, OrderCreated, OrderId,
    OrderLine, PricedLine, UserId,
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{self, CancelTarget, OrderStatus};

/// An order as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: String,
    pub user_id: String,
    pub status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_detail: Option<String>,
    /// Who cancelled a CANCELLED order: CUSTOMER, SAGA_DEADLINE or RESERVATION_EXPIRY.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    pub items: Vec<Item>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_cents: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the order reached its (latest) terminal status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub sku: String,
    pub quantity: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price_cents: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    order_id: String,
    user_id: String,
    status: String,
    reason: Option<String>,
    reason_detail: Option<String>,
    cancelled_by: Option<String>,
    total_cents: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    order_id: String,
    sku: String,
    quantity: i32,
    unit_price_cents: Option<i64>,
}

impl OrderRow {
    fn into_order(self, items: Vec<Item>) -> Result<Order, sqlx::Error> {
        let status = self
            .status
            .parse()
            .map_err(|err: String| sqlx::Error::Decode(err.into()))?;
        Ok(Order {
            order_id: self.order_id,
            user_id: self.user_id,
            status,
            reason: self.reason,
            reason_detail: self.reason_detail,
            cancelled_by: self.cancelled_by,
            items,
            total_cents: self.total_cents,
            created_at: self.created_at,
            updated_at: self.updated_at,
            completed_at: self.completed_at,
        })
    }
}

const ORDER_COLUMNS: &str = "order_id, user_id, status, reason, reason_detail, cancelled_by, \
     total_cents, created_at, updated_at, completed_at";

/// An order as the client placed it.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order_id: OrderId,
    pub created: OrderCreated,
}

/// What placing an order did.
pub enum Placement {
    /// Stored now, with its OrderCreated in the outbox.
    Created(Order),
    /// An order with this id already existed; nothing was written.
    Existing(Order),
}

/// Stores a new PENDING order and its OrderCreated event in one transaction,
/// committed through `outbox` (which wakes its relay). If the id is taken,
/// returns the stored order instead and writes nothing. The saga must be
/// over within `saga_deadline`.
pub async fn place(
    pool: &PgPool,
    outbox: &Outbox,
    new: &NewOrder,
    saga_deadline: std::time::Duration,
) -> Result<Placement, sqlx::Error> {
    let deadline =
        Utc::now() + chrono::Duration::from_std(saga_deadline).unwrap_or(chrono::Duration::MAX);
    let event = Envelope::new(
        new.order_id.clone(),
        Event::OrderCreated(new.created.clone()),
        outbox.producer(),
    )
    .with_deadline(deadline);
    let mut tx = outbox.begin(pool).await?;
    let inserted: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO orders (order_id, user_id, status, correlation_id) VALUES ($1, $2, 'PENDING', $3)
         ON CONFLICT (order_id) DO NOTHING
         RETURNING created_at, updated_at",
    )
    .bind(new.order_id.as_str())
    .bind(new.created.user_id.as_str())
    .bind(event.correlation_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((created_at, updated_at)) = inserted else {
        let existing = load(&mut tx, new.order_id.as_str()).await?;
        tx.rollback().await?;
        return existing
            .map(Placement::Existing)
            .ok_or(sqlx::Error::RowNotFound);
    };

    let lines = &new.created.items;
    if !lines.is_empty() {
        let line_nos: Vec<i32> = (1..).take(lines.len()).collect();
        let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
        let quantities: Vec<i32> = lines.iter().map(|l| l.quantity.get() as i32).collect();
        sqlx::query(
            "INSERT INTO order_items (order_id, line_no, sku, quantity)
             SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::int[])",
        )
        .bind(new.order_id.as_str())
        .bind(&line_nos)
        .bind(&skus)
        .bind(&quantities)
        .execute(&mut *tx)
        .await?;
    }

    outbox.enqueue(&mut tx, &event).await?;
    record_event(&mut tx, &event).await?;
    outbox.commit(tx).await?;
    // Everything about the new order is known; no need to read it back.
    Ok(Placement::Created(Order {
        order_id: new.order_id.to_string(),
        user_id: new.created.user_id.to_string(),
        status: OrderStatus::Pending,
        reason: None,
        reason_detail: None,
        cancelled_by: None,
        items: lines
            .iter()
            .map(|line| Item {
                sku: line.sku.to_string(),
                quantity: line.quantity.get() as i32,
                unit_price_cents: None,
            })
            .collect(),
        total_cents: None,
        created_at,
        updated_at,
        completed_at: None,
    }))
}

/// Does `order` hold what `new` asks for (same user, same lines in the same order)?
pub fn same_request(order: &Order, new: &NewOrder) -> bool {
    order.user_id == new.created.user_id.as_str()
        && order.items.len() == new.created.items.len()
        && order.items.iter().zip(&new.created.items).all(
            |(stored, OrderLine { sku, quantity })| {
                stored.sku == sku.as_str() && stored.quantity == quantity.get() as i32
            },
        )
}

pub async fn find(pool: &PgPool, order_id: &str) -> Result<Option<Order>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    load(&mut conn, order_id).await
}

pub async fn load(conn: &mut PgConnection, order_id: &str) -> Result<Option<Order>, sqlx::Error> {
    let row: Option<OrderRow> = sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let items = sqlx::query_as::<_, Item>(
        "SELECT sku, quantity, unit_price_cents FROM order_items WHERE order_id = $1 ORDER BY line_no",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    row.into_order(items).map(Some)
}

/// Filters of `GET /api/orders`.
#[derive(Debug, Default)]
pub struct ListFilter {
    pub user_id: Option<String>,
    pub status: Option<OrderStatus>,
    pub limit: i64,
}

/// Orders matching `filter`, newest first.
pub async fn list(pool: &PgPool, filter: &ListFilter) -> Result<Vec<Order>, sqlx::Error> {
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE ($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR status = $2)
         ORDER BY created_at DESC, order_id DESC
         LIMIT $3"
    ))
    .bind(filter.user_id.as_deref())
    .bind(filter.status.map(OrderStatus::as_str))
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    let ids: Vec<&str> = rows.iter().map(|r| r.order_id.as_str()).collect();
    let item_rows: Vec<ItemRow> = sqlx::query_as(
        "SELECT order_id, sku, quantity, unit_price_cents FROM order_items
         WHERE order_id = ANY($1) ORDER BY order_id, line_no",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut items: HashMap<String, Vec<Item>> = HashMap::new();
    for row in item_rows {
        items.entry(row.order_id).or_default().push(Item {
            sku: row.sku,
            quantity: row.quantity,
            unit_price_cents: row.unit_price_cents,
        });
    }
    rows.into_iter()
        .map(|row| {
            let mine = items.remove(&row.order_id).unwrap_or_default();
            row.into_order(mine)
        })
        .collect()
}

/// Locks the order for the rest of `tx` and returns its status.
pub async fn lock_status(
    tx: &mut PgConnection,
    order_id: &str,
) -> Result<Option<OrderStatus>, sqlx::Error> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(tx)
            .await?;
    status
        .map(|s| {
            s.parse()
                .map_err(|err: String| sqlx::Error::Decode(err.into()))
        })
        .transpose()
}

/// Sets the order's status; returns when the order was created (for
/// [`crate::metrics::status_changed`]).
pub async fn set_status(
    tx: &mut PgConnection,
    order_id: &str,
    status: OrderStatus,
    reason: Option<&str>,
    reason_detail: Option<&str>,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE orders SET status = $2, reason = $3, reason_detail = $4, updated_at = now(),
                           completed_at = CASE WHEN $5 THEN now() ELSE completed_at END
         WHERE order_id = $1
         RETURNING created_at",
    )
    .bind(order_id)
    .bind(status.as_str())
    .bind(reason)
    .bind(reason_detail)
    .bind(status.is_terminal())
    .fetch_one(tx)
    .await
}

/// What the cancellation of one order needs to know, read under a row lock.
pub struct CancelCandidate {
    pub target: CancelTarget,
    pub user_id: String,
    pub correlation_id: Option<Uuid>,
}

/// Locks the order for the rest of `tx` and returns what decides whether it
/// may be cancelled.
pub async fn lock_for_cancel(
    tx: &mut PgConnection,
    order_id: &str,
) -> Result<Option<CancelCandidate>, sqlx::Error> {
    type Row = (
        String,
        String,
        Option<String>,
        Option<String>,
        Option<f64>,
        Option<Uuid>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT status, user_id, cancelled_by, reason,
                EXTRACT(EPOCH FROM now() - completed_at)::float8, correlation_id
         FROM orders WHERE order_id = $1 FOR UPDATE",
    )
    .bind(order_id)
    .fetch_optional(tx)
    .await?;
    row.map(
        |(status, user_id, cancelled_by, reason, since_completed, correlation_id)| {
            Ok(CancelCandidate {
                target: CancelTarget {
                    status: status
                        .parse()
                        .map_err(|err: String| sqlx::Error::Decode(err.into()))?,
                    cancelled_by,
                    reason,
                    since_completed: since_completed
                        .map(|secs| std::time::Duration::from_secs_f64(secs.max(0.0))),
                },
                user_id,
                correlation_id,
            })
        },
    )
    .transpose()
}

/// Moves a locked order to CANCELLED and announces it through `outbox`, in
/// the caller's transaction: the status, the OrderCancelled in the outbox and
/// the timeline entry are committed together or not at all.
pub async fn cancel(
    tx: &mut OutboxTx,
    outbox: &Outbox,
    order_id: &OrderId,
    candidate: &CancelCandidate,
    initiator: CancelInitiator,
    reason: &CancelReason,
) -> Result<(), sqlx::Error> {
    let user_id = UserId::parse(&candidate.user_id).map_err(|e| sqlx::Error::Decode(e.0.into()))?;
    let event = Envelope::in_saga(
        order_id.clone(),
        candidate.correlation_id.unwrap_or_else(Uuid::now_v7),
        Event::OrderCancelled(OrderCancelled {
            user_id,
            initiator,
            reason: reason.clone(),
        }),
        outbox.producer(),
    );
    let created_at = mark_cancelled(tx, order_id.as_str(), initiator, reason).await?;
    crate::metrics::status_changed(candidate.target.status, OrderStatus::Cancelled, created_at);
    outbox.enqueue(tx, &event).await?;
    record_event(tx, &event).await?;
    Ok(())
}

/// Sets CANCELLED with who did it and why; returns when the order was placed.
pub async fn mark_cancelled(
    tx: &mut PgConnection,
    order_id: &str,
    initiator: CancelInitiator,
    reason: &CancelReason,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE orders SET status = 'CANCELLED', reason = $2, reason_detail = NULL,
                           cancelled_by = $3, updated_at = now(), completed_at = now()
         WHERE order_id = $1
         RETURNING created_at",
    )
    .bind(order_id)
    .bind(reason.as_str())
    .bind(initiator.as_str())
    .fetch_one(tx)
    .await
}

/// Orders still in progress `deadline_secs` after they were placed, oldest
/// first, locked for the rest of `tx`; rows another instance is cancelling are skipped.
pub async fn lock_overdue(
    tx: &mut PgConnection,
    deadline_secs: u64,
    limit: i64,
) -> Result<Vec<(OrderId, CancelCandidate)>, sqlx::Error> {
    let rows: Vec<(String, String, String, Option<Uuid>)> = sqlx::query_as(
        "SELECT order_id, status, user_id, correlation_id FROM orders
         WHERE status IN ('PENDING', 'RESERVED')
           AND created_at < now() - make_interval(secs => $1)
         ORDER BY created_at
         LIMIT $2
         FOR UPDATE SKIP LOCKED",
    )
    .bind(deadline_secs as f64)
    .bind(limit)
    .fetch_all(tx)
    .await?;
    rows.into_iter()
        .map(|(order_id, status, user_id, correlation_id)| {
            let decode = |err: String| sqlx::Error::Decode(err.into());
            Ok((
                OrderId::parse(&order_id).map_err(|e| decode(e.0))?,
                CancelCandidate {
                    target: CancelTarget {
                        status: status.parse().map_err(decode)?,
                        cancelled_by: None,
                        reason: None,
                        since_completed: None,
                    },
                    user_id,
                    correlation_id,
                },
            ))
        })
        .collect()
}

/// One line of an order's timeline.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub event_id: Uuid,
    pub event_type: String,
    /// The service that produced the event.
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub occurred_at: DateTime<Utc>,
    /// The event that caused this one; absent for the order's first event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
}

/// Adds `event` to its order's timeline; a redelivered event is recorded once.
pub async fn record_event(tx: &mut PgConnection, event: &Envelope) -> Result<(), sqlx::Error> {
    let (outcome, detail) = domain::summarise(&event.event);
    sqlx::query(
        "INSERT INTO order_events
             (event_id, order_id, event_type, producer, outcome, detail, occurred_at, causation_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event.event_id)
    .bind(event.order_id.as_str())
    .bind(event.event_type().as_str())
    .bind(&event.producer)
    .bind(outcome)
    .bind(detail)
    .bind(event.occurred_at)
    .bind(event.causation_id)
    .execute(tx)
    .await?;
    Ok(())
}

/// The order's events in the order they happened (by their producers' clocks,
/// then by when order-service recorded them).
pub async fn timeline(pool: &PgPool, order_id: &str) -> Result<Vec<TimelineEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_id, event_type, producer AS service, outcome, detail, occurred_at, causation_id
         FROM order_events WHERE order_id = $1 ORDER BY occurred_at, seq",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
}

/// Records the prices inventory-service charged.
pub async fn set_prices(
    tx: &mut PgConnection,
    order_id: &str,
    lines: &[PricedLine],
    total_cents: i64,
) -> Result<(), sqlx::Error> {
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let prices: Vec<i64> = lines.iter().map(|l| l.unit_price_cents.get()).collect();
    sqlx::query(
        "UPDATE order_items i SET unit_price_cents = p.price
         FROM UNNEST($2::text[], $3::bigint[]) AS p(sku, price)
         WHERE i.order_id = $1 AND i.sku = p.sku",
    )
    .bind(order_id)
    .bind(&skus)
    .bind(&prices)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE orders SET total_cents = $2, updated_at = now() WHERE order_id = $1")
        .bind(order_id)
        .bind(total_cents)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Records the amount charged, when the payment outcome arrived before the prices.
pub async fn set_total_if_unknown(
    tx: &mut PgConnection,
    order_id: &str,
    total_cents: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET total_cents = $2 WHERE order_id = $1 AND total_cents IS NULL")
        .bind(order_id)
        .bind(total_cents)
        .execute(tx)
        .await?;
    Ok(())
}
