//! Builds and runs inventory-service: HTTP API, outbox relay, a consumer of
//! `order-created`, `payment-processed` and `order-cancelled`, and the
//! reservation expiry ([`crate::expiry`]); wiring only.

use service_kit::{Infrastructure, ServiceHost};
use shared_events::Topics;
use sqlx::migrate::Migrator;

use crate::config::Config;
use crate::consumer::InventoryEvents;
use crate::demo_catalog;
use crate::expiry::{ReservationExpiry, EXPIRY_BATCH};
use crate::http::{self, AppState};

/// The service's own migrations (the plumbing tables come from service-kit).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The topics the service's consumer subscribes to.
pub fn subscriptions(topics: &Topics) -> Vec<&str> {
    topics.consumed_by(shared_events::access::INVENTORY_SERVICE)
}

/// Builds the service; `Application::build(config).await?.run_until_stopped(shutdown)` runs it.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<ServiceHost> {
        config.validate()?;
        let infra = Infrastructure::connect(&config.common, &MIGRATIONS).await?;
        if config.inventory_seed_demo_catalog {
            demo_catalog::load_if_empty(&infra.pool).await?;
        }
        let topics = config.common.topics();
        let routes = http::router(AppState {
            pool: infra.pool.clone(),
        });
        let handler = InventoryEvents {
            service_name: config.common.service_name.clone(),
            reservation_ttl: config.inventory_reservation_ttl,
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
                config.inventory_expiry_check_interval,
                EXPIRY_BATCH,
                expiry,
            ))
    }
}
