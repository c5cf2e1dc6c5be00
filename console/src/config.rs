//! The console's configuration: the settings every service has (port, Kafka,
//! topics, logging; the database ones are unused, the console has no
//! database) plus where the services answer and how much one request may read.
//!
//! Loaded like every service's (defaults → `CONFIG_FILE` → environment), so
//! `PORT=9100 CONSOLE_ORDER_SERVICE_URL=... console` works as expected.

use std::time::Duration;

use anyhow::ensure;
use serde::{Deserialize, Serialize};
use service_kit::config::default_group_id;
use service_kit::{CommonConfig, ServiceConfig};

pub const SERVICE_NAME: &str = "console";
pub const DEFAULT_PORT: u16 = 9000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// order-service's base URL: orders, their timelines, placing an order.
    pub console_order_service_url: String,
    /// inventory-service's base URL: stock per SKU.
    pub console_inventory_service_url: String,
    /// payment-service's base URL (its `/metrics`).
    pub console_payment_service_url: String,
    /// notification-service's base URL (its `/metrics`).
    pub console_notification_service_url: String,
    /// Most messages one page shows (per request, over all partitions).
    pub console_page_size: usize,
    /// Most bytes of one message shown; a longer one is cut, and not pretty-printed.
    pub console_max_message_bytes: usize,
    /// Most messages per partition a key search reads, newest first.
    pub console_search_depth: i64,
    /// How long one Kafka request (metadata, watermarks, a fetch) may take
    /// before the page says the broker is unavailable.
    #[serde(
        rename = "console_kafka_timeout_ms",
        with = "service_kit::config::millis"
    )]
    pub console_kafka_timeout: Duration,
    /// How long one call to a service may take.
    #[serde(
        rename = "console_http_timeout_ms",
        with = "service_kit::config::millis"
    )]
    pub console_http_timeout: Duration,
    /// How often live pages (orders, an order's status) ask order-service again.
    #[serde(rename = "console_live_poll_ms", with = "service_kit::config::millis")]
    pub console_live_poll: Duration,
    /// How often the chart samples the services' `/metrics`.
    #[serde(
        rename = "console_metrics_interval_ms",
        with = "service_kit::config::millis"
    )]
    pub console_metrics_interval: Duration,
    /// How many samples the chart keeps (interval × samples = its time span).
    pub console_metrics_samples: usize,
    /// Consumer groups always shown, comma-separated. A broker that lists
    /// its groups (Apache Kafka) adds the others; the embedded broker cannot
    /// list them, so these are the ones shown there.
    pub console_groups: String,
}

impl Config {
    /// [`Self::console_groups`] as a list.
    pub fn known_groups(&self) -> Vec<String> {
        self.console_groups
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Rejects settings that would make every page empty or unbounded.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=MAX_PAGE_SIZE).contains(&self.console_page_size),
            "CONSOLE_PAGE_SIZE must be 1-{MAX_PAGE_SIZE}, not {}",
            self.console_page_size
        );
        ensure!(
            self.console_max_message_bytes >= 64,
            "CONSOLE_MAX_MESSAGE_BYTES must be at least 64"
        );
        ensure!(
            self.console_search_depth >= 1,
            "CONSOLE_SEARCH_DEPTH must be at least 1"
        );
        ensure!(
            self.console_metrics_samples >= 2,
            "CONSOLE_METRICS_SAMPLES must be at least 2"
        );
        ensure!(
            !self.console_kafka_timeout.is_zero()
                && !self.console_http_timeout.is_zero()
                && !self.console_live_poll.is_zero()
                && !self.console_metrics_interval.is_zero(),
            "the console's timeouts and intervals must be above 0"
        );
        Ok(())
    }
}

/// The largest page a configuration may ask for.
pub const MAX_PAGE_SIZE: usize = 500;

impl ServiceConfig for Config {
    fn defaults() -> Config {
        let groups: Vec<String> = [
            "order-service",
            "inventory-service",
            "payment-service",
            "notification-service",
        ]
        .iter()
        .map(|service| default_group_id(service))
        .collect();
        Config {
            common: CommonConfig::defaults(SERVICE_NAME, DEFAULT_PORT, SERVICE_NAME),
            console_order_service_url: "http://localhost:8081".to_owned(),
            console_inventory_service_url: "http://localhost:8082".to_owned(),
            console_payment_service_url: "http://localhost:8083".to_owned(),
            console_notification_service_url: "http://localhost:8084".to_owned(),
            console_page_size: 50,
            console_max_message_bytes: 16 * 1024,
            console_search_depth: 1_000,
            console_kafka_timeout: Duration::from_secs(5),
            console_http_timeout: Duration::from_secs(5),
            console_live_poll: Duration::from_millis(500),
            console_metrics_interval: Duration::from_secs(5),
            console_metrics_samples: 60,
            console_groups: groups.join(","),
        }
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_list_the_four_services_groups() {
        let config = Config::defaults();
        config.validate().unwrap();
        assert_eq!(config.common.port, 9000);
        assert_eq!(config.known_groups().len(), 4);
        assert!(config
            .known_groups()
            .contains(&"ordersystem.inventory-service".to_owned()));
    }

    #[test]
    fn rejects_a_page_size_of_zero() {
        let config = Config {
            console_page_size: 0,
            ..Config::defaults()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn reads_settings_from_the_environment() {
        let env = [
            ("PORT", "9100"),
            ("CONSOLE_PAGE_SIZE", "20"),
            ("CONSOLE_KAFKA_TIMEOUT_MS", "1500"),
            ("CONSOLE_ORDER_SERVICE_URL", "http://orders:8081"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config: Config =
            service_kit::config::load_from(&Config::defaults(), None, Some(env)).unwrap();
        assert_eq!(config.common.port, 9100);
        assert_eq!(config.console_page_size, 20);
        assert_eq!(config.console_kafka_timeout, Duration::from_millis(1500));
        assert_eq!(config.console_order_service_url, "http://orders:8081");
    }
}
