//! Router-level tests of the HTTP plumbing: requests go through a router
//! finished the way every service's is ([`with_common_layers`]) and are
//! answered in-process (`oneshot`), with no server, database or broker.
//!
//! The bodies are shaped like the services' (an order with lines, a product
//! with integer fields, an optional cancellation reason), so each kind of bad
//! input a client can send is checked once here; the end-to-end tests keep
//! to what needs the services themselves.

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;

/// Shaped like `POST /api/orders`: optional scalars, typed lines, nothing else.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewOrder {
    #[allow(dead_code)]
    order_id: Option<String>,
    #[allow(dead_code)]
    user_id: Option<String>,
    items: Option<Vec<Line>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[allow(dead_code)]
    sku: String,
    #[allow(dead_code)]
    quantity: i64,
}

/// Shaped like `PUT /api/inventory/{sku}`: required integers.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Product {
    price_cents: i64,
    #[allow(dead_code)]
    available: i64,
}

/// Shaped like the optional body of a cancellation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cancel {
    reason: Option<String>,
}

/// Shaped like the query of a listing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    #[allow(dead_code)]
    user_id: Option<String>,
    limit: Option<i64>,
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

async fn place(JsonBody(order): JsonBody<NewOrder>) -> Json<Value> {
    Json(json!({ "lines": order.items.map_or(0, |items| items.len()) }))
}

async fn put_product(JsonBody(product): JsonBody<Product>) -> Json<Value> {
    Json(json!({ "priceCents": product.price_cents }))
}

async fn cancel(OptionalJsonBody(body): OptionalJsonBody<Cancel>) -> Json<Value> {
    Json(json!({ "reason": body.and_then(|body| body.reason) }))
}

async fn list(QueryParams(query): QueryParams<Listing>) -> Result<Json<Value>, Problem> {
    let limit = page_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    Ok(Json(json!({ "limit": limit })))
}

/// A query that fails as one does when the pool has no connection to give.
async fn count_while_busy() -> Result<i64, sqlx::Error> {
    Err(sqlx::Error::PoolTimedOut)
}

/// A query that fails as one with a bug does (naming a column that is not there).
async fn count_with_a_bug() -> Result<i64, sqlx::Error> {
    Err(sqlx::Error::ColumnNotFound("secret_column".into()))
}

async fn database_busy() -> Result<Json<Value>, Problem> {
    let count = count_while_busy().await?;
    Ok(Json(json!({ "count": count })))
}

async fn database_bug() -> Result<Json<Value>, Problem> {
    let count = count_with_a_bug().await?;
    Ok(Json(json!({ "count": count })))
}

fn app() -> Router {
    let routes = Router::new()
        .route("/orders", post(place).get(list))
        .route("/products/{sku}", put(put_product))
        .route("/orders/{order_id}/cancel", post(cancel))
        .route("/busy", get(database_busy))
        .route("/bug", get(database_bug));
    with_common_layers(routes, "http-test")
}

/// What came back: status, headers and the body as JSON (`Null` if it is not).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// `method uri` with `body`, declared as `content_type` (or undeclared).
async fn send(method: Method, uri: &str, content_type: Option<&str>, body: &[u8]) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let request = request.body(Body::from(body.to_vec())).unwrap();
    let response = app().oneshot(request).await.expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a complete body");
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// `method uri` with `body` as JSON.
async fn send_json(method: Method, uri: &str, body: &Value) -> Answer {
    let bytes = serde_json::to_vec(body).unwrap();
    send(method, uri, Some("application/json"), &bytes).await
}

/// `GET uri`.
async fn fetch(uri: &str) -> Answer {
    send(Method::GET, uri, None, b"").await
}

