//! The consumer loop over the in-memory broker and a real Postgres: what it
//! does with duplicates, undecodable messages, failing handlers, batches, a
//! broker that will not take a dead letter, and a shutdown mid-retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use local_infra::PostgresCluster;
use shared_events::events::headers as event_headers;
use shared_events::topics::dead_letter_topic;
use shared_events::{Event, OrderCreated, OrderId, UserId};
use sqlx::migrate::Migrator;
use tokio::task::JoinHandle;

use super::*;
use crate::backend::memory::{MemoryBroker, MemorySource};
use crate::backend::{Outgoing, Publisher};
use crate::dlq::headers;

/// The handler's table: one row per event applied.
static EFFECTS: Migrator = sqlx::migrate!("tests/fixtures/effects");

/// The topic the tests publish to.
const TOPIC: &str = "order-created";
/// Attempts before a failing event is dead-lettered, in these tests.
const MAX_ATTEMPTS: u32 = 3;
/// How long anything the tests wait for may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// One cluster for the whole test binary; each test has a schema of its own.
fn cluster() -> &'static PostgresCluster {
    static CLUSTER: OnceLock<PostgresCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        PostgresCluster::start_temporary().expect("a temporary Postgres cluster starts")
    })
}

/// What the test handler does with an order, by its id's prefix.
fn behaviour(order: &str, calls: u32) -> Result<(), HandlerError> {
    if order.starts_with("poison") {
        Err(HandlerError::Permanent("the order cannot exist".into()))
    } else if order.starts_with("broken") {
        Err(HandlerError::Failed(anyhow::anyhow!("it always fails")))
    } else if order.starts_with("flaky") && calls <= MAX_ATTEMPTS + 1 {
        // More transient failures than MAX_ATTEMPTS: they must not count.
        Err(HandlerError::Transient(anyhow::anyhow!("database busy")))
    } else if order.starts_with("stuck") {
        Err(HandlerError::Transient(anyhow::anyhow!("database down")))
    } else {
        Ok(())
    }
}

/// Records each event it applies in `effects`, in the consumer's transaction.
#[derive(Default, Clone)]
struct Recorder {
    /// Calls per order, successful or not.
    calls: Arc<Mutex<HashMap<String, u32>>>,
}

impl Recorder {
    fn calls(&self, order: &str) -> u32 {
        self.calls.lock().unwrap().get(order).copied().unwrap_or(0)
    }
}

impl EventHandler for Recorder {
    async fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
    ) -> Result<Vec<Envelope>, HandlerError> {
        let calls = {
            let mut calls = self.calls.lock().unwrap();
            let count = calls.entry(event.order_id.as_str().to_owned()).or_default();
            *count += 1;
            *count
        };
        sqlx::query("INSERT INTO effects (order_id, event_id) VALUES ($1, $2)")
            .bind(event.order_id.as_str())
            .bind(event.event_id)
            .execute(&mut *tx)
            .await?;
        // Fails after writing, so a failure must roll the effect back.
        behaviour(event.order_id.as_str(), calls)?;
        Ok(vec![])
    }
}

