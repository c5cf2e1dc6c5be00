//! SQL for accounts and payments.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::domain::PaymentStatus;

/// A customer's credit, as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub user_id: String,
    /// What the customer may still spend, in cents.
    pub credit_cents: i64,
}

/// An order's payment, as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRecord {
    pub order_id: String,
    pub user_id: String,
    pub amount_cents: i64,
    pub status: PaymentStatus,
    /// Why a DECLINED payment was declined, e.g. INSUFFICIENT_CREDIT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunded_at: Option<DateTime<Utc>>,
}

pub async fn find_account(pool: &PgPool, user_id: &str) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as("SELECT user_id, credit_cents FROM accounts WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

pub async fn set_credit(
    pool: &PgPool,
    user_id: &str,
    credit_cents: i64,
) -> Result<Account, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO accounts (user_id, credit_cents) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET credit_cents = EXCLUDED.credit_cents, updated_at = now()
         RETURNING user_id, credit_cents",
    )
    .bind(user_id)
    .bind(credit_cents)
    .fetch_one(pool)
    .await
}

pub async fn find_payment(
    pool: &PgPool,
    order_id: &str,
) -> Result<Option<PaymentRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT order_id, user_id, amount_cents, status, reason, created_at, refunded_at
         FROM payments WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await
}

pub async fn payment_exists(tx: &mut PgConnection, order_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM payments WHERE order_id = $1)")
        .bind(order_id)
        .fetch_one(tx)
        .await
}

/// Locks the customer's account for the rest of the transaction, opening it
/// with `default_credit` if it does not exist, and returns its credit.
pub async fn lock_account(
    tx: &mut PgConnection,
    user_id: &str,
    default_credit: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query("INSERT INTO accounts (user_id, credit_cents) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING")
        .bind(user_id)
        .bind(default_credit)
        .execute(&mut *tx)
        .await?;
    sqlx::query_scalar("SELECT credit_cents FROM accounts WHERE user_id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_one(tx)
        .await
}

pub async fn update_credit(
    tx: &mut PgConnection,
    user_id: &str,
    credit_cents: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET credit_cents = $2, updated_at = now() WHERE user_id = $1")
        .bind(user_id)
        .bind(credit_cents)
        .execute(tx)
        .await?;
    Ok(())
}

pub async fn record_payment(
    tx: &mut PgConnection,
    order_id: &str,
    user_id: &str,
    amount_cents: i64,
    status: PaymentStatus,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payments (order_id, user_id, amount_cents, status, reason) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(amount_cents)
    .bind(status)
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}

/// Remembers that the order was cancelled (once; repeats change nothing).
pub async fn record_cancellation(
    tx: &mut PgConnection,
    order_id: &str,
    user_id: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cancelled_orders (order_id, user_id, reason) VALUES ($1, $2, $3)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn is_cancelled(tx: &mut PgConnection, order_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cancelled_orders WHERE order_id = $1)")
        .bind(order_id)
        .fetch_one(tx)
        .await
}

/// A payment as a refund reads it.
#[derive(Debug, sqlx::FromRow)]
pub struct LockedPayment {
    pub user_id: String,
    pub amount_cents: i64,
    pub status: PaymentStatus,
}

/// The order's payment, locked for the rest of the transaction, if there is one.
pub async fn lock_payment(
    tx: &mut PgConnection,
    order_id: &str,
) -> Result<Option<LockedPayment>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, amount_cents, status FROM payments WHERE order_id = $1 FOR UPDATE",
    )
    .bind(order_id)
    .fetch_optional(tx)
    .await
}

/// Gives a captured payment back: the amount returns to the customer's credit
/// and the payment takes `status` ([`PaymentStatus::refund`]).
pub async fn refund(
    tx: &mut PgConnection,
    order_id: &str,
    user_id: &str,
    amount_cents: i64,
    status: PaymentStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE accounts SET credit_cents = credit_cents + $2, updated_at = now() WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(amount_cents)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE payments SET status = $2, refunded_at = now() WHERE order_id = $1")
        .bind(order_id)
        .bind(status)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
