//! librdkafka's in-memory mock cluster, used as the system's Kafka broker.
//!
//! The mock brokers listen on loopback TCP ports and speak enough of the Kafka
//! protocol for producers, consumer groups with offset commits, idempotence and
//! transactions, so services connect to them like to any broker (through
//! [`EmbeddedKafka::bootstrap_servers`]), even from other processes. Everything
//! lives in this process's memory and disappears when the value is dropped.
//!
//! What the mock does not do, and how we cope:
//! - no CreateTopics API: topics are created through the mock's own API
//!   ([`EmbeddedKafka::create_topic`]) before services start; a topic a client
//!   auto-creates first gets the mock's default of 4 partitions;
//! - no DeleteTopics, DescribeGroups or ListGroups: admin tooling cannot inspect it;
//! - a consumer group's first rebalance waits `group.initial.rebalance.delay.ms`
//!   (3 s by default, like a real broker); we shorten it to
//!   [`MOCK_GROUP_INITIAL_REBALANCE_DELAY`] so tests and restarts are quick;
//! - a member joining (or leaving) a formed group makes the mock wait
//!   `session.timeout.ms` minus 1 s before reassigning partitions, even when
//!   every member has already rejoined; a real broker finishes as soon as all
//!   have. Clients with librdkafka's default 45 s session timeout therefore
//!   stall for 44 s on every membership change;
//! - a fetch on a quiet partition is held for the client's whole
//!   `fetch.wait.max.ms` even when a message arrives meanwhile, where a real
//!   broker answers at once; clients of the mock therefore use
//!   [`MOCK_CONSUMER_FETCH_WAIT`], not the 500 ms that suits a real broker.

use std::ffi::c_int;
use std::time::Duration;

use anyhow::{ensure, Context};
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaType};
use rdkafka::ClientConfig;

/// How long the mock waits for more members before a new consumer group's
/// first assignment. A real broker defaults to 3 s to batch a rolling start; in
/// a local stack every start would pay that, so we keep a token delay.
pub const MOCK_GROUP_INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(100);

/// The `fetch.wait.max.ms` for consumers of the mock. The mock answers a
/// waiting fetch only when this time has run out, so every saga step waits up
/// to this long; a real broker answers as soon as data arrives, and there a
/// short wait only multiplies empty fetches (docs/BENCHMARKS.md measures both).
pub const MOCK_CONSUMER_FETCH_WAIT: Duration = Duration::from_millis(10);

/// Kafka's usual replication factor; capped by the broker count.
const MAX_REPLICATION_FACTOR: i32 = 3;

/// How long to wait for topic metadata when checking an existing topic.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// An in-process Kafka cluster made of librdkafka mock brokers with ids
/// `1..=brokers`.
///
/// `Send + Sync`: share it between tasks and threads (e.g. in an `Arc`).
pub struct EmbeddedKafka {
    /// The librdkafka handle created with `test.mock.num.brokers`, which makes
    /// librdkafka create the mock cluster and tie its lifetime to this handle:
    /// dropping it shuts the brokers down. The handle itself is never used to
    /// produce or consume.
    owner: Client<DefaultClientContext>,
    /// `host:port,...` of the brokers, computed once; it never changes.
    bootstrap_servers: String,
    /// Number of brokers, which bounds the replication factor of new topics.
    brokers: i32,
}

impl EmbeddedKafka {
    /// Starts a mock cluster with `brokers` brokers (ids 1 to `brokers`).
    pub fn start(brokers: i32) -> anyhow::Result<Self> {
        ensure!(
            brokers >= 1,
            "a Kafka cluster needs at least one broker, got {brokers}"
        );
        let mut config = ClientConfig::new();
        config
            .set("test.mock.num.brokers", brokers.to_string())
            // Nobody polls this handle, so its log lines would only pile up in
            // its queue; and without periodic metadata refreshes it stays idle
            // after its initial connection to the brokers it owns.
            .set("topic.metadata.refresh.interval.ms", "-1")
            .set_log_level(RDKafkaLogLevel::Emerg);
        let native_config = config
            .create_native_config()
            .context("configuring the mock Kafka cluster's owner handle")?;
        let owner = Client::new(
            &config,
            native_config,
            RDKafkaType::RD_KAFKA_PRODUCER,
            DefaultClientContext,
        )
        .context("creating the mock Kafka cluster")?;
        let bootstrap_servers = owner
            .mock_cluster()
            .context("librdkafka did not create a mock cluster for test.mock.num.brokers")?
            .bootstrap_servers();

        let kafka = Self {
            owner,
            bootstrap_servers,
            brokers,
        };
        kafka.set_group_initial_rebalance_delay(MOCK_GROUP_INITIAL_REBALANCE_DELAY)?;
        tracing::info!(
            bootstrap_servers = %kafka.bootstrap_servers,
            brokers,
            "embedded Kafka started"
        );
        Ok(kafka)
    }

