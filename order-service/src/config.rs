//! order-service configuration: only the common settings (see `service_kit::config`).

use serde::{Deserialize, Serialize};
use service_kit::{CommonConfig, ServiceConfig};

pub const SERVICE_NAME: &str = "order-service";
pub const DEFAULT_PORT: u16 = 8081;
pub const SCHEMA: &str = "orders";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
}

impl ServiceConfig for Config {
    fn defaults() -> Config {
        Config {
            common: CommonConfig::defaults(SERVICE_NAME, DEFAULT_PORT, SCHEMA),
        }
    }

    /// Defaults → `CONFIG_FILE` → environment.
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}
