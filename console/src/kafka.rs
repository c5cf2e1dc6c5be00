//! What the console reads from Kafka: cluster metadata, watermarks, consumer
//! groups' committed offsets and members, and messages.
//!
//! The console only looks. Messages are read by an assign-only consumer with
//! no group: it never joins a group (so it cannot disturb the services'
//! rebalances, nor trip the embedded broker over a foreign member) and never
//! commits. A group's offsets are read with `OffsetFetch` under the group's
//! id, which does not join it either. Every call here blocks on the broker
//! for at most the configured timeout; [`KafkaView`]'s async methods run
//! them on the blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use service_kit::kafka::KafkaConnection;
use tokio::sync::mpsc;

/// How long one poll of the tail waits before checking whether its viewer left.
const TAIL_POLL: Duration = Duration::from_millis(200);
/// Messages the tail may buffer for a slow viewer before it waits.
const TAIL_BUFFER: usize = 64;
/// Topics Kafka keeps for itself, not shown.
const INTERNAL_TOPIC_PREFIX: &str = "__";

/// Why a read failed, in words a page can show.
#[derive(Debug, thiserror::Error)]
pub enum KafkaReadError {
    #[error("there is no topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("offset {offset} is outside partition {partition}'s offsets {low}..{high}")]
    OffsetOutOfRange {
        partition: i32,
        offset: i64,
        low: i64,
        high: i64,
    },
    #[error("Kafka did not answer: {0}")]
    Unavailable(String),
}

impl From<KafkaError> for KafkaReadError {
    fn from(error: KafkaError) -> Self {
        KafkaReadError::Unavailable(error.to_string())
    }
}