/// A problem+json answer with `status`, naming `field` (or no field at all).
fn assert_problem(case: &str, got: &Answer, status: StatusCode, field: Option<&str>) {
    assert_eq!(got.status, status, "{case}: {}", got.body);
    assert_eq!(
        got.headers[header::CONTENT_TYPE],
        "application/problem+json",
        "{case}"
    );
    assert_eq!(got.body["status"], status.as_u16(), "{case}: {}", got.body);
    assert!(
        got.body["type"].is_string() && got.body["title"].is_string(),
        "{case}: {}",
        got.body
    );
    assert!(got.body["detail"].is_string(), "{case}: {}", got.body);
    match field {
        Some(field) => assert_eq!(got.body["field"], field, "{case}: {}", got.body),
        None => assert!(got.body.get("field").is_none(), "{case}: {}", got.body),
    }
}

#[tokio::test]
async fn a_mistyped_missing_or_unknown_body_field_is_named() {
    let cases = [
        (
            "userId of wrong type",
            "/orders",
            json!({"userId": 7}),
            "userId",
        ),
        (
            "fractional quantity",
            "/orders",
            json!({"userId": "u", "items": [{"sku": "a", "quantity": 1.5}]}),
            "items[0].quantity",
        ),
        (
            "quantity as text",
            "/orders",
            json!({"userId": "u", "items": [{"sku": "a", "quantity": "2"}]}),
            "items[0].quantity",
        ),
        (
            "missing sku",
            "/orders",
            json!({"userId": "u", "items": [{"sku": "a", "quantity": 1}, {"quantity": 1}]}),
            "items[1].sku",
        ),
        (
            "misspelt field",
            "/orders",
            json!({"userId": "u", "items": [{"sku": "a", "quantiy": 1}]}),
            "items[0].quantiy",
        ),
        (
            "items not a list",
            "/orders",
            json!({"userId": "u", "items": {"sku": "a"}}),
            "items",
        ),
        (
            "unknown top-level field",
            "/orders",
            json!({"userId": "u", "colour": "red"}),
            "colour",
        ),
        (
            "price as float",
            "/products/widget",
            json!({"priceCents": 9.99, "available": 1}),
            "priceCents",
        ),
        (
            "missing price",
            "/products/widget",
            json!({"available": 1}),
            "priceCents",
        ),
    ];
    for (case, uri, body, field) in cases {
        let method = if uri == "/orders" {
            Method::POST
        } else {
            Method::PUT
        };
        let got = send_json(method, uri, &body).await;
        assert_problem(case, &got, StatusCode::BAD_REQUEST, Some(field));
    }
}

