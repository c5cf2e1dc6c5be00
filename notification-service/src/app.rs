//! Builds and runs notification-service: HTTP API and a consumer of all three
//! saga topics. It publishes nothing, so it runs no outbox relay.

use service_kit::{Infrastructure, ServiceHost};
use shared_events::Topics;
use sqlx::migrate::Migrator;

use crate::config::Config;
use crate::consumer::NotificationEvents;
use crate::http::{self, AppState};

/// The service's own migrations (the plumbing tables come from service-kit).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The topics the service's consumer subscribes to.
pub fn subscriptions(topics: &Topics) -> Vec<&str> {
    topics.consumed_by(shared_events::access::NOTIFICATION_SERVICE)
}

/// Builds the service; `Application::build(config).await?.run_until_stopped(shutdown)` runs it.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<ServiceHost> {
        let infra = Infrastructure::connect(&config.common, &MIGRATIONS).await?;
        let topics = config.common.topics();
        let routes = http::router(AppState {
            pool: infra.pool.clone(),
        });
        ServiceHost::bind(infra, routes)
            .await?
            .with_consumer(&subscriptions(&topics), NotificationEvents)
    }
}