type Result<T, E = KafkaReadError> = std::result::Result<T, E>;

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Broker {
    pub id: i32,
    pub host: String,
    pub port: i32,
    /// Whether this is the broker that answered the metadata request.
    pub answered: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionInfo {
    pub id: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub low: i64,
    pub high: i64,
}

impl PartitionInfo {
    /// Messages present now (high - low; compaction may make it fewer).
    pub fn count(&self) -> i64 {
        (self.high - self.low).max(0)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    pub fn count(&self) -> i64 {
        self.partitions.iter().map(PartitionInfo::count).sum()
    }
}

/// One message as read, before decoding.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, when the broker has one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub payload: Option<Vec<u8>>,
}

impl RawMessage {
    fn of<M: Message>(message: &M) -> RawMessage {
        let headers = service_kit::backend::kafka::headers_of(message);
        RawMessage {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            headers,
            payload: message.payload().map(<[u8]>::to_vec),
        }
    }
}

/// Which messages a page shows.
#[derive(Debug, Clone)]
pub struct MessageQuery {
    pub topic: String,
    /// One partition, or all of them.
    pub partition: Option<i32>,
    /// Newest first, starting below this offset (exclusive); the end by default.
    /// Needs `partition`.
    pub before: Option<i64>,
    /// Only messages whose key is exactly this.
    pub key: Option<String>,
    /// Most messages returned.
    pub limit: usize,
    /// With `key`: most messages per partition searched.
    pub search_depth: i64,
}

/// A page of messages, newest first.
#[derive(Debug, Clone)]
pub struct MessagePage {
    pub topic: TopicInfo,
    pub messages: Vec<RawMessage>,
    /// With one partition: the `before` of the next (older) page, if any.
    pub older: Option<i64>,
}

/// A consumer group member, where the broker describes groups.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: String,
    pub client_id: String,
    pub host: String,
    /// Topic and partition of every partition assigned to it.
    pub assignment: Vec<(String, i32)>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub high: i64,
    pub lag: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupInfo {
    pub name: String,
    /// `Stable`, `Empty`, ...; `None` where the broker does not describe groups.
    pub state: Option<String>,
    /// `None` where the broker does not describe groups (the embedded one).
    pub members: Option<Vec<Member>>,
    /// Every partition the group has committed an offset for.
    pub lag: Vec<PartitionLag>,
}

impl GroupInfo {
    pub fn total_lag(&self) -> i64 {
        self.lag.iter().map(|p| p.lag).sum()
    }
}

/// Reads Kafka for the console. Cheap to clone.
#[derive(Clone)]
pub struct KafkaView {
    inner: Arc<Inner>,
}

struct Inner {
    /// The brokers and the console's login (`KAFKA_SECURITY_PROTOCOL`, ...).
    connection: KafkaConnection,
    timeout: Duration,
    known_groups: Vec<String>,
    /// One long-lived client for metadata and watermarks (no group, no assignment).
    metadata: BaseConsumer,
}

impl KafkaView {
    pub fn new(
        connection: &KafkaConnection,
        timeout: Duration,
        known_groups: Vec<String>,
    ) -> anyhow::Result<KafkaView> {
        let metadata = browse_client(connection)?;
        Ok(KafkaView {
            inner: Arc::new(Inner {
                connection: connection.clone(),
                timeout,
                known_groups,
                metadata,
            }),
        })
    }

    pub fn bootstrap(&self) -> &str {
        self.inner.connection.bootstrap()
    }

    /// How the console reaches the brokers, for the dead-letter tools.
    pub fn connection(&self) -> &KafkaConnection {
        &self.inner.connection
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| KafkaReadError::Unavailable(format!("the read was interrupted: {e}")))?
    }

    pub async fn brokers(&self) -> Result<Vec<Broker>> {
        self.blocking(|inner| inner.brokers()).await
    }

    pub async fn topics(&self) -> Result<Vec<TopicInfo>> {
        self.blocking(|inner| inner.topics(None)).await
    }

    pub async fn topic(&self, name: &str) -> Result<TopicInfo> {
        let name = name.to_owned();
        self.blocking(move |inner| inner.topic(&name)).await
    }

    pub async fn messages(&self, query: MessageQuery) -> Result<MessagePage> {
        self.blocking(move |inner| inner.messages(&query)).await
    }

    pub async fn groups(&self) -> Result<(Vec<GroupInfo>, GroupListing)> {
        self.blocking(|inner| inner.groups()).await
    }

    pub async fn group(&self, name: &str) -> Result<GroupInfo> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            let topics = inner.topics(None)?;
            let described = inner
                .describe(Some(&name))
                .ok()
                .and_then(|mut groups| groups.remove(&name));
            inner.group(&name, &topics, described)
        })
        .await
    }

    /// Messages arriving on `topic` from now on, until the receiver is dropped.
    pub async fn tail(&self, topic: &str) -> Result<mpsc::Receiver<RawMessage>> {
        let topic = self.topic(topic).await?;
        let consumer = browse_client(&self.inner.connection)
            .map_err(|e| KafkaReadError::Unavailable(format!("{e:#}")))?;
        let mut assignment = TopicPartitionList::new();
        for partition in &topic.partitions {
            assignment.add_partition_offset(
                &topic.name,
                partition.id,
                Offset::Offset(partition.high),
            )?;
        }
        consumer.assign(&assignment)?;
        let (sender, receiver) = mpsc::channel(TAIL_BUFFER);
        tokio::task::spawn_blocking(move || {
            while !sender.is_closed() {
                match consumer.poll(TAIL_POLL) {
                    Some(Ok(message)) => {
                        if sender.blocking_send(RawMessage::of(&message)).is_err() {
                            break;
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                    Some(Err(error)) => {
                        tracing::debug!(error = %error, "tail: read error, still trying");
                    }
                }
            }
        });
        Ok(receiver)
    }
}

/// Whether the broker could list every group or only the configured ones are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupListing {
    Listed,
    /// The broker cannot list groups (the embedded one); why, in words.
    ConfiguredOnly(String),
}

/// A client that joins no group: for metadata, watermarks and assigned reads.
fn browse_client(connection: &KafkaConnection) -> anyhow::Result<BaseConsumer> {
    use anyhow::Context;
    // librdkafka wants a group id even for assign(); a fresh one that is
    // never joined (no subscribe) and never committed to.
    let group = format!("ordersystem.console.browse-{}", uuid::Uuid::new_v4());
    connection
        .client_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false")
        .create()
        .context("creating a Kafka client")
}

