//! The live API: an order's status as Server-Sent Events, and long polls
//! that answer when the order reaches a status.
//!
//! To see an order while it is still PENDING, a test holds the lock on the
//! catalog row its item needs: inventory-service waits for that lock before it
//! can reserve, so the saga stays put until the test lets go.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Postgres, Transaction};
use system_tests::{TestStack, DEADLINE};

/// One Server-Sent Event.
#[derive(Debug, Default)]
struct SseEvent {
    event: String,
    id: String,
    data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// Reads events off a `text/event-stream` response; comments (keep-alives) are skipped.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn open(stack: &TestStack, order_id: &str) -> SseReader {
        let response = stack
            .http
            .get(stack.order_url(&format!("/api/orders/{order_id}/events")))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .expect("GET events");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, or `None` once the server has closed the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                for line in block.lines() {
                    if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "event" => event.event = value.to_owned(),
                            "id" => event.id = value.to_owned(),
                            "data" => event.data.push_str(value),
                            _ => {} // a comment (keep-alive) or a field we ignore
                        }
                    }
                }
                if !event.event.is_empty() || !event.data.is_empty() {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(DEADLINE, self.response.chunk())
                .await
                .expect("the event stream went silent")
                .expect("reading the event stream")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

/// Holds the lock on `sku`'s catalog row until committed: no order for it
/// can be reserved meanwhile.
async fn hold_stock(stack: &TestStack, sku: &str) -> Transaction<'static, Postgres> {
    let mut tx = stack.db.begin().await.expect("BEGIN");
    sqlx::query("SELECT 1 FROM inventory.products WHERE sku = $1 FOR UPDATE")
        .bind(sku)
        .execute(&mut *tx)
        .await
        .expect("locking the product");
    tx
}

