//! Configuration shared by every service, loaded in layers:
//! built-in defaults → an optional file (`CONFIG_FILE`, TOML) → environment variables.
//!
//! Environment variables use the names a Compose user expects: `PORT`,
//! `DATABASE_URL`, `KAFKA_BOOTSTRAP_SERVERS`, and area-prefixed names for the
//! rest (`KAFKA_*`, `TOPIC_*`, `OUTBOX_*`, `CONSUMER_*`, `SHUTDOWN_*`, `LOG_*`,
//! `AUTH_*`, `RATE_LIMIT_*`). A service adds
//! its own keys (e.g. `PAYMENT_DEFAULT_CREDIT_CENTS`) next to these; the README
//! lists them all.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{ensure, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shared_events::topics::{self, Topics, DEFAULT_PARTITIONS};

pub use crate::http::auth::AuthMode;

/// Environment variable naming an optional TOML configuration file.
pub const CONFIG_FILE_VAR: &str = "CONFIG_FILE";

pub use shared_events::access::{default_group_id, CONSUMER_GROUP_PREFIX};

/// The SASL mechanism used unless `KAFKA_SASL_MECHANISM` says otherwise.
pub const DEFAULT_SASL_MECHANISM: &str = "SCRAM-SHA-512";
/// The SASL mechanisms librdkafka built with OpenSSL speaks without Kerberos.
const SASL_MECHANISMS: [&str; 3] = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"];

/// How Kafka clients talk to the brokers (librdkafka's `security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KafkaSecurityProtocol {
    /// No TLS, no login: a broker on a trusted network (the default).
    #[default]
    Plaintext,
    /// TLS, no login.
    Ssl,
    /// A SASL login without TLS (the password is not sent in clear with SCRAM,
    /// but the events are).
    SaslPlaintext,
    /// A SASL login over TLS.
    SaslSsl,
}

impl KafkaSecurityProtocol {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether clients log in.
    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    /// Whether the connection is encrypted.
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

impl std::fmt::Display for KafkaSecurityProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that must never appear in a log: `Debug` and `Display` print
/// `***`. Serialised as itself, so a configuration handed to a child process
/// as environment variables ([`to_env`]) still carries it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it (the Kafka client).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for terminals.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Settings every service has. Field names are the lower-cased environment variable names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommonConfig {
    /// Name used as the event `producer`, in the default consumer group and in logs.
    pub service_name: String,
    /// Address the HTTP server binds to.
    pub host: String,
    /// HTTP port; 0 picks a free one (tests).
    pub port: u16,
    /// Postgres connection URL. All services may share one database; each owns a schema.
    pub database_url: String,
    /// The schema this service owns: its tables, migrations, outbox and inbox live there.
    pub database_schema: String,
    /// Upper bound of the connection pool.
    pub database_max_connections: u32,
    /// How long start-up keeps retrying an unreachable database before giving up.
    #[serde(rename = "database_connect_timeout_secs", with = "secs")]
    pub database_connect_timeout: Duration,
    /// How the service reaches Kafka and how its clients behave (`KAFKA_*`).
    #[serde(flatten)]
    pub kafka: KafkaConfig,
    pub topic_order_created: String,
    pub topic_inventory_reserved: String,
    pub topic_payment_processed: String,
    pub topic_order_cancelled: String,
    /// The outbox relay (`OUTBOX_*`).
    #[serde(flatten)]
    pub outbox: OutboxConfig,
    /// The event consumer (`CONSUMER_*`).
    #[serde(flatten)]
    pub consumer: ConsumerConfig,
    /// How long shutdown (`SHUTDOWN_TIMEOUT_MS`) may take, from the signal to
    /// the exit: stopping HTTP, draining the workers, the consumer's final
    /// offset commit and close, the producer flush. Whatever has not finished
    /// by then is abandoned (and redelivered or republished later), so the
    /// process exits even when the broker or Postgres is gone. Keep it below
    /// the grace period of whatever sends SIGTERM (Compose's `stop_grace_period`).
    #[serde(rename = "shutdown_timeout_ms", with = "millis")]
    pub shutdown_timeout: Duration,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// Base URL of an OpenTelemetry collector's OTLP/HTTP endpoint (e.g.
    /// `http://localhost:4318`); spans are posted to `<url>/v1/traces`.
    /// Empty (the default): no export; trace context is still propagated.
    pub otel_exporter_otlp_endpoint: String,
    /// `off` (the default: nobody is checked, anyone who reaches the port may
    /// do anything) or `jwt` (bearer tokens, see [`crate::http::auth`]).
    pub auth_mode: AuthMode,
    /// With `jwt`: a JWKS file holding the keys tokens are signed with.
    pub auth_jwks_file: String,
    /// With `jwt`: where the identity provider publishes its JWKS (instead of
    /// a file), read at start-up and again when a token names a new key.
    pub auth_jwks_url: String,
    /// With `jwt`: the `iss` every token must carry.
    pub auth_issuer: String,
    /// With `jwt`: the `aud` every token must carry.
    pub auth_audience: String,
    /// How far `exp` and `nbf` may be off, for clocks that disagree a little.
    #[serde(rename = "auth_leeway_secs", with = "secs")]
    pub auth_leeway: Duration,
    /// Write requests (POST, PUT, PATCH, DELETE) one client (the token's
    /// subject, else the peer address) may make per second on average; 0
    /// (the default): no limit.
    pub rate_limit_per_second: u32,
    /// Write requests a client may make in a burst above that pace.
    pub rate_limit_burst: u32,
}

