//! Builds and runs inventory-service: HTTP API, outbox relay, a consumer of
//! `order-created`, `payment-processed` and `order-cancelled`, and the
//! reservation expiry.

use anyhow::Context;
use service_kit::outbox::{Outbox, OutboxTx};
use service_kit::periodic::BatchJob;
use service_kit::{Infrastructure, ServiceHost};
use shared_events::{
    CancelInitiator, CancelReason, Envelope, Event, OrderCancelled, OrderId, Topics, UserId,
};
use sqlx::migrate::Migrator;
use uuid::Uuid;

use crate::config::Config;
use crate::consumer::InventoryEvents;
use crate::db;
use crate::http::{self, AppState};

/// The service's own migrations (the plumbing tables come from service-kit).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The demo catalog loaded into an empty catalog: (sku, name, price in cents, available).
/// `gold-watch` costs more than a new customer's default credit, to show PAYMENT_FAILED.
pub const DEMO_CATALOG: &[(&str, &str, i64, i32)] = &[
    ("widget", "Widget", 1_999, 1_000),
    ("gadget", "Gadget", 4_999, 500),
    ("gizmo", "Gizmo", 999, 100),
    ("limited-print", "Limited edition print", 15_000, 3),
    ("gold-watch", "Gold watch", 250_000, 10),
];

/// The topics the service's consumer subscribes to.
pub fn subscriptions(topics: &Topics) -> Vec<&str> {
    vec![
        &topics.order_created,
        &topics.payment_processed,
        &topics.order_cancelled,
    ]
}

/// Builds the service; `Application::build(config).await?.run_until_stopped(shutdown)` runs it.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<ServiceHost> {
        let infra = Infrastructure::connect(&config.common, &MIGRATIONS).await?;
        if config.inventory_seed_demo_catalog
            && db::seed_if_empty(&infra.pool, DEMO_CATALOG)
                .await
                .context("loading the demo catalog")?
        {
            tracing::info!(products = DEMO_CATALOG.len(), "loaded the demo catalog");
        }
        let topics = config.common.topics();
        let routes = http::router(AppState {
            pool: infra.pool.clone(),
        });
        let handler = InventoryEvents {
            service_name: config.common.service_name.clone(),
            reservation_ttl_secs: config.inventory_reservation_ttl_secs,
        };
        let expiry = ReservationExpiry {
            outbox: infra.outbox.clone(),
        };
        Ok(ServiceHost::bind(infra, routes)
            .await?
            .with_outbox_relay()?
            .with_consumer(&subscriptions(&topics), handler)?
            .with_batch_job(
                "reservation expiry",
                config.expiry_check_interval(),
                EXPIRY_BATCH,
                expiry,
            ))
    }
}

/// Most expired reservations released in one transaction.
const EXPIRY_BATCH: i64 = 100;

/// Gives back stock held for sagas that never finished, and calls those sagas
/// off so that no one charges or confirms them later.
struct ReservationExpiry {
    /// Where the cancellations are announced.
    outbox: Outbox,
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
