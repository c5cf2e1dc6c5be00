//! What the saga's events do to an order: InventoryReserved, PaymentProcessed
//! and OrderCancelled move it along the state machine in [`crate::domain`];
//! every event, PaymentRefunded included, goes on the order's timeline.

use service_kit::{EventHandler, HandlerError};
use shared_events::{Envelope, Event, Payment, Reservation};
use sqlx::PgConnection;

use crate::db;
use crate::domain::{Fact, Transition};

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

        let (fact, reason, detail) = match &event.event {
            Event::InventoryReserved(reserved) => match &reserved.outcome {
                Reservation::Reserved { .. } => (Fact::StockReserved, None, None),
                Reservation::Rejected { reason, detail } => (
                    Fact::StockRejected,
                    Some(reason.as_str()),
                    Some(detail.as_str()),
                ),
            },
            Event::PaymentProcessed(payment) => match &payment.outcome {
                Payment::Approved => (Fact::PaymentApproved, None, None),
                Payment::Declined { reason } => (
                    Fact::PaymentDeclined,
                    Some(reason.as_str()),
                    Some("the order total exceeds the customer's credit"),
                ),
            },
            Event::OrderCancelled(_) => (Fact::SagaCancelled, None, None),
            // Timeline only: the order is already CANCELLED, or was announced by us.
            Event::OrderCreated(_) | Event::PaymentRefunded(_) => return Ok(vec![]),
        };
        let transition = status
            .apply(fact)
            .map_err(|err| HandlerError::Permanent(err.to_string()))?;

        // Prices and amounts are facts worth keeping even when the status
        // already moved on (payment news can overtake reservation news).
        match &event.event {
            Event::InventoryReserved(reserved) => {
                if let Reservation::Reserved { lines, total_cents } = &reserved.outcome {
                    db::set_prices(tx, order_id, lines, total_cents.get()).await?;
                }
            }
            Event::PaymentProcessed(payment) => {
                db::set_total_if_unknown(tx, order_id, payment.amount_cents.get()).await?;
            }
            _ => {}
        }

        if let Transition::Moved(next) = transition {
            let created_at = match &event.event {
                // Another service called the saga off (a reservation expired).
                Event::OrderCancelled(cancelled) => {
                    db::mark_cancelled(tx, order_id, cancelled.initiator, &cancelled.reason).await?
                }
                _ => db::set_status(tx, order_id, next, reason, detail).await?,
            };
            crate::metrics::status_changed(status, next, created_at);
            tracing::info!(from = %status, to = %next, "order status changed");
        }
        Ok(vec![])
    }
}