/// The Kafka settings (`KAFKA_*`): where the brokers are, how to log in, and
/// how this service's clients behave. Flattened into [`CommonConfig`], so the
/// variables keep their names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    #[serde(rename = "kafka_bootstrap_servers")]
    pub bootstrap_servers: String,
    /// How clients talk to the brokers: `plaintext` (default), `ssl`,
    /// `sasl_plaintext` or `sasl_ssl` (librdkafka's `security.protocol`).
    #[serde(rename = "kafka_security_protocol")]
    pub security_protocol: KafkaSecurityProtocol,
    /// With SASL: the mechanism, `SCRAM-SHA-512` by default.
    #[serde(rename = "kafka_sasl_mechanism")]
    pub sasl_mechanism: String,
    /// With SASL: the user this service logs in as.
    #[serde(rename = "kafka_sasl_username")]
    pub sasl_username: String,
    /// With SASL: its password; never logged (see [`Secret`]).
    #[serde(rename = "kafka_sasl_password")]
    pub sasl_password: Secret,
    /// With TLS: a PEM file of the CA(s) the brokers' certificates are
    /// checked against; empty: the system's trust store.
    #[serde(rename = "kafka_ssl_ca_location")]
    pub ssl_ca_location: String,
    /// Consumer group; instances of a service share it and split the
    /// partitions. By default [`default_group_id`]: `ordersystem.<service>`.
    #[serde(rename = "kafka_group_id")]
    pub group_id: String,
    /// Partitions for topics this service creates (when the broker allows creating topics).
    #[serde(rename = "kafka_topic_partitions")]
    pub topic_partitions: i32,
    /// Replication factor for topics this service creates.
    #[serde(rename = "kafka_replication_factor")]
    pub replication_factor: i32,
    /// How long a consumer may go silent before the group reassigns its
    /// partitions. Lower than Kafka's 45 s default so a crashed instance's
    /// partitions move on quickly.
    #[serde(rename = "kafka_session_timeout_ms", with = "millis")]
    pub session_timeout: Duration,
    /// How long a publish may wait for the broker's acknowledgement before it counts as failed.
    #[serde(rename = "kafka_message_timeout_ms", with = "millis")]
    pub message_timeout: Duration,
    /// How often the consumer's client reports statistics, from which the
    /// `kafka_consumer_lag` gauges are updated.
    #[serde(rename = "kafka_statistics_interval_ms", with = "millis")]
    pub statistics_interval: Duration,
    /// How long the broker may hold a consumer's fetch request while it has no
    /// new message (librdkafka's `fetch.wait.max.ms`). A real broker answers a
    /// waiting fetch as soon as data arrives, so a long wait costs no latency
    /// and spares the broker empty fetches; the embedded development broker
    /// holds every fetch this long, so devstack and the tests give its
    /// clients 10 ms (`local_infra::MOCK_CONSUMER_FETCH_WAIT`).
    #[serde(rename = "kafka_fetch_wait_max_ms", with = "millis")]
    pub fetch_wait_max: Duration,
    /// How long the producer waits to fill a batch before sending
    /// (`linger.ms`, 5 by default in librdkafka). The outbox relay already
    /// hands over a whole batch at once, so waiting adds latency only.
    #[serde(rename = "kafka_linger_ms", with = "millis")]
    pub linger: Duration,
}

