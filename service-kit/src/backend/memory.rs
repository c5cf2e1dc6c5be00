//! A broker in the process, for running the shipped consumer loop and outbox
//! relay without Kafka: each topic is one partition with its own offsets,
//! each [`MemorySource`] is a consumer group of one member that receives
//! every message published to its topics after it subscribed, and a
//! [`MemoryPublisher`] acknowledges a message once every subscriber has it.
//!
//! Nothing is kept once delivered, so it runs for as long as a benchmark
//! wants. [`MemoryBroker::set_available`] makes every send fail, as an
//! unreachable broker does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::{MessageSource, Outgoing, Publisher, Received};
use crate::shutdown::Closing;

/// The broker; clones are the same broker.
#[derive(Clone, Default)]
pub struct MemoryBroker(Arc<Shared>);

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// While `true`, sends fail.
    unavailable: AtomicBool,
    /// Sends that failed so.
    refused: AtomicU64,
}

#[derive(Default)]
struct State {
    /// The next offset of each topic.
    next_offset: HashMap<String, i64>,
    /// Each subscriber's topics and its queue.
    subscribers: Vec<(Vec<String>, UnboundedSender<Received>)>,
}

/// What a [`MemorySource`] calls with each message it is told is done.
pub type OnStore = Arc<dyn Fn(&Received) + Send + Sync>;

impl MemoryBroker {
    pub fn new() -> MemoryBroker {
        MemoryBroker::default()
    }

    /// A consumer group of one member reading `topics`, from the next
    /// message published on.
    pub fn subscribe(&self, topics: &[&str]) -> MemorySource {
        let (sender, receiver) = unbounded_channel();
        self.0
            .state
            .lock()
            .expect("broker state")
            .subscribers
            .push((topics.iter().map(|t| (*t).to_owned()).collect(), sender));
        MemorySource {
            queue: tokio::sync::Mutex::new(receiver),
            positions: Mutex::new(HashMap::new()),
            on_store: None,
            batches: Arc::new(Batches::default()),
        }
    }

    /// A producer.
    pub fn publisher(&self) -> MemoryPublisher {
        MemoryPublisher(self.clone())
    }

    /// Makes sends fail (`false`), as while the broker is unreachable, or
    /// succeed again (`true`).
    pub fn set_available(&self, available: bool) {
        self.0.unavailable.store(!available, Ordering::SeqCst);
    }

    /// How many sends failed because the broker was unavailable.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::SeqCst)
    }

    /// Appends `message` to its topic and hands it to every subscriber.
    fn append(&self, message: Outgoing<'_>) -> anyhow::Result<()> {
        if self.0.unavailable.load(Ordering::SeqCst) {
            self.0.refused.fetch_add(1, Ordering::SeqCst);
            anyhow::bail!("the in-memory broker is unavailable");
        }
        let mut state = self.0.state.lock().expect("broker state");
        let next = state
            .next_offset
            .entry(message.topic.to_owned())
            .or_default();
        let offset = *next;
        *next += 1;
        let received = Received {
            topic: message.topic.to_owned(),
            partition: 0,
            offset,
            key: message.key.map(<[u8]>::to_vec),
            payload: message.payload.map(<[u8]>::to_vec),
            headers: message
                .headers
                .iter()
                .map(|(key, value)| ((*key).to_owned(), value.map(<[u8]>::to_vec)))
                .collect(),
        };
        // A subscriber that is gone no longer counts.
        state.subscribers.retain(|(topics, queue)| {
            !topics.iter().any(|t| t == message.topic) || queue.send(received.clone()).is_ok()
        });
        Ok(())
    }
}

/// A consumer group of one member on a [`MemoryBroker`].
pub struct MemorySource {
    /// Only the consumer loop receives; the lock is never contended.
    queue: tokio::sync::Mutex<UnboundedReceiver<Received>>,
    /// The next offset to read of each topic, as stored.
    positions: Mutex<HashMap<String, i64>>,
    on_store: Option<OnStore>,
    batches: Arc<Batches>,
}

/// How a consumer loop took its messages from a [`MemorySource`]: each wait
/// for a message begins a batch, and the messages already waiting join it.
#[derive(Debug, Default)]
pub struct Batches {
    /// Waits that returned a message.
    batches: AtomicU64,
    /// Messages handed out.
    messages: AtomicU64,
}

impl Batches {
    /// Mean messages per batch.
    pub fn mean(&self) -> f64 {
        let batches = self.batches.load(Ordering::Relaxed).max(1);
        self.messages.load(Ordering::Relaxed) as f64 / batches as f64
    }
}

impl MemorySource {
    /// Calls `each` with every message once it is stored.
    pub fn on_store(mut self, each: OnStore) -> MemorySource {
        self.on_store = Some(each);
        self
    }

    /// The stored position of `topic`: the offset of the next message a
    /// restarted member would read, if any was stored.
    pub fn position(&self, topic: &str) -> Option<i64> {
        self.positions
            .lock()
            .expect("positions")
            .get(topic)
            .copied()
    }

    /// The batches the consumer loop forms, counted as it goes.
    pub fn batches(&self) -> Arc<Batches> {
        self.batches.clone()
    }
}

impl MessageSource for MemorySource {
    async fn recv(&self) -> Received {
        let received = self.queue.lock().await.recv().await;
        match received {
            Some(message) => {
                self.batches.batches.fetch_add(1, Ordering::Relaxed);
                self.batches.messages.fetch_add(1, Ordering::Relaxed);
                message
            }
            // The broker is gone: nothing will ever arrive.
            None => std::future::pending().await,
        }
    }

    fn try_recv(&self) -> Option<Received> {
        let message = self.queue.try_lock().ok()?.try_recv().ok()?;
        self.batches.messages.fetch_add(1, Ordering::Relaxed);
        Some(message)
    }

    fn store(&self, message: &Received) {
        self.positions
            .lock()
            .expect("positions")
            .insert(message.topic.clone(), message.offset + 1);
        if let Some(each) = &self.on_store {
            each(message);
        }
    }

    fn close(self, _closing: &Closing, _owner: String) {}
}

/// A producer on a [`MemoryBroker`].
#[derive(Clone)]
pub struct MemoryPublisher(MemoryBroker);

impl Publisher for MemoryPublisher {
    async fn send<'a>(&'a self, message: Outgoing<'a>) -> anyhow::Result<()> {
        self.0.append(message)
    }
}
