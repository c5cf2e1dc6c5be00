//! How every Kafka client of the system reaches the brokers: the address and
//! the security settings (`KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`,
//! `KAFKA_SSL_CA_LOCATION`), applied in one place, [`KafkaConnection::client_config`],
//! to producers, consumers, admin and metadata clients alike.
//!
//! Also what happens when the broker refuses the login: librdkafka reports
//! the failure on every reconnect (an error callback and log lines, every few
//! seconds, from every client). [`KafkaEvents`], the client context, hands
//! those to one [`LoginWatch`] per service, which logs one error line (again
//! only after [`LOGIN_FAILURE_LOG_INTERVAL`]) and keeps the reason for the
//! readiness check. The process stays up: the failure is reported, not fatal.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::config::{CommonConfig, KafkaSecurityProtocol, Secret, DEFAULT_SASL_MECHANISM};

/// How long a refused login stays reported by one log line: librdkafka
/// retries every few seconds, and one line per retry would bury every other.
pub const LOGIN_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(300);

/// The configuration settings a [`KafkaConnection`] is made of, by their
/// environment variables.
const CONNECTION_SETTINGS: [&str; 6] = [
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CA_LOCATION",
];

/// Where the brokers are and how to log in to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConnection {
    /// `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// librdkafka's `security.protocol`.
    pub security_protocol: KafkaSecurityProtocol,
    /// With SASL: `sasl.mechanism`.
    pub sasl_mechanism: String,
    /// With SASL: who logs in; also names the [`LoginWatch`] with the service.
    pub sasl_username: String,
    /// With SASL: the password (printed as `***`).
    pub sasl_password: Secret,
    /// With TLS: the CA file brokers' certificates are checked against
    /// (empty: the system's trust store).
    pub ssl_ca_location: String,
    /// Whose clients these are, for the log and the readiness check.
    pub service_name: String,
}

impl KafkaConnection {
    /// A broker without TLS or login, as the embedded one and plain Compose are.
    pub fn plaintext(bootstrap_servers: &str) -> KafkaConnection {
        KafkaConnection {
            bootstrap_servers: bootstrap_servers.to_owned(),
            security_protocol: KafkaSecurityProtocol::Plaintext,
            sasl_mechanism: DEFAULT_SASL_MECHANISM.to_owned(),
            sasl_username: String::new(),
            sasl_password: Secret::default(),
            ssl_ca_location: String::new(),
            service_name: String::new(),
        }
    }

    /// SCRAM-SHA-512 over TLS as `username`, checking the brokers against
    /// the CA in `ca_location`: how a secured Apache Kafka is reached.
    pub fn scram_over_tls(
        bootstrap_servers: &str,
        username: &str,
        password: Secret,
        ca_location: &str,
    ) -> KafkaConnection {
        KafkaConnection {
            security_protocol: KafkaSecurityProtocol::SaslSsl,
            sasl_username: username.to_owned(),
            sasl_password: password,
            ssl_ca_location: ca_location.to_owned(),
            service_name: username.to_owned(),
            ..KafkaConnection::plaintext(bootstrap_servers)
        }
    }

    /// Points `config` at these brokers with these security settings.
    pub fn apply_to(&self, config: &mut CommonConfig) {
        config.kafka.bootstrap_servers = self.bootstrap_servers.clone();
        config.kafka.security_protocol = self.security_protocol;
        config.kafka.sasl_mechanism = self.sasl_mechanism.clone();
        config.kafka.sasl_username = self.sasl_username.clone();
        config.kafka.sasl_password = self.sasl_password.clone();
        config.kafka.ssl_ca_location = self.ssl_ca_location.clone();
    }

    /// The environment variables a service is started with to connect this
    /// way (`KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_SECURITY_PROTOCOL`, and with a
    /// login `KAFKA_SASL_*` and `KAFKA_SSL_CA_LOCATION`): named by the
    /// configuration itself, so they cannot drift from what it reads.
    pub fn env(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut config = CommonConfig::defaults(&self.service_name, 0, "");
        self.apply_to(&mut config);
        crate::config::env_of(&config, &CONNECTION_SETTINGS)
    }

