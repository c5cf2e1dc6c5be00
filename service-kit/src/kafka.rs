//! Kafka clients configured for the guarantees the system promises.
//!
//! - Producers are idempotent with `acks=all`: a retried send never duplicates
//!   or reorders within a partition.
//! - Consumers store offsets only when told to (`enable.auto.offset.store=false`);
//!   the consumer loop does so after the event's transaction has committed, and
//!   the background auto-commit then commits only what was stored.
//! - Tuned for latency: a saga crosses the broker three times, so consumers
//!   ask the broker to answer fetches quickly (`KAFKA_FETCH_WAIT_MAX_MS`),
//!   producers do not linger (`KAFKA_LINGER_MS`), and Nagle's algorithm is off
//!   so small requests are not held back waiting for an ACK.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::config::CommonConfig;
pub use crate::kafka_connection::{KafkaConnection, KafkaEvents, LoginWatch};

/// How long listing or creating topics may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a metadata request may take in a health check.
const HEALTH_METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// How often stored offsets are committed in the background.
const AUTO_COMMIT_INTERVAL_MS: &str = "1000";

/// The producer every service uses: its context reports a refused login.
pub type EventProducer = FutureProducer<KafkaEvents>;

fn base_config(config: &CommonConfig) -> ClientConfig {
    let mut client = KafkaConnection::of(config).client_config();
    client
        .set("client.id", &config.service_name)
        // Small produce and fetch requests would otherwise wait for the
        // previous segment's ACK (up to the peer's delayed-ACK timer).
        .set("socket.nagle.disable", "true");
    client
}

pub fn producer(config: &CommonConfig) -> anyhow::Result<EventProducer> {
    let events = KafkaConnection::of(config).events();
    base_config(config)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", config.kafka.linger.as_millis().to_string())
        .set(
            "message.timeout.ms",
            config.kafka.message_timeout.as_millis().to_string(),
        )
        .create_with_context(events)
        .context("creating the Kafka producer")
}

/// The consumer's client context: turns librdkafka's periodic statistics
/// into the `kafka_consumer_lag` gauges.
pub struct LagReporter {
    /// The `service` label.
    service: String,
    /// Partitions a lag was reported for, so that one this instance no longer
    /// owns is set back to 0 (its new owner reports it) instead of keeping a
    /// stale value.
    reported: Mutex<HashSet<(String, i32)>>,
    /// Logs and errors, as every client of the service reports them.
    events: KafkaEvents,
}

impl ClientContext for LagReporter {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.events.on_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.events.on_error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, stats) in &statistics.topics {
            // Partition -1 is librdkafka's internal "unassigned" queue.
            for partition in stats.partitions.values().filter(|p| p.partition >= 0) {
                let key = (topic.clone(), partition.partition);
                match partition_lag(partition) {
                    Some(lag) => {
                        crate::metrics::consumer_lag(
                            &self.service,
                            topic,
                            partition.partition,
                            lag,
                        );
                        reported.insert(key);
                    }
                    None if reported.remove(&key) => {
                        crate::metrics::consumer_lag(&self.service, topic, partition.partition, 0);
                    }
                    None => {}
                }
            }
        }
    }
}

impl ConsumerContext for LagReporter {}

impl LagReporter {
    /// Where this consumer reports a refused login.
    pub fn login(&self) -> &LoginWatch {
        &self.events.login
    }
}

/// The lag of a partition this consumer owns: the high watermark minus the
/// position it has processed up to (the offset it stored; before it stored
/// one, the group's committed offset). `None` when it does not own the
/// partition or neither offset is known yet.
fn partition_lag(partition: &rdkafka::statistics::Partition) -> Option<i64> {
    if !partition.desired {
        return None;
    }
    [partition.consumer_lag_stored, partition.consumer_lag]
        .into_iter()
        .find(|lag| *lag >= 0)
}

/// A consumer that stores offsets only when told to, and reports its lag.
pub type EventStreamConsumer = StreamConsumer<LagReporter>;

