//! Cancellation and deadlines: a customer may call an order off, an order
//! that cannot finish in time is called off for them, and either way every
//! service undoes its part: stock comes back, credit comes back, nothing is
//! charged later, and the customer is told.

use reqwest::StatusCode;
use serde_json::{json, Value};
use system_tests::{StackOptions, TestStack, WAKE_UPS_ONLY};

const DEFAULT_CREDIT: i64 = 100_000;
const STOCK: i64 = 10;
const PRICE: i64 = 1_000;

/// Places an order for two units of `sku` by `user`.
async fn place(stack: &TestStack, order_id: &str, user: &str, sku: &str) {
    let (status, body) = stack
        .post_order(&json!({
            "orderId": order_id, "userId": user,
            "items": [{"sku": sku, "quantity": 2}]
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Waits until inventory-, payment- and notification-service have all handled
/// the order's cancellation (after which nothing can change its effects), then
/// checks that everything was undone: the order is CANCELLED, `sku` is back to
/// its starting stock, `user` has all their credit, and any payment was refunded.
async fn assert_fully_undone(stack: &TestStack, order_id: &str, user: &str, sku: &str) -> Value {
    let order = stack.wait_for_status(order_id, "CANCELLED").await;
    for schema in ["inventory", "payments", "notifications"] {
        stack
            .wait_until_handled(schema, order_id, "OrderCancelled")
            .await;
    }
    let product = stack.product(sku).await;
    assert_eq!(
        (
            &product["available"],
            &product["reserved"],
            &product["sold"]
        ),
        (&json!(STOCK), &json!(0), &json!(0)),
        "{order_id}: {product}"
    );
    assert_eq!(
        stack.account(user).await["creditCents"],
        DEFAULT_CREDIT,
        "{order_id}: credit not restored"
    );
    if let Some(payment) = stack.payment(order_id).await {
        assert_eq!(payment["status"], "REFUNDED", "{order_id}: {payment}");
    }
    let kinds = stack.wait_for_notifications(order_id, 2).await;
    assert!(kinds.contains(&"ORDER_CANCELLED".to_owned()), "{kinds:?}");
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_order_is_cancelled_and_nothing_is_reserved_for_it_later() {
    let mut stack = TestStack::start().await;
    stack.put_product("widget", PRICE, STOCK).await;
    stack.stop_inventory().await;

    place(&stack, "c-pending", "pam", "widget").await;
    let (status, order) = stack.cancel_order("c-pending", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{order}");
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["reason"], "CUSTOMER_REQUEST");
    assert_eq!(order["cancelledBy"], "CUSTOMER");

    // inventory-service comes back and hears of the order and its cancellation.
    stack.start_inventory().await;
    stack
        .wait_until_handled("inventory", "c-pending", "OrderCreated")
        .await;
    assert_fully_undone(&stack, "c-pending", "pam", "widget").await;
    assert_eq!(stack.payment("c-pending").await, None, "never charged");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_order_is_cancelled_and_ends_uncharged_or_refunded() {
    let mut stack = TestStack::start().await;
    stack.put_product("widget", PRICE, STOCK).await;
    stack.stop_payment().await;

    place(&stack, "c-reserved", "rita", "widget").await;
    stack.wait_for_status("c-reserved", "RESERVED").await;
    assert_eq!(stack.product("widget").await["reserved"], 2);
    let (status, order) = stack
        .cancel_order("c-reserved", Some(&json!({"reason": "found it cheaper"})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{order}");
    assert_eq!(order["reason"], "found it cheaper");

    // payment-service returns to both the reservation and the cancellation,
    // in whichever order its consumer takes them: either it never charges, or
    // it charges and refunds.
    stack.start_payment().await;
    assert_fully_undone(&stack, "c-reserved", "rita", "widget").await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_order_is_cancelled_refunded_and_restocked() {
    // Also shows that placing, consuming and cancelling each wake their relay.
    let stack = TestStack::start_with(StackOptions {
        outbox_poll_interval: WAKE_UPS_ONLY,
        ..StackOptions::default()
    })
    .await;
    stack.put_product("widget", PRICE, STOCK).await;

    place(&stack, "c-confirmed", "carl", "widget").await;
    stack.wait_until_terminal("c-confirmed").await;
    stack.wait_until_settled("widget").await;
    assert_eq!(
        stack.account("carl").await["creditCents"],
        DEFAULT_CREDIT - 2 * PRICE
    );

    let (status, order) = stack
        .cancel_order("c-confirmed", Some(&json!({"reason": "changed my mind"})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{order}");
    assert_eq!(order["status"], "CANCELLED");

    let order = assert_fully_undone(&stack, "c-confirmed", "carl", "widget").await;
    assert_eq!(order["reason"], "changed my mind");
    let payment = stack.payment("c-confirmed").await.expect("a payment");
    assert_eq!(payment["status"], "REFUNDED", "{payment}");
    let kinds = stack.wait_for_notifications("c-confirmed", 4).await;
    assert_eq!(
        kinds,
        [
            "ORDER_RECEIVED",
            "ORDER_CONFIRMED",
            "ORDER_CANCELLED",
            "REFUND_ISSUED"
        ]
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_racing_the_payment_ends_the_same_every_time() {
    let mut stack = TestStack::start().await;
    for sku in [
        "before", "during-0", "during-1", "during-2", "during-3", "after",
    ] {
        stack.put_product(sku, PRICE, STOCK).await;
    }

    // Before: the cancellation is waiting when payment-service first looks.
    stack.stop_payment().await;
    place(&stack, "race-before", "u-before", "before").await;
    stack.wait_for_status("race-before", "RESERVED").await;
    let (status, _) = stack.cancel_order("race-before", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    stack.start_payment().await;

    // During: cancelled the moment the reservation is known, while
    // payment-service is busy with it, or right after the POST.
    for i in 0..4 {
        let id = format!("race-during-{i}");
        place(
            &stack,
            &id,
            &format!("u-during-{i}"),
            &format!("during-{i}"),
        )
        .await;
        if i % 2 == 0 {
            // RESERVED can last less than one poll on a fast broker: the
            // order may be confirmed by the time it is seen past PENDING.
            stack
                .wait_for_status_in(&id, &["RESERVED", "CONFIRMED"])
                .await;
        }
        let (status, body) = stack.cancel_order(&id, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }

    // After: the payment went through and the order was confirmed first.
    place(&stack, "race-after", "u-after", "after").await;
    stack.wait_for_status("race-after", "CONFIRMED").await;
    let (status, _) = stack.cancel_order("race-after", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    assert_fully_undone(&stack, "race-before", "u-before", "before").await;
    for i in 0..4 {
        let id = format!("race-during-{i}");
        assert_fully_undone(
            &stack,
            &id,
            &format!("u-during-{i}"),
            &format!("during-{i}"),
        )
        .await;
    }
    assert_fully_undone(&stack, "race-after", "u-after", "after").await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_past_its_deadline_is_cancelled_and_never_charged() {
    // The deadline job wakes its relay as the consumers do.
    let mut stack = TestStack::start_with(StackOptions {
        saga_deadline_secs: 1,
        outbox_poll_interval: WAKE_UPS_ONLY,
        ..StackOptions::default()
    })
    .await;
    stack.put_product("widget", PRICE, STOCK).await;
    stack.stop_payment().await;

    place(&stack, "c-late", "lou", "widget").await;
    let order = stack.wait_for_status("c-late", "CANCELLED").await;
    assert_eq!(
        (&order["reason"], &order["cancelledBy"]),
        (&json!("TIMEOUT"), &json!("SAGA_DEADLINE"))
    );
    // A customer's cancellation now finds the order already called off.
    let (status, problem) = stack.cancel_order("c-late", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");

    stack.start_payment().await;
    assert_fully_undone(&stack, "c-late", "lou", "widget").await;
    stack
        .wait_until_handled("payments", "c-late", "InventoryReserved")
        .await;
    assert_eq!(
        stack.payment("c-late").await,
        None,
        "charged after the deadline"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_nobody_settles_expires_and_calls_the_order_off() {
    // The expiry job wakes its relay as the consumers do.
    let mut stack = TestStack::start_with(StackOptions {
        reservation_ttl_secs: 1,
        outbox_poll_interval: WAKE_UPS_ONLY,
        ..StackOptions::default()
    })
    .await;
    stack.put_product("widget", PRICE, STOCK).await;
    stack.stop_payment().await;

    place(&stack, "c-expired", "eve", "widget").await;
    let order = stack.wait_for_status("c-expired", "CANCELLED").await;
    assert_eq!(
        (&order["reason"], &order["cancelledBy"]),
        (&json!("TIMEOUT"), &json!("RESERVATION_EXPIRY"))
    );

    stack.start_payment().await;
    assert_fully_undone(&stack, "c-expired", "eve", "widget").await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_refuses_failed_and_unknown_orders_and_repeats_harmlessly() {
    let stack = TestStack::start_with(StackOptions {
        cancel_window_secs: Some(0),
        ..StackOptions::default()
    })
    .await;
    stack.put_product("scarce", PRICE, 1).await;
    stack.put_product("pricey", DEFAULT_CREDIT + 1, 5).await;
    stack.put_product("widget", PRICE, STOCK).await;

    place(&stack, "c-rejected", "rob", "scarce").await;
    assert_eq!(
        stack.wait_until_terminal("c-rejected").await["status"],
        "REJECTED"
    );
    let (status, problem) = stack.cancel_order("c-rejected", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("REJECTED"),
        "{problem}"
    );

    stack
        .post_order(&json!({"orderId": "c-failed", "userId": "pat",
                            "items": [{"sku": "pricey", "quantity": 1}]}))
        .await;
    assert_eq!(
        stack.wait_until_terminal("c-failed").await["status"],
        "PAYMENT_FAILED"
    );
    let (status, _) = stack.cancel_order("c-failed", None).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, problem) = stack.cancel_order("no-such-order", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");

    // With a window of zero, a confirmed order can no longer be cancelled.
    place(&stack, "c-window", "win", "widget").await;
    assert_eq!(
        stack.wait_until_terminal("c-window").await["status"],
        "CONFIRMED"
    );
    let (status, problem) = stack.cancel_order("c-window", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(stack.order("c-window").await["status"], "CONFIRMED");

    let (status, problem) = stack
        .cancel_order("c-window", Some(&json!({"reason": ""})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["field"], "reason");

    // A body that is not JSON is refused, and the order is left alone.
    let response = stack
        .http
        .post(stack.order_url("/api/orders/c-window/cancel"))
        .header("content-type", "text/plain")
        .body("reason=bored")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(stack.order("c-window").await["status"], "CONFIRMED");

    // Cancelling twice: the same answer, one cancellation.
    stack
        .post_order(&json!({"orderId": "c-twice", "userId": "tom"}))
        .await;
    let first = stack
        .cancel_order("c-twice", Some(&json!({"reason": "oops"})))
        .await;
    let second = stack
        .cancel_order("c-twice", Some(&json!({"reason": "oops"})))
        .await;
    assert_eq!(first.0, StatusCode::ACCEPTED, "{}", first.1);
    assert_eq!(second.0, StatusCode::ACCEPTED, "{}", second.1);
    // The saga may still record news about the order between the two calls
    // (its reservation's total), but the cancellation is the same one.
    for field in ["status", "reason", "cancelledBy", "completedAt"] {
        assert_eq!(first.1[field], second.1[field], "{field}");
    }
    let cancellations = stack
        .outbox_events("orders", "c-twice")
        .await
        .into_iter()
        .filter(|(topic, _)| *topic == stack.topics.order_cancelled)
        .count();
    assert_eq!(cancellations, 1);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_tells_what_happened_to_an_order() {
    let stack = TestStack::start().await;
    stack.put_product("widget", PRICE, STOCK).await;

    place(&stack, "t-1", "tia", "widget").await;
    stack.wait_until_terminal("t-1").await;
    let events = stack.timeline("t-1").await;
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["eventType"].as_str().unwrap(),
                e["service"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("OrderCreated", "order-service", "PLACED"),
            ("InventoryReserved", "inventory-service", "RESERVED"),
            ("PaymentProcessed", "payment-service", "APPROVED"),
        ]
    );
    assert!(events.iter().all(|e| e["occurredAt"].is_string()));
    // Each step names the one that caused it: a chain back to OrderCreated.
    assert!(events[0].get("causationId").is_none(), "{:?}", events[0]);
    assert_eq!(events[1]["causationId"], events[0]["eventId"]);
    assert_eq!(events[2]["causationId"], events[1]["eventId"]);

    // A cancellation and its refund join the story.
    stack.cancel_order("t-1", None).await;
    stack
        .wait_until_handled("orders", "t-1", "PaymentRefunded")
        .await;
    let kinds: Vec<String> = stack
        .timeline("t-1")
        .await
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "OrderCreated",
            "InventoryReserved",
            "PaymentProcessed",
            "OrderCancelled",
            "PaymentRefunded"
        ]
    );

    let (status, _) = stack
        .get_json(&stack.order_url("/api/orders/nope/timeline"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    stack.shutdown().await;
}
