//! SQL for the catalog and reservations.

use std::collections::HashMap;

use serde::Serialize;
use shared_events::{Cents, PricedLine, Sku};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{Fact, ReservationStatus, Settlement, Stock};

/// A catalog entry as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub available: i32,
    pub reserved: i32,
    pub sold: i32,
}

const PRODUCT_COLUMNS: &str = "sku, name, price_cents, available, reserved, sold";

pub async fn list_products(pool: &PgPool) -> Result<Vec<Product>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products ORDER BY sku"
    ))
    .fetch_all(pool)
    .await
}

pub async fn find_product(pool: &PgPool, sku: &str) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE sku = $1"
    ))
    .bind(sku)
    .fetch_optional(pool)
    .await
}

/// Creates the product or sets its price, availability (and name, if given).
/// Returns the product and whether it was created.
pub async fn upsert_product(
    pool: &PgPool,
    sku: &str,
    name: Option<&str>,
    price_cents: i64,
    available: i32,
) -> Result<(Product, bool), sqlx::Error> {
    let (product, created): (Product, bool) =
        sqlx::query_as::<_, (String, String, i64, i32, i32, i32, bool)>(
            "INSERT INTO products (sku, name, price_cents, available)
         VALUES ($1, COALESCE($2, $1), $3, $4)
         ON CONFLICT (sku) DO UPDATE SET
             name = COALESCE($2, products.name),
             price_cents = EXCLUDED.price_cents,
             available = EXCLUDED.available,
             updated_at = now()
         RETURNING sku, name, price_cents, available, reserved, sold, (xmax = 0) AS created",
        )
        .bind(sku)
        .bind(name)
        .bind(price_cents)
        .bind(available)
        .fetch_one(pool)
        .await
        .map(
            |(sku, name, price_cents, available, reserved, sold, created)| {
                (
                    Product {
                        sku,
                        name,
                        price_cents,
                        available,
                        reserved,
                        sold,
                    },
                    created,
                )
            },
        )?;
    Ok((product, created))
}

/// Loads the catalog if it is empty. Several instances starting together may
/// all try; the primary key keeps one copy of each product.
pub async fn seed_if_empty(
    pool: &PgPool,
    catalog: &[(&str, &str, i64, i32)],
) -> Result<bool, sqlx::Error> {
    let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM products)")
        .fetch_one(pool)
        .await?;
    if !empty {
        return Ok(false);
    }
    for (sku, name, price, available) in catalog {
        sqlx::query(
            "INSERT INTO products (sku, name, price_cents, available) VALUES ($1, $2, $3, $4)
             ON CONFLICT (sku) DO NOTHING",
        )
        .bind(sku)
        .bind(name)
        .bind(price)
        .bind(available)
        .execute(pool)
        .await?;
    }
    Ok(true)
}

/// Has this order been handled already (reserved, settled or cancelled)?
pub async fn reservation_exists(
    tx: &mut PgConnection,
    order_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM reservations WHERE order_id = $1)")
        .bind(order_id)
        .fetch_one(tx)
        .await
}

/// The reservation's status, locked for the rest of the transaction.
pub async fn lock_reservation(
    tx: &mut PgConnection,
    order_id: &str,
) -> Result<Option<ReservationStatus>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1 FOR UPDATE")
        .bind(order_id)
        .fetch_optional(tx)
        .await
}

/// Records that the order was cancelled before anything was reserved for it.
pub async fn mark_cancelled(
    tx: &mut PgConnection,
    order_id: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reservations (order_id, user_id, status, total_cents, ended_by)
         VALUES ($1, $2, $3, 0, $4)",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(ReservationStatus::Cancelled)
    .bind(<&str>::from(Fact::OrderCancelled))
    .execute(tx)
    .await?;
    Ok(())
}

/// Locks the catalog rows of `skus` for the rest of the transaction, in SKU
/// order so that concurrent reservations never deadlock, and returns them.
/// This lock is what keeps several instances from selling the same unit twice.
pub async fn lock_stock(
    tx: &mut PgConnection,
    skus: &[&str],
) -> Result<HashMap<Sku, Stock>, sqlx::Error> {
    let rows: Vec<(String, i64, i32)> = sqlx::query_as(
        "SELECT sku, price_cents, available FROM products
         WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(skus)
    .fetch_all(tx)
    .await?;
    rows.into_iter()
        .map(|(sku, price, available)| {
            let decode = |e: shared_events::InvalidValue| sqlx::Error::Decode(e.0.into());
            Ok((
                Sku::parse(&sku).map_err(decode)?,
                Stock {
                    price: Cents::parse(price).map_err(decode)?,
                    available: available.max(0) as u32,
                },
            ))
        })
        .collect()
}

/// A reservation about to be made.
pub struct Hold<'a> {
    pub order_id: &'a str,
    pub user_id: &'a str,
    pub correlation_id: Uuid,
    pub lines: &'a [PricedLine],
    pub total: Cents,
    /// How long the units stay held without a payment outcome.
    pub ttl: std::time::Duration,
}

