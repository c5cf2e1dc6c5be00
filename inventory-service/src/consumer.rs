//! What events do to stock: OrderCreated reserves (all lines or none) and
//! answers with InventoryReserved; PaymentProcessed turns the reservation into
//! a sale (APPROVED) or releases it (DECLINED).

use service_kit::{EventHandler, HandlerError};
use shared_events::{Envelope, Event, InventoryReserved, OrderCreated, Payment, Reservation};
use sqlx::PgConnection;

use crate::db::{self, Settlement};
use crate::domain;

pub struct InventoryEvents {
    /// Written as the `producer` of InventoryReserved.
    pub service_name: String,
}

impl EventHandler for InventoryEvents {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &Envelope,
    ) -> Result<Vec<Envelope>, HandlerError> {
        match &event.event {
            Event::OrderCreated(created) => self.reserve(tx, event, created).await,
            Event::PaymentProcessed(payment) => {
                let how = match payment.outcome {
                    Payment::Approved => Settlement::Sell,
                    Payment::Declined { .. } => Settlement::Release,
                };
                match db::settle(tx, event.order_id.as_str(), how).await? {
                    Some(true) => tracing::info!(settlement = ?how, "reservation settled"),
                    Some(false) => tracing::info!("reservation already settled"),
                    None => {
                        return Err(HandlerError::Permanent(format!(
                            "payment outcome for order {} which has no reservation",
                            event.order_id
                        )))
                    }
                }
                Ok(vec![])
            }
            Event::InventoryReserved(_) | Event::PaymentRefunded(_) | Event::OrderCancelled(_) => {
                Ok(vec![])
            }
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
            tracing::info!("order already has a reservation");
            return Ok(vec![]);
        }
        let skus: Vec<&str> = created.items.iter().map(|l| l.sku.as_str()).collect();
        let stock = db::lock_stock(tx, &skus).await?;
        let outcome = domain::reserve(&created.items, &stock);
        match &outcome {
            Reservation::Reserved { lines, total_cents } => {
                db::hold(tx, order_id, created.user_id.as_str(), lines, *total_cents).await?;
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
