//! The order saga end to end: four services, a real Kafka client against the
//! embedded broker, a real Postgres.

use reqwest::StatusCode;
use serde_json::{json, Value};
use system_tests::{wait_for, StackOptions, TestStack};

const DEFAULT_CREDIT: i64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_request_ends_confirmed() {
    let stack = TestStack::start().await;

    let (status, created) = stack
        .post_order(&json!({"orderId": "123", "userId": "user1", "status": "PENDING"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "PENDING");

    let order = stack.wait_until_terminal("123").await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["totalCents"], 0);
    assert_eq!(order["items"], json!([]));
    assert_eq!(stack.account("user1").await["creditCents"], DEFAULT_CREDIT);

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_with_stock_is_confirmed_charged_and_announced() {
    let stack = TestStack::start().await;
    stack.put_product("widget", 1_999, 10).await;
    stack.put_product("gadget", 500, 5).await;

    let (status, _) = stack
        .post_order(&json!({
            "orderId": "o-happy", "userId": "alice",
            "items": [{"sku": "widget", "quantity": 3}, {"sku": "gadget", "quantity": 1}]
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let order = stack.wait_until_terminal("o-happy").await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["totalCents"], 3 * 1_999 + 500);
    assert_eq!(order["items"][0]["unitPriceCents"], 1_999);

    // The sale is booked when inventory-service hears of the payment, which
    // may be just after order-service did.
    let widget = stack.wait_until_settled("widget").await;
    assert_eq!(
        (
            widget["available"].as_i64(),
            widget["reserved"].as_i64(),
            widget["sold"].as_i64()
        ),
        (Some(7), Some(0), Some(3))
    );
    let gadget = stack.wait_until_settled("gadget").await;
    assert_eq!(
        (gadget["available"].as_i64(), gadget["sold"].as_i64()),
        (Some(4), Some(1))
    );

    let (status, payment) = stack
        .get_json(&stack.payment_url("/api/payments/o-happy"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(payment["status"], "APPROVED");
    assert_eq!(payment["amountCents"], 3 * 1_999 + 500);
    assert_eq!(
        stack.account("alice").await["creditCents"],
        DEFAULT_CREDIT - (3 * 1_999 + 500)
    );

    let kinds = stack.wait_for_notifications("o-happy", 2).await;
    assert_eq!(kinds, ["ORDER_RECEIVED", "ORDER_CONFIRMED"]);

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_enough_stock_rejects_the_order_and_changes_nothing() {
    let stack = TestStack::start().await;
    stack.put_product("widget", 1_000, 2).await;
    stack.put_product("gadget", 1_000, 9).await;

    stack
        .post_order(&json!({
            "orderId": "o-short", "userId": "bob",
            "items": [{"sku": "gadget", "quantity": 1}, {"sku": "widget", "quantity": 3}]
        }))
        .await;

    let order = stack.wait_until_terminal("o-short").await;
    assert_eq!(order["status"], "REJECTED", "{order}");
    assert_eq!(order["reason"], "OUT_OF_STOCK");
    assert!(
        order["reasonDetail"].as_str().unwrap().contains("widget"),
        "{order}"
    );

    // All or nothing: the line that could have been served was not touched either.
    assert_eq!(stack.product("widget").await["available"], 2);
    assert_eq!(stack.product("gadget").await["available"], 9);
    assert_eq!(stack.product("gadget").await["reserved"], 0);
    let (status, _) = stack
        .get_json(&stack.payment_url("/api/payments/o-short"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(stack.account("bob").await["creditCents"], DEFAULT_CREDIT);
    assert_eq!(
        stack.wait_for_notifications("o-short", 2).await,
        ["ORDER_RECEIVED", "ORDER_REJECTED"]
    );

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_sku_rejects_the_order() {
    let stack = TestStack::start().await;
    stack
        .post_order(&json!({"orderId": "o-unknown", "userId": "bob", "items": [{"sku": "no-such-thing", "quantity": 1}]}))
        .await;
    let order = stack.wait_until_terminal("o-unknown").await;
    assert_eq!(order["status"], "REJECTED");
    assert_eq!(order["reason"], "UNKNOWN_SKU");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_total_above_the_credit_fails_payment_and_releases_the_stock() {
    let stack = TestStack::start().await;
    stack.put_product("gold-watch", 60_000, 5).await;

    stack
        .post_order(&json!({"orderId": "o-poor", "userId": "carol", "items": [{"sku": "gold-watch", "quantity": 2}]}))
        .await;

    let order = stack.wait_until_terminal("o-poor").await;
    assert_eq!(order["status"], "PAYMENT_FAILED", "{order}");
    assert_eq!(order["reason"], "INSUFFICIENT_CREDIT");
    assert_eq!(order["totalCents"], 120_000);

    // The compensation runs after the order is final: wait for the release.
    let released = wait_for("the gold watches to be released", || async {
        let watch = stack.product("gold-watch").await;
        (watch["available"] == 5 && watch["reserved"] == 0).then_some(watch)
    })
    .await;
    assert_eq!(released["sold"], 0);
    assert_eq!(stack.account("carol").await["creditCents"], DEFAULT_CREDIT);
    let (_, payment) = stack
        .get_json(&stack.payment_url("/api/payments/o-poor"))
        .await;
    assert_eq!(payment["status"], "DECLINED");
    assert_eq!(
        stack.wait_for_notifications("o-poor", 2).await,
        ["ORDER_RECEIVED", "PAYMENT_FAILED"]
    );

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_the_same_order_twice_is_safe() {
    let stack = TestStack::start().await;
    stack.put_product("widget", 100, 10).await;
    let body = json!({"orderId": "o-twice", "userId": "dave", "items": [{"sku": "widget", "quantity": 1}]});

    let (first, _) = stack.post_order(&body).await;
    let (second, again) = stack.post_order(&body).await;
    assert_eq!(first, StatusCode::CREATED);
    assert_eq!(second, StatusCode::OK, "{again}");
    assert_eq!(again["orderId"], "o-twice");

    let (conflict, problem) = stack
        .post_order(&json!({"orderId": "o-twice", "userId": "dave", "items": [{"sku": "widget", "quantity": 2}]}))
        .await;
    assert_eq!(conflict, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["status"], 409);

    assert_eq!(
        stack.wait_until_terminal("o-twice").await["status"],
        "CONFIRMED"
    );
    assert_eq!(
        stack.outbox_events("orders", "o-twice").await.len(),
        1,
        "exactly one OrderCreated"
    );
    let widget = stack.wait_until_settled("widget").await;
    assert_eq!(widget["sold"], 1);
    assert_eq!(
        stack.wait_for_notifications("o-twice", 2).await,
        ["ORDER_RECEIVED", "ORDER_CONFIRMED"]
    );

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_delivered_twice_and_out_of_order_changes_nothing() {
    let stack = TestStack::start().await;
    stack.put_product("widget", 700, 10).await;
    stack
        .post_order(&json!({"orderId": "o-dup", "userId": "erin", "items": [{"sku": "widget", "quantity": 2}]}))
        .await;
    assert_eq!(
        stack.wait_until_terminal("o-dup").await["status"],
        "CONFIRMED"
    );
    stack.wait_for_notifications("o-dup", 2).await;
    stack.wait_until_settled("widget").await;
    let before = snapshot(&stack, "o-dup", "erin", "widget").await;

    // Deliver each of the order's events a second time, byte for byte, as a
    // producer retry or a crash before an offset commit would.
    let mut events = stack.outbox_events("orders", "o-dup").await;
    events.extend(stack.outbox_events("inventory", "o-dup").await);
    events.extend(stack.outbox_events("payments", "o-dup").await);
    assert_eq!(
        events.len(),
        3,
        "OrderCreated, InventoryReserved, PaymentProcessed"
    );
    // Newest first: out of order as well as twice.
    for (topic, payload) in events.iter().rev() {
        let (partition, offset) = stack.publish_raw(topic, "o-dup", payload).await;
        for service in consumers_of(&stack, topic) {
            stack
                .wait_until_consumed(service, topic, partition, offset)
                .await;
        }
    }

    assert_eq!(snapshot(&stack, "o-dup", "erin", "widget").await, before);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_orders_for_ten_units_sell_exactly_ten() {
    let stack = TestStack::start_with(StackOptions {
        inventory_instances: 2,
        ..StackOptions::default()
    })
    .await;
    stack.put_product("scarce", 100, 10).await;

    let posts = (0..50).map(|i| {
        let stack = &stack;
        async move {
            let body = json!({"orderId": format!("o-race-{i}"), "userId": format!("buyer-{i}"), "items": [{"sku": "scarce", "quantity": 1}]});
            stack.post_order(&body).await.0
        }
    });
    for status in futures::future::join_all(posts).await {
        assert_eq!(status, StatusCode::CREATED);
    }

    let mut confirmed = 0;
    let mut rejected = 0;
    for i in 0..50 {
        let order = stack.wait_until_terminal(&format!("o-race-{i}")).await;
        match order["status"].as_str().unwrap() {
            "CONFIRMED" => confirmed += 1,
            "REJECTED" => rejected += 1,
            other => panic!("unexpected status {other}: {order}"),
        }
    }
    assert_eq!((confirmed, rejected), (10, 40));
    let scarce = stack.wait_until_settled("scarce").await;
    assert_eq!(
        (scarce["available"].as_i64(), scarce["sold"].as_i64()),
        (Some(0), Some(10))
    );

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_keyed_by_order_and_carry_their_id_and_type_in_headers() {
    let stack = TestStack::start().await;
    stack.put_product("widget", 250, 5).await;
    stack
        .post_order(&json!({"orderId": "o-wire", "userId": "fay", "items": [{"sku": "widget", "quantity": 2}]}))
        .await;
    assert_eq!(
        stack.wait_until_terminal("o-wire").await["status"],
        "CONFIRMED"
    );

    let (headers, created) = stack
        .read_message(&stack.topics.order_created, "o-wire")
        .await;
    assert_eq!(created["eventType"], "OrderCreated");
    assert_eq!(created["version"], 1);
    assert_eq!(created["producer"], "order-service");
    assert_eq!(
        created["payload"],
        json!({"userId": "fay", "items": [{"sku": "widget", "quantity": 2}]})
    );
    assert_eq!(headers["eventId"], created["eventId"].as_str().unwrap());
    assert_eq!(headers["eventType"], "OrderCreated");

    let (_, reserved) = stack
        .read_message(&stack.topics.inventory_reserved, "o-wire")
        .await;
    assert_eq!(reserved["payload"]["outcome"], "RESERVED");
    assert_eq!(reserved["payload"]["totalCents"], 500);
    assert_eq!(reserved["causationId"], created["eventId"]);
    assert_eq!(reserved["correlationId"], created["eventId"]);

    let (headers, paid) = stack
        .read_message(&stack.topics.payment_processed, "o-wire")
        .await;
    assert_eq!(headers["eventType"], "PaymentProcessed");
    assert_eq!(paid["payload"]["outcome"], "APPROVED");
    assert_eq!(paid["causationId"], reserved["eventId"]);
    assert_eq!(paid["correlationId"], created["eventId"]);

    stack.shutdown().await;
}

/// Services whose consumer groups read `topic`.
fn consumers_of<'a>(stack: &TestStack, topic: &str) -> Vec<&'a str> {
    let t = &stack.topics;
    if topic == t.order_created {
        vec!["inventory-service", "notification-service"]
    } else if topic == t.inventory_reserved {
        vec!["payment-service", "order-service", "notification-service"]
    } else {
        vec!["inventory-service", "order-service", "notification-service"]
    }
}

/// Everything a duplicate could disturb.
async fn snapshot(stack: &TestStack, order_id: &str, user: &str, sku: &str) -> Value {
    let mut order = stack.order(order_id).await;
    order.as_object_mut().unwrap().remove("updatedAt");
    json!({
        "order": order,
        "product": stack.product(sku).await,
        "account": stack.account(user).await,
        "payment": stack.get_json(&stack.payment_url(&format!("/api/payments/{order_id}"))).await.1,
        "notifications": stack.notifications(order_id).await,
    })
}
