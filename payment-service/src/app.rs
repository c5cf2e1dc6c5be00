//! Builds and runs payment-service: HTTP API, outbox relay, and a consumer of
//! `inventory-reserved` (charges) and `order-cancelled` (refunds).

use service_kit::{Infrastructure, ServiceHost};
use shared_events::{Cents, Topics};
use sqlx::migrate::Migrator;

use crate::config::Config;
use crate::consumer::PaymentEvents;
use crate::http::{self, AppState};

/// The service's own migrations (the plumbing tables come from service-kit).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The topics the service's consumer subscribes to.
pub fn subscriptions(topics: &Topics) -> Vec<&str> {
    topics.consumed_by(shared_events::access::PAYMENT_SERVICE)
}

/// Builds the service; `Application::build(config).await?.run_until_stopped(shutdown)` runs it.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<ServiceHost> {
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
        ServiceHost::bind(infra, routes)
            .await?
            .with_outbox_relay()?
            .with_consumer(&subscriptions(&topics), handler)
    }
}
