//! SQL for orders, and nothing else: every function takes the pool or the
//! caller's transaction (opened by a command in [`crate::commands`], the
//! consumer loop or a job); the schema comes from the connection's search_path.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shared_events::{
    CancelInitiator, CancelReason, Envelope, OrderId, OrderLine, PricedLine, UserId,
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{self, CancelTarget, OrderStatus};
use crate::http::view::{Item, Order, TimelineEntry};

#[derive(sqlx::FromRow)]
struct OrderRow {
    order_id: String,
    user_id: String,
    status: OrderStatus,
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
    fn into_order(self, items: Vec<Item>) -> Order {
        Order {
            order_id: self.order_id,
            user_id: self.user_id,
            status: self.status,
            reason: self.reason,
            reason_detail: self.reason_detail,
            cancelled_by: self.cancelled_by,
            items,
            total_cents: self.total_cents,
            created_at: self.created_at,
            updated_at: self.updated_at,
            completed_at: self.completed_at,
        }
    }
}

const ORDER_COLUMNS: &str = "order_id, user_id, status, reason, reason_detail, cancelled_by, \
     total_cents, created_at, updated_at, completed_at";

/// Inserts a PENDING order unless its id is taken; returns its creation and
/// update times, or `None` when the id exists (nothing was written).
pub async fn insert_order(
    tx: &mut PgConnection,
    order_id: &OrderId,
    user_id: &UserId,
    correlation_id: Uuid,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO orders (order_id, user_id, status, correlation_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (order_id) DO NOTHING
         RETURNING created_at, updated_at",
    )
    .bind(order_id.as_str())
    .bind(user_id.as_str())
    .bind(OrderStatus::Pending)
    .bind(correlation_id)
    .fetch_optional(tx)
    .await
}

/// Inserts the order's lines, numbered from 1 in the order given.
pub async fn insert_items(
    tx: &mut PgConnection,
    order_id: &OrderId,
    lines: &[OrderLine],
) -> Result<(), sqlx::Error> {
    if lines.is_empty() {
        return Ok(());
    }
    let line_nos: Vec<i32> = (1..).take(lines.len()).collect();
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let quantities: Vec<i32> = lines.iter().map(|l| l.quantity.get() as i32).collect();
    sqlx::query(
        "INSERT INTO order_items (order_id, line_no, sku, quantity)
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::int[])",
    )
    .bind(order_id.as_str())
    .bind(&line_nos)
    .bind(&skus)
    .bind(&quantities)
    .execute(tx)
    .await?;
    Ok(())
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
    Ok(Some(row.into_order(items)))
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
    .bind(filter.status)
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
    Ok(rows
        .into_iter()
        .map(|row| {
            let mine = items.remove(&row.order_id).unwrap_or_default();
            row.into_order(mine)
        })
        .collect())
}

/// Locks the order for the rest of `tx` and returns its status.
pub async fn lock_status(
    tx: &mut PgConnection,
    order_id: &str,
) -> Result<Option<OrderStatus>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1 FOR UPDATE")
        .bind(order_id)
        .fetch_optional(tx)
        .await
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
    .bind(status)
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
        OrderStatus,
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
                    status,
                    cancelled_by: cancelled_by.as_deref().map(decode_initiator).transpose()?,
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

/// Sets CANCELLED with who did it and why; returns when the order was placed.
pub async fn mark_cancelled(
    tx: &mut PgConnection,
    order_id: &str,
    initiator: CancelInitiator,
    reason: &CancelReason,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE orders SET status = $4, reason = $2, reason_detail = NULL,
                           cancelled_by = $3, updated_at = now(), completed_at = now()
         WHERE order_id = $1
         RETURNING created_at",
    )
    .bind(order_id)
    .bind(reason.as_str())
    .bind(initiator.as_str())
    .bind(OrderStatus::Cancelled)
    .fetch_one(tx)
    .await
}

/// `cancelled_by` as stored: the names of [`CancelInitiator`]'s serde derive.
fn decode_initiator(raw: &str) -> Result<CancelInitiator, sqlx::Error> {
    use serde::de::IntoDeserializer;
    use serde::Deserialize;
    CancelInitiator::deserialize(raw.into_deserializer())
        .map_err(|err: serde::de::value::Error| sqlx::Error::Decode(err.into()))
}

/// Orders still in progress `deadline` after they were placed, oldest
/// first, locked for the rest of `tx`; rows another instance is cancelling are skipped.
/// Orders in progress placed before the deadline. The statuses are written
/// out, not bound: the partial index `orders_in_progress` (`WHERE status IN
/// ('PENDING', 'RESERVED')`) serves only a query that names the same values,
/// and a prepared statement's generic plan could not prove a parameter does.
/// A test holds the literals to [`OrderStatus`].
const OVERDUE: &str = "SELECT order_id, status, user_id, correlation_id FROM orders
     WHERE status IN ('PENDING', 'RESERVED')
       AND created_at < now() - make_interval(secs => $1)
     ORDER BY created_at
     LIMIT $2
     FOR UPDATE SKIP LOCKED";

pub async fn lock_overdue(
    tx: &mut PgConnection,
    deadline: std::time::Duration,
    limit: i64,
) -> Result<Vec<(OrderId, CancelCandidate)>, sqlx::Error> {
    let rows: Vec<(String, OrderStatus, String, Option<Uuid>)> = sqlx::query_as(OVERDUE)
        .bind(deadline.as_secs_f64())
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
                        status,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelled_by_decodes_what_mark_cancelled_writes() {
        for initiator in [
            CancelInitiator::Customer,
            CancelInitiator::SagaDeadline,
            CancelInitiator::ReservationExpiry,
        ] {
            assert_eq!(decode_initiator(initiator.as_str()).unwrap(), initiator);
        }
        assert!(decode_initiator("SOMEONE").is_err());
    }

    #[test]
    fn the_overdue_query_names_the_in_progress_statuses() {
        let in_progress = format!("('{}', '{}')", OrderStatus::Pending, OrderStatus::Reserved);
        assert!(OVERDUE.contains(&in_progress), "{OVERDUE}");
    }
}