impl Inner {
    fn brokers(&self) -> Result<Vec<Broker>> {
        let metadata = self.metadata.fetch_metadata(None, self.timeout)?;
        let answered = metadata.orig_broker_id();
        let mut brokers: Vec<Broker> = metadata
            .brokers()
            .iter()
            .map(|b| Broker {
                id: b.id(),
                host: b.host().to_owned(),
                port: b.port(),
                answered: b.id() == answered,
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        Ok(brokers)
    }

    /// Every topic (or only `only`), with watermarks.
    fn topics(&self, only: Option<&str>) -> Result<Vec<TopicInfo>> {
        // The whole cluster's metadata rather than one topic's: asking for
        // one unknown topic by name may create it on some brokers.
        let metadata = self.metadata.fetch_metadata(None, self.timeout)?;
        let mut topics = Vec::new();
        for topic in metadata.topics() {
            if topic.name().starts_with(INTERNAL_TOPIC_PREFIX)
                || only.is_some_and(|only| only != topic.name())
                || topic.error().is_some()
            {
                continue;
            }
            let mut partitions = Vec::new();
            for partition in topic.partitions() {
                let (low, high) =
                    self.metadata
                        .fetch_watermarks(topic.name(), partition.id(), self.timeout)?;
                partitions.push(PartitionInfo {
                    id: partition.id(),
                    leader: partition.leader(),
                    replicas: partition.replicas().to_vec(),
                    isr: partition.isr().to_vec(),
                    low,
                    high,
                });
            }
            partitions.sort_by_key(|p| p.id);
            topics.push(TopicInfo {
                name: topic.name().to_owned(),
                partitions,
            });
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    fn topic(&self, name: &str) -> Result<TopicInfo> {
        self.topics(Some(name))?
            .pop()
            .ok_or_else(|| KafkaReadError::UnknownTopic(name.to_owned()))
    }

    fn messages(&self, query: &MessageQuery) -> Result<MessagePage> {
        let topic = self.topic(&query.topic)?;
        let partitions: Vec<&PartitionInfo> = match query.partition {
            Some(id) => vec![topic
                .partitions
                .iter()
                .find(|p| p.id == id)
                .ok_or_else(|| KafkaReadError::UnknownPartition {
                    topic: topic.name.clone(),
                    partition: id,
                })?],
            None => topic.partitions.iter().collect(),
        };
        let limit = query.limit as i64;
        let depth = if query.key.is_some() {
            query.search_depth
        } else {
            limit
        };
        let mut ranges = Vec::new();
        for partition in &partitions {
            let end = match query.before {
                Some(before) if query.partition.is_some() => {
                    if before < partition.low || before > partition.high {
                        return Err(KafkaReadError::OffsetOutOfRange {
                            partition: partition.id,
                            offset: before,
                            low: partition.low,
                            high: partition.high,
                        });
                    }
                    before
                }
                _ => partition.high,
            };
            let start = (end - depth).max(partition.low);
            if start < end {
                ranges.push((partition.id, start, end));
            }
        }
        let mut messages = self.read_ranges(&topic.name, &ranges)?;
        if let Some(key) = &query.key {
            messages.retain(|m| m.key.as_deref() == Some(key.as_bytes()));
        }
        // Newest first: by timestamp across partitions, by offset within one.
        messages.sort_by(|a, b| {
            (b.timestamp_ms, b.offset, b.partition).cmp(&(a.timestamp_ms, a.offset, a.partition))
        });
        messages.truncate(query.limit);
        let older = match (query.partition, ranges.first()) {
            (Some(_), Some(&(_, start, _))) if query.key.is_none() => {
                let oldest = messages.last().map_or(start, |m| m.offset);
                (oldest > partitions[0].low).then_some(oldest)
            }
            _ => None,
        };
        Ok(MessagePage {
            topic,
            messages,
            older,
        })
    }

    /// Reads `[start, end)` of each `(partition, start, end)`.
    fn read_ranges(&self, topic: &str, ranges: &[(i32, i64, i64)]) -> Result<Vec<RawMessage>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let consumer = browse_client(&self.connection)
            .map_err(|e| KafkaReadError::Unavailable(format!("{e:#}")))?;
        let mut assignment = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for &(partition, start, end) in ranges {
            assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
            ends.insert(partition, end);
        }
        consumer.assign(&assignment)?;
        let deadline = Instant::now() + self.timeout;
        let mut messages = Vec::new();
        while !ends.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KafkaReadError::Unavailable(format!(
                    "reading {topic} took longer than {:?}",
                    self.timeout
                )));
            }
            match consumer.poll(left) {
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let Some(&end) = ends.get(&partition) else {
                        continue;
                    };
                    if message.offset() < end {
                        messages.push(RawMessage::of(&message));
                    }
                    if message.offset() + 1 >= end {
                        ends.remove(&partition);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    ends.remove(&partition);
                }
                Some(Err(error)) => return Err(error.into()),
                None => {}
            }
        }
        Ok(messages)
    }