/// The outbox relay's settings (`OUTBOX_*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxConfig {
    /// Fallback polling interval of the outbox relay; a commit in this process wakes it sooner.
    #[serde(rename = "outbox_poll_interval_ms", with = "millis")]
    pub poll_interval: Duration,
    /// Most outbox rows the relay claims and publishes at once.
    #[serde(rename = "outbox_batch_size")]
    pub batch_size: i64,
    /// How long published outbox rows are kept before being pruned.
    #[serde(rename = "outbox_retention_secs", with = "secs")]
    pub retention: Duration,
}

/// The event consumer's settings (`CONSUMER_*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumerConfig {
    /// First delay before retrying an event that failed for a transient reason.
    #[serde(rename = "consumer_retry_initial_ms", with = "millis")]
    pub retry_initial: Duration,
    /// Cap of the exponential retry delay.
    #[serde(rename = "consumer_retry_max_ms", with = "millis")]
    pub retry_max: Duration,
    /// Attempts at an event that keeps failing (for a reason other than an
    /// unavailable dependency) before it is moved to the dead-letter topic.
    #[serde(rename = "consumer_max_attempts")]
    pub max_attempts: u32,
    /// Most already-waiting events a consumer applies in one transaction (one
    /// commit instead of one per event); 1 applies every event on its own.
    #[serde(rename = "consumer_batch_size")]
    pub batch_size: usize,
}

impl CommonConfig {
    /// The documented defaults for a service named `service_name`, listening on
    /// `port` and owning `schema`.
    pub fn defaults(service_name: &str, port: u16, schema: &str) -> CommonConfig {
        CommonConfig {
            service_name: service_name.to_owned(),
            host: "0.0.0.0".to_owned(),
            port,
            database_url: "postgres://postgres@localhost:5432/ordersystem".to_owned(),
            database_schema: schema.to_owned(),
            database_max_connections: 10,
            database_connect_timeout: Duration::from_secs(30),
            kafka: KafkaConfig {
                bootstrap_servers: "localhost:9092".to_owned(),
                security_protocol: KafkaSecurityProtocol::Plaintext,
                sasl_mechanism: DEFAULT_SASL_MECHANISM.to_owned(),
                sasl_username: String::new(),
                sasl_password: Secret::default(),
                ssl_ca_location: String::new(),
                group_id: default_group_id(service_name),
                topic_partitions: DEFAULT_PARTITIONS,
                replication_factor: 1,
                session_timeout: Duration::from_secs(10),
                message_timeout: Duration::from_secs(30),
                statistics_interval: Duration::from_secs(5),
                fetch_wait_max: Duration::from_millis(500),
                linger: Duration::ZERO,
            },
            topic_order_created: topics::ORDER_CREATED.to_owned(),
            topic_inventory_reserved: topics::INVENTORY_RESERVED.to_owned(),
            topic_payment_processed: topics::PAYMENT_PROCESSED.to_owned(),
            topic_order_cancelled: topics::ORDER_CANCELLED.to_owned(),
            outbox: OutboxConfig {
                poll_interval: Duration::from_secs(1),
                batch_size: 100,
                retention: Duration::from_secs(24 * 60 * 60),
            },
            consumer: ConsumerConfig {
                retry_initial: Duration::from_millis(100),
                retry_max: Duration::from_secs(5),
                max_attempts: 5,
                batch_size: 50,
            },
            shutdown_timeout: Duration::from_secs(15),
            log_format: LogFormat::Text,
            otel_exporter_otlp_endpoint: String::new(),
            auth_mode: AuthMode::Off,
            auth_jwks_file: String::new(),
            auth_jwks_url: String::new(),
            auth_issuer: String::new(),
            auth_audience: String::new(),
            auth_leeway: Duration::from_secs(30),
            rate_limit_per_second: 0,
            rate_limit_burst: 20,
        }
    }

    /// Points every `topic_*` setting at `topics`.
    pub fn set_topics(&mut self, topics: &Topics) {
        self.topic_order_created = topics.order_created.clone();
        self.topic_inventory_reserved = topics.inventory_reserved.clone();
        self.topic_payment_processed = topics.payment_processed.clone();
        self.topic_order_cancelled = topics.order_cancelled.clone();
    }

