//! Admission control: while as many orders are in progress as
//! `ORDER_MAX_IN_FLIGHT` allows, or the median one has waited longer than
//! `ORDER_MAX_IN_PROGRESS_AGE_MS`, `POST /api/orders` refuses new ones with
//! a 503 that stores nothing, and admits them again once the backlog drains.
//! Every instance sees the same backlog, because it is read from the
//! database they share.

use std::time::Duration;

use order_service::admission::{Admission, AGE_BOUND_MIN_IN_PROGRESS};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use system_tests::{wait_for, StackOptions, TestStack};

const BOUND: u64 = 2;
const AGE_BOUND: Duration = Duration::from_millis(200);

fn order(id: &str) -> serde_json::Value {
    json!({"orderId": id, "userId": "ada", "items": [{"sku": "widget", "quantity": 1}]})
}

/// The gauge `name` as order-service's `/metrics` shows it.
async fn gauge(stack: &TestStack, name: &str) -> Option<f64> {
    let text = stack.metrics(&stack.order_url("")).await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
}

/// `orders_in_flight` as order-service's `/metrics` shows it.
async fn sampled_in_flight(stack: &TestStack) -> Option<u64> {
    gauge(stack, "orders_in_flight")
        .await
        .map(|value| value as u64)
}

/// A pool on the stack's order schema, as a second instance would have.
async fn second_instance_pool(stack: &TestStack) -> PgPool {
    let options = (*stack.db.connect_options())
        .clone()
        .options([("search_path", order_service::config::SCHEMA)]);
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap()
}

/// Posts `id` and asserts the refusal: 503, problem+json `overloaded` with
/// Retry-After, nothing stored.
async fn assert_refused(stack: &TestStack, id: &str) {
    let refused = stack
        .http
        .post(stack.order_url("/api/orders"))
        .json(&order(id))
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
    let (status, _) = stack
        .get_json(&stack.order_url(&format!("/api/orders/{id}")))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused order is not stored"
    );
}

/// Retries `id` as a refused client would, until it is admitted, and
/// asserts it is accepted and confirmed.
async fn assert_admitted_on_retry(stack: &TestStack, id: &str) {
    let retried = wait_for("the refused order to be admitted on retry", || async {
        let (status, body) = stack.post_order(&order(id)).await;
        (status != StatusCode::SERVICE_UNAVAILABLE).then_some((status, body))
    })
    .await;
    assert_eq!(retried.0, StatusCode::CREATED, "{}", retried.1);
    assert_eq!(stack.wait_until_terminal(id).await["status"], "CONFIRMED");
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
    assert_refused(&stack, "busy-3").await;
    let metrics = stack.metrics(&stack.order_url("")).await;
    assert!(
        metrics.contains("orders_refused_total{reason=\"in_flight\"}"),
        "{metrics}"
    );

    // Another instance on the same database counts the same backlog.
    let other = Admission::new(BOUND, Duration::ZERO);
    let pool = second_instance_pool(&stack).await;
    assert_eq!(other.refresh(&pool).await.unwrap().in_flight, BOUND);
    assert!(other.check().is_err(), "the second instance refuses too");

    // The backlog drains: orders are admitted again, and the refused one
    // goes through when its client retries.
    stack.start_payment().await;
    for id in ["busy-1", "busy-2"] {
        stack.wait_for_status(id, "CONFIRMED").await;
    }
    assert_admitted_on_retry(&stack, "busy-3").await;
    assert_eq!(other.refresh(&pool).await.unwrap().in_flight, 0);
    assert!(
        other.check().is_ok(),
        "and the second instance admits again"
    );

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_orders_are_refused_while_the_backlog_is_too_old_and_admitted_once_it_drains() {
    let mut stack = TestStack::start_with(StackOptions {
        max_orders_in_flight: 0,
        max_in_progress_age: AGE_BOUND,
        ..StackOptions::default()
    })
    .await;
    let stuck = AGE_BOUND_MIN_IN_PROGRESS;
    stack.put_product("widget", 100, 2 * stuck as i64).await;
    // With payment-service down, accepted orders stay in progress and age.
    stack.stop_payment().await;
    for i in 0..stuck {
        let (status, body) = stack.post_order(&order(&format!("old-{i}"))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    wait_for(
        "the sampler to see the backlog older than the bound",
        || async {
            let in_flight = sampled_in_flight(&stack).await?;
            let age = gauge(&stack, "orders_in_progress_median_age_seconds").await?;
            (in_flight == stuck && age > AGE_BOUND.as_secs_f64()).then_some(())
        },
    )
    .await;

    assert_refused(&stack, "young-1").await;
    let metrics = stack.metrics(&stack.order_url("")).await;
    assert!(
        metrics.contains("orders_refused_total{reason=\"in_progress_age\"}"),
        "{metrics}"
    );
    let other = Admission::new(0, AGE_BOUND);
    let pool = second_instance_pool(&stack).await;
    let backlog = other.refresh(&pool).await.unwrap();
    assert_eq!(backlog.in_flight, stuck);
    assert!(backlog.median_age > AGE_BOUND, "{backlog:?}");
    assert!(other.check().is_err(), "the second instance refuses too");

    stack.start_payment().await;
    for i in 0..stuck {
        stack
            .wait_for_status(&format!("old-{i}"), "CONFIRMED")
            .await;
    }
    assert_admitted_on_retry(&stack, "young-1").await;
    assert_eq!(other.refresh(&pool).await.unwrap().in_flight, 0);
    assert!(
        other.check().is_ok(),
        "and the second instance admits again"
    );

    stack.shutdown().await;
}