    /// Groups as the broker describes them (`None`: all of them).
    fn describe(&self, group: Option<&str>) -> Result<BTreeMap<String, (String, Vec<Member>)>> {
        let list = self.metadata.fetch_group_list(group, self.timeout)?;
        Ok(list
            .groups()
            .iter()
            .filter(|g| g.protocol_type() == "consumer" || g.protocol_type().is_empty())
            .map(|g| {
                let members = g
                    .members()
                    .iter()
                    .map(|m| Member {
                        id: m.id().to_owned(),
                        client_id: m.client_id().to_owned(),
                        host: m.client_host().to_owned(),
                        assignment: m.assignment().map(parse_assignment).unwrap_or_default(),
                    })
                    .collect();
                (g.name().to_owned(), (g.state().to_owned(), members))
            })
            .collect())
    }

    fn groups(&self) -> Result<(Vec<GroupInfo>, GroupListing)> {
        let topics = self.topics(None)?;
        let (described, listing) = match self.describe(None) {
            Ok(described) => (described, GroupListing::Listed),
            Err(error) => (
                BTreeMap::new(),
                GroupListing::ConfiguredOnly(error.to_string()),
            ),
        };
        let mut names: Vec<String> = self.known_groups.clone();
        names.extend(described.keys().cloned());
        names.sort();
        names.dedup();
        let mut groups = Vec::new();
        for name in names {
            let description = described.get(&name).cloned();
            groups.push(self.group(&name, &topics, description)?);
        }
        Ok((groups, listing))
    }

    /// `name`'s committed offsets and lag on `topics`, with its state and
    /// members when the broker `described` the group.
    fn group(
        &self,
        name: &str,
        topics: &[TopicInfo],
        described: Option<(String, Vec<Member>)>,
    ) -> Result<GroupInfo> {
        let consumer: BaseConsumer = self
            .connection
            .client_config()
            .set("group.id", name)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut wanted = TopicPartitionList::new();
        let mut highs = HashMap::new();
        for topic in topics {
            for partition in &topic.partitions {
                wanted.add_partition(&topic.name, partition.id);
                highs.insert((topic.name.as_str(), partition.id), partition.high);
            }
        }
        let committed = consumer.committed_offsets(wanted, self.timeout)?;
        let mut lag = Vec::new();
        for element in committed.elements() {
            if let Offset::Offset(committed) = element.offset() {
                let high = highs
                    .get(&(element.topic(), element.partition()))
                    .copied()
                    .unwrap_or(committed);
                lag.push(PartitionLag {
                    topic: element.topic().to_owned(),
                    partition: element.partition(),
                    committed,
                    high,
                    lag: (high - committed).max(0),
                });
            }
        }
        lag.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let (state, members) = match described {
            Some((state, members)) => (Some(state), Some(members)),
            None => (None, None),
        };
        Ok(GroupInfo {
            name: name.to_owned(),
            state,
            members,
            lag,
        })
    }
}

/// A member's assignment in Kafka's consumer protocol: version (i16), then
/// topics (i32 count; each a i16-length name and i32 count of i32
/// partitions), then user data, which is ignored. Malformed bytes give what
/// could be read.
pub fn parse_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
        }
        fn i32(&mut self) -> Option<i32> {
            self.take(4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
    }
    let mut reader = Reader(bytes);
    let mut assigned = Vec::new();
    let _version = reader.i16();
    let topics = reader.i32().unwrap_or(0);
    for _ in 0..topics.max(0) {
        let Some(len) = reader.i16() else { break };
        let Some(name) = reader.take(len.max(0) as usize) else {
            break;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let count = reader.i32().unwrap_or(0);
        for _ in 0..count.max(0) {
            let Some(partition) = reader.i32() else {
                return assigned;
            };
            assigned.push((name.clone(), partition));
        }
    }
    assigned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_consumer_protocol_assignment() {
        let mut bytes = vec![0, 1, 0, 0, 0, 1, 0, 5];
        bytes.extend_from_slice(b"topic");
        bytes.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(
            parse_assignment(&bytes),
            vec![("topic".to_owned(), 0), ("topic".to_owned(), 3)]
        );
    }

    #[test]
    fn a_truncated_assignment_gives_what_could_be_read() {
        let mut bytes = vec![0, 1, 0, 0, 0, 1, 0, 5];
        bytes.extend_from_slice(b"topic");
        bytes.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 4, 0, 0]);
        assert_eq!(parse_assignment(&bytes), vec![("topic".to_owned(), 4)]);
        assert!(parse_assignment(&[0xff]).is_empty());
    }
}