/// A consumer of [`TOPIC`] on a broker in the process, in a fresh schema.
struct Harness {
    broker: MemoryBroker,
    pool: PgPool,
    recorder: Recorder,
    /// Where dead letters of [`TOPIC`] arrive.
    dead_letters: MemorySource,
    stop: CancellationToken,
    /// The offsets the consumer stored, in order.
    positions: Arc<Mutex<Vec<i64>>>,
    /// The consumer's subscription, taken when it starts: subscribed from
    /// the start, so messages published before that wait for it.
    source: Option<MemorySource>,
    running: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Harness {
    async fn new(schema: &str) -> Harness {
        let cluster = tokio::task::block_in_place(cluster);
        cluster.ensure_database("consumer").await.unwrap();
        let mut config = CommonConfig::defaults("consumer-test", 0, schema);
        config.database_url = cluster.url("consumer");
        let pool = crate::db::connect(&config, &EFFECTS).await.unwrap();
        let broker = MemoryBroker::new();
        let dead_letters = broker.subscribe(&[&dead_letter_topic(TOPIC)]);
        let positions: Arc<Mutex<Vec<i64>>> = Arc::default();
        let stored = positions.clone();
        let source = broker
            .subscribe(&[TOPIC])
            .on_store(Arc::new(move |message: &Received| {
                stored.lock().unwrap().push(message.offset)
            }));
        Harness {
            broker,
            pool,
            recorder: Recorder::default(),
            dead_letters,
            stop: CancellationToken::new(),
            positions,
            source: Some(source),
            running: None,
        }
    }

    /// Starts the consumer: batches of up to `batch_size`, quick retries.
    fn start(&mut self, batch_size: usize) {
        let mut config = CommonConfig::defaults("consumer-test", 0, "unused");
        config.consumer.batch_size = batch_size;
        config.consumer.max_attempts = MAX_ATTEMPTS;
        config.consumer.retry_initial = Duration::from_millis(5);
        config.consumer.retry_max = Duration::from_millis(20);
        let source = self.source.take().expect("started once");
        let consumer = EventConsumer::with_backend(
            &config,
            self.pool.clone(),
            Outbox::of(&config),
            Closing::default(),
            self.recorder.clone(),
            source,
            self.broker.publisher(),
        );
        self.running = Some(tokio::spawn(consumer.run(self.stop.clone())));
    }

    /// Publishes `payload` for `order` as the relay would.
    async fn publish_raw(&self, order: &str, payload: &[u8], event_id: &str) {
        self.broker
            .publisher()
            .send(Outgoing {
                topic: TOPIC,
                key: Some(order.as_bytes()),
                payload: Some(payload),
                headers: &[(event_headers::EVENT_ID, Some(event_id.as_bytes()))],
            })
            .await
            .unwrap();
    }

    /// Publishes a fresh event for `order`; returns it.
    async fn publish(&self, order: &str) -> Envelope {
        let event = Envelope::new(
            OrderId::parse(order).unwrap(),
            Event::OrderCreated(OrderCreated {
                user_id: UserId::parse("u").unwrap(),
                items: vec![],
            }),
            "test",
        );
        self.publish_raw(order, &event.to_json(), &event.event_id.to_string())
            .await;
        event
    }

    /// Effects stored for `order`.
    async fn effects(&self, order: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM effects WHERE order_id = $1")
            .bind(order)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits until the consumer has stored the position past `offset`.
    async fn wait_until_done(&self, offset: i64) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !self.positions.lock().unwrap().contains(&offset) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "offset {offset} was never stored"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The next dead letter.
    async fn next_dead_letter(&self) -> Received {
        tokio::time::timeout(DEADLINE, self.dead_letters.recv())
            .await
            .expect("a dead letter arrives")
    }

    /// Stops the consumer and waits for it.
    async fn stop(&mut self) {
        self.stop.cancel();
        let running = self.running.take().expect("started");
        tokio::time::timeout(DEADLINE, running)
            .await
            .expect("the consumer stops")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_twice_is_applied_once_and_both_deliveries_pass() {
    let mut harness = Harness::new("twice").await;
    harness.start(1);
    let event = harness.publish("twice-1").await;
    harness
        .publish_raw("twice-1", &event.to_json(), &event.event_id.to_string())
        .await;
    harness.wait_until_done(1).await;
    assert_eq!(harness.effects("twice-1").await, 1);
    assert_eq!(harness.recorder.calls("twice-1"), 1);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_is_dead_lettered_as_it_came_and_passed() {
    let mut harness = Harness::new("undecodable").await;
    harness.start(1);
    harness.publish_raw("garbled-1", b"{not json", "none").await;
    let after = harness.publish("after-1").await;

    let letter = harness.next_dead_letter().await;
    assert_eq!(letter.payload(), b"{not json");
    assert_eq!(letter.key.as_deref(), Some(&b"garbled-1"[..]));
    assert_eq!(letter.header(headers::ORIGINAL_TOPIC), Some(TOPIC));
    assert_eq!(letter.header(headers::ORIGINAL_OFFSET), Some("0"));
    assert_eq!(letter.header(headers::SERVICE), Some("consumer-test"));
    assert_eq!(letter.header(headers::ATTEMPTS), Some("1"));
    assert_eq!(letter.header(event_headers::EVENT_ID), Some("none"));
    harness.wait_until_done(1).await;
    assert_eq!(harness.effects(after.order_id.as_str()).await, 1);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_dead_lettered_at_once_with_nothing_applied() {
    let mut harness = Harness::new("permanent").await;
    harness.start(1);
    harness.publish("poison-1").await;
    let letter = harness.next_dead_letter().await;
    assert_eq!(letter.header(headers::ATTEMPTS), Some("1"));
    assert_eq!(
        letter.header(headers::ERROR),
        Some("the order cannot exist")
    );
    harness.wait_until_done(0).await;
    assert_eq!(harness.recorder.calls("poison-1"), 1);
    assert_eq!(harness.effects("poison-1").await, 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_tried_max_attempts_times_then_dead_lettered() {
    let mut harness = Harness::new("failing").await;
    harness.start(1);
    harness.publish("broken-1").await;
    let letter = harness.next_dead_letter().await;
    assert_eq!(
        letter.header(headers::ATTEMPTS),
        Some(MAX_ATTEMPTS.to_string().as_str())
    );
    assert_eq!(letter.header(headers::ERROR), Some("it always fails"));
    harness.wait_until_done(0).await;
    assert_eq!(harness.recorder.calls("broken-1"), MAX_ATTEMPTS);
    assert_eq!(harness.effects("broken-1").await, 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_past_max_attempts_until_it_passes() {
    let mut harness = Harness::new("transient").await;
    harness.start(1);
    harness.publish("flaky-1").await;
    harness.wait_until_done(0).await;
    assert_eq!(harness.recorder.calls("flaky-1"), MAX_ATTEMPTS + 2);
    assert_eq!(harness.effects("flaky-1").await, 1);
    // Nothing was dead-lettered.
    assert_eq!(harness.dead_letters.try_recv(), None);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_bad_event_applies_every_good_one_exactly_once() {
    let mut harness = Harness::new("batch").await;
    // Waiting before the consumer starts, so they arrive as one batch.
    let orders = ["batch-1", "batch-2", "poison-2", "batch-3", "batch-4"];
    for order in orders {
        harness.publish(order).await;
    }
    harness.start(10);
    harness.wait_until_done(4).await;
    for order in orders {
        let expected = if order.starts_with("poison") { 0 } else { 1 };
        assert_eq!(harness.effects(order).await, expected, "{order}");
    }
    let letter = harness.next_dead_letter().await;
    assert_eq!(letter.key.as_deref(), Some(&b"poison-2"[..]));
    assert_eq!(
        *harness.positions.lock().unwrap(),
        [0, 1, 2, 3, 4],
        "every offset stored, in order"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_holding_an_event_twice_applies_it_once() {
    let mut harness = Harness::new("twice_in_batch").await;
    // Both deliveries wait before the consumer starts: one batch.
    let event = harness.publish("doubled-1").await;
    harness
        .publish_raw("doubled-1", &event.to_json(), &event.event_id.to_string())
        .await;
    harness.publish("single-1").await;
    harness.start(10);
    harness.wait_until_done(2).await;
    assert_eq!(harness.effects("doubled-1").await, 1);
    assert_eq!(harness.recorder.calls("doubled-1"), 1);
    assert_eq!(harness.effects("single-1").await, 1);
    assert_eq!(*harness.positions.lock().unwrap(), [0, 1, 2]);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_waits_for_the_broker_and_the_offset_for_the_dead_letter() {
    let mut harness = Harness::new("unreachable").await;
    harness.publish("poison-3").await;
    harness.broker.set_available(false);
    harness.start(1);
    // The handler gave up on it, and the dead letter could not be written,
    // twice.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while harness.broker.refused() < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(harness.recorder.calls("poison-3"), 1);
    assert!(harness.positions.lock().unwrap().is_empty());

    harness.broker.set_available(true);
    let letter = harness.next_dead_letter().await;
    assert_eq!(letter.key.as_deref(), Some(&b"poison-3"[..]));
    harness.wait_until_done(0).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_retrying_leaves_the_message_to_be_delivered_again() {
    let mut harness = Harness::new("shutdown").await;
    harness.start(1);
    harness.publish("stuck-1").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while harness.recorder.calls("stuck-1") < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    harness.stop().await;
    assert!(harness.positions.lock().unwrap().is_empty());
    assert_eq!(harness.effects("stuck-1").await, 0);
    assert_eq!(harness.dead_letters.try_recv(), None);
}
