//! What events do to stock:
//! - OrderCreated reserves (all lines or none) and answers with InventoryReserved,
//!   unless the order was cancelled or is past its saga deadline;
//! - PaymentProcessed turns the reservation into a sale (APPROVED) or releases
//!   it (DECLINED);
//! - OrderCancelled releases a held reservation, returns sold units to stock,
//!   or, when nothing was reserved yet, makes sure nothing will be.
//!
//! The three arrive on different topics, in any order; the consumer loop holds
//! the order's lock ([`service_kit::db::lock_keys`]) while one is applied, so
//! each order's events apply one at a time. Which settlement a fact causes is
//! decided by [`ReservationStatus::settlement`].

use service_kit::{EventHandler, HandlerError};
use shared_events::{
    Envelope, Event, InventoryReserved, OrderCancelled, OrderCreated, Payment, Reservation,
};
use sqlx::PgConnection;

use crate::db::{self, Hold};
use crate::domain::{self, Fact, ReservationStatus, Settlement};

pub struct InventoryEvents {
    /// Written as the `producer` of InventoryReserved.
    pub service_name: String,
    /// How long a reservation is held without a payment outcome.
    pub reservation_ttl: std::time::Duration,
}

impl EventHandler for InventoryEvents {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &Envelope,
    ) -> Result<Vec<Envelope>, HandlerError> {
        let order_id = event.order_id.as_str();
        match &event.event {
            Event::OrderCreated(created) => self.reserve(tx, event, created).await,
            Event::PaymentProcessed(payment) => {
                let fact = match payment.outcome {
                    Payment::Approved => Fact::PaymentApproved,
                    Payment::Declined { .. } => Fact::PaymentDeclined,
                };
                let Some(status) = db::lock_reservation(tx, order_id).await? else {
                    return Err(HandlerError::Permanent(format!(
                        "payment outcome for order {order_id} which has no reservation"
                    )));
                };
                if settle(tx, order_id, status, fact).await?.is_none() {
                    tracing::info!(%status, "reservation already settled or cancelled");
                }
                Ok(vec![])
            }
            Event::OrderCancelled(cancelled) => {
                cancel(tx, order_id, cancelled).await?;
                Ok(vec![])
            }
            Event::InventoryReserved(_) | Event::PaymentRefunded(_) => Ok(vec![]),
        }
    }
}

impl InventoryEvents {
    async fn reserve(
        &self,
        tx: &mut PgConnection,
        event: &Envelope,
        created: &OrderCreated,
    ) -> Result<Vec<Envelope>, HandlerError> {
        let order_id = event.order_id.as_str();
        if db::reservation_exists(tx, order_id).await? {
            tracing::info!("order already has a reservation, or was cancelled");
            return Ok(vec![]);
        }
        if event.past_deadline(chrono::Utc::now()) {
            // order-service cancels the order; holding stock for it would only
            // delay that stock's return.
            tracing::warn!("order is past its saga deadline; reserving nothing");
            return Ok(vec![]);
        }
        let skus: Vec<&str> = created.items.iter().map(|l| l.sku.as_str()).collect();
        let stock = db::lock_stock(tx, &skus).await?;
        let outcome = domain::reserve(&created.items, &stock);
        match &outcome {
            Reservation::Reserved { lines, total_cents } => {
                let hold = Hold {
                    order_id,
                    user_id: created.user_id.as_str(),
                    correlation_id: event.correlation_id,
                    lines,
                    total: *total_cents,
                    ttl: self.reservation_ttl,
                };
                db::hold(tx, &hold).await?;
                tracing::info!(total_cents = total_cents.get(), "stock reserved");
            }
            Reservation::Rejected { reason, detail } => {
                tracing::info!(reason = reason.as_str(), detail, "reservation rejected");
            }
        }
        let reply = Event::InventoryReserved(InventoryReserved {
            user_id: created.user_id.clone(),
            outcome,
        });
        Ok(vec![event.follow_up(reply, &self.service_name)])
    }
}

/// Settles the reservation (locked, in `status`) as `fact` requires, and
/// says how; `None` when `fact` changes nothing.
async fn settle(
    tx: &mut PgConnection,
    order_id: &str,
    status: ReservationStatus,
    fact: Fact,
) -> Result<Option<Settlement>, sqlx::Error> {
    let Some(how) = status.settlement(fact) else {
        return Ok(None);
    };
    db::settle(tx, order_id, how, fact).await?;
    tracing::info!(settlement = ?how, %fact, "reservation settled");
    Ok(Some(how))
}

/// Undoes whatever this service did for a cancelled order.
async fn cancel(
    tx: &mut PgConnection,
    order_id: &str,
    cancelled: &OrderCancelled,
) -> Result<(), sqlx::Error> {
    let Some(status) = db::lock_reservation(tx, order_id).await? else {
        db::mark_cancelled(tx, order_id, cancelled.user_id.as_str()).await?;
        tracing::info!("order cancelled before its reservation; nothing will be reserved");
        return Ok(());
    };
    if settle(tx, order_id, status, Fact::OrderCancelled)
        .await?
        .is_none()
    {
        tracing::info!(%status, "cancelled order has nothing held or sold");
    }
    Ok(())
}
