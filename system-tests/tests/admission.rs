//! Admission control: while as many orders are in progress as
//! `ORDER_MAX_IN_FLIGHT` allows, `POST /api/orders` refuses new ones with a
//! 503 that stores nothing, and admits them again once the backlog drains.
//! Every instance sees the same backlog, because it is counted in the
//! database they share.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use system_tests::{wait_for, StackOptions, TestStack};

const BOUND: u64 = 2;

fn order(id: &str) -> serde_json::Value {
    json!({"orderId": id, "userId": "ada", "items": [{"sku": "widget", "quantity": 1}]})
}

/// `orders_in_flight` as order-service's `/metrics` shows it.
async fn sampled_in_flight(stack: &TestStack) -> Option<u64> {
    let text = stack.metrics(&stack.order_url("")).await;
    text.lines()
        .find_map(|line| line.strip_prefix("orders_in_flight "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_orders_are_refused_while_the_backlog_is_full_and_admitted_once_it_drains() {
    let mut stack = TestStack::start_with(StackOptions {
        max_orders_in_flight: BOUND,
        ..StackOptions::default()
    })
    .await;
    stack.put_product("widget", 100, 10).await;
    // With payment-service down, accepted orders stay RESERVED: in progress.
    stack.stop_payment().await;
    for id in ["busy-1", "busy-2"] {
        let (status, body) = stack.post_order(&order(id)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        stack.wait_for_status(id, "RESERVED").await;
    }
    wait_for("the sampler to count both orders", || async {
        (sampled_in_flight(&stack).await == Some(BOUND)).then_some(())
    })
    .await;

    // A third is refused: 503, problem+json, Retry-After, nothing stored.
    let refused = stack
        .http
        .post(stack.order_url("/api/orders"))
        .json(&order("busy-3"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/overloaded", "{problem}");
    let (status, _) = stack.get_json(&stack.order_url("/api/orders/busy-3")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused order is not stored"
    );
    let metrics = stack.metrics(&stack.order_url("")).await;
    assert!(
        metrics.contains("orders_refused_total{reason=\"in_flight\"}"),
        "{metrics}"
    );

    // Another instance on the same database counts the same backlog.
    let other = order_service::admission::Admission::new(BOUND);
    let options = (*stack.db.connect_options())
        .clone()
        .options([("search_path", order_service::config::SCHEMA)]);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    assert_eq!(other.refresh(&pool).await.unwrap(), BOUND);
    assert!(other.check().is_err(), "the second instance refuses too");

    // The backlog drains: orders are admitted again, and the refused one
    // goes through when its client retries.
    stack.start_payment().await;
    for id in ["busy-1", "busy-2"] {
        stack.wait_for_status(id, "CONFIRMED").await;
    }
    let retried = wait_for("the refused order to be admitted on retry", || async {
        let (status, body) = stack.post_order(&order("busy-3")).await;
        (status != StatusCode::SERVICE_UNAVAILABLE).then_some((status, body))
    })
    .await;
    assert_eq!(retried.0, StatusCode::CREATED, "{}", retried.1);
    assert_eq!(
        stack.wait_until_terminal("busy-3").await["status"],
        "CONFIRMED"
    );
    assert_eq!(other.refresh(&pool).await.unwrap(), 0);
    assert!(
        other.check().is_ok(),
        "and the second instance admits again"
    );

    stack.shutdown().await;
}
