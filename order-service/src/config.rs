//! order-service configuration: the common settings (see `service_kit::config`)
//! plus the saga deadline, the cancellation window and `ORDER_LIVE_*`
//! ([`LiveConfig`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_kit::{CommonConfig, ServiceConfig};

use crate::status_feed::LiveConfig;

pub const SERVICE_NAME: &str = "order-service";
pub const DEFAULT_PORT: u16 = 8081;
pub const SCHEMA: &str = "orders";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// An order still PENDING or RESERVED this long after it was placed is
    /// cancelled with reason TIMEOUT.
    #[serde(
        rename = "order_saga_deadline_secs",
        with = "service_kit::config::secs"
    )]
    pub order_saga_deadline: Duration,
    /// How often overdue orders are looked for.
    #[serde(
        rename = "order_deadline_check_interval_ms",
        with = "service_kit::config::millis"
    )]
    pub order_deadline_check_interval: Duration,
    /// How long after confirmation a customer may still cancel; unset: always.
    #[serde(
        default,
        rename = "order_cancel_window_secs",
        with = "service_kit::config::secs_opt"
    )]
    pub order_cancel_window: Option<Duration>,
    /// Most orders in progress (PENDING or RESERVED, over all instances)
    /// before `POST /api/orders` refuses new ones with 503; 0: no bound. An
    /// accepted order waits about this many orders over the throughput; the
    /// opt-in age bound below adapts to the machine instead.
    pub order_max_in_flight: u64,
    /// Longest the median order in progress may have waited before
    /// `POST /api/orders` refuses new ones with 503 (see `admission`); an
    /// accepted order then waits about twice this. Zero (the default): no
    /// bound, because any stall of the saga (a consumer group rebalancing
    /// when an instance joins or dies, an outage) also ages the backlog, and
    /// with a bound of a fraction of a second that refuses orders for its
    /// length.
    #[serde(
        rename = "order_max_in_progress_age_ms",
        with = "service_kit::config::millis"
    )]
    pub order_max_in_progress_age: Duration,
    /// How often the orders in progress are read for those bounds.
    #[serde(
        rename = "order_admission_sample_ms",
        with = "service_kit::config::millis"
    )]
    pub order_admission_sample: Duration,
    /// `ORDER_LIVE_*`: event streams and long polls.
    #[serde(flatten)]
    pub live: LiveConfig,
}

impl ServiceConfig for Config {
    fn defaults() -> Config {
        Config {
            common: CommonConfig::defaults(SERVICE_NAME, DEFAULT_PORT, SCHEMA),
            order_saga_deadline: Duration::from_secs(30),
            order_deadline_check_interval: Duration::from_secs(1),
            order_cancel_window: None,
            order_max_in_flight: 200,
            order_max_in_progress_age: Duration::ZERO,
            order_admission_sample: Duration::from_millis(100),
            live: LiveConfig::default(),
        }
    }

    /// Defaults → `CONFIG_FILE` → environment.
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

impl Config {
    /// Refuses settings that cannot work, naming the variable.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.order_saga_deadline >= Duration::from_secs(1),
            "ORDER_SAGA_DEADLINE_SECS must be at least 1"
        );
        anyhow::ensure!(
            !self.order_deadline_check_interval.is_zero(),
            "ORDER_DEADLINE_CHECK_INTERVAL_MS must be above 0"
        );
        anyhow::ensure!(
            !self.order_admission_sample.is_zero(),
            "ORDER_ADMISSION_SAMPLE_MS must be above 0"
        );
        self.live.validate()
    }
}
