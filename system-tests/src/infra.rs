//! A database and a broker for one test.

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use local_infra::{PostgresCluster, ServiceRole, TestKafka};
use service_kit::kafka::KafkaConnection;
use service_kit::CommonConfig;
use shared_events::topics::DEFAULT_PARTITIONS;
use shared_events::Topics;
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;

static POSTGRES: OnceLock<PostgresCluster> = OnceLock::new();

/// A database and a broker for one test: fresh and embedded unless the
/// environment names external ones (see the crate documentation).
pub struct Infra {
    /// A cluster of this test's own, when asked for and possible.
    pub postgres: Option<PostgresCluster>,
    /// The superuser's URL of the test's database, for the test's own checks
    /// across schemas; each service connects as its own role instead (see
    /// [`common`](Self::common)).
    pub database_url: String,
    /// `None` when an external broker is used.
    pub kafka: Option<TestKafka>,
    pub kafka_bootstrap: String,
    /// How the test itself reaches the broker: with full rights (the admin's
    /// login on a secured broker).
    pub kafka_admin: KafkaConnection,
    /// Replication factor of the stack's topics.
    pub replication_factor: i32,
    pub topics: Topics,
    /// Appended to consumer group names so tests sharing a broker stay apart.
    pub group_suffix: String,
}

impl Infra {
    pub async fn start(private_postgres: bool) -> anyhow::Result<Infra> {
        Self::start_with(private_postgres, None).await
    }

    /// As [`start`](Self::start), with a broker of the caller's own of
    /// `own_kafka_nodes` nodes if given.
    pub async fn start_with(
        private_postgres: bool,
        own_kafka_nodes: Option<usize>,
    ) -> anyhow::Result<Infra> {
        Self::start_full(private_postgres, own_kafka_nodes, false).await
    }

    /// As [`start_with`](Self::start_with); with `secured_kafka`, the broker
    /// is a `sasl_ssl` one of the caller's own (TLS, a login per service,
    /// ACLs from the topic table; `TEST_KAFKA=apache` only) and every
    /// service's configuration logs in as that service.
    pub async fn start_full(
        private_postgres: bool,
        own_kafka_nodes: Option<usize>,
        secured_kafka: bool,
    ) -> anyhow::Result<Infra> {
        let id = format!("t{}", uuid::Uuid::new_v4().simple());
        let (postgres, database_url) = if private_postgres && std::env::var("DATABASE_URL").is_err()
        {
            let cluster = tokio::task::block_in_place(PostgresCluster::start_temporary)?;
            cluster.ensure_database(&id).await?;
            cluster.apply_service_roles(&id).await?;
            let url = cluster.url(&id);
            (Some(cluster), url)
        } else {
            (None, fresh_database(&id).await?)
        };
        let (kafka, kafka_bootstrap, topics, group_suffix) =
            match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
                Ok(bootstrap) => {
                    let topics = Topics::default().prefixed(&id);
                    (None, bootstrap, topics, format!("-{id}"))
                }
                Err(_) => {
                    let kafka =
                        tokio::task::block_in_place(|| match (secured_kafka, own_kafka_nodes) {
                            (true, nodes) => TestKafka::start_secured(nodes.unwrap_or(1)),
                            (false, Some(nodes)) => TestKafka::start_own(nodes),
                            (false, None) => TestKafka::start(),
                        })?;
                    let (topics, group_suffix) = if kafka.is_shared() {
                        (Topics::default().prefixed(&id), format!("-{id}"))
                    } else {
                        (Topics::default(), String::new())
                    };
                    tokio::task::block_in_place(|| {
                        topics
                            .all_with_dead_letters()
                            .iter()
                            .try_for_each(|topic| kafka.create_topic(topic, DEFAULT_PARTITIONS))
                    })?;
                    let bootstrap = kafka.bootstrap_servers();
                    (Some(kafka), bootstrap, topics, group_suffix)
                }
            };
        let replication_factor = kafka.as_ref().map_or(1, TestKafka::replication_factor);
        let kafka_admin = match kafka.as_ref().and_then(TestKafka::admin_credentials) {
            Some(admin) => secured_connection(&kafka_bootstrap, &admin),
            None => KafkaConnection::plaintext(&kafka_bootstrap),
        };
        Ok(Infra {
            postgres,
            database_url,
            kafka,
            kafka_bootstrap,
            kafka_admin,
            replication_factor,
            topics,
            group_suffix,
        })
    }

    /// A service's configuration pointing at this infrastructure.
    pub fn common(&self, name: &str, schema: &str) -> CommonConfig {
        let mut c = CommonConfig::defaults(name, 0, schema);
        c.host = "127.0.0.1".into();
        c.database_url = self.service_database_url(schema);
        c.database_max_connections = 5;
        c.kafka.bootstrap_servers = self.kafka_bootstrap.clone();
        if let Some(login) = self
            .kafka
            .as_ref()
            .and_then(|kafka| kafka.credentials(name))
        {
            secured_connection(&self.kafka_bootstrap, &login).apply_to(&mut c);
        }
        if let Some(wait) = self.kafka.as_ref().and_then(TestKafka::consumer_fetch_wait) {
            c.kafka.fetch_wait_max = wait;
        }
        c.kafka.replication_factor = self.replication_factor;
        c.kafka.group_id = format!("{}{}", c.kafka.group_id, self.group_suffix);
        c.set_topics(&self.topics);
        c.consumer.retry_max = Duration::from_millis(500);
        c.kafka.statistics_interval = Duration::from_millis(500);
        c
    }
}

impl Infra {
    /// The URL a service owning `schema` connects with: its own role's, as in
    /// Compose (`deploy/postgres/init.sql`).
    pub fn service_database_url(&self, schema: &str) -> String {
        let role = ServiceRole::owning(schema)
            .unwrap_or_else(|| panic!("deploy/postgres/init.sql makes no role owning {schema}"));
        role.url(&self.database_url)
            .expect("the stack's database URL starts with postgres://")
    }
}

/// A service-kit connection logging in as `login`.
fn secured_connection(bootstrap: &str, login: &local_infra::KafkaCredentials) -> KafkaConnection {
    KafkaConnection::scram_over_tls(
        bootstrap,
        &login.username,
        service_kit::config::Secret::new(login.password.clone()),
        &login.ca_location.display().to_string(),
    )
}

/// A new, empty database for one stack, with the services' roles.
async fn fresh_database(name: &str) -> anyhow::Result<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let server = PgConnectOptions::from_str(&url).context("DATABASE_URL")?;
            let mut conn = sqlx::PgConnection::connect_with(&server).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await?;
            let mut stack_url = reqwest::Url::parse(&url).context("DATABASE_URL")?;
            stack_url.set_path(&format!("/{name}"));
            local_infra::apply_service_roles(stack_url.as_str())
                .await
                .context("creating the services' roles (DATABASE_URL must name a superuser)")?;
            Ok(stack_url.to_string())
        }
        Err(_) => {
            let cluster = tokio::task::block_in_place(|| {
                POSTGRES.get_or_init(|| {
                    PostgresCluster::start_temporary().expect("starting a temporary Postgres")
                })
            });
            cluster.ensure_database(name).await?;
            cluster.apply_service_roles(name).await?;
            Ok(cluster.url(name))
        }
    }
}
