//! Builds and runs order-service: HTTP API, outbox relay, and a consumer of
//! the two result topics.

use service_kit::{Infrastructure, ServiceHost};
use sqlx::migrate::Migrator;

use crate::config::Config;
use crate::consumer::OrderEvents;
use crate::http::{self, AppState};
use crate::live::StatusFeed;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Builds the service; `Application::build(config).await?.run_until_stopped(shutdown)` runs it.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<ServiceHost> {
        config.live.validate()?;
        let infra = Infrastructure::connect(&config.common, &MIGRATIONS).await?;
        let topics = config.common.topics();
        let feed = StatusFeed::new(
            infra.pool.clone(),
            &config.common.database_schema,
            config.live.order_live_max_subscribers,
        );
        let routes = http::router(AppState {
            pool: infra.pool.clone(),
            topics: topics.clone(),
            service_name: config.common.service_name.clone(),
            feed: feed.clone(),
            live: config.live.clone(),
        });
        let host = ServiceHost::bind(infra, routes)
            .await?
            .with_outbox_relay()?
            .with_consumer(
                &[&topics.inventory_reserved, &topics.payment_processed],
                OrderEvents,
            )?
            .cancel_on_shutdown(feed.closing())
            .with_worker("live status feed", move |stop| feed.run(stop));
        Ok(host)
    }
}
