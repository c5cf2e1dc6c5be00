//! A consumer from another project joining one of our consumer groups with
//! an assignment protocol ours do not speak: on Apache Kafka the group
//! coordinator refuses it (INCONSISTENT_GROUP_PROTOCOL) and our consumers
//! keep working.
//!
//! The stranger is a librdkafka consumer that proposes only
//! `cooperative-sticky`, where ours propose librdkafka's default `range` and
//! `roundrobin`: no protocol in common, as with kafkajs' own protocol names.
//! Our members must be in the group first: a stranger that finds a group
//! empty sets its protocol, and then ours are refused until it leaves. That
//! is why a group id must never be shared with another project (README,
//! "Consumer groups").
//!
//! The embedded broker does not refuse such a member (librdkafka's mock
//! aborts instead), so there the test says it was skipped; devstack hosts
//! that broker in a process of its own for this reason.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use serde_json::json;
use system_tests::{TestStack, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_in_our_group_is_refused_and_our_consumers_keep_working() {
    let stack = TestStack::start().await;
    if stack.kafka().is_none_or(|kafka| kafka.embedded().is_some()) {
        eprintln!("skipped: needs Apache Kafka's group coordinator (TEST_KAFKA=apache)");
        return stack.shutdown().await;
    }
    // Our group first: a stranger that finds the group empty sets its
    // protocol, and then ours would be the ones refused.
    stack.put_product("widget", 100, 10).await;
    place_and_confirm(&stack, "before-the-stranger").await;

    let group = &stack.groups["inventory-service"];
    let stranger: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("group.id", group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()
        .expect("the stranger's consumer");
    stranger
        .subscribe(&[stack.topics.order_created.as_str()])
        .expect("subscribing");

    let started = Instant::now();
    let refusal = tokio::task::block_in_place(|| loop {
        assert!(
            started.elapsed() < DEADLINE,
            "the stranger was never refused"
        );
        match stranger.poll(Duration::from_millis(200)) {
            Some(Err(KafkaError::MessageConsumption(code))) => break code,
            Some(Err(other)) => panic!("unexpected error for the stranger: {other}"),
            Some(Ok(_)) => panic!("the stranger was given messages of our group"),
            None => {}
        }
    });
    assert_eq!(refusal, RDKafkaErrorCode::InconsistentGroupProtocol);

    // Our inventory-service still reserves: the saga completes.
    place_and_confirm(&stack, "while-a-stranger-knocks").await;
    drop(stranger);
    stack.shutdown().await;
}

async fn place_and_confirm(stack: &TestStack, order_id: &str) {
    let (status, body) = stack
        .post_order(&json!({"orderId": order_id, "userId": "u", "items": [{"sku": "widget", "quantity": 1}]}))
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let order = stack.wait_until_terminal(order_id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
}
