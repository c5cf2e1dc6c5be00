//! Per-client write limits (`RATE_LIMIT_PER_SECOND`, `RATE_LIMIT_BURST`): a
//! client that places orders faster than its budget is answered 429
//! problem+json with `Retry-After`, the refused order is not stored, another
//! client keeps its own budget, and reads are never limited.
//!
//! The budget refills at one write a second, so the loop that spends it stops
//! at the first 429 rather than counting on a fixed number of requests
//! fitting in a second.

use reqwest::StatusCode;
use serde_json::{json, Value};
use system_tests::{RateLimitOptions, StackOptions, TestIssuer, TestStack};

const LIMIT: RateLimitOptions = RateLimitOptions {
    per_second: 1,
    burst: 3,
};

/// More writes than the burst plus any refill a slow machine could see
/// while sending them; the loop stops long before, at the first 429.
const MAX_ATTEMPTS: usize = 60;

/// Places orders as `token` (or as nobody) until one is refused; returns the
/// ids stored before the refusal, the refused id and the 429 response.
async fn place_until_limited(
    stack: &TestStack,
    http: &reqwest::Client,
    token: Option<&str>,
    prefix: &str,
    user: &str,
) -> (Vec<String>, String, reqwest::Response) {
    let mut stored = Vec::new();
    for attempt in 0..MAX_ATTEMPTS {
        let order_id = format!("{prefix}-{attempt}");
        let mut request = http
            .post(stack.order_url("/api/orders"))
            .json(&json!({"orderId": order_id, "userId": user}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        match response.status() {
            StatusCode::CREATED => stored.push(order_id),
            StatusCode::TOO_MANY_REQUESTS => return (stored, order_id, response),
            other => panic!(
                "{order_id}: unexpected {other}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    panic!("{MAX_ATTEMPTS} orders in a row were accepted at {LIMIT:?}");
}

/// The 429's headers and problem+json body.
async fn assert_rate_limited(response: reqwest::Response) {
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("a 429 says when to retry")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 429, "{problem}");
    assert_eq!(problem["type"], "/problems/rate-limited", "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_over_budget_is_refused_and_others_keep_theirs() {
    let issuer = TestIssuer::generate("rate-limit");
    let stack = TestStack::start_with(StackOptions {
        auth: Some(issuer.auth.clone()),
        rate_limit: Some(LIMIT),
        ..StackOptions::default()
    })
    .await;
    let alice = issuer.token("alice");
    let bob = issuer.token("bob");
    let http = reqwest::Client::new();

    let (stored, refused, response) =
        place_until_limited(&stack, &http, Some(&alice), "alice", "alice").await;
    assert!(
        stored.len() >= LIMIT.burst as usize,
        "only {} of a burst of {} accepted",
        stored.len(),
        LIMIT.burst
    );
    assert_rate_limited(response).await;

    // Nothing of the refused request was stored; reads are not limited.
    let missing = http
        .get(stack.order_url(&format!("/api/orders/{refused}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    for order_id in &stored {
        let read = http
            .get(stack.order_url(&format!("/api/orders/{order_id}")))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), StatusCode::OK, "{order_id}");
    }

    // Bob's budget is his own: his first write is accepted at once.
    let placed = http
        .post(stack.order_url("/api/orders"))
        .bearer_auth(&bob)
        .json(&json!({"orderId": "bob-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::CREATED);
    stack.wait_for_status("bob-1", "CONFIRMED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_budget_is_per_address() {
    let stack = TestStack::start_with(StackOptions {
        rate_limit: Some(LIMIT),
        ..StackOptions::default()
    })
    .await;
    let http = reqwest::Client::new();
    let (stored, refused, response) =
        place_until_limited(&stack, &http, None, "anon", "user1").await;
    assert!(stored.len() >= LIMIT.burst as usize, "{stored:?}");
    assert_rate_limited(response).await;
    let (status, _) = stack
        .get_json(&stack.order_url(&format!("/api/orders/{refused}")))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for order_id in &stored {
        stack.wait_for_status(order_id, "CONFIRMED").await;
    }
}
