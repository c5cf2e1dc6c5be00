//! What events do to accounts:
//! - a RESERVED InventoryReserved charges the customer and answers with
//!   PaymentProcessed (APPROVED or DECLINED), unless the order is known to be
//!   cancelled or past its saga deadline, in which case nothing is charged;
//! - OrderCancelled refunds a captured payment (answering PaymentRefunded) and
//!   is remembered, so a reservation arriving later is never charged.
//!
//! The two arrive on different topics, in any order; the consumer loop holds
//! the order's lock ([`service_kit::db::lock_keys`]) while one is applied, so
//! each order's events apply one at a time.

use service_kit::{EventHandler, HandlerError};
use shared_events::{
    Cents, Envelope, Event, InventoryReserved, OrderCancelled, Payment, PaymentProcessed,
    PaymentRefunded, Reservation,
};
use sqlx::PgConnection;

use crate::db;
use crate::domain::{self, PaymentStatus};

pub struct PaymentEvents {
    pub service_name: String,
    /// Credit of a customer seen for the first time.
    pub default_credit: Cents,
}

impl EventHandler for PaymentEvents {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &Envelope,
    ) -> Result<Vec<Envelope>, HandlerError> {
        match &event.event {
            Event::InventoryReserved(reserved) => self.charge(tx, event, reserved).await,
            Event::OrderCancelled(cancelled) => self.refund(tx, event, cancelled).await,
            _ => Ok(vec![]),
        }
    }
}

impl PaymentEvents {
    async fn charge(
        &self,
        tx: &mut PgConnection,
        event: &Envelope,
        reserved: &InventoryReserved,
    ) -> Result<Vec<Envelope>, HandlerError> {
        let Reservation::Reserved { total_cents, .. } = reserved.outcome else {
            return Ok(vec![]);
        };
        let order_id = event.order_id.as_str();
        if db::is_cancelled(tx, order_id).await? {
            tracing::info!("order already cancelled; not charging");
            return Ok(vec![]);
        }
        if db::payment_exists(tx, order_id).await? {
            tracing::info!("order already charged or declined");
            return Ok(vec![]);
        }
        if event.past_deadline(chrono::Utc::now()) {
            // The saga is being cancelled: a charge now would only be refunded.
            tracing::warn!("order is past its saga deadline; not charging");
            return Ok(vec![]);
        }
        let user_id = reserved.user_id.as_str();
        let credit = db::lock_account(tx, user_id, self.default_credit.get()).await?;
        let credit = Cents::parse(credit).map_err(|e| HandlerError::Failed(anyhow::anyhow!(e)))?;
        let (outcome, left) = domain::charge(credit, total_cents);
        let status = PaymentStatus::charged(&outcome);
        let reason = match &outcome {
            Payment::Approved => None,
            Payment::Declined { reason } => Some(reason.as_str()),
        };
        if left != credit {
            db::update_credit(tx, user_id, left.get()).await?;
        }
        db::record_payment(tx, order_id, user_id, total_cents.get(), status, reason).await?;
        tracing::info!(
            %status,
            amount_cents = total_cents.get(),
            credit_left = left.get(),
            "payment processed"
        );
        let reply = Event::PaymentProcessed(PaymentProcessed {
            user_id: reserved.user_id.clone(),
            amount_cents: total_cents,
            outcome,
        });
        Ok(vec![event.follow_up(reply, &self.service_name)])
    }

    async fn refund(
        &self,
        tx: &mut PgConnection,
        event: &Envelope,
        cancelled: &OrderCancelled,
    ) -> Result<Vec<Envelope>, HandlerError> {
        let order_id = event.order_id.as_str();
        db::record_cancellation(
            tx,
            order_id,
            cancelled.user_id.as_str(),
            cancelled.reason.as_str(),
        )
        .await?;
        let Some(payment) = db::lock_payment(tx, order_id).await? else {
            tracing::info!("cancelled order has no payment; nothing to refund");
            return Ok(vec![]);
        };
        let Some(refunded) = payment.status.refund() else {
            tracing::info!(
                status = %payment.status,
                "cancelled order's payment is not captured; nothing to refund"
            );
            return Ok(vec![]);
        };
        let amount = payment.amount_cents;
        db::refund(tx, order_id, &payment.user_id, amount, refunded).await?;
        tracing::info!(amount_cents = amount, "payment refunded");
        let amount_cents =
            Cents::parse(amount).map_err(|e| HandlerError::Failed(anyhow::anyhow!(e)))?;
        let reply = Event::PaymentRefunded(PaymentRefunded {
            user_id: cancelled.user_id.clone(),
            amount_cents,
        });
        Ok(vec![event.follow_up(reply, &self.service_name)])
    }
}