#[tokio::test]
async fn a_body_that_is_not_the_json_expected_is_malformed() {
    let not_an_object = send_json(Method::POST, "/orders", &json!(["userId", "u"])).await;
    assert_problem(
        "body not an object",
        &not_an_object,
        StatusCode::BAD_REQUEST,
        None,
    );

    let truncated = send(
        Method::POST,
        "/orders",
        Some("application/json"),
        b"{\"userId\": \"u\",",
    )
    .await;
    assert_problem("truncated JSON", &truncated, StatusCode::BAD_REQUEST, None);
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_unsupported() {
    let text = send(Method::POST, "/orders", Some("text/plain"), b"hello").await;
    assert_problem("text body", &text, StatusCode::UNSUPPORTED_MEDIA_TYPE, None);

    let untyped = send(Method::POST, "/orders", None, b"{}").await;
    assert_problem(
        "no content type",
        &untyped,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        None,
    );

    let vendor_json = send(
        Method::POST,
        "/orders",
        Some("application/vnd.orders+json; charset=utf-8"),
        b"{\"userId\": \"u\"}",
    )
    .await;
    assert_eq!(vendor_json.status, StatusCode::OK, "{}", vendor_json.body);
}

#[tokio::test]
async fn a_body_over_the_limit_is_too_large() {
    let mut huge = br#"{"userId": "u", "pad": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', MAX_BODY_BYTES + 6 * 1024));
    huge.extend(b"\"}");
    let got = send(Method::POST, "/orders", Some("application/json"), &huge).await;
    assert_problem(
        "body over 64 KiB",
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
    );
}

#[tokio::test]
async fn an_optional_body_may_be_left_out_but_not_be_wrong() {
    let uri = "/orders/o-1/cancel";
    let empty = send(Method::POST, uri, None, b"").await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert_eq!(empty.body, json!({"reason": null}));

    let blank = send(Method::POST, uri, Some("application/json"), b"  \n").await;
    assert_eq!(blank.body, json!({"reason": null}));

    let null = send(Method::POST, uri, Some("application/json"), b"null").await;
    assert_eq!(null.status, StatusCode::OK, "{}", null.body);
    assert_eq!(null.body, json!({"reason": null}));

    let given = send_json(Method::POST, uri, &json!({"reason": "oops"})).await;
    assert_eq!(given.body, json!({"reason": "oops"}));

    let mistyped = send_json(Method::POST, uri, &json!({"reason": 5})).await;
    assert_problem(
        "reason of wrong type",
        &mistyped,
        StatusCode::BAD_REQUEST,
        Some("reason"),
    );

    let text = send(Method::POST, uri, Some("text/plain"), b"reason=bored").await;
    assert_problem("text body", &text, StatusCode::UNSUPPORTED_MEDIA_TYPE, None);
}

#[tokio::test]
async fn query_parameters_and_page_limits_are_checked_and_named() {
    let default = fetch("/orders").await;
    assert_eq!(default.status, StatusCode::OK);
    assert_eq!(default.body, json!({"limit": DEFAULT_LIMIT}));
    let largest = fetch("/orders?userId=u&limit=500").await;
    assert_eq!(largest.body, json!({"limit": MAX_LIMIT}));

    for (case, uri) in [
        ("limit not a number", "/orders?limit=many"),
        ("limit zero", "/orders?limit=0"),
        ("limit above the largest page", "/orders?limit=501"),
    ] {
        assert_problem(
            case,
            &fetch(uri).await,
            StatusCode::BAD_REQUEST,
            Some("limit"),
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problems() {
    let unknown = fetch("/no-such-route").await;
    assert_problem("unknown route", &unknown, StatusCode::NOT_FOUND, None);

    let wrong_method = send(Method::DELETE, "/orders", None, b"").await;
    assert_problem(
        "DELETE on a collection",
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        None,
    );
}

#[tokio::test]
async fn a_transient_database_error_is_unavailable_with_retry_after() {
    let got = fetch("/busy").await;
    assert_problem(
        "pool timed out",
        &got,
        StatusCode::SERVICE_UNAVAILABLE,
        None,
    );
    assert_eq!(
        got.headers[header::RETRY_AFTER],
        TRANSIENT_RETRY_AFTER.as_secs().to_string()
    );
    let said = got.body.to_string();
    assert!(
        !said.contains("pool timed out"),
        "the body hides the cause: {said}"
    );
}

#[tokio::test]
async fn any_other_database_error_is_internal_and_reveals_nothing() {
    let got = fetch("/bug").await;
    assert_problem(
        "column not found",
        &got,
        StatusCode::INTERNAL_SERVER_ERROR,
        None,
    );
    assert!(
        got.headers.get(header::RETRY_AFTER).is_none(),
        "a bug does not pass by waiting"
    );
    let said = got.body.to_string();
    assert!(
        !said.contains("secret_column"),
        "the body hides the cause: {said}"
    );
}

#[test]
fn finds_the_order_in_the_path_or_the_query() {
    let uri = |s: &str| s.parse::<axum::http::Uri>().unwrap();
    assert_eq!(
        order_id_of("/api/orders/{order_id}", &uri("/api/orders/o-1")).as_deref(),
        Some("o-1")
    );
    assert_eq!(
        order_id_of(
            "/api/orders/{orderId}/events",
            &uri("/api/orders/o-2/events")
        )
        .as_deref(),
        Some("o-2")
    );
    assert_eq!(
        order_id_of(
            "/api/notifications",
            &uri("/api/notifications?userId=u&orderId=o-3")
        )
        .as_deref(),
        Some("o-3")
    );
    assert_eq!(
        order_id_of("/api/inventory/{sku}", &uri("/api/inventory/widget")),
        None
    );
    assert_eq!(order_id_of("unmatched", &uri("/nowhere")), None);
}
