//! The stack's topics: raw messages in, messages read back, consumer
//! groups' progress.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::{wait_for, TestStack, DEADLINE, POLL_INTERVAL};

impl TestStack {
    /// Publishes raw bytes to a topic with `key`, as a faulty or repeating
    /// producer would, and returns the partition and offset it landed at.
    pub async fn publish_raw(&self, topic: &str, key: &str, payload: &[u8]) -> (i32, i64) {
        let producer: FutureProducer = self
            .kafka_admin
            .client_config()
            .create()
            .expect("test producer");
        let delivery = producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Timeout::After(DEADLINE),
            )
            .await
            .map_err(|(err, _)| err)
            .expect("publishing");
        (delivery.partition, delivery.offset)
    }

    /// Reads `topic` from the beginning with a fresh consumer group until the
    /// first message keyed `key` appears; returns its headers and body.
    pub async fn read_message(&self, topic: &str, key: &str) -> (HashMap<String, String>, Value) {
        let consumer: BaseConsumer = self
            .kafka_admin
            .client_config()
            .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("topic reader");
        consumer.subscribe(&[topic]).expect("subscribing");
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < DEADLINE,
                "no message keyed {key} on {topic}"
            );
            let polled = tokio::task::block_in_place(|| consumer.poll(POLL_INTERVAL));
            let Some(Ok(message)) = polled else { continue };
            if message.key() != Some(key.as_bytes()) {
                continue;
            }
            let headers = message
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                            (h.key.to_owned(), value.unwrap_or_default())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let body = serde_json::from_slice(message.payload().unwrap_or_default())
                .expect("a JSON event");
            return (headers, body);
        }
    }

    /// Polls until `service`'s consumer group has committed past `offset` on
    /// `topic`/`partition`: the message there has been fully processed.
    pub async fn wait_until_consumed(
        &self,
        service: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        let consumer: BaseConsumer = self
            .kafka_admin
            .client_config()
            .set("group.id", &self.groups[service])
            .create()
            .expect("offset reader");
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(topic, partition);
        let what = format!("{service} to consume {topic}[{partition}]@{offset}");
        wait_for(&what, || {
            let committed = tokio::task::block_in_place(|| {
                consumer.committed_offsets(wanted.clone(), Duration::from_secs(5))
            });
            let next = committed
                .ok()
                .and_then(|list| list.find_partition(topic, partition).map(|p| p.offset()));
            std::future::ready(
                matches!(next, Some(Offset::Offset(next)) if next > offset).then_some(()),
            )
        })
        .await
    }
}
