//! Builds and runs order-service: HTTP API, outbox relay, a consumer of the
//! result and cancellation topics, and the saga deadline.

use std::time::Duration;

use service_kit::{Infrastructure, ServiceHost};
use shared_events::{CancelInitiator, CancelReason, Topics};
use sqlx::migrate::Migrator;
use sqlx::PgPool;

use crate::config::Config;
use crate::consumer::OrderEvents;
use crate::db;
use crate::http::{self, AppState};

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Most overdue orders cancelled in one transaction.
const DEADLINE_BATCH: i64 = 100;

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
            cancel_window: config.order_cancel_window_secs.map(Duration::from_secs),
            saga_deadline: Duration::from_secs(config.order_saga_deadline_secs),
        });
        let deadline = SagaDeadline {
            pool: infra.pool.clone(),
            topics: topics.clone(),
            service_name: config.common.service_name.clone(),
            deadline_secs: config.order_saga_deadline_secs,
        };
        Ok(ServiceHost::bind(infra, routes)
            .await?
            .with_outbox_relay()?
            .with_consumer(
                &[
                    &topics.inventory_reserved,
                    &topics.payment_processed,
                    &topics.order_cancelled,
                ],
                OrderEvents,
            )?
            .with_periodic(
                "saga deadline",
                config.deadline_check_interval(),
                move || {
                    let deadline = deadline.clone();
                    async move { deadline.cancel_overdue().await }
                },
            ))
    }
}

/// Cancels orders that did not finish in time, through the same path as a
/// customer's cancellation, so every service undoes its part.
#[derive(Clone)]
struct SagaDeadline {
    pool: PgPool,
    topics: Topics,
    service_name: String,
    deadline_secs: u64,
}

impl SagaDeadline {
    async fn cancel_overdue(&self) -> anyhow::Result<u64> {
        let mut cancelled = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let overdue = db::lock_overdue(&mut tx, self.deadline_secs, DEADLINE_BATCH).await?;
            let reason = CancelReason::timeout();
            for (order_id, candidate) in &overdue {
                db::cancel(
                    &mut tx,
                    &self.topics,
                    &self.service_name,
                    order_id,
                    candidate,
                    CancelInitiator::SagaDeadline,
                    &reason,
                )
                .await?;
                tracing::warn!(
                    order_id = %order_id,
                    from = %candidate.target.status,
                    deadline_secs = self.deadline_secs,
                    "order timed out; cancelling it"
                );
            }
            tx.commit().await?;
            cancelled += overdue.len() as u64;
            if (overdue.len() as i64) < DEADLINE_BATCH {
                return Ok(cancelled);
            }
        }
    }
}
