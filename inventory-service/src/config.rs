//! inventory-service configuration: the common settings plus
//! `INVENTORY_SEED_DEMO_CATALOG` and the reservation expiry.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_kit::{CommonConfig, ServiceConfig};

pub const SERVICE_NAME: &str = "inventory-service";
pub const DEFAULT_PORT: u16 = 8082;
pub const SCHEMA: &str = "inventory";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Load the demo catalog (see README) when the catalog is empty at start-up.
    pub inventory_seed_demo_catalog: bool,
    /// A reservation with no payment outcome after this long is released and
    /// its order cancelled (reason TIMEOUT). Longer than order-service's saga
    /// deadline, so that normally order-service decides first; this is the
    /// backstop for when order-service is down.
    #[serde(
        rename = "inventory_reservation_ttl_secs",
        with = "service_kit::config::secs"
    )]
    pub inventory_reservation_ttl: Duration,
    /// How often expired reservations are looked for.
    #[serde(
        rename = "inventory_expiry_check_interval_ms",
        with = "service_kit::config::millis"
    )]
    pub inventory_expiry_check_interval: Duration,
}

impl ServiceConfig for Config {
    fn defaults() -> Config {
        Config {
            common: CommonConfig::defaults(SERVICE_NAME, DEFAULT_PORT, SCHEMA),
            inventory_seed_demo_catalog: true,
            inventory_reservation_ttl: Duration::from_secs(60),
            inventory_expiry_check_interval: Duration::from_secs(1),
        }
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

impl Config {
    /// Refuses settings that cannot work, naming the variable.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.inventory_reservation_ttl >= Duration::from_secs(1),
            "INVENTORY_RESERVATION_TTL_SECS must be at least 1"
        );
        anyhow::ensure!(
            !self.inventory_expiry_check_interval.is_zero(),
            "INVENTORY_EXPIRY_CHECK_INTERVAL_MS must be above 0"
        );
        Ok(())
    }
}
