//! The whole system spread over hosts, on one machine: every service
//! instance, every Kafka node and Postgres on a host of its own (a network
//! namespace with its own address on a private bridge, see
//! [`local_infra::netns`]), so the network between them can fail the way
//! networks do. The services are the real binaries, configured only by the
//! environment variables a deployment (the Helm chart, Compose) sets:
//! `KAFKA_BOOTSTRAP_SERVERS` naming the three brokers' addresses,
//! `DATABASE_URL` with the service's own role on the Postgres host, `HOST`,
//! `PORT`.
//!
//! Hosts: `pg`, `kafka-1`..`kafka-3`, `order-1` and `order-2` (two
//! order-service instances in one consumer group, behind the load
//! generator's failover), `invent`, `payment`, `notify`. The harness talks
//! from the bridge's gateway address.
//!
//! Needs root (network namespaces), iproute2, nftables and iptables, and
//! `TEST_KAFKA=apache` (a JDK and Maven); [`MultiHost::unavailable`] says
//! what is missing.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use local_infra::netns::{Host, Network};
use local_infra::{ApacheKafka, ApacheKafkaOptions, PostgresCluster, ServiceRole, TestKafkaMode};
use service_kit::config::CommonConfig;
use service_kit::ServiceConfig;
use shared_events::topics::{Topics, DEFAULT_PARTITIONS};

use crate::processes::ServiceProcess;
use crate::Api;

/// The database the services share.
const DATABASE: &str = "ordersystem";

/// The consumers' session timeout: a member silent this long is out of the
/// group and its partitions go to the others.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Long enough that no saga of a rehearsal times out: a fault delays
/// orders, it must not cancel them.
const SAGA_DEADLINE_SECS: u64 = 900;

/// The hosts of a [`MultiHost`].
pub struct Hosts {
    pub postgres: Host,
    pub kafka: Vec<Host>,
    pub order: Vec<Host>,
    pub inventory: Host,
    pub payment: Host,
    pub notification: Host,
}

/// The system on its hosts. Dropped in field order: services, then Kafka
/// and Postgres, then the network.
pub struct MultiHost {
    /// order-service instances, on `order-1` and `order-2`.
    pub orders: Vec<ServiceProcess>,
    pub inventory: ServiceProcess,
    pub payment: ServiceProcess,
    pub notification: ServiceProcess,
    /// The services' APIs (order-service: the first instance's).
    pub api: Api,
    /// The superuser's pool, from the gateway, for the invariants.
    pub db: sqlx::PgPool,
    pub kafka: ApacheKafka,
    pub postgres: PostgresCluster,
    pub hosts: Hosts,
    network: Network,
}

impl MultiHost {
    /// Why the rehearsals cannot run here, if so.
    pub fn unavailable() -> Option<String> {
        if TestKafkaMode::from_env().ok() != Some(TestKafkaMode::Apache) {
            return Some("the multi-host rehearsals need TEST_KAFKA=apache".to_owned());
        }
        Network::unavailable()
    }

