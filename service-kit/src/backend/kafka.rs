//! The backends the services run on: a Kafka consumer group member and a
//! Kafka producer, configured as [`crate::kafka`] sets them up.

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::Message;

use super::{MessageSource, Outgoing, Publisher, Received};
use crate::config::CommonConfig;
use crate::kafka::{EventProducer, EventStreamConsumer};
use crate::shutdown::{Closing, OffThreadDrop};

/// A member of the service's consumer group (`KAFKA_GROUP_ID`).
pub struct KafkaSource {
    /// Dropped off-thread if the loop is abandoned: closing it can block.
    consumer: OffThreadDrop<EventStreamConsumer>,
}

impl KafkaSource {
    /// Joins the service's group, subscribed to `topics`.
    pub fn subscribe(config: &CommonConfig, topics: &[&str]) -> anyhow::Result<KafkaSource> {
        Ok(KafkaSource {
            consumer: OffThreadDrop::new(crate::kafka::consumer(config, topics)?),
        })
    }

    /// Logs a consumer error; a refused login goes to the service's
    /// [`crate::kafka::LoginWatch`] instead, which reports it once, not on
    /// every reconnect.
    fn report(&self, err: &KafkaError) {
        if crate::kafka_connection::is_login_refused(err) {
            self.consumer.context().login().refused(&err.to_string());
        } else {
            tracing::warn!(error = %err, "Kafka consumer error");
        }
    }
}

/// A Kafka message's headers, copied: name and value, in order.
pub fn headers_of<M: Message>(message: &M) -> Vec<(String, Option<Vec<u8>>)> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

/// The message, copied out of the client's buffer.
fn received(message: &BorrowedMessage<'_>) -> Received {
    Received {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers: headers_of(message),
    }
}

impl MessageSource for KafkaSource {
    async fn recv(&self) -> Received {
        loop {
            match self.consumer.recv().await {
                Ok(message) => return received(&message),
                // librdkafka keeps reconnecting by itself; nothing is lost
                // by carrying on.
                Err(err) => self.report(&err),
            }
        }
    }

    fn try_recv(&self) -> Option<Received> {
        match self.consumer.recv().now_or_never()? {
            Ok(message) => Some(received(&message)),
            Err(err) => {
                self.report(&err);
                None
            }
        }
    }

    fn store(&self, message: &Received) {
        // librdkafka stores the offset after this one: the next to read.
        if let Err(err) =
            self.consumer
                .store_offset(&message.topic, message.partition, message.offset)
        {
            // Happens when the partition was revoked meanwhile; the new owner
            // gets the message again and the inbox recognises it.
            tracing::warn!(error = %err, "could not store offset");
        }
    }

    fn close(self, closing: &Closing, owner: String) {
        let consumer = self.consumer.into_inner();
        closing.spawn(owner, move || {
            if let Err(err) = consumer.commit_consumer_state(CommitMode::Sync) {
                // Nothing stored since the last commit also lands here.
                tracing::debug!(error = %err, "final offset commit");
            }
            // rd_kafka_consumer_close and rd_kafka_destroy.
            drop(consumer);
        });
    }
}

/// An idempotent producer (`acks=all`), which the relay may replace.
pub struct KafkaPublisher {
    /// Released off-thread (destroying it can block while the broker is
    /// unreachable), also when a shutdown abandons a send.
    producer: OffThreadDrop<EventProducer>,
    /// To create a fresh producer; `None` for one shared with the rest of
    /// the service, which is never replaced here.
    config: Option<CommonConfig>,
}

impl KafkaPublisher {
    /// A producer of its own, so that one in a fatal state can be replaced
    /// without touching anyone else's.
    pub fn own(config: &CommonConfig) -> anyhow::Result<KafkaPublisher> {
        Ok(KafkaPublisher {
            producer: OffThreadDrop::new(crate::kafka::producer(config)?),
            config: Some(config.clone()),
        })
    }

    /// Sends through `producer`, which others share.
    pub fn shared(producer: EventProducer) -> KafkaPublisher {
        KafkaPublisher {
            producer: OffThreadDrop::new(producer),
            config: None,
        }
    }

    /// The producer in use now.
    pub fn producer(&self) -> &EventProducer {
        &self.producer
    }
}

impl Publisher for KafkaPublisher {
    async fn send<'a>(&'a self, message: Outgoing<'a>) -> anyhow::Result<()> {
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for &(key, value) in message.headers {
            headers = headers.insert(Header { key, value });
        }
        let mut record = FutureRecord::to(message.topic).headers(headers);
        if let Some(key) = message.key {
            record = record.key(key);
        }
        if let Some(payload) = message.payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Timeout::Never)
            .await
            .map_err(|(err, _)| err)?;
        Ok(())
    }

    /// An idempotent producer can enter a fatal state (its sequence broken
    /// beyond repair); it then refuses every message. Start over with a new
    /// one: whatever was not acknowledged is simply sent again.
    fn recover(&mut self) {
        let Some(config) = &self.config else {
            return;
        };
        let Some((code, reason)) = self.producer.client().fatal_error() else {
            return;
        };
        tracing::error!(%code, reason, "the Kafka producer failed fatally; replacing it");
        match crate::kafka::producer(config) {
            Ok(fresh) => self.producer = OffThreadDrop::new(fresh),
            Err(err) => tracing::error!(
                error = format!("{err:#}"),
                "could not create a new producer"
            ),
        }
    }
}