/// Moves the lines' units from available to reserved and records the reservation.
pub async fn hold(tx: &mut PgConnection, hold: &Hold<'_>) -> Result<(), sqlx::Error> {
    let Hold {
        order_id,
        user_id,
        correlation_id,
        lines,
        total,
        ttl,
    } = *hold;
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let quantities: Vec<i32> = lines.iter().map(|l| l.quantity.get() as i32).collect();
    let prices: Vec<i64> = lines.iter().map(|l| l.unit_price_cents.get()).collect();
    sqlx::query(
        "UPDATE products p SET available = p.available - l.quantity,
                               reserved = p.reserved + l.quantity,
                               updated_at = now()
         FROM UNNEST($1::text[], $2::int[]) AS l(sku, quantity)
         WHERE p.sku = l.sku",
    )
    .bind(&skus)
    .bind(&quantities)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO reservations (order_id, user_id, status, total_cents, correlation_id, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(ReservationStatus::Held)
    .bind(total.get())
    .bind(correlation_id)
    .bind(ttl.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO reservation_lines (order_id, sku, quantity, unit_price_cents)
         SELECT $1, * FROM UNNEST($2::text[], $3::int[], $4::bigint[])",
    )
    .bind(order_id)
    .bind(&skus)
    .bind(&quantities)
    .bind(&prices)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The stock columns' change when a reservation is settled `how`.
fn stock_update(how: Settlement) -> &'static str {
    match how {
        Settlement::Sell => "reserved = p.reserved - l.quantity, sold = p.sold + l.quantity",
        Settlement::Release => {
            "reserved = p.reserved - l.quantity, available = p.available + l.quantity"
        }
        Settlement::Return => "sold = p.sold - l.quantity, available = p.available + l.quantity",
    }
}

/// Settles the order's reservation `how` (moving its units) and records
/// `fact` as what ended it. The caller has locked the reservation
/// ([`lock_reservation`]) and decided `how` from its status
/// ([`ReservationStatus::settlement`]).
pub async fn settle(
    tx: &mut PgConnection,
    order_id: &str,
    how: Settlement,
    fact: Fact,
) -> Result<(), sqlx::Error> {
    // Product rows in SKU order, as reservations lock them, so the two never deadlock.
    sqlx::query(
        "SELECT 1 FROM products WHERE sku IN (SELECT sku FROM reservation_lines WHERE order_id = $1)
         ORDER BY sku FOR UPDATE",
    )
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "UPDATE products p SET {}, updated_at = now()
         FROM reservation_lines l
         WHERE l.order_id = $1 AND p.sku = l.sku",
        stock_update(how)
    ))
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE reservations SET status = $2, ended_by = $3, updated_at = now() WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(how.outcome())
    .bind(<&str>::from(fact))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A held reservation whose time is up.
pub struct Expired {
    pub order_id: String,
    pub user_id: String,
    pub correlation_id: Option<Uuid>,
}

/// Held reservations past their expiry. The status is written out, not
/// bound: the partial index `reservations_held_by_expiry` (`WHERE status =
/// 'HELD'`) serves only a query that names the same value, and a prepared
/// statement's generic plan could not prove a parameter does. A test holds
/// the literal to [`ReservationStatus`].
const EXPIRED: &str = "SELECT order_id, user_id, correlation_id FROM reservations
     WHERE status = 'HELD' AND expires_at < now()
     ORDER BY expires_at
     LIMIT $1
     FOR UPDATE SKIP LOCKED";

/// Releases up to `limit` held reservations past their expiry (skipping any
/// another instance is handling) and returns them.
pub async fn release_expired(
    tx: &mut PgConnection,
    limit: i64,
) -> Result<Vec<Expired>, sqlx::Error> {
    let expired: Vec<(String, String, Option<Uuid>)> = sqlx::query_as(EXPIRED)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    let how = ReservationStatus::Held
        .settlement(Fact::Expired)
        .expect("an expired held reservation is released");
    for (order_id, ..) in &expired {
        settle(tx, order_id, how, Fact::Expired).await?;
    }
    Ok(expired
        .into_iter()
        .map(|(order_id, user_id, correlation_id)| Expired {
            order_id,
            user_id,
            correlation_id,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_query_names_the_held_status() {
        let held = format!("status = '{}'", ReservationStatus::Held);
        assert!(EXPIRED.contains(&held), "{EXPIRED}");
    }
}