    /// The connection a service's configuration describes.
    pub fn of(config: &CommonConfig) -> KafkaConnection {
        KafkaConnection {
            bootstrap_servers: config.kafka.bootstrap_servers.clone(),
            security_protocol: config.kafka.security_protocol,
            sasl_mechanism: config.kafka.sasl_mechanism.clone(),
            sasl_username: config.kafka.sasl_username.clone(),
            sasl_password: config.kafka.sasl_password.clone(),
            ssl_ca_location: config.kafka.ssl_ca_location.clone(),
            service_name: config.service_name.clone(),
        }
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap_servers
    }

    /// A client configuration with the address and every security setting:
    /// the one place they are applied.
    pub fn client_config(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("security.protocol", self.security_protocol.as_str());
        if self.security_protocol.uses_sasl() {
            client
                .set("sasl.mechanism", &self.sasl_mechanism)
                .set("sasl.username", &self.sasl_username)
                .set("sasl.password", self.sasl_password.expose());
        }
        if self.security_protocol.uses_tls() && !self.ssl_ca_location.is_empty() {
            client.set("ssl.ca.location", &self.ssl_ca_location);
        }
        client
    }

    /// The context for this connection's clients: reports a refused login
    /// through the service's [`LoginWatch`].
    pub fn events(&self) -> KafkaEvents {
        KafkaEvents {
            login: self.login_watch(),
        }
    }

    /// The [`LoginWatch`] every client of this service and user shares.
    pub fn login_watch(&self) -> Arc<LoginWatch> {
        static WATCHES: OnceLock<Watches> = OnceLock::new();
        let key = (self.service_name.clone(), self.sasl_username.clone());
        let mut watches = WATCHES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        watches
            .entry(key)
            .or_insert_with(|| {
                Arc::new(LoginWatch {
                    username: self.sasl_username.clone(),
                    state: Mutex::default(),
                })
            })
            .clone()
    }
}

/// The [`LoginWatch`] of each (service, user) in this process.
type Watches = Mutex<HashMap<(String, String), Arc<LoginWatch>>>;

/// Whether the broker refused this service's login, shared by all of the
/// service's clients in this process.
#[derive(Debug)]
pub struct LoginWatch {
    /// Who tried to log in, for the log line.
    username: String,
    state: Mutex<LoginState>,
}

#[derive(Debug, Default)]
struct LoginState {
    /// The broker's reason, while the login is refused.
    refused: Option<String>,
    /// When the failure was last logged.
    logged_at: Option<Instant>,
}

impl LoginWatch {
    /// Records a refused login; logs it unless that was done within
    /// [`LOGIN_FAILURE_LOG_INTERVAL`].
    pub fn refused(&self, reason: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.refused = Some(reason.to_owned());
        let due = state
            .logged_at
            .is_none_or(|at| at.elapsed() >= LOGIN_FAILURE_LOG_INTERVAL);
        if due {
            state.logged_at = Some(Instant::now());
            tracing::error!(
                username = %self.username,
                reason,
                "Kafka authentication failed: the broker refused the login; check \
                 KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (retrying, reported again \
                 in {} s if it persists)",
                LOGIN_FAILURE_LOG_INTERVAL.as_secs()
            );
        }
    }

    /// The broker answered: whatever was refused before is over.
    pub fn answered(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.refused.take().is_some() {
            state.logged_at = None;
            tracing::info!(username = %self.username, "Kafka accepted the login again");
        }
    }

    /// Why the broker refuses the login, while it does.
    pub fn refusal(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refused
            .clone()
    }
}

/// Whether an error is the broker refusing the login.
pub fn is_login_refused(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
    )
}

/// Whether an error says a broker connection went away, which follows every
/// refused login.
fn is_disconnection(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
    )
}

