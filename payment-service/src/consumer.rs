//! What events do to accounts: a RESERVED InventoryReserved charges the
//! customer and answers with PaymentProcessed (APPROVED or DECLINED).

use service_kit::{EventHandler, HandlerError};
use shared_events::{Cents, Envelope, Event, Payment, PaymentProcessed, Reservation};
use sqlx::PgConnection;

use crate::{db, domain};

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
        let Event::InventoryReserved(reserved) = &event.event else {
            return Ok(vec![]);
        };
        let Reservation::Reserved { total_cents, .. } = reserved.outcome else {
            return Ok(vec![]);
        };
        let order_id = event.order_id.as_str();
        if db::payment_exists(tx, order_id).await? {
            tracing::info!("order already charged or declined");
            return Ok(vec![]);
        }
        let user_id = reserved.user_id.as_str();
        let credit = db::lock_account(tx, user_id, self.default_credit.get()).await?;
        let credit = Cents::parse(credit).map_err(|e| HandlerError::Failed(anyhow::anyhow!(e)))?;
        let (outcome, left) = domain::charge(credit, total_cents);
        let (status, reason) = match &outcome {
            Payment::Approved => ("APPROVED", None),
            Payment::Declined { reason } => ("DECLINED", Some(reason.as_str())),
        };
        if left != credit {
            db::update_credit(tx, user_id, left.get()).await?;
        }
        db::record_payment(tx, order_id, user_id, total_cents.get(), status, reason).await?;
        tracing::info!(
            status,
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
}
