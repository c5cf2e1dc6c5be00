//! SQL for notifications.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use shared_events::Envelope;

use crate::domain::Notice;

/// What a customer was told, as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: i64,
    pub event_id: Uuid,
    pub order_id: String,
    pub user_id: String,
    pub kind: String,
    pub message: String,
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

pub async fn record(
    tx: &mut PgConnection,
    event: &Envelope,
    notice: &Notice,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO notifications (event_id, order_id, user_id, kind, message, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event.event_id)
    .bind(event.order_id.as_str())
    .bind(&notice.user_id)
    .bind(notice.kind.as_str())
    .bind(&notice.message)
    .bind(event.occurred_at)
    .execute(tx)
    .await?;
    Ok(())
}

/// Notifications for an order and/or a user, in the order the events happened.
pub async fn list(
    pool: &PgPool,
    order_id: Option<&str>,
    user_id: Option<&str>,
    limit: i64,
) -> Result<Vec<Notification>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_id, order_id, user_id, kind, message, occurred_at, created_at FROM notifications
         WHERE ($1::text IS NULL OR order_id = $1) AND ($2::text IS NULL OR user_id = $2)
         ORDER BY occurred_at, id LIMIT $3",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
