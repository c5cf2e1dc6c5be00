//! Proves the Apache Kafka launcher gives a real broker that keeps what it
//! acknowledged: across a SIGKILL and restart, across a stop and a new start
//! on the same directory, and, on three nodes, across the loss of a
//! partition's leader.
//!
//! These need a JDK and Maven, so they run in the real-broker pass only
//! (`TEST_KAFKA=apache`); elsewhere they say they were skipped.

use std::time::{Duration, Instant};

use local_infra::{ApacheKafka, ApacheKafkaOptions};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

const PARTITIONS: i32 = 6;
/// Upper bound for anything a test waits for.
const DEADLINE: Duration = Duration::from_secs(90);

fn wanted() -> bool {
    let wanted = std::env::var("TEST_KAFKA").is_ok_and(|mode| mode == "apache");
    if !wanted {
        eprintln!("skipped: set TEST_KAFKA=apache to test the real broker (needs a JDK and Maven)");
    }
    wanted
}

async fn create_topic(kafka: &ApacheKafka, name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()
        .unwrap();
    let topic = NewTopic::new(
        name,
        PARTITIONS,
        TopicReplication::Fixed(kafka.replication_factor()),
    );
    let results = admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .expect("CreateTopics answered");
    results[0].as_ref().expect("topic created");
}

fn producer(kafka: &ApacheKafka) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // A hung leader answers nothing: give up on a request after 5 s and
        // retry on the new leader, within a minute in all.
        .set("request.timeout.ms", "5000")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap()
}

async fn send(kafka: &ApacheKafka, topic: &str, partition: i32, key: &str) {
    producer(kafka)
        .send(
            FutureRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(key),
            DEADLINE,
        )
        .await
        .unwrap_or_else(|(err, _)| panic!("{key} not acknowledged: {err}"));
}

/// Reads `topic` in `group` until `count` messages arrived (committing them),
/// and returns their keys.
fn receive(kafka: &ApacheKafka, group: &str, topic: &str, count: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let started = Instant::now();
    let mut keys = Vec::new();
    while keys.len() < count {
        assert!(
            started.elapsed() < DEADLINE,
            "received only {keys:?} of {count} on {topic}"
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            keys.push(String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned());
            consumer
                .commit_message(&message, CommitMode::Sync)
                .expect("offset committed");
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_and_offsets_survive_a_sigkill_and_a_new_start() {
    if !wanted() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let options = ApacheKafkaOptions {
        data_dir: Some(dir.path().join("kafka")),
        ..ApacheKafkaOptions::default()
    };
    let kafka = tokio::task::block_in_place(|| ApacheKafka::start(options.clone())).unwrap();
    create_topic(&kafka, "durable").await;
    send(&kafka, "durable", 0, "before-crash").await;
    let first = tokio::task::block_in_place(|| receive(&kafka, "reader", "durable", 1));
    assert_eq!(first, ["before-crash"]);

    tokio::task::block_in_place(|| {
        kafka.kill_node(1).unwrap();
        kafka.start_node(1).unwrap();
    });
    send(&kafka, "durable", 0, "after-crash").await;
    let next = tokio::task::block_in_place(|| receive(&kafka, "reader", "durable", 1));
    assert_eq!(
        next,
        ["after-crash"],
        "the group resumed from its committed offset"
    );

    // A clean stop and a new launcher on the same directory: same topic, same data.
    drop(kafka);
    let kafka = tokio::task::block_in_place(|| ApacheKafka::start(options)).unwrap();
    let all = tokio::task::block_in_place(|| receive(&kafka, "fresh-reader", "durable", 2));
    assert_eq!(all, ["before-crash", "after-crash"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_accepting_and_serving_writes_when_a_leader_dies_or_hangs() {
    if !wanted() {
        return;
    }
    let kafka = tokio::task::block_in_place(|| {
        ApacheKafka::start(ApacheKafkaOptions {
            nodes: 3,
            ..ApacheKafkaOptions::default()
        })
    })
    .unwrap();
    assert_eq!(kafka.replication_factor(), 3);
    create_topic(&kafka, "replicated").await;
    send(&kafka, "replicated", 0, "m1").await;

    let leader = kafka.leader_of("replicated", 0).unwrap().expect("a leader");
    tokio::task::block_in_place(|| kafka.kill_node(leader).unwrap());
    let started = Instant::now();
    let new_leader = loop {
        match kafka.leader_of("replicated", 0) {
            Ok(Some(now)) if now != leader => break now,
            _ => {}
        }
        assert!(started.elapsed() < DEADLINE, "no new leader elected");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(new_leader, leader);
    send(&kafka, "replicated", 0, "m2").await;
    tokio::task::block_in_place(|| kafka.start_node(leader).unwrap());

    let paused = kafka.leader_of("replicated", 0).unwrap().expect("a leader");
    kafka.pause_node(paused).unwrap();
    send(&kafka, "replicated", 0, "m3").await;
    kafka.resume_node(paused).unwrap();

    let keys = tokio::task::block_in_place(|| receive(&kafka, "reader", "replicated", 3));
    assert_eq!(
        keys,
        ["m1", "m2", "m3"],
        "every acknowledged write, once, in order"
    );
}
