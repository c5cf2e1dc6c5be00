//! Builds and runs order-service: HTTP API, outbox relay, a consumer of the
//! result and cancellation topics, and the saga deadline.

use service_kit::{Infrastructure, ServiceHost};
use shared_events::Topics;
use sqlx::migrate::Migrator;

use crate::admission::Admission;
use crate::config::Config;
use crate::consumer::OrderEvents;
use crate::deadline::{SagaDeadline, DEADLINE_BATCH};
use crate::http::{self, AppState};
use crate::status_feed::StatusFeed;

/// The service's own migrations (the plumbing tables come from service-kit).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The topics the service's consumer subscribes to.
pub fn subscriptions(topics: &Topics) -> Vec<&str> {
    topics.consumed_by(shared_events::access::ORDER_SERVICE)
}

/// Builds the service; `Application::build(config).await?.run_until_stopped(shutdown)` runs it.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<ServiceHost> {
        config.validate()?;
        let infra = Infrastructure::connect(&config.common, &MIGRATIONS).await?;
        let topics = config.common.topics();
        let feed = StatusFeed::new(
            infra.pool.clone(),
            &config.common.database_schema,
            config.live.order_live_max_subscribers,
        );
        let admission =
            Admission::new(config.order_max_in_flight, config.order_max_in_progress_age);
        let routes = http::router(AppState {
            pool: infra.pool.clone(),
            outbox: infra.outbox.clone(),
            cancel_window: config.order_cancel_window,
            saga_deadline: config.order_saga_deadline,
            feed: feed.clone(),
            live: config.live.clone(),
            admission: admission.clone(),
        });
        let deadline = SagaDeadline {
            outbox: infra.outbox.clone(),
            deadline: config.order_saga_deadline,
        };
        let pool = infra.pool.clone();
        let host = ServiceHost::bind(infra, routes)
            .await?
            .with_outbox_relay()?
            .with_consumer(&subscriptions(&topics), OrderEvents)?
            .with_batch_job(
                "saga deadline",
                config.order_deadline_check_interval,
                DEADLINE_BATCH,
                deadline,
            )
            .cancel_on_shutdown(feed.closing())
            .with_worker("live status feed", move |stop| feed.run(stop))
            .with_worker("admission", move |stop| {
                admission.run(pool, config.order_admission_sample, stop)
            });
        Ok(host)
    }
}
