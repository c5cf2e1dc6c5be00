//! Proves the embedded Kafka carries messages from a producer to a consumer
//! group over real TCP, creates topics idempotently with the partition count we
//! ask for, and lets tests take brokers down and up.

use std::sync::Arc;
use std::time::Duration;

use local_infra::EmbeddedKafka;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

/// The partition count every topic of the system uses.
const PARTITIONS: i32 = 6;

/// Upper bound for a consumer group to join and receive a message.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a produce may take while the broker is up.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a producer keeps retrying a message before it reports a failed
/// delivery; short, so that the outage test does not wait long for the failure.
const MESSAGE_TIMEOUT_MS: &str = "2000";

/// librdkafka backs off reconnecting up to 10 s by default, longer than
/// [`MESSAGE_TIMEOUT_MS`]; capped so the producer notices the broker is back
/// while the first message after the outage is still being retried.
const RECONNECT_BACKOFF_MAX_MS: &str = "500";

fn producer(kafka: &EmbeddedKafka) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .create()
        .expect("producer")
}

fn partition_count(kafka: &EmbeddedKafka, topic: &str) -> usize {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()
        .unwrap();
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0].partitions().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_travels_through_a_consumer_group_on_a_six_partition_topic() {
    // Shared across tasks, as the end-to-end tests will.
    let kafka = Arc::new(EmbeddedKafka::start(1).expect("starts"));
    let creator = Arc::clone(&kafka);
    tokio::spawn(async move { creator.create_topic("order-created", PARTITIONS) })
        .await
        .unwrap()
        .expect("topic created");
    assert_eq!(
        partition_count(&kafka, "order-created"),
        PARTITIONS as usize
    );

    let producer = producer(&kafka);
    producer
        .send(
            FutureRecord::to("order-created")
                .key("order-123")
                .payload(r#"{"orderId":"123"}"#),
            DELIVERY_TIMEOUT,
        )
        .await
        .expect("delivered");

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("group.id", "inventory-service")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["order-created"]).unwrap();
    let message = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.recv())
        .await
        .expect("received in time")
        .expect("no consumer error");

    assert_eq!(message.key(), Some(&b"order-123"[..]));
    assert_eq!(message.payload(), Some(&br#"{"orderId":"123"}"#[..]));
}

#[test]
fn creating_a_topic_twice_is_fine_but_a_different_partition_count_is_not() {
    let kafka = EmbeddedKafka::start(1).unwrap();
    kafka.create_topic("payment-processed", PARTITIONS).unwrap();

    kafka
        .create_topic("payment-processed", PARTITIONS)
        .expect("idempotent");
    let error = kafka
        .create_topic("payment-processed", PARTITIONS + 1)
        .expect_err("partition count differs");

    assert!(format!("{error:#}").contains("already exists with 6 partitions"));
}

#[tokio::test]
async fn a_broker_taken_down_refuses_produces_until_brought_back() {
    let kafka = EmbeddedKafka::start(1).unwrap();
    kafka
        .create_topic("inventory-reserved", PARTITIONS)
        .unwrap();
    let producer = producer(&kafka);
    let record = || FutureRecord::to("inventory-reserved").key("k").payload("v");
    producer
        .send(record(), DELIVERY_TIMEOUT)
        .await
        .expect("delivered while up");

    kafka.broker_down(1).unwrap();
    let outage = producer.send(record(), DELIVERY_TIMEOUT).await;
    kafka.broker_up(1).unwrap();

    assert!(outage.is_err(), "delivered while the broker was down");
    producer
        .send(record(), DELIVERY_TIMEOUT)
        .await
        .expect("delivered after recovery");
}

#[test]
fn a_cluster_needs_a_broker() {
    assert!(EmbeddedKafka::start(0).is_err());
}

/// Between the two members' start, like two processes started together that
/// take slightly different times to initialise.
const MEMBER_START_GAP: Duration = Duration::from_millis(500);

/// Well beyond [`MEMBER_START_GAP`], so both members join the group's first
/// rebalance, as scaled-out instances should, even when a busy machine slows
/// the second one's start.
const SHARED_GROUP_REBALANCE_DELAY: Duration = Duration::from_secs(5);

/// Beyond the 44 s the mock stalls when a member joins a group already
/// formed (librdkafka's default 45 s session timeout minus 1 s): on a busy
/// machine the second member can miss the first rebalance, and the group
/// must still end up shared.
const SHARED_GROUP_DEADLINE: Duration = Duration::from_secs(120);

/// How long one poll of a member waits while the group forms.
const GROUP_POLL: Duration = Duration::from_millis(100);

/// Partitions `consumer` is assigned now.
fn assigned(consumer: &StreamConsumer) -> usize {
    consumer.assignment().map_or(0, |list| list.count())
}

/// Messages spread over every partition, so each member's share gets some.
const SHARED_GROUP_MESSAGES: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_of_one_group_share_the_partitions() {
    // The mock's group timing is this test's subject; the real-broker pass
    // (TEST_KAFKA=apache) covers groups on Apache Kafka instead.
    if std::env::var("TEST_KAFKA").is_ok_and(|mode| mode == "apache") {
        eprintln!("skipped: the real-broker pass tests groups on Apache Kafka");
        return;
    }
    let kafka = EmbeddedKafka::start(1).unwrap();
    kafka
        .set_group_initial_rebalance_delay(SHARED_GROUP_REBALANCE_DELAY)
        .unwrap();
    kafka.create_topic("order-created", PARTITIONS).unwrap();
    let member = || -> StreamConsumer {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka.bootstrap_servers())
            .set("group.id", "inventory-service")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&["order-created"]).unwrap();
        consumer
    };
    let first = member();
    tokio::time::sleep(MEMBER_START_GAP).await;
    let second = member();
    // Both members hold a share of every partition before anything is
    // produced, so neither can take all the messages alone.
    tokio::time::timeout(SHARED_GROUP_DEADLINE, async {
        loop {
            let (a, b) = (assigned(&first), assigned(&second));
            if a > 0 && b > 0 && a + b == PARTITIONS as usize {
                break;
            }
            // Polling is what lets each member take part in the rebalance;
            // nothing has been produced, so no message is missed here.
            tokio::select! {
                _ = first.recv() => panic!("a message before any was produced"),
                _ = second.recv() => panic!("a message before any was produced"),
                () = tokio::time::sleep(GROUP_POLL) => {}
            }
        }
    })
    .await
    .expect("both members were assigned partitions in time");
    let producer = producer(&kafka);
    for partition in 0..SHARED_GROUP_MESSAGES {
        let partition = partition as i32 % PARTITIONS;
        producer
            .send(
                FutureRecord::to("order-created")
                    .partition(partition)
                    .key("k")
                    .payload("v"),
                DELIVERY_TIMEOUT,
            )
            .await
            .unwrap();
    }

    let received = tokio::time::timeout(SHARED_GROUP_DEADLINE, async {
        let (mut by_first, mut by_second) = (0, 0);
        while by_first + by_second < SHARED_GROUP_MESSAGES {
            tokio::select! {
                message = first.recv() => { message.unwrap(); by_first += 1; }
                message = second.recv() => { message.unwrap(); by_second += 1; }
            }
        }
        (by_first, by_second)
    })
    .await
    .expect("the group consumed everything in time");

    assert!(
        received.0 > 0 && received.1 > 0,
        "one member got nothing: {received:?}"
    );
}