async fn place(stack: &TestStack, order_id: &str, sku: &str) {
    let (status, body) = stack
        .post_order(&json!({
            "orderId": order_id, "userId": "alice",
            "items": [{"sku": sku, "quantity": 1}]
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// GETs `path` on order-service; returns the status, the `Wait-Result` header and the body.
async fn get_order(stack: &TestStack, path: &str) -> (StatusCode, Option<String>, Value) {
    let response = stack
        .http
        .get(stack.order_url(path))
        .send()
        .await
        .expect("GET");
    let status = response.status();
    let wait_result = response
        .headers()
        .get("wait-result")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        wait_result,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_follows_an_order_from_pending_to_confirmed_and_ends() {
    let stack = TestStack::start().await;
    stack.put_product("widget", 1_999, 10).await;
    let held = hold_stock(&stack, "widget").await;
    place(&stack, "live-1", "widget").await;

    let mut events = SseReader::open(&stack, "live-1").await;
    let first = events.next().await.expect("the current status at once");
    assert_eq!(
        (first.event.as_str(), first.id.as_str()),
        ("status", "PENDING")
    );
    let order = first.json();
    assert_eq!(
        (&order["orderId"], &order["status"], &order["userId"]),
        (&json!("live-1"), &json!("PENDING"), &json!("alice"))
    );
    assert!(order["updatedAt"].is_string(), "{order}");

    held.commit().await.expect("releasing the product");
    let mut statuses = vec![first.id];
    while let Some(event) = events.next().await {
        assert_eq!(event.event, "status");
        assert_eq!(event.json()["status"], event.id.as_str(), "{}", event.data);
        statuses.push(event.id);
    }

    // RESERVED may be overtaken by CONFIRMED (payment news can come first,
    // or both before the stream read the order), but nothing goes backwards.
    assert!(
        statuses == ["PENDING", "RESERVED", "CONFIRMED"] || statuses == ["PENDING", "CONFIRMED"],
        "{statuses:?}"
    );
    let confirmed = stack.order("live-1").await;
    assert_eq!(confirmed["status"], "CONFIRMED");

    let metrics = stack
        .http
        .get(stack.order_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("order_status_transitions_total")
                && line.contains(r#"to="CONFIRMED""#)),
        "{metrics}"
    );
    assert!(
        metrics.contains("saga_duration_seconds_bucket"),
        "{metrics}"
    );

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_order_streams_its_final_status_and_a_reconnect_is_told_to_stop() {
    let stack = TestStack::start().await;
    stack
        .post_order(&json!({"orderId": "live-done", "userId": "bob"}))
        .await;
    stack.wait_until_terminal("live-done").await;

    let mut events = SseReader::open(&stack, "live-done").await;
    let only = events.next().await.expect("the final status");
    assert_eq!(only.id, "CONFIRMED");
    assert!(events.next().await.is_none(), "the stream ends");

    // An EventSource reconnects after the stream ends; 204 tells it to stop.
    let again = stack
        .http
        .get(stack.order_url("/api/orders/live-done/events"))
        .header("Last-Event-ID", "CONFIRMED")
        .send()
        .await
        .expect("GET events");
    assert_eq!(again.status(), StatusCode::NO_CONTENT);

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_with_the_current_state_at_the_timeout_and_as_soon_as_confirmed() {
    let stack = TestStack::start().await;
    stack.put_product("gadget", 500, 10).await;
    let held = hold_stock(&stack, "gadget").await;
    place(&stack, "poll-1", "gadget").await;

    // The order cannot move while the stock is held: the poll runs out.
    let (status, waited, order) = get_order(
        &stack,
        "/api/orders/poll-1?waitFor=CONFIRMED,REJECTED,PAYMENT_FAILED&timeout=300ms",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(waited.as_deref(), Some("timeout"));
    assert_eq!(
        (&order["orderId"], &order["status"]),
        (&json!("poll-1"), &json!("PENDING"))
    );

    let poll = {
        let http = stack.http.clone();
        let url = stack
            .order_url("/api/orders/poll-1?waitFor=CONFIRMED,REJECTED,PAYMENT_FAILED&timeout=25s");
        tokio::spawn(async move {
            let response = http.get(url).send().await.expect("long poll");
            let waited = response.headers().get("wait-result").cloned();
            (
                response.status(),
                waited,
                response.json::<Value>().await.expect("JSON"),
            )
        })
    };
    held.commit().await.expect("releasing the stock");
    let (status, waited, order) = tokio::time::timeout(DEADLINE, poll)
        .await
        .expect("the long poll answers")
        .expect("the long poll task");
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(waited.unwrap(), "reached");
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["totalCents"], 500);

    // A terminal status that is not waited for will never change: no waiting.
    let (status, waited, order) =
        get_order(&stack, "/api/orders/poll-1?waitFor=REJECTED&timeout=25s").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(waited.as_deref(), Some("unreachable"));
    assert_eq!(order["status"], "CONFIRMED");

    // Without waitFor it is the plain read, with no Wait-Result.
    let (status, waited, _) = get_order(&stack, "/api/orders/poll-1").await;
    assert_eq!((status, waited), (StatusCode::OK, None));

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_ends_open_streams() {
    let mut stack = TestStack::start().await;
    // Without payment-service the order never gets past RESERVED.
    stack.payment.stop().await.expect("payment-service stops");
    stack
        .post_order(&json!({"orderId": "live-stuck", "userId": "dave"}))
        .await;
    let mut events = SseReader::open(&stack, "live-stuck").await;
    let first = events.next().await.expect("the current status");
    assert!(
        ["PENDING", "RESERVED"].contains(&first.id.as_str()),
        "{first:?}"
    );

    // A stream that would never end by itself must not keep the server up.
    tokio::time::timeout(DEADLINE, stack.shutdown())
        .await
        .expect("shutdown completes with a stream open");
    while let Some(event) = events.next().await {
        assert_eq!(event.id, "RESERVED", "{event:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_orders_and_bad_parameters_get_problems() {
    let stack = TestStack::start().await;
    stack
        .post_order(&json!({"orderId": "known", "userId": "carol"}))
        .await;

    for path in [
        "/api/orders/nobody/events",
        "/api/orders/nobody?waitFor=CONFIRMED&timeout=1s",
    ] {
        let response = stack
            .http
            .get(stack.order_url(path))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }

    for (query, field) in [
        ("waitFor=SHIPPED", "waitFor"),
        ("waitFor=CONFIRMED,", "waitFor"),
        ("waitFor=CONFIRMED&timeout=soon", "timeout"),
        ("waitFor=CONFIRMED&timeout=1h", "timeout"),
        ("waitFor=CONFIRMED&timeout=600s", "timeout"),
        ("timeout=soon", "timeout"),
    ] {
        let (status, waited, problem) =
            get_order(&stack, &format!("/api/orders/known?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert_eq!(problem["field"], field, "{query}: {problem}");
        assert_eq!(problem["status"], 400);
        assert_eq!(waited, None);
    }

    let response = stack
        .http
        .get(stack.order_url("/api/orders/not%20an%20id/events"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    stack.shutdown().await;
}
