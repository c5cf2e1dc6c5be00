//! Waiting until every instance answers `GET /health` with 200 OK.
//!
//! Readiness is the services' own verdict (they answer only once their
//! database and Kafka clients are set up), so devstack announces URLs only
//! when they actually work.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::StatusCode;
use tokio::time::Instant;

use crate::services::Instance;

/// How long the whole stack may take to become healthy: covers a cold start
/// with migrations and consumer-group joins on a slow machine.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between rounds of health checks.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// One health request may take this long before it counts as "not yet".
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Polls every instance until all answer 200, or fails after `timeout` naming
/// those that did not.
pub async fn wait_until_healthy(instances: &[Instance], timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the health-check HTTP client")?;
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<&Instance> = instances.iter().collect();
    loop {
        let mut still_pending = Vec::with_capacity(pending.len());
        for instance in pending {
            if is_healthy(&client, instance).await {
                tracing::info!("{} is healthy at {}", instance.name, instance.url());
            } else {
                still_pending.push(instance);
            }
        }
        pending = still_pending;
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = pending
                .iter()
                .map(|instance| format!("{} ({})", instance.name, instance.health_url()))
                .collect();
            bail!(
                "not healthy within {}s: {}; see their output above",
                timeout.as_secs(),
                names.join(", ")
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn is_healthy(client: &reqwest::Client, instance: &Instance) -> bool {
    match client.get(instance.health_url()).send().await {
        Ok(response) => response.status() == StatusCode::OK,
        // Not listening yet, or too slow to answer: try again next round.
        Err(_) => false,
    }
}