    /// Makes the hosts, starts Postgres, a three-node Kafka and the
    /// services on them, and waits until every service is healthy.
    pub async fn start() -> anyhow::Result<MultiHost> {
        let network = Network::create()?;
        let hosts = Hosts {
            postgres: network.host("pg")?,
            kafka: (1..=3)
                .map(|n| network.host(&format!("kafka-{n}")))
                .collect::<anyhow::Result<_>>()?,
            order: (1..=2)
                .map(|n| network.host(&format!("order-{n}")))
                .collect::<anyhow::Result<_>>()?,
            inventory: network.host("invent")?,
            payment: network.host("payment")?,
            notification: network.host("notify")?,
        };
        let postgres = tokio::task::block_in_place(|| {
            PostgresCluster::start_temporary_on(&network, &hosts.postgres)
        })?;
        postgres.ensure_database(DATABASE).await?;
        postgres.apply_service_roles(DATABASE).await?;
        let kafka_hosts = hosts.kafka.clone();
        let kafka = tokio::task::block_in_place(|| {
            let kafka = ApacheKafka::start(ApacheKafkaOptions {
                nodes: kafka_hosts.len(),
                hosts: kafka_hosts,
                ..ApacheKafkaOptions::default()
            })?;
            for topic in Topics::default().all_with_dead_letters() {
                kafka.create_topic(&topic, DEFAULT_PARTITIONS)?;
            }
            anyhow::Ok(kafka)
        })?;

        let bootstrap = kafka.bootstrap_servers();
        let env = |name: &str, schema: &str, port: u16| {
            let role = ServiceRole::owning(schema)
                .unwrap_or_else(|| panic!("deploy/postgres/init.sql has a role for {schema}"));
            let mut common = CommonConfig::defaults(name, port, schema);
            common.host = "0.0.0.0".to_owned();
            common.database_url = postgres.url_for(&role, DATABASE);
            common.database_max_connections = 5;
            common.kafka.bootstrap_servers = bootstrap.clone();
            common.kafka.replication_factor = kafka.replication_factor();
            common.kafka.session_timeout = SESSION_TIMEOUT;
            common
        };
        let mut order = order_service::Config::defaults();
        order.common = env("order-service", order_service::config::SCHEMA, 8081);
        order.order_saga_deadline = Duration::from_secs(SAGA_DEADLINE_SECS);
        let mut inventory = inventory_service::Config::defaults();
        inventory.common = env("inventory-service", inventory_service::config::SCHEMA, 8082);
        inventory.inventory_seed_demo_catalog = false;
        inventory.inventory_reservation_ttl = Duration::from_secs(SAGA_DEADLINE_SECS);
        let mut payment = payment_service::Config::defaults();
        payment.common = env("payment-service", payment_service::config::SCHEMA, 8083);
        let mut notification = notification_service::Config::defaults();
        notification.common = env(
            "notification-service",
            notification_service::config::SCHEMA,
            8084,
        );

        let orders: Vec<ServiceProcess> = hosts
            .order
            .iter()
            .map(|host| ServiceProcess::start_on(host, "order-service", &as_env(&order)))
            .collect();
        let inventory =
            ServiceProcess::start_on(&hosts.inventory, "inventory-service", &as_env(&inventory));
        let payment =
            ServiceProcess::start_on(&hosts.payment, "payment-service", &as_env(&payment));
        let notification = ServiceProcess::start_on(
            &hosts.notification,
            "notification-service",
            &as_env(&notification),
        );
        let api = Api {
            http: reqwest::Client::new(),
            order_base: orders[0].base_url(),
            inventory_base: inventory.base_url(),
            payment_base: payment.base_url(),
            notification_base: notification.base_url(),
        };
        for process in orders.iter().chain([&inventory, &payment, &notification]) {
            api.wait_for_health(&process.base_url(), reqwest::StatusCode::OK)
                .await;
        }
        let db = sqlx::PgPool::connect(&postgres.url(DATABASE)).await?;
        Ok(MultiHost {
            orders,
            inventory,
            payment,
            notification,
            api,
            db,
            kafka,
            postgres,
            hosts,
            network,
        })
    }

    /// Every order-service instance's base URL, the first one first.
    pub fn order_bases(&self) -> Vec<String> {
        self.orders.iter().map(ServiceProcess::base_url).collect()
    }

    /// The brokers' addresses.
    pub fn kafka_addresses(&self) -> Vec<Ipv4Addr> {
        self.hosts.kafka.iter().map(Host::address).collect()
    }

    /// The host Kafka node `id` runs on.
    pub fn kafka_host(&self, id: i32) -> &Host {
        let index = usize::try_from(id - 1).expect("node ids start at 1");
        &self.hosts.kafka[index]
    }

    /// The network the hosts are on.
    pub fn network(&self) -> &Network {
        &self.network
    }
}

/// A service's configuration as the environment its binary reads.
fn as_env<T: serde::Serialize>(config: &T) -> BTreeMap<String, String> {
    service_kit::config::to_env(config).expect("a configuration encodes as environment variables")
}
