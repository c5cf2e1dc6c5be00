//! Bad input gets a clear 4xx problem+json answer naming the field, never a
//! 5xx, and loses nothing: no order is stored for a refused request.

use reqwest::StatusCode;
use serde_json::{json, Value};
use system_tests::TestStack;

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
    let response = request.send().await.expect("request");
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
async fn invalid_orders_are_refused_with_the_field_named() {
    let stack = TestStack::start().await;
    let url = stack.order_url("/api/orders");
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("missing userId", json!({"orderId": "b1"}), Some("userId")),
        (
            "empty userId",
            json!({"orderId": "b1", "userId": ""}),
            Some("userId"),
        ),
        (
            "userId of wrong type",
            json!({"orderId": "b1", "userId": 7}),
            Some("userId"),
        ),
        (
            "orderId with a slash",
            json!({"orderId": "a/b", "userId": "u"}),
            Some("orderId"),
        ),
        (
            "orderId too long",
            json!({"orderId": "x".repeat(65), "userId": "u"}),
            Some("orderId"),
        ),
        (
            "status other than PENDING",
            json!({"orderId": "b1", "userId": "u", "status": "CONFIRMED"}),
            Some("status"),
        ),
        (
            "zero quantity",
            json!({"userId": "u", "items": [{"sku": "a", "quantity": 0}]}),
            Some("items[0].quantity"),
        ),
        (
            "negative quantity",
            json!({"userId": "u", "items": [{"sku": "a", "quantity": -3}]}),
            Some("items[0].quantity"),
        ),
        (
            "fractional quantity",
            json!({"userId": "u", "items": [{"sku": "a", "quantity": 1.5}]}),
            Some("items[0].quantity"),
        ),
        (
            "quantity as text",
            json!({"userId": "u", "items": [{"sku": "a", "quantity": "2"}]}),
            Some("items[0].quantity"),
        ),
        (
            "missing sku",
            json!({"userId": "u", "items": [{"sku": "a", "quantity": 1}, {"quantity": 1}]}),
            Some("items[1].sku"),
        ),
        (
            "duplicate sku",
            json!({"userId": "u", "items": [{"sku": "a", "quantity": 1}, {"sku": "a", "quantity": 1}]}),
            Some("items[1].sku"),
        ),
        (
            "misspelt field",
            json!({"userId": "u", "items": [{"sku": "a", "quantiy": 1}]}),
            Some("items[0].quantiy"),
        ),
        (
            "items not a list",
            json!({"userId": "u", "items": {"sku": "a"}}),
            Some("items"),
        ),
        ("body not an object", json!(["userId", "u"]), None),
    ];
    for (case, body, field) in cases {
        let got = post_raw(
            &stack,
            &url,
            Some("application/json"),
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        assert_problem(case, &got, 400, field);
    }

    let malformed = post_raw(
        &stack,
        &url,
        Some("application/json"),
        b"{\"userId\": \"u\",".to_vec(),
    )
    .await;
    assert_problem("truncated JSON", &malformed, 400, None);

    let not_json = post_raw(&stack, &url, Some("text/plain"), b"hello".to_vec()).await;
    assert_problem("text body", &not_json, 415, None);
    let no_type = post_raw(&stack, &url, None, b"{}".to_vec()).await;
    assert_problem("no content type", &no_type, 415, None);

    let mut huge = br#"{"userId": "u", "pad": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 70 * 1024));
    huge.extend(b"\"}");
    let too_large = post_raw(&stack, &url, Some("application/json"), huge).await;
    assert_problem("body over 64 KiB", &too_large, 413, None);

    // Nothing of the above was stored.
    let (status, orders) = stack.get_json(&stack.order_url("/api/orders")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(orders, json!([]));
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM orders.outbox")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(unsent, 0);

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lookups_and_filters_get_problems_not_errors() {
    let stack = TestStack::start().await;

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
        (stack.order_url("/api/orders?limit=0"), 400, Some("limit")),
        (
            stack.order_url("/api/orders?limit=many"),
            400,
            Some("limit"),
        ),
        (stack.order_url("/api/no-such-route"), 404, None),
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
        let response = stack.http.get(&url).send().await.unwrap();
        let code = response.status();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        assert_problem(&url, &(code, content_type, body), status, field);
    }

    let response = stack
        .http
        .delete(stack.order_url("/api/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    let put = |body: Value| {
        let stack = &stack;
        async move {
            let response = stack
                .http
                .put(stack.inventory_url("/api/inventory/widget"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let code = response.status();
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            (code, content_type, response.json::<Value>().await.unwrap())
        }
    };
    assert_problem(
        "negative price",
        &put(json!({"priceCents": -1, "available": 1})).await,
        400,
        Some("priceCents"),
    );
    assert_problem(
        "price as float",
        &put(json!({"priceCents": 9.99, "available": 1})).await,
        400,
        Some("priceCents"),
    );
    assert_problem(
        "negative stock",
        &put(json!({"priceCents": 1, "available": -1})).await,
        400,
        Some("available"),
    );
    assert_problem(
        "missing price",
        &put(json!({"available": 1})).await,
        400,
        Some("priceCents"),
    );
    let (status, _) = stack
        .get_json(&stack.inventory_url("/api/inventory/widget"))
        .await;
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
