//! The stack's backing services: Kafka and PostgreSQL, either our own (the
//! default: the embedded broker in a child process, see `embedded_broker`, or
//! Apache Kafka with `--kafka apache`, and a private PostgreSQL) or existing
//! ones the developer points us at.
//!
//! Either way the result is the two connection strings every service gets
//! (`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`), with the topics and the
//! database in place before any service starts. With `--kafka-sasl`, Apache
//! Kafka takes logins over TLS and enforces ACLs, and each program gets its
//! own login ([`Kafka::connection_for`]). Services rely on that: a topic
//! a client auto-creates first would get the broker's default partition count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use local_infra::{
    ApacheKafka, ApacheKafkaOptions, KafkaSecurity, PostgresCluster, ServiceRole,
    MOCK_CONSUMER_FETCH_WAIT,
};
use service_kit::config::{env_of, Secret};
use service_kit::kafka::KafkaConnection;
use service_kit::CommonConfig;
use shared_events::topics::{Topics, DEFAULT_PARTITIONS};
use sqlx::{Connection, PgConnection};

use crate::cli::KafkaKind;
use crate::embedded_broker::{BrokerDied, EmbeddedBroker};

/// The database the services share (each in its own schema).
pub const DATABASE_NAME: &str = "ordersystem";

/// Replication factor for topics created on an external cluster: -1 asks for
/// the broker's `default.replication.factor` (Kafka 2.4+), which fits both a
/// one-broker dev cluster and a three-broker one.
const BROKER_DEFAULT_REPLICATION: i32 = -1;

/// How long an external PostgreSQL may take to accept a connection.
const DATABASE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka for the stack.
pub struct Kafka {
    /// What services put in `bootstrap.servers`.
    pub bootstrap: String,
    /// Which broker runs, if it is ours.
    running: RunningKafka,
}

/// The broker devstack owns, if any. Dropping it stops it, so it lives as
/// long as the stack.
enum RunningKafka {
    /// librdkafka's mock cluster, in a child process of ours.
    Embedded(EmbeddedBroker),
    /// Apache Kafka JVMs, with their data in the state directory.
    Apache(ApacheKafka),
    /// The developer's (`--kafka-bootstrap`).
    External,
}

/// What to start: the choice made by `--kafka`, `--kafka-nodes`,
/// `--kafka-port`, `--kafka-sasl` and `--kafka-bootstrap`.
pub struct KafkaPlan<'a> {
    pub kind: KafkaKind,
    pub nodes: usize,
    /// Apache Kafka in `sasl_ssl` mode: TLS, a SCRAM login per program, ACLs.
    pub sasl: bool,
    /// Client port of the first Apache Kafka node.
    pub first_port: u16,
    /// The data directory of Apache Kafka.
    pub data_dir: PathBuf,
    pub external: Option<&'a str>,
    /// Several instances of a service will share a consumer group.
    pub scaled_out: bool,
}

impl Kafka {
    /// Uses the broker at `plan.external` if given, else starts the one
    /// `plan.kind` names; then makes sure every topic exists with
    /// [`DEFAULT_PARTITIONS`].
    pub async fn start(plan: KafkaPlan<'_>) -> anyhow::Result<Self> {
        let topics = Topics::default();
        anyhow::ensure!(
            !plan.sasl || (plan.kind == KafkaKind::Apache && plan.external.is_none()),
            "--kafka-sasl secures the Apache Kafka devstack runs: it needs --kafka apache \
             and no --kafka-bootstrap"
        );
        if let Some(bootstrap) = plan.external {
            ensure_external_topics(bootstrap, &topics).await?;
            return Ok(Self {
                bootstrap: bootstrap.to_owned(),
                running: RunningKafka::External,
            });
        }
        match plan.kind {
            KafkaKind::Embedded => {
                // The child creates the topics itself: the mock has no
                // CreateTopics API to do it over the wire.
                let broker = EmbeddedBroker::start(plan.scaled_out)
                    .await
                    .context("starting the embedded Kafka")?;
                Ok(Self {
                    bootstrap: broker.bootstrap_servers().to_owned(),
                    running: RunningKafka::Embedded(broker),
                })
            }
            KafkaKind::Apache => {
                let options = ApacheKafkaOptions {
                    nodes: plan.nodes,
                    data_dir: Some(plan.data_dir.clone()),
                    first_port: Some(plan.first_port),
                    security: if plan.sasl {
                        KafkaSecurity::SaslSsl
                    } else {
                        KafkaSecurity::Plaintext
                    },
                    ..ApacheKafkaOptions::default()
                };
                // The JVMs take seconds to start; keep them off the async thread.
                let kafka = tokio::task::spawn_blocking(move || {
                    let kafka = ApacheKafka::start(options)?;
                    for topic in topics.all_with_dead_letters() {
                        kafka.create_topic(&topic, DEFAULT_PARTITIONS)?;
                    }
                    anyhow::Ok(kafka)
                })
                .await
                .context("the Kafka start-up task panicked")?
                .with_context(|| {
                    format!(
                        "starting Apache Kafka in {} (--kafka-port moves its ports; \
                         --kafka embedded needs no Java)",
                        plan.data_dir.display()
                    )
                })?;
                for (id, log) in kafka.log_files() {
                    tracing::info!("Kafka node {id} logs to {}", log.display());
                }
                Ok(Self {
                    bootstrap: kafka.bootstrap_servers(),
                    running: RunningKafka::Apache(kafka),
                })
            }
        }
    }

