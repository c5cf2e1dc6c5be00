//! What the saga's events do to an order: InventoryReserved, PaymentProcessed
//! and OrderCancelled move it along the state machine in [`crate::domain`]
//! (one function each); every event, PaymentRefunded included, goes on the
//! order's timeline.

use service_kit::{EventHandler, HandlerError};
use shared_events::{
    Envelope, Event, InventoryReserved, OrderCancelled, Payment, PaymentProcessed, Reservation,
};
use sqlx::PgConnection;

use crate::db;
use crate::domain::{Fact, OrderStatus, Transition};

pub struct OrderEvents;

impl EventHandler for OrderEvents {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &Envelope,
    ) -> Result<Vec<Envelope>, HandlerError> {
        let order_id = event.order_id.as_str();
        let Some(status) = db::lock_status(tx, order_id).await? else {
            return Err(HandlerError::Permanent(format!("no order {order_id}")));
        };
        db::record_event(tx, event).await?;
        match &event.event {
            Event::InventoryReserved(reserved) => {
                inventory_reserved(tx, order_id, status, reserved).await?
            }
            Event::PaymentProcessed(payment) => {
                payment_processed(tx, order_id, status, payment).await?
            }
            Event::OrderCancelled(cancelled) => {
                order_cancelled(tx, order_id, status, cancelled).await?
            }
            // Timeline only: the order is already CANCELLED, or was announced by us.
            Event::OrderCreated(_) | Event::PaymentRefunded(_) => {}
        }
        Ok(vec![])
    }
}

/// RESERVED or REJECTED; the prices charged are kept even when the status
/// already moved on (payment news can overtake reservation news).
async fn inventory_reserved(
    tx: &mut PgConnection,
    order_id: &str,
    status: OrderStatus,
    reserved: &InventoryReserved,
) -> Result<(), HandlerError> {
    let (fact, reason, detail) = match &reserved.outcome {
        Reservation::Reserved { .. } => (Fact::StockReserved, None, None),
        Reservation::Rejected { reason, detail } => (
            Fact::StockRejected,
            Some(reason.as_str()),
            Some(detail.as_str()),
        ),
    };
    let transition = apply(status, fact)?;
    if let Reservation::Reserved { lines, total_cents } = &reserved.outcome {
        db::set_prices(tx, order_id, lines, total_cents.get()).await?;
    }
    if let Transition::Moved(next) = transition {
        let created_at = db::set_status(tx, order_id, next, reason, detail).await?;
        changed(status, next, created_at);
    }
    Ok(())
}

/// CONFIRMED or PAYMENT_FAILED; the amount is kept as the total if the prices
/// have not arrived yet.
async fn payment_processed(
    tx: &mut PgConnection,
    order_id: &str,
    status: OrderStatus,
    payment: &PaymentProcessed,
) -> Result<(), HandlerError> {
    let (fact, reason, detail) = match &payment.outcome {
        Payment::Approved => (Fact::PaymentApproved, None, None),
        Payment::Declined { reason } => (
            Fact::PaymentDeclined,
            Some(reason.as_str()),
            Some("the order total exceeds the customer's credit"),
        ),
    };
    let transition = apply(status, fact)?;
    db::set_total_if_unknown(tx, order_id, payment.amount_cents.get()).await?;
    if let Transition::Moved(next) = transition {
        let created_at = db::set_status(tx, order_id, next, reason, detail).await?;
        changed(status, next, created_at);
    }
    Ok(())
}

/// CANCELLED, when another service called the saga off (a reservation
/// expired) or our own cancellation comes back.
async fn order_cancelled(
    tx: &mut PgConnection,
    order_id: &str,
    status: OrderStatus,
    cancelled: &OrderCancelled,
) -> Result<(), HandlerError> {
    if let Transition::Moved(next) = apply(status, Fact::SagaCancelled)? {
        let created_at =
            db::mark_cancelled(tx, order_id, cancelled.initiator, &cancelled.reason).await?;
        changed(status, next, created_at);
    }
    Ok(())
}

/// The state machine's answer; news that contradicts the state is permanent.
fn apply(status: OrderStatus, fact: Fact) -> Result<Transition, HandlerError> {
    status
        .apply(fact)
        .map_err(|err| HandlerError::Permanent(err.to_string()))
}

fn changed(from: OrderStatus, to: OrderStatus, created_at: chrono::DateTime<chrono::Utc>) {
    crate::metrics::status_changed(from, to, created_at);
    tracing::info!(from = %from, to = %to, "order status changed");
}
