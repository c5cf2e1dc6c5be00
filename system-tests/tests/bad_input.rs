//! Bad input gets a clear 4xx problem+json answer naming the field, never a
//! 5xx, and loses nothing: no order is stored for a refused request. These
//! are the refusals that need the services themselves (their validation,
//! their lookups); the shared extractors' refusals are tested at the router
//! in service-kit.

use reqwest::StatusCode;
use serde_json::{json, Value};
use system_tests::TestStack;

/// Status, content type and parsed body (`Null` if it is not JSON).
async fn answer(response: reqwest::Response) -> (StatusCode, String, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

/// Sends a raw body and returns status, content type and parsed body.
async fn post_raw(
    stack: &TestStack,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String, Value) {
    let mut request = stack.http.post(url).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    answer(request.send().await.expect("request")).await
}

fn assert_problem(case: &str, got: &(StatusCode, String, Value), status: u16, field: Option<&str>) {
    let (code, content_type, body) = got;
    assert_eq!(code.as_u16(), status, "{case}: {body}");
    assert_eq!(content_type, "application/problem+json", "{case}");
    assert_eq!(body["status"], status, "{case}: {body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{case}: {body}"
    );
    if let Some(field) = field {
        assert_eq!(body["field"], field, "{case}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_name_the_field_and_store_nothing() {
    let stack = TestStack::start().await;

    // What the services' own rules refuse. How the shared extractors refuse
    // a body or query that does not decode (malformed JSON, a mistyped or
    // missing field, no JSON content type, a body over 64 KiB, a bad limit)
    // and unknown routes and methods is checked in service-kit's router
    // tests (service-kit/src/http/tests.rs).
    let url = stack.order_url("/api/orders");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("missing userId", json!({"orderId": "b1"}), "userId"),
        (
            "empty userId",
            json!({"orderId": "b1", "userId": ""}),
            "userId",
        ),
        (
            "orderId with a slash",
            json!({"orderId": "a/b", "userId": "u"}),
            "orderId",
        ),
        (
            "orderId too long",
            json!({"orderId": "x".repeat(65), "userId": "u"}),
            "orderId",
        ),
        (
            "status other than PENDING",
            json!({"orderId": "b1", "userId": "u", "status": "CONFIRMED"}),
            "status",
        ),
        (
            "zero quantity",
            json!({"userId": "u", "items": [{"sku": "a", "quantity": 0}]}),
            "items[0].quantity",
        ),
        (
            "negative quantity",
            json!({"userId": "u", "items": [{"sku": "a", "quantity": -3}]}),
            "items[0].quantity",
        ),
        (
            "duplicate sku",
            json!({"userId": "u", "items": [{"sku": "a", "quantity": 1}, {"sku": "a", "quantity": 1}]}),
            "items[1].sku",
        ),
        (
            "misspelt field",
            json!({"userId": "u", "items": [{"sku": "a", "quantiy": 1}]}),
            "items[0].quantiy",
        ),
    ];
    for (case, body, field) in cases {
        let got = post_raw(
            &stack,
            &url,
            Some("application/json"),
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        assert_problem(case, &got, 400, Some(field));
    }

    let lookups = [
        (stack.order_url("/api/orders/nope"), 404, None),
        (
            stack.order_url("/api/orders/bad%20id"),
            400,
            Some("orderId"),
        ),
        (
            stack.order_url("/api/orders?status=SHIPPED"),
            400,
            Some("status"),
        ),
        (stack.inventory_url("/api/inventory/nope"), 404, None),
        (stack.payment_url("/api/payments/nope"), 404, None),
        (
            stack.payment_url("/api/accounts/bad%20user"),
            400,
            Some("userId"),
        ),
        (
            stack.notification_url("/api/notifications?orderId=a%2Fb"),
            400,
            Some("orderId"),
        ),
    ];
    for (url, status, field) in lookups {
        let got = answer(stack.http.get(&url).send().await.unwrap()).await;
        assert_problem(&url, &got, status, field);
    }

    let product = stack.inventory_url("/api/inventory/widget");
    for (case, body, field) in [
        (
            "negative price",
            json!({"priceCents": -1, "available": 1}),
            "priceCents",
        ),
        (
            "negative stock",
            json!({"priceCents": 1, "available": -1}),
            "available",
        ),
    ] {
        let got = answer(stack.http.put(&product).json(&body).send().await.unwrap()).await;
        assert_problem(case, &got, 400, Some(field));
    }

    // Nothing of the above was stored.
    let (status, orders) = stack.get_json(&stack.order_url("/api/orders")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(orders, json!([]));
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM orders.outbox")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(unsent, 0);
    let (status, _) = stack.get_json(&product).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no product was created by a refused PUT"
    );

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_database_and_kafka() {
    let stack = TestStack::start().await;
    for base in [
        &stack.order.base_url,
        &stack.inventory[0].base_url,
        &stack.payment.base_url,
        &stack.notification.base_url,
    ] {
        let (status, body) = stack.get_json(&format!("{base}/health")).await;
        assert_eq!(status, StatusCode::OK, "{base}: {body}");
        assert_eq!(
            body,
            json!({"status": "UP", "checks": {"database": "UP", "kafka": "UP"}})
        );
        let (live, _) = stack.get_json(&format!("{base}/health/live")).await;
        assert_eq!(live, StatusCode::OK);
    }
    stack.shutdown().await;
}