    /// How `program` (a service or the console) connects: in `sasl_ssl` mode
    /// with its own login, else with the address alone.
    pub fn connection_for(&self, program: &str) -> KafkaConnection {
        match &self.running {
            RunningKafka::Apache(kafka) => match kafka.credentials(program) {
                Some(login) => secured(&self.bootstrap, &login),
                None => KafkaConnection::plaintext(&self.bootstrap),
            },
            _ => KafkaConnection::plaintext(&self.bootstrap),
        }
    }

    /// The settings every client of this broker gets besides its connection:
    /// the consumers' fetch wait ([`Kafka::services_fetch_wait`]).
    pub fn client_env(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut config = CommonConfig::defaults("", 0, "");
        config.kafka.fetch_wait_max = self.services_fetch_wait()?;
        env_of(&config, &[FETCH_WAIT_ENV])
    }

    /// The consumers' fetch wait: one exported in devstack's own environment
    /// (so runs can compare waits), else the short one the embedded broker
    /// needs ([`MOCK_CONSUMER_FETCH_WAIT`]), else the services' default,
    /// which suits a real broker.
    pub fn services_fetch_wait(&self) -> anyhow::Result<Duration> {
        let needed = match self.running {
            RunningKafka::Embedded(_) => Some(MOCK_CONSUMER_FETCH_WAIT),
            RunningKafka::Apache(_) | RunningKafka::External => None,
        };
        fetch_wait(std::env::var(FETCH_WAIT_ENV).ok().as_deref(), needed)
    }

    /// How devstack's own tools connect (the benchmark's round trip): as
    /// the super user in `sasl_ssl` mode.
    pub fn admin_connection(&self) -> KafkaConnection {
        match &self.running {
            RunningKafka::Apache(kafka) => match kafka.admin_credentials() {
                Some(login) => secured(&self.bootstrap, &login),
                None => KafkaConnection::plaintext(&self.bootstrap),
            },
            _ => KafkaConnection::plaintext(&self.bootstrap),
        }
    }

    /// Whether clients log in (`--kafka-sasl`).
    pub fn is_secured(&self) -> bool {
        matches!(&self.running, RunningKafka::Apache(kafka) if kafka.is_secured())
    }