    pub fn topics(&self) -> Topics {
        Topics {
            order_created: self.topic_order_created.clone(),
            inventory_reserved: self.topic_inventory_reserved.clone(),
            payment_processed: self.topic_payment_processed.clone(),
            order_cancelled: self.topic_order_cancelled.clone(),
        }
    }

    /// Refuses settings that cannot work, naming the variable: a value is
    /// never quietly replaced by another.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.database_max_connections >= 1,
            "DATABASE_MAX_CONNECTIONS must be at least 1, not 0"
        );
        ensure!(
            !self.shutdown_timeout.is_zero(),
            "SHUTDOWN_TIMEOUT_MS must be above 0: with no time at all it could never work"
        );
        self.kafka.validate()?;
        self.outbox.validate()?;
        self.consumer.validate()?;
        if self.auth_mode == AuthMode::Jwt {
            ensure!(
                self.auth_jwks_file.is_empty() != self.auth_jwks_url.is_empty(),
                "AUTH_MODE=jwt needs exactly one of AUTH_JWKS_FILE and AUTH_JWKS_URL"
            );
            for (name, value) in [
                ("AUTH_ISSUER", &self.auth_issuer),
                ("AUTH_AUDIENCE", &self.auth_audience),
            ] {
                ensure!(
                    !value.is_empty(),
                    "AUTH_MODE=jwt needs {name}: tokens of any issuer or audience would pass"
                );
            }
        }
        ensure!(
            self.rate_limit_per_second == 0 || self.rate_limit_burst >= 1,
            "RATE_LIMIT_BURST must be at least 1 when RATE_LIMIT_PER_SECOND is set"
        );
        Ok(())
    }
}

/// Refuses a count below 1, naming its variable.
fn at_least_one(name: &str, value: i64) -> anyhow::Result<()> {
    ensure!(value >= 1, "{name} must be at least 1, not {value}");
    Ok(())
}

/// Refuses a zero duration, naming its variable.
fn above_zero(name: &str, value: Duration) -> anyhow::Result<()> {
    ensure!(
        !value.is_zero(),
        "{name} must be above 0: with no time at all it could never work"
    );
    Ok(())
}

impl KafkaConfig {
    fn validate(&self) -> anyhow::Result<()> {
        at_least_one("KAFKA_TOPIC_PARTITIONS", self.topic_partitions.into())?;
        at_least_one("KAFKA_REPLICATION_FACTOR", self.replication_factor.into())?;
        above_zero("KAFKA_SESSION_TIMEOUT_MS", self.session_timeout)?;
        above_zero("KAFKA_MESSAGE_TIMEOUT_MS", self.message_timeout)?;
        above_zero("KAFKA_STATISTICS_INTERVAL_MS", self.statistics_interval)?;
        if self.security_protocol.uses_sasl() {
            ensure!(
                SASL_MECHANISMS.contains(&self.sasl_mechanism.as_str()),
                "KAFKA_SASL_MECHANISM must be one of {}, not {:?}",
                SASL_MECHANISMS.join(", "),
                self.sasl_mechanism
            );
            ensure!(
                !self.sasl_username.is_empty(),
                "KAFKA_SECURITY_PROTOCOL={} needs KAFKA_SASL_USERNAME",
                self.security_protocol
            );
            ensure!(
                !self.sasl_password.expose().is_empty(),
                "KAFKA_SECURITY_PROTOCOL={} needs KAFKA_SASL_PASSWORD",
                self.security_protocol
            );
        }
        if !self.ssl_ca_location.is_empty() {
            ensure!(
                self.security_protocol.uses_tls(),
                "KAFKA_SSL_CA_LOCATION is set but KAFKA_SECURITY_PROTOCOL={} uses no TLS",
                self.security_protocol
            );
            ensure!(
                std::path::Path::new(&self.ssl_ca_location).is_file(),
                "KAFKA_SSL_CA_LOCATION={} is not a file",
                self.ssl_ca_location
            );
        }
        Ok(())
    }
}

impl OutboxConfig {
    fn validate(&self) -> anyhow::Result<()> {
        at_least_one("OUTBOX_BATCH_SIZE", self.batch_size)?;
        above_zero("OUTBOX_POLL_INTERVAL_MS", self.poll_interval)
    }
}

