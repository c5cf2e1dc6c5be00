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
    pub inventory_reservation_ttl_secs: u64,
    /// How often expired reservations are looked for.
    pub inventory_expiry_check_interval_ms: u64,
}

impl ServiceConfig for Config {
    fn defaults() -> Config {
        Config {
            common: CommonConfig::defaults(SERVICE_NAME, DEFAULT_PORT, SCHEMA),
            inventory_seed_demo_catalog: true,
            inventory_reservation_ttl_secs: 60,
            inventory_expiry_check_interval_ms: 1_000,
        }
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

impl Config {
    pub fn expiry_check_interval(&self) -> Duration {
        Duration::from_millis(self.inventory_expiry_check_interval_ms.max(1))
    }
}