pub fn consumer(config: &CommonConfig, topics: &[&str]) -> anyhow::Result<EventStreamConsumer> {
    let context = LagReporter {
        service: config.service_name.clone(),
        reported: Mutex::default(),
        events: KafkaConnection::of(config).events(),
    };
    let consumer: EventStreamConsumer = base_config(config)
        .set("group.id", &config.kafka.group_id)
        .set(
            "session.timeout.ms",
            config.kafka.session_timeout.as_millis().to_string(),
        )
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", AUTO_COMMIT_INTERVAL_MS)
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set(
            "fetch.wait.max.ms",
            config.kafka.fetch_wait_max.as_millis().to_string(),
        )
        .set(
            "statistics.interval.ms",
            config.kafka.statistics_interval.as_millis().to_string(),
        )
        .create_with_context(context)
        .context("creating the Kafka consumer")?;
    consumer
        .subscribe(topics)
        .with_context(|| format!("subscribing to {topics:?}"))?;
    Ok(consumer)
}

/// Creates the topics that do not exist yet, where the broker allows it.
///
/// A broker without the CreateTopics API (such as the embedded development
/// broker, whose topics the launcher creates) or one that refuses it is not an
/// error: we log and rely on the topics being provisioned elsewhere.
pub async fn ensure_topics(config: &CommonConfig, topics: &[&str]) {
    let created = create_missing_topics(
        &KafkaConnection::of(config),
        topics,
        config.kafka.topic_partitions,
        config.kafka.replication_factor,
    )
    .await;
    match created {
        Ok(created) => {
            for topic in created {
                tracing::info!(topic, "created topic");
            }
        }
        Err(err) => tracing::warn!(
            error = format!("{err:#}"),
            "could not make sure the topics exist; expecting them to be provisioned"
        ),
    }
}

/// Creates those of `topics` the cluster does not have, and returns their names.
///
/// Lists all topics first rather than asking for each by name, which could
/// auto-create them with the broker's default partition count; topics that
/// exist are left as they are, so a broker that refuses (or never answers)
/// CreateTopics is only asked when something is missing. Fails if the broker
/// does not answer or refuses to create a missing topic.
pub async fn create_missing_topics(
    connection: &KafkaConnection,
    topics: &[&str],
    partitions: i32,
    replication: i32,
) -> anyhow::Result<Vec<String>> {
    let bootstrap = connection.bootstrap();
    let lister: BaseConsumer<KafkaEvents> = connection
        .client_config()
        .create_with_context(connection.events())
        .context("creating a Kafka client")?;
    let existing: Vec<String> = tokio::task::spawn_blocking(move || {
        lister.fetch_metadata(None, ADMIN_TIMEOUT).map(|metadata| {
            metadata
                .topics()
                .iter()
                .map(|topic| topic.name().to_owned())
                .collect()
        })
    })
    .await
    .context("the Kafka metadata task panicked")?
    .with_context(|| format!("Kafka at {bootstrap} did not answer"))?;
    let missing: Vec<&str> = topics
        .iter()
        .copied()
        .filter(|topic| !existing.iter().any(|name| name == topic))
        .collect();
    if missing.is_empty() {
        return Ok(vec![]);
    }

    let admin: AdminClient<KafkaEvents> = connection
        .client_config()
        .create_with_context(connection.events())
        .context("creating a Kafka admin client")?;
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = tokio::time::timeout(ADMIN_TIMEOUT, admin.create_topics(&new_topics, &options))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "Kafka at {bootstrap} did not create topic(s) {} within {}s",
                missing.join(", "),
                ADMIN_TIMEOUT.as_secs()
            )
        })?
        .with_context(|| format!("creating topics on Kafka at {bootstrap}"))?;
    for result in results {
        match result {
            // Someone else created it since we looked.
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                anyhow::bail!("creating topic {topic} on Kafka at {bootstrap}: {code}")
            }
        }
    }
    Ok(missing.into_iter().map(str::to_owned).collect())
}

/// Is a broker answering? Used by readiness checks. Runs a metadata request,
/// which blocks, on the blocking pool. `Err` says why not when the broker
/// refuses the login.
pub async fn ping(producer: &EventProducer, login: &Arc<LoginWatch>) -> Result<(), String> {
    let producer = producer.clone();
    let login = Arc::clone(login);
    tokio::task::spawn_blocking(move || {
        match producer
            .client()
            .fetch_metadata(None, HEALTH_METADATA_TIMEOUT)
        {
            Ok(_) => {
                login.answered();
                Ok(())
            }
            Err(err) => Err(match login.refusal() {
                Some(reason) => format!("authentication failed: {reason}"),
                None => format!("no answer: {err}"),
            }),
        }
    })
    .await
    .unwrap_or_else(|err| Err(format!("the check panicked: {err}")))
}
