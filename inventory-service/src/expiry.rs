//! The reservation expiry: a periodic batch job that releases reservations
//! still held `INVENTORY_RESERVATION_TTL_SECS` after they were made and
//! publishes each order's cancellation (initiator `RESERVATION_EXPIRY`), the
//! backstop when order-service is down.

use service_kit::outbox::{Outbox, OutboxTx};
use service_kit::periodic::BatchJob;
use shared_events::{
    CancelInitiator, CancelReason, Envelope, Event, OrderCancelled, OrderId, UserId,
};
use uuid::Uuid;

use crate::db;

/// Most expired reservations released in one transaction.
pub const EXPIRY_BATCH: i64 = 100;

/// Gives back stock held for sagas that never finished, and calls those sagas
/// off so that no one charges or confirms them later.
pub struct ReservationExpiry {
    /// Where the cancellations are announced.
    pub outbox: Outbox,
}

impl BatchJob for ReservationExpiry {
    async fn pass(&self, tx: &mut OutboxTx, batch: i64) -> anyhow::Result<usize> {
        let expired = db::release_expired(tx, batch).await?;
        for reservation in &expired {
            let event = Envelope::in_saga(
                OrderId::parse(&reservation.order_id)?,
                reservation.correlation_id.unwrap_or_else(Uuid::now_v7),
                Event::OrderCancelled(OrderCancelled {
                    user_id: UserId::parse(&reservation.user_id)?,
                    initiator: CancelInitiator::ReservationExpiry,
                    reason: CancelReason::timeout(),
                }),
                self.outbox.producer(),
            );
            self.outbox.enqueue(tx, &event).await?;
            tracing::warn!(
                order_id = %reservation.order_id,
                "reservation expired; stock released and order cancelled"
            );
        }
        Ok(expired.len())
    }
}
