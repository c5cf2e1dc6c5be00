//! SQL for orders. Every function takes the pool or the caller's transaction;
//! the schema comes from the connection's search_path.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared_events::{Envelope, Event, OrderCreated, OrderId, OrderLine, PricedLine, Topics};
use sqlx::{PgConnection, PgPool};

use crate::domain::OrderStatus;

/// An order as stored and as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: String,
    pub user_id: String,
    pub status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_detail: Option<String>,
    pub items: Vec<Item>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_cents: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the order reached its terminal status (`updated_at` may move later,
    /// when prices arrive after the payment outcome).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
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
            items,
            total_cents: self.total_cents,
            created_at: self.created_at,
            updated_at: self.updated_at,
            completed_at: self.completed_at,
        })
    }
}

const ORDER_COLUMNS: &str =
    "order_id, user_id, status, reason, reason_detail, total_cents, created_at, updated_at, completed_at";

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

/// Stores a new PENDING order and its OrderCreated event in one transaction.
/// If the id is taken, returns the stored order instead and writes nothing.
pub async fn place(
    pool: &PgPool,
    topics: &Topics,
    producer: &str,
    new: &NewOrder,
) -> Result<Placement, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let inserted: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO orders (order_id, user_id, status) VALUES ($1, $2, 'PENDING')
         ON CONFLICT (order_id) DO NOTHING
         RETURNING created_at, updated_at",
    )
    .bind(new.order_id.as_str())
    .bind(new.created.user_id.as_str())
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

    let event = Envelope::new(
        new.order_id.clone(),
        Event::OrderCreated(new.created.clone()),
        producer,
    );
    service_kit::outbox::enqueue(&mut tx, topics, &event).await?;
    tx.commit().await?;
    // Everything about the new order is known; no need to read it back.
    Ok(Placement::Created(Order {
        order_id: new.order_id.to_string(),
        user_id: new.created.user_id.to_string(),
        status: OrderStatus::Pending,
        reason: None,
        reason_detail: None,
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

async fn load(conn: &mut PgConnection, order_id: &str) -> Result<Option<Order>, sqlx::Error> {
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

pub async fn set_status(
    tx: &mut PgConnection,
    order_id: &str,
    status: OrderStatus,
    reason: Option<&str>,
    reason_detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE orders SET status = $2, reason = $3, reason_detail = $4, updated_at = now(),
             completed_at = CASE WHEN $5 THEN now() ELSE completed_at END
         WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(status.as_str())
    .bind(reason)
    .bind(reason_detail)
    .bind(status.is_terminal())
    .execute(tx)
    .await?;
    Ok(())
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
