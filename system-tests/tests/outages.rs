//! Dependencies going away and coming back: nothing is lost, nothing doubled,
//! health reports the outage and recovers by itself.

use reqwest::StatusCode;
use serde_json::json;
use system_tests::{StackOptions, TestStack};

const ORDERS_BEFORE: usize = 15;
const ORDERS_AFTER: usize = 10;
const STOCK: i64 = 1_000;

async fn post_orders(stack: &TestStack, prefix: &str, count: usize) {
    for i in 0..count {
        let body = json!({"orderId": format!("{prefix}-{i}"), "userId": format!("{prefix}-user-{i}"), "items": [{"sku": "widget", "quantity": 2}]});
        let (status, answer) = stack.post_order(&body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
}

/// Every order confirmed, and every unit accounted for once.
async fn assert_all_confirmed_and_stock_conserved(stack: &TestStack, prefixes: &[(&str, usize)]) {
    let mut confirmed = 0;
    for (prefix, count) in prefixes {
        for i in 0..*count {
            let order = stack.wait_until_terminal(&format!("{prefix}-{i}")).await;
            assert_eq!(order["status"], "CONFIRMED", "{order}");
            confirmed += 1;
        }
    }
    let widget = stack.wait_until_settled("widget").await;
    assert_eq!(widget["sold"], 2 * confirmed, "{widget}");
    assert_eq!(
        widget["available"].as_i64().unwrap() + widget["sold"].as_i64().unwrap(),
        STOCK
    );
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments.payments")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(payments, confirmed, "one payment per order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_delays_orders_but_loses_none() {
    let mut stack = TestStack::start_with(StackOptions {
        private_postgres: true,
        ..StackOptions::default()
    })
    .await;
    if stack.postgres().is_none() {
        eprintln!("skipped: DATABASE_URL points at a server this test cannot stop");
        return stack.shutdown().await;
    }
    stack.put_product("widget", 100, STOCK).await;
    post_orders(&stack, "pg-before", ORDERS_BEFORE).await;

    stack.postgres().unwrap().stop().expect("stopping Postgres");
    let order_url = stack.order.base_url.clone();
    stack
        .wait_for_health(&order_url, StatusCode::SERVICE_UNAVAILABLE)
        .await;
    let during = stack
        .http
        .post(stack.order_url("/api/orders"))
        .json(&json!({"orderId": "pg-during", "userId": "u", "items": []}))
        .send()
        .await
        .expect("POST /api/orders");
    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        during.headers().contains_key("retry-after"),
        "a 503 says when to retry: {:?}",
        during.headers()
    );
    let problem: serde_json::Value = during.json().await.unwrap();
    assert_eq!(problem["status"], 503, "{problem}");

    stack
        .postgres()
        .unwrap()
        .start()
        .expect("starting Postgres again");
    for base in [
        &stack.order.base_url,
        &stack.inventory[0].base_url,
        &stack.payment.base_url,
        &stack.notification.base_url,
    ] {
        stack.wait_for_health(base, StatusCode::OK).await;
    }
    post_orders(&stack, "pg-after", ORDERS_AFTER).await;

    assert_all_confirmed_and_stock_conserved(
        &stack,
        &[("pg-before", ORDERS_BEFORE), ("pg-after", ORDERS_AFTER)],
    )
    .await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_delays_orders_but_loses_none() {
    // The mock refuses connections; a real broker is SIGKILLed and restarted
    // on its data.
    let stack = TestStack::start_with(StackOptions {
        own_kafka_nodes: Some(1),
        ..StackOptions::default()
    })
    .await;
    let Some(kafka) = stack.kafka() else {
        eprintln!("skipped: KAFKA_BOOTSTRAP_SERVERS points at a broker this test cannot stop");
        return stack.shutdown().await;
    };
    stack.put_product("widget", 100, STOCK).await;
    post_orders(&stack, "kafka-before", ORDERS_BEFORE).await;

    tokio::task::block_in_place(|| kafka.take_down()).expect("broker down");
    stack
        .wait_for_health(&stack.order.base_url, StatusCode::SERVICE_UNAVAILABLE)
        .await;
    // Orders are still accepted: they wait in the outbox.
    post_orders(&stack, "kafka-during", ORDERS_AFTER).await;

    tokio::task::block_in_place(|| kafka.bring_up()).expect("broker up");
    stack
        .wait_for_health(&stack.order.base_url, StatusCode::OK)
        .await;

    assert_all_confirmed_and_stock_conserved(
        &stack,
        &[
            ("kafka-before", ORDERS_BEFORE),
            ("kafka-during", ORDERS_AFTER),
        ],
    )
    .await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broker_delays_orders_but_loses_none() {
    let stack = TestStack::start_with(StackOptions {
        own_kafka_nodes: Some(1),
        ..StackOptions::default()
    })
    .await;
    // SIGSTOP: the broker keeps its connections open and answers nothing.
    let Some(kafka) = stack.kafka().and_then(|kafka| kafka.own_apache()) else {
        eprintln!("skipped: a hung broker needs the real one (TEST_KAFKA=apache)");
        return stack.shutdown().await;
    };
    stack.put_product("widget", 100, STOCK).await;
    post_orders(&stack, "hung-before", ORDERS_BEFORE).await;

    kafka.pause_node(1).expect("broker paused");
    stack
        .wait_for_health(&stack.order.base_url, StatusCode::SERVICE_UNAVAILABLE)
        .await;
    post_orders(&stack, "hung-during", ORDERS_AFTER).await;
    kafka.resume_node(1).expect("broker resumed");

    assert_all_confirmed_and_stock_conserved(
        &stack,
        &[
            ("hung-before", ORDERS_BEFORE),
            ("hung-during", ORDERS_AFTER),
        ],
    )
    .await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_request_errors_are_retried_without_loss_or_duplicates() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let stack = TestStack::start().await;
    let Some(kafka) = stack.kafka().and_then(|kafka| kafka.embedded()) else {
        eprintln!(
            "skipped: request errors are injected into the embedded broker only; the real \
             broker's faults (crash, hang, failover) are tested in outages.rs and cluster.rs"
        );
        return stack.shutdown().await;
    };
    stack.put_product("widget", 100, STOCK).await;

    // Retriable errors on produce, fetch and offset commit requests, as a
    // broker under leader elections and timeouts would answer.
    let mock = kafka.mock_cluster();
    let produce_errors = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
    ];
    mock.request_errors(RDKafkaApiKey::Produce, &produce_errors.repeat(3));
    mock.request_errors(
        RDKafkaApiKey::Fetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 4],
    );
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 4],
    );
    drop(mock);

    post_orders(&stack, "errors", ORDERS_BEFORE).await;
    assert_all_confirmed_and_stock_conserved(&stack, &[("errors", ORDERS_BEFORE)]).await;
    stack.shutdown().await;
}
