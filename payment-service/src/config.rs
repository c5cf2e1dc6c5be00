//! payment-service configuration: the common settings plus
//! `PAYMENT_DEFAULT_CREDIT_CENTS`.

use serde::{Deserialize, Serialize};
use service_kit::CommonConfig;

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

impl Config {
    pub fn defaults() -> Config {
        Config {
            common: CommonConfig::defaults(SERVICE_NAME, DEFAULT_PORT, SCHEMA),
            payment_default_credit_cents: 100_000,
        }
    }

    pub fn load() -> anyhow::Result<Config> {
        let config: Config = service_kit::config::load(&Self::defaults())?;
        anyhow::ensure!(
            config.payment_default_credit_cents >= 0,
            "PAYMENT_DEFAULT_CREDIT_CENTS must not be negative"
        );
        Ok(config)
    }
}
