//! Builds and runs payment-service: HTTP API, outbox relay, and a consumer of
//! `inventory-reserved`.

use std::future::Future;

use service_kit::{Infrastructure, ServiceHost};
use shared_events::Cents;
use sqlx::migrate::Migrator;

use crate::config::Config;
use crate::consumer::PaymentEvents;
use crate::http::{self, AppState};

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

pub struct Application {
    host: ServiceHost,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let default_credit = Cents::parse(config.payment_default_credit_cents)
            .map_err(|e| anyhow::anyhow!("PAYMENT_DEFAULT_CREDIT_CENTS: {e}"))?;
        let infra = Infrastructure::connect(&config.common, &MIGRATIONS).await?;
        let topics = config.common.topics();
        let routes = http::router(AppState {
            pool: infra.pool.clone(),
            default_credit_cents: default_credit.get(),
        });
        let handler = PaymentEvents {
            service_name: config.common.service_name.clone(),
            default_credit,
        };
        let host = ServiceHost::bind(infra, routes)
            .await?
            .with_outbox_relay()
            .with_consumer(&[&topics.inventory_reserved], handler)?;
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
