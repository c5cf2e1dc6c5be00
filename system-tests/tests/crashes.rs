//! `kill -9` of any service process in the middle of a stream of orders loses
//! nothing and doubles nothing; SIGTERM stops a service cleanly.

use reqwest::StatusCode;
use serde_json::json;
use system_tests::processes::ProcessStack;
use system_tests::wait_for;

const STOCK: i64 = 10_000;
const PRICE: i64 = 100;
const UNITS_PER_ORDER: i64 = 3;
const ORDERS_PER_ROUND: usize = 8;

/// POSTs an order, retrying while order-service is down: a retry of an order
/// that was in fact stored gets 200, never a second order.
async fn place(stack: &ProcessStack, order_id: &str) {
    let body = json!({"orderId": order_id, "userId": format!("user-{order_id}"), "items": [{"sku": "widget", "quantity": UNITS_PER_ORDER}]});
    wait_for(&format!("{order_id} to be accepted"), || async {
        let sent = stack
            .http
            .post(stack.order_url("/api/orders"))
            .json(&body)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        match sent.map(|r| r.status()) {
            Ok(StatusCode::CREATED | StatusCode::OK) => Some(()),
            Ok(status) if status.is_client_error() => panic!("{order_id} refused: {status}"),
            _ => None,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_any_service_mid_stream_loses_and_doubles_nothing() {
    let mut stack = ProcessStack::start().await;
    stack.put_product("widget", PRICE, STOCK).await;

    let mut placed = Vec::new();
    for round in 0..4 {
        // Orders in flight, then the round's victim dies without warning and
        // comes back while more orders arrive.
        for i in 0..ORDERS_PER_ROUND {
            let id = format!("r{round}-{i}");
            place(&stack, &id).await;
            placed.push(id);
        }
        let victim = &mut stack.all_mut()[round];
        victim.kill();
        victim.restart();
        for i in ORDERS_PER_ROUND..2 * ORDERS_PER_ROUND {
            let id = format!("r{round}-{i}");
            place(&stack, &id).await;
            placed.push(id);
        }
    }

    for id in &placed {
        let order = stack.wait_until_terminal(id).await;
        assert_eq!(order["status"], "CONFIRMED", "{order}");
    }
    let confirmed = placed.len() as i64;

    // Stock is conserved exactly and nothing was sold twice.
    let widget = stack.wait_until_settled("widget").await;
    assert_eq!(widget["sold"], confirmed * UNITS_PER_ORDER, "{widget}");
    assert_eq!(
        widget["available"],
        STOCK - confirmed * UNITS_PER_ORDER,
        "{widget}"
    );

    // One payment per order, each customer charged once.
    let (payments, charged): (i64, i64) =
        sqlx::query_as("SELECT count(*), COALESCE(sum(amount_cents), 0)::bigint FROM payments.payments WHERE status = 'APPROVED'")
            .fetch_one(&stack.db)
            .await
            .unwrap();
    assert_eq!(payments, confirmed);
    assert_eq!(charged, confirmed * UNITS_PER_ORDER * PRICE);
    let overcharged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payments.accounts WHERE credit_cents <> 100000 - $1",
    )
    .bind(UNITS_PER_ORDER * PRICE)
    .fetch_one(&stack.db)
    .await
    .unwrap();
    assert_eq!(overcharged, 0);

    // Exactly one "received" and one "confirmed" notification per order.
    let what = format!("{} notifications", 2 * confirmed);
    wait_for(&what, || async {
        let notes: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications.notifications")
            .fetch_one(&stack.db)
            .await
            .unwrap();
        assert!(
            notes <= 2 * confirmed,
            "{notes} notifications for {confirmed} orders"
        );
        (notes == 2 * confirmed).then_some(())
    })
    .await;

    // SIGTERM: every service finishes what it holds and exits successfully.
    for process in stack.all_mut() {
        let status = process.terminate();
        assert!(status.success(), "{} exited with {status}", process.name);
    }
}
