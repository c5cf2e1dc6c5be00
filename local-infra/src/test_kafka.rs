//! The broker a test runs against, chosen by the `TEST_KAFKA` environment
//! variable, so one test suite runs on both brokers:
//!
//! - unset or `embedded`: librdkafka's mock cluster, one per caller, needing
//!   nothing installed;
//! - `apache`: the real Apache Kafka. Callers share one single-node cluster per
//!   test process (started on first use, killed with the process), so they
//!   must keep apart by topic and group names ([`TestKafka::is_shared`]); a
//!   test that stops or pauses its broker asks for one of its own.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::{
    ApacheKafka, ApacheKafkaOptions, EmbeddedKafka, KafkaCredentials, KafkaSecurity,
    MOCK_CONSUMER_FETCH_WAIT,
};

/// The environment variable that picks the broker.
pub const TEST_KAFKA_ENV: &str = "TEST_KAFKA";

/// The real broker every test of this process shares.
static SHARED_APACHE: OnceLock<ApacheKafka> = OnceLock::new();

/// Which broker `TEST_KAFKA` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKafkaMode {
    Embedded,
    Apache,
}

impl TestKafkaMode {
    /// Reads `TEST_KAFKA`; an unknown value is an error, not a silent default.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var(TEST_KAFKA_ENV).as_deref() {
            Err(_) | Ok("") | Ok("embedded") => Ok(Self::Embedded),
            Ok("apache") => Ok(Self::Apache),
            Ok(other) => bail!("{TEST_KAFKA_ENV}={other:?}: expected `embedded` or `apache`"),
        }
    }
}

/// A test's broker.
#[derive(Debug)]
pub enum TestKafka {
    /// A mock cluster of the caller's own.
    Embedded(EmbeddedKafka),
    /// The process's shared real broker.
    SharedApache(&'static ApacheKafka),
    /// A real cluster of the caller's own, which it may stop, kill or pause.
    OwnApache(ApacheKafka),
}

impl TestKafka {
    /// The broker `TEST_KAFKA` asks for, shared where sharing is possible.
    pub fn start() -> anyhow::Result<Self> {
        match TestKafkaMode::from_env()? {
            TestKafkaMode::Embedded => Ok(Self::Embedded(EmbeddedKafka::start(1)?)),
            TestKafkaMode::Apache => {
                if let Some(shared) = SHARED_APACHE.get() {
                    return Ok(Self::SharedApache(shared));
                }
                let started = ApacheKafka::start(ApacheKafkaOptions::default())
                    .context("starting the shared Apache Kafka for tests")?;
                // Another test may have won the race; its broker is as good.
                let shared = match SHARED_APACHE.set(started) {
                    Ok(()) => SHARED_APACHE.get().expect("just set"),
                    Err(_loser) => SHARED_APACHE.get().expect("set by the winner"),
                };
                Ok(Self::SharedApache(shared))
            }
        }
    }

    /// A broker of the caller's own with `nodes` nodes (the embedded one for
    /// one node unless `TEST_KAFKA=apache`; three nodes need the real one).
    pub fn start_own(nodes: usize) -> anyhow::Result<Self> {
        match TestKafkaMode::from_env()? {
            TestKafkaMode::Embedded if nodes == 1 => Ok(Self::Embedded(EmbeddedKafka::start(1)?)),
            TestKafkaMode::Embedded => {
                bail!("a {nodes}-node cluster needs {TEST_KAFKA_ENV}=apache")
            }
            TestKafkaMode::Apache => Ok(Self::OwnApache(ApacheKafka::start(ApacheKafkaOptions {
                nodes,
                ..ApacheKafkaOptions::default()
            })?)),
        }
    }