/// Whether a librdkafka log line is about a refused login (also reported
/// through the error callback, so it is not logged on its own).
fn is_login_log(message: &str) -> bool {
    message.contains("SASL authentication error") || message.contains("Authentication failed")
}

/// The client context of the system's Kafka clients: librdkafka's log and
/// errors go to `tracing` as they would by default, except a refused login,
/// which goes to the service's [`LoginWatch`].
pub struct KafkaEvents {
    pub login: Arc<LoginWatch>,
}

impl KafkaEvents {
    /// What the context of a client of `connection` does with a log line.
    pub(crate) fn on_log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if is_login_log(message) {
            self.login.refused(message);
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
        }
    }

    /// What the context does with an error callback.
    pub(crate) fn on_error(&self, error: KafkaError, reason: &str) {
        if is_login_refused(&error) || is_login_log(reason) {
            self.login.refused(reason);
        } else if self.login.refusal().is_some() && is_disconnection(&error) {
            // The consequence of the refused login, reported already.
            tracing::debug!(target: "librdkafka", "librdkafka: {error}: {reason}");
        } else {
            tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
        }
    }
}

impl ClientContext for KafkaEvents {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.on_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.on_error(error, reason);
    }
}

impl ConsumerContext for KafkaEvents {}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(protocol: KafkaSecurityProtocol) -> KafkaConnection {
        KafkaConnection {
            security_protocol: protocol,
            sasl_username: "payment-service".into(),
            sasl_password: Secret::new("pw"),
            ssl_ca_location: "/tmp/ca.pem".into(),
            service_name: format!("test-{}", uuid::Uuid::new_v4()),
            ..KafkaConnection::plaintext("127.0.0.1:9092")
        }
    }

    #[test]
    fn sasl_ssl_sets_the_login_and_the_ca() {
        let config = connection(KafkaSecurityProtocol::SaslSsl).client_config();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("payment-service"));
        assert_eq!(config.get("sasl.password"), Some("pw"));
        assert_eq!(config.get("ssl.ca.location"), Some("/tmp/ca.pem"));
    }

    #[test]
    fn a_connection_given_as_environment_is_every_setting_it_is_made_of() {
        let connection = KafkaConnection::scram_over_tls(
            "10.0.0.1:9093",
            "payment-service",
            Secret::new("pw"),
            "/tmp/ca.pem",
        );
        let env = connection.env().unwrap();
        assert_eq!(env.len(), CONNECTION_SETTINGS.len(), "{:?}", env.keys());
        assert_eq!(env["KAFKA_SECURITY_PROTOCOL"], "sasl_ssl");
        assert_eq!(env["KAFKA_SASL_PASSWORD"], "pw");
        let mut config = CommonConfig::defaults("payment-service", 0, "payment");
        connection.apply_to(&mut config);
        assert_eq!(KafkaConnection::of(&config), connection);
    }

    #[test]
    fn plaintext_sets_no_login() {
        let config = connection(KafkaSecurityProtocol::Plaintext).client_config();
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.get("sasl.username"), None);
        assert_eq!(config.get("ssl.ca.location"), None);
    }

    #[test]
    fn a_refused_login_is_kept_until_the_broker_answers() {
        let connection = connection(KafkaSecurityProtocol::SaslSsl);
        let events = connection.events();
        assert_eq!(events.login.refusal(), None);
        events.on_error(
            KafkaError::MetadataFetch(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed during authentication",
        );
        let shared = connection.login_watch();
        assert!(shared.refusal().unwrap().contains("Authentication failed"));
        shared.answered();
        assert_eq!(events.login.refusal(), None);
    }

    #[test]
    fn the_password_is_not_in_the_connection_debug_output() {
        let shown = format!("{:?}", connection(KafkaSecurityProtocol::SaslSsl));
        assert!(!shown.contains("\"pw\""), "{shown}");
        assert!(shown.contains("***"));
    }
}
