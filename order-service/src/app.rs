//! Builds and runs order-service: HTTP API, outbox relay, and a consumer of
//! the two result topics.

use service_kit::{Infrastructure, ServiceHost};
use sqlx::migrate::Migrator;

use crate::config::Config;
use crate::consumer::OrderEvents;
use crate::http::{self, AppState};

/// The service's own migrations (the plumbing tables come from service-kit).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Builds the service; `Application::build(config).await?.run_until_stopped(shutdown)` runs it.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<ServiceHost> {
        let infra = Infrastructure::connect(&config.common, &MIGRATIONS).await?;
        let topics = config.common.topics();
        let routes = http::router(AppState {
            pool: infra.pool.clone(),
            topics: topics.clone(),
            service_name: config.common.service_name.clone(),
        });
        ServiceHost::bind(infra, routes)
            .await?
            .with_outbox_relay()?
            .with_consumer(
                &[&topics.inventory_reserved, &topics.payment_processed],
                OrderEvents,
            )
    }
}
