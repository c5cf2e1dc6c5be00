//! Dead letters: events a service can never process are parked on
//! `<topic>.dlq` instead of blocking their partition, and can be replayed onto
//! their topic once the cause is fixed.
//!
//! A dead letter keeps the original key, payload and headers, and adds headers
//! saying where it came from and why it failed ([`headers`]). Writing it is
//! awaited before the consumer moves on, so a dead letter is never lost either.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset};
use shared_events::topics::dead_letter_topic;

use crate::backend::{Header, Outgoing, Publisher, Received};
use crate::kafka::KafkaConnection;

/// Header names added to a dead letter.
pub mod headers {
    /// Topic the message was consumed from.
    pub const ORIGINAL_TOPIC: &str = "dlq.original.topic";
    pub const ORIGINAL_PARTITION: &str = "dlq.original.partition";
    pub const ORIGINAL_OFFSET: &str = "dlq.original.offset";
    /// The service (consumer group) that gave up on it.
    pub const SERVICE: &str = "dlq.service";
    /// Why, in words.
    pub const ERROR: &str = "dlq.error";
    /// How many times processing was tried.
    pub const ATTEMPTS: &str = "dlq.attempts";
    /// Prefix shared by all of the above; stripped again on replay.
    pub const PREFIX: &str = "dlq.";
}

/// Whether a header is the message's own, not a `dlq.*` one from an earlier
/// trip (those are replaced on the way in and stripped on replay).
fn is_own_header(key: &str) -> bool {
    !key.starts_with(headers::PREFIX)
}

/// The message's own headers (see [`is_own_header`]).
fn original_headers(message: &BorrowedMessage<'_>) -> OwnedHeaders {
    let mut copied = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for header in original.iter().filter(|h| is_own_header(h.key)) {
            copied = copied.insert(header);
        }
    }
    copied
}

/// `message`'s key and payload, bound for `topic` with `headers`.
fn copy_of<'a>(
    message: &'a BorrowedMessage<'_>,
    topic: &'a str,
    headers: OwnedHeaders,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut record = FutureRecord::to(topic).headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    record
}

/// Copies `message` to its topic's dead-letter topic with headers saying why,
/// and waits for the broker's acknowledgement.
pub async fn send(
    publisher: &impl Publisher,
    message: &Received,
    service: &str,
    attempts: u32,
    error: &str,
) -> anyhow::Result<()> {
    let target = dead_letter_topic(&message.topic);
    let partition = message.partition.to_string();
    let offset = message.offset.to_string();
    let attempts = attempts.to_string();
    let mut all_headers: Vec<Header<'_>> = message
        .headers
        .iter()
        .filter(|(key, _)| is_own_header(key))
        .map(|(key, value)| (key.as_str(), value.as_deref()))
        .collect();
    for (key, value) in [
        (headers::ORIGINAL_TOPIC, message.topic.as_str()),
        (headers::ORIGINAL_PARTITION, partition.as_str()),
        (headers::ORIGINAL_OFFSET, offset.as_str()),
        (headers::SERVICE, service),
        (headers::ERROR, error),
        (headers::ATTEMPTS, attempts.as_str()),
    ] {
        all_headers.push((key, Some(value.as_bytes())));
    }
    publisher
        .send(Outgoing {
            topic: &target,
            key: message.key.as_deref(),
            payload: message.payload.as_deref(),
            headers: &all_headers,
        })
        .await
        .with_context(|| format!("writing a dead letter to {target}"))
}

/// One dead letter as [`list`] shows it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    /// When it was dead-lettered (the broker's timestamp), in Unix milliseconds.
    pub timestamp_ms: Option<i64>,
    pub key: Option<String>,
    pub original_topic: Option<String>,
    pub original_partition: Option<String>,
    pub original_offset: Option<String>,
    pub service: Option<String>,
    pub error: Option<String>,
}

/// How long to wait for the broker while reading a dead-letter topic.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Consumer group that remembers how far replay got, per dead-letter topic.
const REPLAY_GROUP: &str = shared_events::access::DLQ_REPLAY_GROUP;

fn header<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a [u8]> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

