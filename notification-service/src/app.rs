//! Builds and runs notification-service: HTTP API and a consumer of all three
//! saga topics. It publishes nothing, so it runs no outbox relay.

use std::future::Future;

use service_kit::{Infrastructure, ServiceHost};
use sqlx::migrate::Migrator;

use crate::config::Config;
use crate::consumer::NotificationEvents;
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
        });
        let host = ServiceHost::bind(infra, routes)
            .await?
            .with_consumer(&topics.all(), NotificationEvents)?;
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
