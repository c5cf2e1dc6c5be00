//! payment-service configuration: the common settings plus
//! `PAYMENT_DEFAULT_CREDIT_CENTS`.

use serde::{Deserialize, Serialize};
use service_kit::{CommonConfig, ServiceConfig};

pub const SERVICE_NAME: &str = "payment-service";
pub const DEFAULT_PORT: u16 = 8083;
pub const SCHEMA: &str = "payments";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Credit a customer starts with, in cents.
    pub payment_default_credit_cents: i64,
}

impl ServiceConfig for Config {
    fn defaults() -> Config {
        Config {
            common: CommonConfig::defaults(SERVICE_NAME, DEFAULT_PORT, SCHEMA),
            payment_default_credit_cents: 100_000,
        }
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }
}