    /// "embedded", "apache" or "external", for the banner and `stack.json`.
    pub fn kind(&self) -> &'static str {
        match &self.running {
            RunningKafka::Embedded(_) => "embedded",
            RunningKafka::Apache(_) => "apache",
            RunningKafka::External => "external",
        }
    }

    /// Every broker's `host:port`.
    pub fn brokers(&self) -> Vec<String> {
        match &self.running {
            RunningKafka::Apache(kafka) => kafka
                .addresses()
                .into_iter()
                .map(|(_, address)| address)
                .collect(),
            _ => self.bootstrap.split(',').map(str::to_owned).collect(),
        }
    }

    /// The processes of the broker we run (none for an external one).
    pub fn pids(&self) -> Vec<u32> {
        match &self.running {
            RunningKafka::Embedded(broker) => vec![broker.pid()],
            RunningKafka::Apache(kafka) => kafka.pids(),
            RunningKafka::External => Vec::new(),
        }
    }

    /// The broker in words, for reports: "Apache Kafka 4.1.2, 1 node".
    pub fn description(&self) -> String {
        match &self.running {
            RunningKafka::Embedded(_) => "embedded (librdkafka's mock cluster)".to_owned(),
            RunningKafka::Apache(kafka) => {
                let nodes = kafka.node_ids().len();
                let plural = if nodes == 1 { "" } else { "s" };
                format!("Apache Kafka {}, {nodes} node{plural}", kafka.version())
            }
            RunningKafka::External => format!("external ({})", self.bootstrap),
        }
    }

    /// Resolves if the embedded broker dies; never for another broker (Apache
    /// Kafka's nodes are watched by their own logs, an external one is the
    /// developer's).
    pub fn died(&self) -> impl std::future::Future<Output = BrokerDied> + 'static {
        let embedded = match &self.running {
            RunningKafka::Embedded(broker) => Some(broker.died()),
            _ => None,
        };
        async move {
            match embedded {
                Some(died) => died.await,
                None => std::future::pending().await,
            }
        }
    }

    /// Stops our broker (Apache Kafka cleanly, keeping its data).
    pub async fn shut_down(self) {
        match self.running {
            RunningKafka::Embedded(broker) => broker.shut_down().await,
            RunningKafka::Apache(kafka) => {
                // SIGTERM and the controlled shutdown block for seconds.
                if tokio::task::spawn_blocking(move || drop(kafka))
                    .await
                    .is_err()
                {
                    tracing::warn!("stopping Apache Kafka panicked");
                }
            }
            RunningKafka::External => {}
        }
    }
}

/// A connection logging in as `login` over TLS.
pub fn secured(bootstrap: &str, login: &local_infra::KafkaCredentials) -> KafkaConnection {
    KafkaConnection::scram_over_tls(
        bootstrap,
        &login.username,
        Secret::new(login.password.clone()),
        &login.ca_location.display().to_string(),
    )
}

/// The connection devstack's tools use on the stack described by `stack`
/// (whose state directory is `state`): the super user's kept login if its Kafka takes logins.
pub fn tool_connection(
    stack: &crate::stack_file::StackDescription,
    state: &Path,
) -> anyhow::Result<KafkaConnection> {
    if !stack.kafka_secured {
        return Ok(KafkaConnection::plaintext(&stack.kafka_bootstrap));
    }
    let kafka_dir = crate::stack_file::kafka_dir(state);
    let login = ApacheKafka::kept_credentials(&kafka_dir, local_infra::KAFKA_ADMIN_USER)?
        .with_context(|| {
            format!(
                "the stack's Kafka takes logins, but {} keeps none",
                kafka_dir.display()
            )
        })?;
    Ok(secured(&stack.kafka_bootstrap, &login))
}

/// Makes sure the topics exist on an external cluster: those already there are
/// used as they are; missing ones are created.
async fn ensure_external_topics(bootstrap: &str, topics: &Topics) -> anyhow::Result<()> {
    let wanted = topics.all_with_dead_letters();
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let created = service_kit::kafka::create_missing_topics(
        &service_kit::kafka::KafkaConnection::plaintext(bootstrap),
        &wanted,
        DEFAULT_PARTITIONS,
        BROKER_DEFAULT_REPLICATION,
    )
    .await
    .with_context(|| {
        format!(
            "preparing topics on Kafka at {bootstrap}; is it running? (omit --kafka-bootstrap \
             to use the embedded one, or create the topics by hand)"
        )
    })?;
    if !created.is_empty() {
        tracing::info!(
            "created topic(s) {} on Kafka at {bootstrap}",
            created.join(", ")
        );
    }
    Ok(())
}

/// PostgreSQL for the stack.
pub struct Database {
    /// What services get as `DATABASE_URL`.
    pub url: String,
    /// Our private cluster; `None` when using an external database.
    private: Option<PostgresCluster>,
}

impl Database {
    /// The postmaster of the private cluster; `None` for an external database.
    pub fn server_pid(&self) -> Option<u32> {
        self.private.as_ref()?.server_pid()
    }