impl ConsumerConfig {
    fn validate(&self) -> anyhow::Result<()> {
        at_least_one("CONSUMER_MAX_ATTEMPTS", self.max_attempts.into())?;
        at_least_one(
            "CONSUMER_BATCH_SIZE",
            i64::try_from(self.batch_size).unwrap_or(i64::MAX),
        )?;
        above_zero("CONSUMER_RETRY_INITIAL_MS", self.retry_initial)?;
        ensure!(
            self.retry_initial <= self.retry_max,
            "CONSUMER_RETRY_MAX_MS ({} ms) must not be below CONSUMER_RETRY_INITIAL_MS ({} ms)",
            self.retry_max.as_millis(),
            self.retry_initial.as_millis()
        );
        Ok(())
    }
}

/// A `Duration` written as whole seconds, as the `*_SECS` environment
/// variables give it: `#[serde(rename = "x_secs", with = "service_kit::config::secs")]`.
pub mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

/// An optional `Duration` written as whole seconds, unset when absent:
/// `#[serde(default, rename = "x_secs", with = "service_kit::config::secs_opt")]`.
pub mod secs_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_some(&duration.as_secs()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_secs))
    }
}

/// A `Duration` written as whole milliseconds, as the `*_MS` environment
/// variables give it: `#[serde(rename = "x_ms", with = "service_kit::config::millis")]`.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        let millis = u64::try_from(duration.as_millis()).map_err(serde::ser::Error::custom)?;
        serializer.serialize_u64(millis)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// `config` as the environment variables that would load it again (each
