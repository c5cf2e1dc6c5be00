//! inventory-service configuration: the common settings plus
//! `INVENTORY_SEED_DEMO_CATALOG`.

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
}

impl ServiceConfig for Config {
    fn defaults() -> Config {
        Config {
            common: CommonConfig::defaults(SERVICE_NAME, DEFAULT_PORT, SCHEMA),
            inventory_seed_demo_catalog: true,
        }
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }
}