    /// Uses `external` if given (after checking it answers), else starts (or
    /// reuses) the private cluster in `data_dir` on `port` and ensures
    /// [`DATABASE_NAME`] exists.
    pub async fn start(external: Option<&str>, data_dir: &Path, port: u16) -> anyhow::Result<Self> {
        if let Some(url) = external {
            // The URL may carry a password, so errors name the flag, not the URL.
            let connection =
                tokio::time::timeout(DATABASE_CONNECT_TIMEOUT, PgConnection::connect(url))
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "the --database-url server did not answer within \
                         {DATABASE_CONNECT_TIMEOUT:?}"
                        )
                    })?
                    .context("connecting to --database-url")?;
            connection.close().await.ok();
            return Ok(Self {
                url: url.to_owned(),
                private: None,
            });
        }
        let data_dir = data_dir.to_path_buf();
        // initdb and pg_ctl block for seconds; keep them off the async thread.
        let cluster = tokio::task::spawn_blocking(move || {
            PostgresCluster::start_persistent(&data_dir, port)
        })
        .await
        .context("the PostgreSQL start-up task panicked")?
        .context(
            "starting the private PostgreSQL (--pg-port picks another port, --database-url uses \
             an existing server)",
        )?;
        cluster.ensure_database(DATABASE_NAME).await?;
        cluster
            .apply_service_roles(DATABASE_NAME)
            .await
            .context("creating the services' Postgres roles")?;
        Ok(Self {
            url: cluster.url(DATABASE_NAME),
            private: Some(cluster),
        })
    }

    /// The `DATABASE_URL` of the service called `service`: on the private
    /// cluster its own role's (`deploy/postgres/init.sql`, as in Compose); on
    /// an external database the URL given, whose roles are the operator's
    /// business. `None` for a program without a schema (the console).
    pub fn url_for_service(&self, service: &str) -> Option<String> {
        let role = ServiceRole::of_service(service)?;
        match &self.private {
            Some(cluster) => Some(cluster.url_for(&role, DATABASE_NAME)),
            None => Some(self.url.clone()),
        }
    }

    /// "private" or "external", for the banner.
    pub fn kind(&self) -> &'static str {
        if self.private.is_some() {
            "private"
        } else {
            "external"
        }
    }

    /// Stops the private cluster (cleanly, keeping its data); nothing to do for
    /// an external database.
    pub async fn shut_down(mut self) {
        if let Some(cluster) = self.private.take() {
            // pg_ctl stop blocks until the server is down.
            if tokio::task::spawn_blocking(move || drop(cluster))
                .await
                .is_err()
            {
                tracing::warn!("stopping PostgreSQL panicked");
            }
        }
    }
}

/// The variable of the consumers' `fetch.wait.max.ms`.
const FETCH_WAIT_ENV: &str = "KAFKA_FETCH_WAIT_MAX_MS";

/// The fetch wait of [`Kafka::services_fetch_wait`]: `exported` (in
/// milliseconds), else `needed`, else the services' default.
fn fetch_wait(exported: Option<&str>, needed: Option<Duration>) -> anyhow::Result<Duration> {
    if let Some(millis) = exported {
        let millis: u64 = millis
            .trim()
            .parse()
            .with_context(|| format!("{FETCH_WAIT_ENV}={millis:?}: expected milliseconds"))?;
        return Ok(Duration::from_millis(millis));
    }
    Ok(needed.unwrap_or_else(|| CommonConfig::defaults("", 0, "").kafka.fetch_wait_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_broker_clients_wait_briefly_unless_the_user_chose_a_wait() {
        assert_eq!(
            fetch_wait(None, Some(MOCK_CONSUMER_FETCH_WAIT)).unwrap(),
            Duration::from_millis(10)
        );
        assert_eq!(
            fetch_wait(Some("250"), Some(MOCK_CONSUMER_FETCH_WAIT)).unwrap(),
            Duration::from_millis(250)
        );
        let wrong = fetch_wait(Some("soon"), None).unwrap_err().to_string();
        assert!(wrong.contains(FETCH_WAIT_ENV), "{wrong}");
    }

    #[test]
    fn real_broker_clients_keep_the_services_default_wait() {
        assert_eq!(fetch_wait(None, None).unwrap(), Duration::from_millis(500));
    }
}
