//! Infrastructure for running the order system on a bare machine: no Docker,
//! no Kafka installation, no shared database server.
//!
//! Two pieces, used by `devstack` (the whole system for a developer) and by the
//! end-to-end tests (a fresh, disposable system per test):
//!
//! - [`PostgresCluster`]: a private PostgreSQL cluster built with the locally
//!   installed server binaries (`initdb`, `pg_ctl`). Either temporary (tuned for
//!   throwaway data, deleted on drop, cleaned up by a watchdog even if the owning
//!   process is SIGKILLed) or persistent (a data directory reused across runs).
//! - [`EmbeddedKafka`]: librdkafka's in-memory mock cluster, reachable over TCP
//!   by any Kafka client, with topic creation and fault injection. Needs
//!   nothing installed.
//! - [`ApacheKafka`]: the real Apache Kafka broker (KRaft, one node or three),
//!   run as JVM processes from the jars `kafka-infra/runtime/pom.xml` resolves
//!   ([`KafkaRuntime`]). Needs a JDK and Maven. Optionally secured
//!   ([`KafkaSecurity::SaslSsl`]: TLS, SCRAM logins, ACLs from the topic table).
//!
//! - [`ZooKeeperKafka`]: the seed's topology, ZooKeeper plus a Kafka 3.9
//!   broker in ZooKeeper mode, for checking the Compose configuration
//!   without containers.
//! - [`TestKafka`]: whichever of the two `TEST_KAFKA` asks for, so one test
//!   suite runs on both.
//! - [`ServiceRole`]: the services' Postgres login roles from
//!   `deploy/postgres/init.sql`, applied to a private cluster by
//!   [`PostgresCluster::apply_service_roles`].
//! - [`identity::LocalIssuer`]: a local identity provider (a signing key, its
//!   JWKS, tokens for any user) for running with `AUTH_MODE=jwt`.
//! - [`netns::Network`]: several hosts on one machine (network namespaces on
//!   a private bridge) with the network's faults, for the multi-host
//!   rehearsals; Postgres and Apache Kafka nodes can be placed on them.
//!
//! Internals: `postgres` holds the cluster lifecycle, `os_user` the "run the
//! server as the `postgres` account when we are root" plumbing, `kafka` the
//! mock cluster, `kafka_runtime` the Maven resolution, `apache_kafka` the
//! real cluster's processes and `apache_kafka_security` its `sasl_ssl` mode.

mod apache_kafka;
pub mod apache_kafka_security;
pub mod identity;
mod kafka;
mod kafka_runtime;
pub mod netns;
mod os_user;
mod postgres;
mod service_roles;
pub mod spawn;
mod test_kafka;
mod zookeeper_kafka;

pub use apache_kafka::{
    ApacheKafka, ApacheKafkaOptions, KafkaSecurity, DEFAULT_HEAP_MB, STOP_TIMEOUT,
};
pub use apache_kafka_security::{KafkaCredentials, ADMIN_USER as KAFKA_ADMIN_USER};
pub use kafka::{EmbeddedKafka, MOCK_CONSUMER_FETCH_WAIT, MOCK_GROUP_INITIAL_REBALANCE_DELAY};
pub use kafka_runtime::KafkaRuntime;
pub use postgres::{free_port, PostgresCluster, DEAD_CLIENT_SETTINGS};
pub use service_roles::{apply_service_roles, service_roles, ServiceRole, INIT_SQL};
pub use test_kafka::{TestKafka, TestKafkaMode, TEST_KAFKA_ENV};
pub use zookeeper_kafka::{ZooKeeperKafka, ZooKeeperKafkaOptions};