    /// Sets how long a consumer group's first rebalance waits for more members
    /// (default [`MOCK_GROUP_INITIAL_REBALANCE_DELAY`]); applies to groups that
    /// form afterwards.
    ///
    /// Worth raising when several members of one group start together (a
    /// scaled-out service): the mock handles a member joining an already
    /// formed group by waiting `session.timeout.ms` minus one second for the
    /// others to rejoin (44 s with librdkafka's default session timeout),
    /// whereas members that join within this first window form the group at
    /// once.
    pub fn set_group_initial_rebalance_delay(&self, delay: Duration) -> anyhow::Result<()> {
        let delay_ms = c_int::try_from(delay.as_millis())
            .with_context(|| format!("rebalance delay {delay:?} does not fit a C int"))?;
        // SAFETY: `owner` was created with `test.mock.num.brokers` (`start`
        // checked that `mock_cluster()` exists), so the returned pointer is its
        // live mock cluster, which lives as long as `owner`, i.e. `self`. The
        // setter only writes one field under the cluster's mutex
        // (rdkafka_mock.c), so calling it from any thread while the cluster
        // thread runs is fine.
        unsafe {
            let cluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(self.owner.native_ptr());
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, delay_ms);
        }
        Ok(())
    }

    /// The value for clients' `bootstrap.servers`, e.g. `127.0.0.1:39215`.
    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap_servers.clone()
    }

    /// Creates `name` with `partitions` partitions.
    ///
    /// Idempotent: if the topic exists (the mock answers TOPIC_ALREADY_EXISTS)
    /// with the same partition count, this succeeds; with a different count
    /// (typically 4, from a client auto-creating it first) it fails, because
    /// keyed ordering and consumer parallelism depend on it.
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let replication_factor = self.brokers.min(MAX_REPLICATION_FACTOR);
        match self
            .mock_cluster()
            .create_topic(name, partitions, replication_factor)
        {
            Ok(()) => {
                tracing::debug!(topic = name, partitions, "created topic");
                Ok(())
            }
            Err(KafkaError::MockCluster(RDKafkaErrorCode::TopicAlreadyExists)) => {
                let existing = self.partition_count(name)?;
                ensure!(
                    existing == partitions,
                    "topic {name} already exists with {existing} partitions, not {partitions} \
                     (was it auto-created by a client before create_topic?)"
                );
                Ok(())
            }
            Err(error) => Err(error)
                .with_context(|| format!("creating topic {name} with {partitions} partitions")),
        }
    }

    /// Makes broker `broker_id` drop its connections and refuse new ones (`-1`
    /// for all brokers). Partition leadership does not move.
    pub fn broker_down(&self, broker_id: i32) -> anyhow::Result<()> {
        // librdkafka binds the port again right away; see `spawn`.
        let _no_child_starting = crate::spawn::no_child_starting();
        self.mock_cluster()
            .broker_down(broker_id)
            .with_context(|| format!("taking mock broker {broker_id} down"))
    }

    /// Lets broker `broker_id` (`-1`: all) accept connections again, on the
    /// same port.
    pub fn broker_up(&self, broker_id: i32) -> anyhow::Result<()> {
        self.mock_cluster()
            .broker_up(broker_id)
            .with_context(|| format!("bringing mock broker {broker_id} up"))
    }

    /// The full mock API for fault injection: per-request errors
    /// (`request_errors`, `clear_request_errors`), latency
    /// (`broker_round_trip_time`), partition leadership, topic errors.
    ///
    /// The value borrows `self` and is not `Send`; use it within one statement
    /// or block, not across an `.await`.
    pub fn mock_cluster(&self) -> MockCluster<'_, DefaultClientContext> {
        self.owner
            .mock_cluster()
            .expect("the owner handle was created with test.mock.num.brokers")
    }

    /// Partition count of an existing topic, asked over the wire as a client
    /// would see it. Uses a short-lived client so the owner handle never
    /// connects.
    fn partition_count(&self, topic: &str) -> anyhow::Result<i32> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap_servers)
            .create()
            .context("creating a metadata client for the embedded Kafka")?;
        let metadata = client
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .with_context(|| format!("fetching metadata of topic {topic}"))?;
        let topic_metadata = metadata
            .topics()
            .iter()
            .find(|candidate| candidate.name() == topic)
            .with_context(|| format!("topic {topic} missing from its own metadata"))?;
        i32::try_from(topic_metadata.partitions().len()).context("partition count overflows i32")
    }
}

impl std::fmt::Debug for EmbeddedKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKafka")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

/// Async tests hold the cluster in an `Arc` across threads; keep it that way.
/// Every field is `Send + Sync` (rdkafka's `Client` is), and the mock API calls
/// made through it are thread-safe: commands go through the cluster's op queue
/// (`rd_kafka_op_req(mcluster->ops, ...)`) and are executed on the cluster's
/// own thread, while error stacks and defaults are mutated under
/// `mcluster->lock` (rdkafka_mock.c). So no `unsafe impl` is needed.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<EmbeddedKafka>();
};