/// setting's name upper-cased; unset optional ones left out): what a process
/// started with this configuration is given, so nobody writes the list twice.
pub fn to_env<T: Serialize>(config: &T) -> anyhow::Result<BTreeMap<String, String>> {
    let value = serde_json::to_value(config).context("encoding the configuration")?;
    let serde_json::Value::Object(settings) = value else {
        anyhow::bail!("a configuration is a map of settings");
    };
    Ok(settings
        .into_iter()
        .filter_map(|(key, value)| {
            let text = match value {
                serde_json::Value::Null => return None,
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            Some((key.to_uppercase(), text))
        })
        .collect())
}

/// The settings of `config` that `names` lists (environment variable
/// names), as [`to_env`] writes them: for a child process given only some
/// settings and inheriting the rest. A name that is no setting is an error,
/// so a list cannot drift from the configuration.
pub fn env_of<T: Serialize>(
    config: &T,
    names: &[&str],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = to_env(config)?;
    if let Some(unknown) = names.iter().find(|name| !env.contains_key(**name)) {
        anyhow::bail!("{unknown} is not a setting of this configuration");
    }
    env.retain(|key, _| names.contains(&key.as_str()));
    Ok(env)
}

/// Loads a service's configuration: `defaults` (the service's whole
/// configuration with its documented defaults), overridden by `CONFIG_FILE`
/// (if set), overridden by the process environment.
pub fn load<T: Serialize + DeserializeOwned>(defaults: &T) -> anyhow::Result<T> {
    let file = std::env::var(CONFIG_FILE_VAR).ok();
    load_from(defaults, file.as_deref(), None)
}

/// [`load`] with the file and environment given explicitly (`env: None` reads
/// the process environment).
pub fn load_from<T: Serialize + DeserializeOwned>(
    defaults: &T,
    file: Option<&str>,
    env: Option<HashMap<String, String>>,
) -> anyhow::Result<T> {
    let mut builder = config::Config::builder()
        .add_source(config::Config::try_from(defaults).context("encoding the defaults")?);
    if let Some(path) = file {
        builder = builder.add_source(config::File::new(path, config::FileFormat::Toml));
    }
    let layered = builder
        .add_source(config::Environment::default().try_parsing(true).source(env))
        .build()
        .context("reading configuration")?;
    // Deserialising the common part on its own first gets errors that name
    // the key (serde loses it inside the flattened struct).
    // The groups flattened into it lose the key again, so each is read on
    // its own before.
    read::<KafkaConfig>(&layered)?;
    read::<OutboxConfig>(&layered)?;
    read::<ConsumerConfig>(&layered)?;
    read::<CommonConfig>(&layered)?
        .validate()
        .context("invalid configuration")?;
    read(&layered)
}

/// `T` out of the layered settings (which may hold more than `T` reads).
fn read<T: DeserializeOwned>(layered: &config::Config) -> anyhow::Result<T> {
    layered
        .clone()
        .try_deserialize()
        .context("invalid configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct ServiceConfig {
        #[serde(flatten)]
        common: CommonConfig,
        payment_default_credit_cents: i64,
    }

    fn load_with(file: Option<&str>, env: &[(&str, &str)]) -> anyhow::Result<ServiceConfig> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let defaults = ServiceConfig {
            common: CommonConfig::defaults("payment-service", 8083, "payments"),
            payment_default_credit_cents: 100_000,
        };
        load_from(&defaults, file, Some(env))
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = load_with(None, &[]).unwrap();
        assert_eq!(config.common.port, 8083);
        assert_eq!(config.common.kafka.group_id, "ordersystem.payment-service");
        assert_eq!(config.common.shutdown_timeout, Duration::from_secs(15));
        assert_eq!(config.common.kafka.topic_partitions, 6);
        assert_eq!(config.common.topics(), Topics::default());
        assert_eq!(config.payment_default_credit_cents, 100_000);
        assert_eq!(
            config.common.otel_exporter_otlp_endpoint, "",
            "no trace export unless asked for"
        );
    }

    #[test]
    fn conventional_environment_variables_override_defaults() {
        let config = load_with(
            None,
            &[
                ("PORT", "9000"),
                ("DATABASE_URL", "postgres://db/x"),
                ("KAFKA_BOOTSTRAP_SERVERS", "kafka:29092"),
                ("TOPIC_ORDER_CREATED", "orders.created"),
                ("PAYMENT_DEFAULT_CREDIT_CENTS", "5"),
                ("LOG_FORMAT", "json"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("KAFKA_GROUP_ID", "payments-blue"),
                ("SHUTDOWN_TIMEOUT_MS", "3000"),
            ],
        )
        .unwrap();
        assert_eq!(config.common.port, 9000);
        assert_eq!(config.common.database_url, "postgres://db/x");
        assert_eq!(config.common.kafka.bootstrap_servers, "kafka:29092");
        assert_eq!(config.common.topics().order_created, "orders.created");
        assert_eq!(config.payment_default_credit_cents, 5);
        assert_eq!(config.common.log_format, LogFormat::Json);
        assert_eq!(
            config.common.otel_exporter_otlp_endpoint,
            "http://collector:4318"
        );
        assert_eq!(config.common.kafka.group_id, "payments-blue");
        assert_eq!(config.common.shutdown_timeout, Duration::from_millis(3000));
    }

    #[test]
    fn a_file_sits_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("service.toml");
        std::fs::write(&path, "port = 7000\nkafka_group_id = \"from-file\"\n").unwrap();
        let config = load_with(Some(path.to_str().unwrap()), &[("PORT", "7001")]).unwrap();
        assert_eq!(config.common.port, 7001, "environment wins over the file");
        assert_eq!(
            config.common.kafka.group_id, "from-file",
            "the file wins over defaults"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_shutdown_without_time_is_refused() {
        let err = load_with(None, &[("SHUTDOWN_TIMEOUT_MS", "0")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("SHUTDOWN_TIMEOUT_MS"),
            "{err:#}"
        );
    }

    #[test]
    fn durations_are_read_in_the_unit_their_names_say() {
        let config = load_with(
            None,
            &[
                ("KAFKA_SESSION_TIMEOUT_MS", "2500"),
                ("OUTBOX_RETENTION_SECS", "60"),
                ("DATABASE_CONNECT_TIMEOUT_SECS", "3"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.common.kafka.session_timeout,
            Duration::from_millis(2500)
        );
        assert_eq!(config.common.outbox.retention, Duration::from_secs(60));
        assert_eq!(
            config.common.database_connect_timeout,
            Duration::from_secs(3)
        );
    }

    #[test]
    fn values_that_cannot_work_are_refused_not_replaced() {
        for (name, value) in [
            ("CONSUMER_BATCH_SIZE", "0"),
            ("CONSUMER_MAX_ATTEMPTS", "0"),
            ("OUTBOX_BATCH_SIZE", "0"),
            ("KAFKA_TOPIC_PARTITIONS", "0"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("OUTBOX_POLL_INTERVAL_MS", "0"),
            ("CONSUMER_RETRY_MAX_MS", "10"),
        ] {
            let err = load_with(None, &[(name, value)]).unwrap_err();
            assert!(format!("{err:#}").contains(name), "{name}={value}: {err:#}");
        }
    }

    #[test]
    fn a_configuration_written_as_environment_loads_back_the_same() {
        let mut config = load_with(None, &[]).unwrap();
        config.common.kafka.session_timeout = Duration::from_millis(1234);
        config.common.log_format = LogFormat::Json;
        config.payment_default_credit_cents = 7;
        let env = to_env(&config).unwrap();
        assert_eq!(env["KAFKA_SESSION_TIMEOUT_MS"], "1234");
        assert_eq!(env["LOG_FORMAT"], "json");
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let loaded = load_with(None, &pairs).unwrap();
        assert_eq!(
            serde_json::to_value(&loaded).unwrap(),
            serde_json::to_value(&config).unwrap()
        );
    }

    #[test]
    fn env_of_gives_the_named_settings_and_refuses_an_unknown_name() {
        let mut config = CommonConfig::defaults("payment-service", 8083, "payments");
        config.kafka.topic_partitions = 3;
        let env = env_of(&config, &["KAFKA_TOPIC_PARTITIONS", "PORT"]).unwrap();
        assert_eq!(
            env,
            BTreeMap::from([
                ("KAFKA_TOPIC_PARTITIONS".to_owned(), "3".to_owned()),
                ("PORT".to_owned(), "8083".to_owned()),
            ])
        );
        let err = env_of(&config, &["KAFKA_PARTITIONS"]).unwrap_err();
        assert!(err.to_string().contains("KAFKA_PARTITIONS"), "{err}");
    }

    #[test]
    fn sasl_needs_a_username_and_a_password() {
        let err = load_with(None, &[("KAFKA_SECURITY_PROTOCOL", "sasl_ssl")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("KAFKA_SASL_USERNAME"),
            "{err:#}"
        );
        let err = load_with(
            None,
            &[
                ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                ("KAFKA_SASL_USERNAME", "payment-service"),
            ],
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("KAFKA_SASL_PASSWORD"),
            "{err:#}"
        );
        let config = load_with(
            None,
            &[
                ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                ("KAFKA_SASL_USERNAME", "payment-service"),
                ("KAFKA_SASL_PASSWORD", "hunter2"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.common.kafka.security_protocol,
            KafkaSecurityProtocol::SaslSsl
        );
        assert_eq!(config.common.kafka.sasl_mechanism, "SCRAM-SHA-512");
    }

    #[test]
    fn an_unknown_security_protocol_or_mechanism_is_refused() {
        assert!(load_with(None, &[("KAFKA_SECURITY_PROTOCOL", "tls")]).is_err());
        let err = load_with(
            None,
            &[
                ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                ("KAFKA_SASL_MECHANISM", "GSSAPI"),
                ("KAFKA_SASL_USERNAME", "u"),
                ("KAFKA_SASL_PASSWORD", "p"),
            ],
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("KAFKA_SASL_MECHANISM"),
            "{err:#}"
        );
    }

    #[test]
    fn the_kafka_password_never_shows_in_debug_output() {
        let config = load_with(
            None,
            &[
                ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                ("KAFKA_SASL_USERNAME", "payment-service"),
                ("KAFKA_SASL_PASSWORD", "hunter2-secret"),
            ],
        )
        .unwrap();
        for shown in [
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{}", config.common.kafka.sasl_password),
        ] {
            assert!(!shown.contains("hunter2-secret"), "{shown}");
        }
        assert!(format!("{config:?}").contains("sasl_password: ***"));
        assert_eq!(
            to_env(&config).unwrap()["KAFKA_SASL_PASSWORD"],
            "hunter2-secret",
            "a child process still gets it"
        );
    }

    #[test]
    fn a_malformed_value_is_an_error_naming_the_key() {
        for (name, value) in [
            ("PORT", "eighty"),
            ("KAFKA_SESSION_TIMEOUT_MS", "soon"),
            ("OUTBOX_BATCH_SIZE", "many"),
            ("CONSUMER_MAX_ATTEMPTS", "a few"),
        ] {
            let err = load_with(None, &[(name, value)]).unwrap_err();
            assert!(
                format!("{err:#}").contains(&name.to_lowercase()),
                "{name}={value}: {err:#}"
            );
        }
    }
}