fn header_text(message: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    header(message, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Where [`read_to_end`] starts in each partition.
#[derive(Debug, Clone, Copy)]
enum StartAt {
    /// The group's committed position, or the beginning.
    Committed,
    /// At most this many messages before the end.
    Last(i64),
}

/// Reads the messages of `dlq_topic` present now, from where `start_at` says,
/// and calls `each` on each. Stops at the end offsets seen when it started, so
/// it terminates while new dead letters arrive. Returns how many it read.
fn read_to_end(
    consumer: &BaseConsumer,
    dlq_topic: &str,
    start_at: StartAt,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let metadata = consumer
        .fetch_metadata(Some(dlq_topic), READ_TIMEOUT)
        .context("reading topic metadata")?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut wanted = rdkafka::TopicPartitionList::new();
    for &partition in &partitions {
        wanted.add_partition(dlq_topic, partition);
    }
    let committed = consumer
        .committed_offsets(wanted, READ_TIMEOUT)
        .context("reading replay progress")?;
    // Per partition: where to start (the committed position, else the
    // beginning) and where "now" ends.
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut positions = HashMap::new();
    let mut remaining = HashMap::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(dlq_topic, partition, READ_TIMEOUT)
            .context("reading end offsets")?;
        let committed = committed
            .find_partition(dlq_topic, partition)
            .map(|p| p.offset());
        let start = match (start_at, committed) {
            (StartAt::Last(count), _) => (high - count).max(low),
            (StartAt::Committed, Some(Offset::Offset(done))) => done.max(low),
            (StartAt::Committed, _) => low,
        };
        if start < high {
            assignment.add_partition_offset(dlq_topic, partition, Offset::Offset(start))?;
            positions.insert(partition, start);
            remaining.insert(partition, high);
        }
    }
    if remaining.is_empty() {
        return Ok(0);
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    let mut seen = 0;
    while remaining.iter().any(|(p, high)| positions[p] < *high) {
        let Some(result) = consumer.poll(READ_TIMEOUT) else {
            anyhow::bail!("no message within {READ_TIMEOUT:?} although the topic has more");
        };
        let message = result.context("reading a dead letter")?;
        positions.insert(message.partition(), message.offset() + 1);
        if message.offset() >= remaining[&message.partition()] {
            continue;
        }
        each(&message)?;
        seen += 1;
    }
    Ok(seen)
}

fn reader(connection: &KafkaConnection, group: &str) -> anyhow::Result<BaseConsumer> {
    connection
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating a Kafka consumer")
}

/// The dead letters of `topic` (the original topic's name, e.g. `order-created`).
pub fn list(connection: &KafkaConnection, topic: &str) -> anyhow::Result<Vec<DeadLetter>> {
    read_letters(connection, topic, StartAt::Committed)
}

/// The newest dead letters of `topic`: at most `per_partition` from the end of
/// each partition, so a page showing them reads a bounded amount however many
/// have piled up. Oldest first within a partition, as [`list`].
pub fn list_newest(
    connection: &KafkaConnection,
    topic: &str,
    per_partition: usize,
) -> anyhow::Result<Vec<DeadLetter>> {
    let count = i64::try_from(per_partition).unwrap_or(i64::MAX);
    read_letters(connection, topic, StartAt::Last(count))
}

fn read_letters(
    connection: &KafkaConnection,
    topic: &str,
    start_at: StartAt,
) -> anyhow::Result<Vec<DeadLetter>> {
    // A throwaway group: listing never moves replay's position.
    let consumer = reader(
        connection,
        &format!(
            "{}{}",
            shared_events::access::DLQ_LIST_GROUP_PREFIX,
            uuid::Uuid::new_v4()
        ),
    )?;
    let mut letters = Vec::new();
    read_to_end(&consumer, &dead_letter_topic(topic), start_at, |message| {
        letters.push(DeadLetter {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            original_topic: header_text(message, headers::ORIGINAL_TOPIC),
            original_partition: header_text(message, headers::ORIGINAL_PARTITION),
            original_offset: header_text(message, headers::ORIGINAL_OFFSET),
            service: header_text(message, headers::SERVICE),
            error: header_text(message, headers::ERROR),
        });
        Ok(())
    })?;
    Ok(letters)
}

/// Publishes the dead letters of `topic` not replayed yet back onto `topic`
/// (key, payload and original headers), remembering progress in the
/// `dlq-replay` group. Returns how many were replayed.
///
/// One message that several services gave up on (each of them consumes its
/// topic) has one dead letter per service; it goes back once, since that one
/// copy reaches every consumer again. Replaying an event twice would still be
/// harmless: consumers ignore an eventId they have applied.
pub async fn replay(connection: &KafkaConnection, topic: &str) -> anyhow::Result<u64> {
    let dlq_topic = dead_letter_topic(topic);
    let producer: FutureProducer = connection
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .context("creating a Kafka producer")?;
    let connection = connection.clone();
    let topic = topic.to_owned();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let consumer = reader(&connection, REPLAY_GROUP)?;
        let mut republished = HashSet::new();
        let mut replayed = 0;
        read_to_end(&consumer, &dlq_topic, StartAt::Committed, |message| {
            // A letter without its origin headers is always replayed.
            let origin = [
                headers::ORIGINAL_TOPIC,
                headers::ORIGINAL_PARTITION,
                headers::ORIGINAL_OFFSET,
            ]
            .map(|name| header_text(message, name));
            let first_copy = origin.iter().any(Option::is_none) || republished.insert(origin);
            if first_copy {
                let record = copy_of(message, &topic, original_headers(message));
                handle
                    .block_on(producer.send(record, Timeout::Never))
                    .map_err(|(err, _)| err)
                    .context("republishing a dead letter")?;
                replayed += 1;
            }
            consumer
                .commit_message(message, CommitMode::Sync)
                .context("recording replay progress")?;
            Ok(())
        })?;
        Ok(replayed)
    })
    .await
    .context("the replay task panicked")?
}
