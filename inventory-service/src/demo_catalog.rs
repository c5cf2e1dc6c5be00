//! The demo catalog, loaded into an empty catalog at start-up when
//! `INVENTORY_SEED_DEMO_CATALOG` is set.

use anyhow::Context;
use sqlx::PgPool;

use crate::db;

/// (sku, name, price in cents, available).
/// `gold-watch` costs more than a new customer's default credit, to show PAYMENT_FAILED.
pub const DEMO_CATALOG: &[(&str, &str, i64, i32)] = &[
    ("widget", "Widget", 1_999, 1_000),
    ("gadget", "Gadget", 4_999, 500),
    ("gizmo", "Gizmo", 999, 100),
    ("limited-print", "Limited edition print", 15_000, 3),
    ("gold-watch", "Gold watch", 250_000, 10),
];

/// Loads [`DEMO_CATALOG`] if the catalog is empty.
pub async fn load_if_empty(pool: &PgPool) -> anyhow::Result<()> {
    if db::seed_if_empty(pool, DEMO_CATALOG)
        .await
        .context("loading the demo catalog")?
    {
        tracing::info!(products = DEMO_CATALOG.len(), "loaded the demo catalog");
    }
    Ok(())
}
