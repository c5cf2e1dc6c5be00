//! Builds and runs inventory-service: HTTP API, outbox relay, and a consumer of
//! `order-created` and `payment-processed`.

use anyhow::Context;
use service_kit::{Infrastructure, ServiceHost};
use sqlx::migrate::Migrator;

use crate::config::Config;
use crate::consumer::InventoryEvents;
use crate::db;
use crate::http::{self, AppState};

/// The service's own migrations (the plumbing tables come from service-kit).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The demo catalog loaded into an empty catalog: (sku, name, price in cents, available).
/// `gold-watch` costs more than a new customer's default credit, to show PAYMENT_FAILED.
pub const DEMO_CATALOG: &[(&str, &str, i64, i32)] = &[
    ("widget", "Widget", 1_999, 1_000),
    ("gadget", "Gadget", 4_999, 500),
    ("gizmo", "Gizmo", 999, 100),
    ("limited-print", "Limited edition print", 15_000, 3),
    ("gold-watch", "Gold watch", 250_000, 10),
];

/// Builds the service; `Application::build(config).await?.run_until_stopped(shutdown)` runs it.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<ServiceHost> {
        let infra = Infrastructure::connect(&config.common, &MIGRATIONS).await?;
        if config.inventory_seed_demo_catalog
            && db::seed_if_empty(&infra.pool, DEMO_CATALOG)
                .await
                .context("loading the demo catalog")?
        {
            tracing::info!(products = DEMO_CATALOG.len(), "loaded the demo catalog");
        }
        let topics = config.common.topics();
        let routes = http::router(AppState {
            pool: infra.pool.clone(),
        });
        let handler = InventoryEvents {
            service_name: config.common.service_name.clone(),
        };
        ServiceHost::bind(infra, routes)
            .await?
            .with_outbox_relay()?
            .with_consumer(&[&topics.order_created, &topics.payment_processed], handler)
    }
}
