//! Builds and runs order-service: HTTP API, outbox relay, and a consumer of
//! the two result topics.

use std::future::Future;

use service_kit::{Infrastructure, ServiceHost};
use sqlx::migrate::Migrator;

use crate::config::Config;
use crate::consumer::OrderEvents;
use crate::http::{self, AppState};

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

pub struct Application {
    host: ServiceHost,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let infra = Infrastructure::connect(&config.common, &MIGRATIONS).await?;
        let topics = config.common.topics();
        let routes = http::router(AppState {
            pool: infra.pool.clone(),
            topics: topics.clone(),
            service_name: config.common.service_name.clone(),
        });
        let host = ServiceHost::bind(infra, routes)
            .await?
            .with_outbox_relay()
            .with_consumer(
                &[&topics.inventory_reserved, &topics.payment_processed],
                OrderEvents,
            )?;
        Ok(Application { host })
    }

    pub fn port(&self) -> u16 {
        self.host.port()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.host.run_until_stopped(shutdown).await
    }
}
