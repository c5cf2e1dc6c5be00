//! order-service configuration: the common settings (see `service_kit::config`)
//! plus `ORDER_LIVE_*` ([`LiveConfig`]).

use serde::{Deserialize, Serialize};
use service_kit::{CommonConfig, ServiceConfig};

use crate::live::LiveConfig;

pub const SERVICE_NAME: &str = "order-service";
pub const DEFAULT_PORT: u16 = 8081;
pub const SCHEMA: &str = "orders";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// `ORDER_LIVE_*`: event streams and long polls.
    #[serde(flatten)]
    pub live: LiveConfig,
}

impl ServiceConfig for Config {
    fn defaults() -> Config {
        Config {
            common: CommonConfig::defaults(SERVICE_NAME, DEFAULT_PORT, SCHEMA),
            live: LiveConfig::default(),
        }
    }

    /// Defaults → `CONFIG_FILE` → environment.
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}
