//! notification-service configuration: only the common settings.

use serde::{Deserialize, Serialize};
use service_kit::{CommonConfig, ServiceConfig};

pub const SERVICE_NAME: &str = "notification-service";
pub const DEFAULT_PORT: u16 = 8084;
pub const SCHEMA: &str = "notifications";

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

    fn common(&self) -> &CommonConfig {
        &self.common
    }
}