    /// A `sasl_ssl` cluster of the caller's own with `nodes` nodes: TLS,
    /// SCRAM logins per service and ACLs from the topic table. Needs
    /// `TEST_KAFKA=apache` (the mock cluster has no ACLs).
    pub fn start_secured(nodes: usize) -> anyhow::Result<Self> {
        match TestKafkaMode::from_env()? {
            TestKafkaMode::Embedded => {
                bail!("a sasl_ssl cluster with ACLs needs {TEST_KAFKA_ENV}=apache")
            }
            TestKafkaMode::Apache => Ok(Self::OwnApache(ApacheKafka::start(ApacheKafkaOptions {
                nodes,
                security: KafkaSecurity::SaslSsl,
                ..ApacheKafkaOptions::default()
            })?)),
        }
    }

    /// The login of `username` on a secured broker; `None` on one without logins.
    pub fn credentials(&self, username: &str) -> Option<KafkaCredentials> {
        self.own_apache()
            .and_then(|kafka| kafka.credentials(username))
    }

    /// The super user's login on a secured broker; `None` on one without logins.
    pub fn admin_credentials(&self) -> Option<KafkaCredentials> {
        self.own_apache().and_then(ApacheKafka::admin_credentials)
    }

    pub fn bootstrap_servers(&self) -> String {
        match self {
            Self::Embedded(kafka) => kafka.bootstrap_servers(),
            Self::SharedApache(kafka) => kafka.bootstrap_servers(),
            Self::OwnApache(kafka) => kafka.bootstrap_servers(),
        }
    }

    /// Whether other tests use this broker too (then topics and groups need
    /// names of the test's own).
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::SharedApache(_))
    }

    /// `embedded` or `apache`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::SharedApache(_) | Self::OwnApache(_) => "apache",
        }
    }

    /// The `fetch.wait.max.ms` this broker's consumers need, where it differs
    /// from the services' default: the mock's [`MOCK_CONSUMER_FETCH_WAIT`].
    pub fn consumer_fetch_wait(&self) -> Option<Duration> {
        match self {
            Self::Embedded(_) => Some(MOCK_CONSUMER_FETCH_WAIT),
            Self::SharedApache(_) | Self::OwnApache(_) => None,
        }
    }

    /// The mock cluster, for its fault injection.
    pub fn embedded(&self) -> Option<&EmbeddedKafka> {
        match self {
            Self::Embedded(kafka) => Some(kafka),
            _ => None,
        }
    }

    /// The real cluster, when the caller owns it (so may stop or pause it).
    pub fn own_apache(&self) -> Option<&ApacheKafka> {
        match self {
            Self::OwnApache(kafka) => Some(kafka),
            _ => None,
        }
    }

    /// Replication factor for the caller's topics.
    pub fn replication_factor(&self) -> i32 {
        match self {
            Self::Embedded(_) => 1,
            Self::SharedApache(kafka) => kafka.replication_factor(),
            Self::OwnApache(kafka) => kafka.replication_factor(),
        }
    }

    /// Creates `name` with `partitions` partitions; an existing topic with
    /// that count is fine.
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        match self {
            Self::Embedded(kafka) => kafka.create_topic(name, partitions),
            Self::SharedApache(kafka) => kafka.create_topic(name, partitions),
            Self::OwnApache(kafka) => kafka.create_topic(name, partitions),
        }
    }

    /// Makes the broker unreachable: the mock refuses connections; a real
    /// broker of our own is SIGKILLed (every node), as in a crash.
    pub fn take_down(&self) -> anyhow::Result<()> {
        match self {
            Self::Embedded(kafka) => kafka.broker_down(-1),
            Self::OwnApache(kafka) => kafka
                .node_ids()
                .into_iter()
                .try_for_each(|id| kafka.kill_node(id)),
            Self::SharedApache(_) => bail!("the shared broker cannot be taken down"),
        }
    }

    /// Undoes [`take_down`](Self::take_down): the real broker restarts on its data.
    pub fn bring_up(&self) -> anyhow::Result<()> {
        match self {
            Self::Embedded(kafka) => kafka.broker_up(-1),
            Self::OwnApache(kafka) => kafka.start_all(),
            Self::SharedApache(_) => bail!("the shared broker cannot be taken down"),
        }
    }
}
