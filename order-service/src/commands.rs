//! What order-service does on its own initiative: place an order and cancel
//! one. Each command builds its event, writes the order's change and enqueues
//! the event through the service's [`Outbox`] in one transaction, so the HTTP
//! handlers and the saga deadline ([`crate::deadline`]) share one path.

use chrono::{DateTime, Utc};
use service_kit::outbox::{Outbox, OutboxTx};
use shared_events::{
    CancelInitiator, CancelReason, Envelope, Event, OrderCancelled, OrderCreated, OrderId,
    OrderLine, UserId,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{self, CancelCandidate};
use crate::domain::{self, CancelDecision, CancelRefused, OrderStatus};
use crate::http::view::{Item, Order};

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
    let inserted = db::insert_order(
        &mut tx,
        &new.order_id,
        &new.created.user_id,
        event.correlation_id,
    )
    .await?;
    let Some((created_at, updated_at)) = inserted else {
        let existing = db::load(&mut tx, new.order_id.as_str()).await?;
        tx.rollback().await?;
        return existing
            .map(Placement::Existing)
            .ok_or(sqlx::Error::RowNotFound);
    };
    db::insert_items(&mut tx, &new.order_id, &new.created.items).await?;
    outbox.enqueue(&mut tx, &event).await?;
    db::record_event(&mut tx, &event).await?;
    outbox.commit(tx).await?;
    // Everything about the new order is known; no need to read it back.
    Ok(Placement::Created(placed_order(
        new, created_at, updated_at,
    )))
}

/// The order `new` as it was just stored.
fn placed_order(new: &NewOrder, created_at: DateTime<Utc>, updated_at: DateTime<Utc>) -> Order {
    Order {
        order_id: new.order_id.to_string(),
        user_id: new.created.user_id.to_string(),
        status: OrderStatus::Pending,
        reason: None,
        reason_detail: None,
        cancelled_by: None,
        items: new
            .created
            .items
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
    }
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

/// Why a customer's cancellation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no order {0}")]
    NotFound(OrderId),
    #[error("order {0}: {1}")]
    Refused(OrderId, CancelRefused),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The customer calls the saga off: locks the order, decides by
/// [`domain::customer_cancel`] and cancels it in one transaction, committed
/// through the outbox so that the OrderCancelled leaves at once. Returns the
/// order as it is afterwards.
pub async fn cancel_by_customer(
    pool: &PgPool,
    outbox: &Outbox,
    order_id: &OrderId,
    reason: &CancelReason,
    window: Option<std::time::Duration>,
) -> Result<Order, CancelError> {
    let not_found = || CancelError::NotFound(order_id.clone());
    let mut tx = outbox.begin(pool).await?;
    let candidate = db::lock_for_cancel(&mut tx, order_id.as_str())
        .await?
        .ok_or_else(not_found)?;
    let decision = domain::customer_cancel(&candidate.target, window)
        .map_err(|refusal| CancelError::Refused(order_id.clone(), refusal))?;
    match decision {
        CancelDecision::Cancel => {
            cancel(
                &mut tx,
                outbox,
                order_id,
                &candidate,
                CancelInitiator::Customer,
                reason,
            )
            .await?;
            tracing::info!(from = %candidate.target.status, reason = %reason, "order cancelled by the customer");
        }
        CancelDecision::AlreadyCancelled => {}
    }
    let order = db::load(&mut tx, order_id.as_str())
        .await?
        .ok_or_else(not_found)?;
    outbox.commit(tx).await?;
    Ok(order)
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
    let created_at = db::mark_cancelled(tx, order_id.as_str(), initiator, reason).await?;
    crate::metrics::status_changed(candidate.target.status, OrderStatus::Cancelled, created_at);
    outbox.enqueue(tx, &event).await?;
    db::record_event(tx, &event).await?;
    Ok(())
}
