//! Records and logs a notification for every event a customer should hear about.

use service_kit::{EventHandler, HandlerError};
use shared_events::Envelope;
use sqlx::PgConnection;

use crate::{db, domain};

pub struct NotificationEvents;

impl EventHandler for NotificationEvents {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &Envelope,
    ) -> Result<Vec<Envelope>, HandlerError> {
        if let Some(notice) = domain::notice_for(event) {
            db::record(tx, event, &notice).await?;
            // Delivery to a real channel (e-mail, push) would go here; the log
            // line stands in for it.
            tracing::info!(user_id = %notice.user_id, kind = notice.kind.as_str(), message = %notice.message, "customer notified");
        }
        Ok(vec![])
    }
}
