//! Events that can never be processed go to `<topic>.dlq` with headers saying
//! where they came from and why, and the partition behind them moves on.

use serde_json::{json, Value};
use service_kit::dlq::{self, DeadLetter};
use system_tests::{wait_for, TestStack};

/// A well-formed OrderCreated for `order_id`, to be broken in different ways.
fn order_created(order_id: &str) -> Value {
    json!({
        "eventId": uuid::Uuid::new_v4(),
        "eventType": "OrderCreated",
        "version": 1,
        "occurredAt": "2026-01-01T00:00:00Z",
        "orderId": order_id,
        "correlationId": uuid::Uuid::new_v4(),
        "causationId": null,
        "producer": "a-test",
        "payload": {"userId": "mallory", "items": [{"sku": "widget", "quantity": 1}]}
    })
}

/// Polls until `topic`'s dead-letter topic holds at least `count` letters.
async fn wait_for_dead_letters(stack: &TestStack, topic: &str, count: usize) -> Vec<DeadLetter> {
    wait_for(&format!("{count} dead letters on {topic}.dlq"), || {
        let letters = tokio::task::block_in_place(|| dlq::list(&stack.kafka_admin, topic))
            .expect("listing dead letters");
        std::future::ready((letters.len() >= count).then_some(letters))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_orders_behind_them_complete() {
    let stack = TestStack::start().await;
    stack.put_product("widget", 100, 10).await;
    let topic = stack.topics.order_created.clone();

    // Four kinds of poison, all keyed like the order that follows, so they sit
    // in front of it in the same partition.
    let key = "o-behind";
    let mut unknown_type = order_created(key);
    unknown_type["eventType"] = json!("OrderShipped");
    let mut future_version = order_created(key);
    future_version["version"] = json!(2);
    let mut invalid_payload = order_created(key);
    invalid_payload["payload"]["items"][0]["quantity"] = json!(0);
    let poisons: Vec<(Vec<u8>, &str)> = vec![
        (b"{this is not json".to_vec(), "not a valid event envelope"),
        (
            serde_json::to_vec(&unknown_type).unwrap(),
            "unknown eventType",
        ),
        (
            serde_json::to_vec(&future_version).unwrap(),
            "unsupported version 2",
        ),
        (
            serde_json::to_vec(&invalid_payload).unwrap(),
            "invalid OrderCreated payload",
        ),
    ];
    let mut placed = Vec::new();
    for (payload, _) in &poisons {
        placed.push(stack.publish_raw(&topic, key, payload).await);
    }

    stack
        .post_order(
            &json!({"orderId": key, "userId": "gus", "items": [{"sku": "widget", "quantity": 1}]}),
        )
        .await;
    assert_eq!(stack.wait_until_terminal(key).await["status"], "CONFIRMED");

    // Both consumers of the topic (inventory and notification) dead-letter each poison.
    let letters = wait_for_dead_letters(&stack, &topic, 2 * poisons.len()).await;
    assert_eq!(letters.len(), 2 * poisons.len());
    for ((_, expected_error), (partition, offset)) in poisons.iter().zip(&placed) {
        let copies: Vec<&DeadLetter> = letters
            .iter()
            .filter(|l| l.original_offset.as_deref() == Some(offset.to_string().as_str()))
            .collect();
        let mut services: Vec<&str> = copies
            .iter()
            .map(|l| l.service.as_deref().unwrap())
            .collect();
        services.sort();
        assert_eq!(services, ["inventory-service", "notification-service"]);
        for letter in copies {
            assert_eq!(letter.original_topic.as_deref(), Some(topic.as_str()));
            assert_eq!(
                letter.original_partition.as_deref(),
                Some(partition.to_string().as_str())
            );
            assert_eq!(letter.key.as_deref(), Some(key));
            let error = letter.error.as_deref().unwrap();
            assert!(
                error.contains(expected_error),
                "{error:?} should mention {expected_error:?}"
            );
        }
    }

    // Each dead letter is counted, per service and topic, on /metrics.
    let metrics = stack.metrics(&stack.inventory_url("")).await;
    let counted = metrics
        .lines()
        .find(|line| {
            line.starts_with("events_dead_lettered_total{")
                && line.contains(r#"service="inventory-service""#)
                && line.contains(&format!(r#"topic="{topic}""#))
        })
        .unwrap_or_else(|| panic!("no dead-letter counter in:\n{metrics}"));
    assert!(
        counted.ends_with(&format!(" {}", poisons.len())),
        "{counted}"
    );

    // The poison changed nothing: only the real order took stock.
    let sold = stack.wait_until_settled("widget").await["sold"].clone();
    assert_eq!(sold, 1);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_for_an_unknown_order_is_dead_lettered_by_order_service() {
    let stack = TestStack::start().await;
    let topic = stack.topics.inventory_reserved.clone();
    let mut ghost = order_created("ghost");
    ghost["eventType"] = json!("InventoryReserved");
    ghost["payload"] = json!({"userId": "mallory", "outcome": "REJECTED", "reason": "OUT_OF_STOCK", "detail": "none left"});
    stack
        .publish_raw(&topic, "ghost", &serde_json::to_vec(&ghost).unwrap())
        .await;

    let letters = wait_for_dead_letters(&stack, &topic, 1).await;
    assert_eq!(letters[0].service.as_deref(), Some("order-service"));
    assert!(
        letters[0]
            .error
            .as_deref()
            .unwrap()
            .contains("no order ghost"),
        "{letters:?}"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_puts_dead_letters_back_on_their_topic_once() {
    let stack = TestStack::start().await;
    let topic = stack.topics.payment_processed.clone();
    // A payment outcome for an order nobody knows: inventory-service and
    // order-service both refuse it.
    let mut orphan = order_created("orphan");
    orphan["eventType"] = json!("PaymentProcessed");
    orphan["payload"] = json!({"userId": "mallory", "amountCents": 5, "outcome": "APPROVED"});
    let (partition, first_offset) = stack
        .publish_raw(&topic, "orphan", &serde_json::to_vec(&orphan).unwrap())
        .await;
    wait_for_dead_letters(&stack, &topic, 2).await;

    let replayed = dlq::replay(&stack.kafka_admin, &topic)
        .await
        .expect("replay");
    assert_eq!(
        replayed, 1,
        "one message, refused by two services: one copy goes back, for both"
    );

    // The replayed copy is back on the topic, right after the original, and
    // both consumers process it again (and, the cause not being fixed,
    // dead-letter it again: 1 copy x 2 services).
    stack
        .wait_until_consumed("order-service", &topic, partition, first_offset + 1)
        .await;
    let letters = wait_for_dead_letters(&stack, &topic, 4).await;
    let copy_offset = (first_offset + 1).to_string();
    let of_copy = letters
        .iter()
        .filter(|l| l.original_offset.as_deref() == Some(copy_offset.as_str()))
        .count();
    assert_eq!(
        (letters.len(), of_copy),
        (4, 2),
        "two new letters, both of the copy"
    );

    // Replay remembers its progress: only the copy's letters are new, and
    // they go back as one message.
    let again = dlq::replay(&stack.kafka_admin, &topic)
        .await
        .expect("replay again");
    assert_eq!(again, 1, "progress is remembered");
    stack.shutdown().await;
}
