//! Kafka clients configured for the guarantees the system promises.
//!
//! - Producers are idempotent with `acks=all`: a retried send never duplicates
//!   or reorders within a partition.
//! - Consumers store offsets only when told to (`enable.auto.offset.store=false`);
//!   the consumer loop does so after the event's transaction has committed, and
//!   the background auto-commit then commits only what was stored.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::config::CommonConfig;

/// How long topic creation may take before we carry on without it.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a metadata request may take in a health check.
const HEALTH_METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// How often stored offsets are committed in the background.
const AUTO_COMMIT_INTERVAL_MS: &str = "1000";

fn base_config(config: &CommonConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka_bootstrap_servers)
        .set("client.id", &config.service_name);
    client
}

pub fn producer(config: &CommonConfig) -> anyhow::Result<FutureProducer> {
    base_config(config)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            config.kafka_message_timeout_ms.to_string(),
        )
        .create()
        .context("creating the Kafka producer")
}

pub fn consumer(config: &CommonConfig, topics: &[&str]) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = base_config(config)
        .set("group.id", &config.kafka_group_id)
        .set(
            "session.timeout.ms",
            config.kafka_session_timeout_ms.to_string(),
        )
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", AUTO_COMMIT_INTERVAL_MS)
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()
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
pub async fn ensure_topics(config: &CommonConfig, topics: &[&str]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(config)
        .create()
        .context("creating the Kafka admin client")?;
    let known = tokio::task::spawn_blocking({
        let admin_client = base_config(config).create::<rdkafka::consumer::BaseConsumer>();
        move || {
            let client = admin_client.ok()?;
            let metadata = client.fetch_metadata(None, ADMIN_TIMEOUT).ok()?;
            Some(
                metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .map(|t| t.name().to_owned())
                    .collect::<Vec<_>>(),
            )
        }
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default();
    let missing: Vec<&str> = topics
        .iter()
        .copied()
        .filter(|t| !known.iter().any(|k| k == t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let new_topics: Vec<NewTopic> = missing
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                config.kafka_topic_partitions,
                TopicReplication::Fixed(config.kafka_replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let request = admin.create_topics(&new_topics, &options);
    match tokio::time::timeout(ADMIN_TIMEOUT, request).await {
        Ok(Ok(results)) => {
            for result in results {
                match result {
                    Ok(topic) => tracing::info!(topic, "created topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => {
                        tracing::warn!(topic, error = %code, "could not create topic; expecting it to exist")
                    }
                }
            }
        }
        Ok(Err(err)) => {
            tracing::info!(error = %err, "broker does not create topics on request; expecting them to exist")
        }
        Err(_) => tracing::warn!("topic creation timed out; expecting topics to exist"),
    }
    Ok(())
}

/// Is a broker answering? Used by readiness checks. Runs a metadata request,
/// which blocks, on the blocking pool.
pub async fn ping(producer: &FutureProducer) -> bool {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, HEALTH_METADATA_TIMEOUT)
            .is_ok()
    })
    .await
    .unwrap_or(false)
}
