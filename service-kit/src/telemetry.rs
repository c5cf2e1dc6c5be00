//! Logging set-up: `RUST_LOG` filters, `LOG_FORMAT` picks text or JSON.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Filter used when `RUST_LOG` is not set: our code at info, chatty libraries at warn.
const DEFAULT_FILTER: &str = "info,sqlx=warn,rdkafka=warn,tower_http=info";

/// Installs the global subscriber. Safe to call more than once (tests do):
/// later calls leave the first subscriber in place.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only for a terminal: under devstack or a log collector, output is a pipe.
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
