//! The OpenAPI documents of the four services: valid OpenAPI 3.1, every
//! `$ref` resolves, they describe exactly what the services serve — every
//! route the router has, with every method it answers, and nothing it does
//! not — and they state the limits the services enforce on what they accept
//! (`scripts/api-fuzz` holds the services to them with generated requests).

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use service_kit::ServiceConfig;
use system_tests::Infra;
use tower::ServiceExt;

/// Methods probed on every route.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// The paths a router serves, read from its `Debug` output (axum has no API
/// to list routes): the `path_router` part, not the fallback's. Fails rather
/// than finding none if that output changes.
fn served_paths(router: &Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let routes = debug
        .split_once("path_router:")
        .and_then(|(_, rest)| rest.split_once("fallback_router:"))
        .map(|(routes, _)| routes)
        .unwrap_or_else(|| panic!("unexpected Debug output of a Router: {debug}"));
    let mut paths = BTreeSet::new();
    let mut rest = routes;
    while let Some(start) = rest.find("RouteId(") {
        rest = &rest[start..];
        let Some(quote) = rest.find(": \"") else {
            break;
        };
        let after = &rest[quote + 3..];
        let end = after.find('"').expect("a closing quote");
        let path = &after[..end];
        if path.starts_with('/') && !path.contains("__private__axum") {
            paths.insert(path.to_owned());
        }
        rest = &after[end..];
    }
    assert!(
        paths.contains("/health"),
        "could not read the routes from the router's Debug output: {debug}"
    );
    paths
}

/// `{param}` segments filled in, so the request reaches the route's handler.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "probe-1"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn call(router: &Router, method: Method, path: &str) -> axum::response::Response {
    router
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .expect("a request"),
        )
        .await
        .expect("routers are infallible")
}

/// Every `"$ref"` in `value`.
fn refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => found.push(target.clone()),
                    _ => refs(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

/// Checks `router`'s document against what `router` serves; returns it.
async fn check_document(router: &Router, must_have: &[(&str, Method)]) -> Value {
    let response = call(router, Method::GET, "/api-docs/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the document");
    let text = std::str::from_utf8(&bytes).expect("UTF-8");

    // A valid OpenAPI 3.1 document.
    let spec = oas3::from_json(text).expect("the document parses as OpenAPI 3.1");
    spec.validate_version().expect("an OpenAPI 3.1.x version");
    let json: Value = serde_json::from_str(text).expect("JSON");

    // Every reference points at a schema that is there.
    let schemas = json["components"]["schemas"]
        .as_object()
        .expect("component schemas");
    let mut found = Vec::new();
    refs(&json, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {target}"));
        assert!(schemas.contains_key(name), "$ref {target} has no schema");
    }

    // The document's operations, by path.
    let documented: BTreeMap<String, BTreeSet<String>> = spec
        .paths
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(path, item)| {
            let methods = item
                .methods()
                .into_iter()
                .map(|(method, _)| method.as_str().to_owned())
                .collect();
            (path, methods)
        })
        .collect();
    for (path, method) in must_have {
        assert!(
            documented
                .get(*path)
                .is_some_and(|methods| methods.contains(method.as_str())),
            "{method} {path} is not documented"
        );
    }

    // Exactly the routes and methods the router answers (405 = not served).
    let served = served_paths(router);
    let documented_paths: BTreeSet<String> = documented.keys().cloned().collect();
    assert_eq!(
        served, documented_paths,
        "the router's paths (left) and the document's (right) differ"
    );
    for path in &served {
        for method in METHODS {
            let answered = call(router, method.clone(), &concrete(path)).await.status();
            let is_documented = documented[path].contains(method.as_str());
            assert_eq!(
                answered != StatusCode::METHOD_NOT_ALLOWED,
                is_documented,
                "{method} {path}: answered {answered}, documented: {is_documented}"
            );
        }
    }

    // The page showing it.
    let page = call(router, Method::GET, "/api-docs").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = axum::body::to_bytes(page.into_body(), usize::MAX)
        .await
        .expect("the page");
    assert!(std::str::from_utf8(&html)
        .unwrap()
        .contains("/api-docs/openapi.json"));
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_service_documents_every_route_it_serves() {
    let infra = Infra::start(false).await.expect("infrastructure");
    let mut config = order_service::Config::defaults();
    config.common = infra.common("order-service", order_service::config::SCHEMA);
    let host = order_service::Application::build(config)
        .await
        .expect("order-service");

    let doc = check_document(
        host.router(),
        &[
            ("/api/orders", Method::POST),
            ("/api/orders", Method::GET),
            ("/api/orders/{order_id}", Method::GET),
            ("/api/orders/{order_id}/events", Method::GET),
        ],
    )
    .await;

    let get = &doc["paths"]["/api/orders/{order_id}"]["get"];
    let params: Vec<&str> = get["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(params, ["order_id", "waitFor", "timeout"]);
    assert_eq!(
        get["responses"]["400"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    let statuses = &doc["components"]["schemas"]["OrderStatus"]["enum"];
    assert!(statuses
        .as_array()
        .is_some_and(|s| s.contains(&"CONFIRMED".into())));

    // The limits the handlers enforce.
    let order_id = param_schema(&doc, "/api/orders/{order_id}", "get", "order_id");
    assert_eq!(order_id["pattern"], "^[A-Za-z0-9._-]+$");
    assert_eq!(order_id["minLength"], 1);
    assert_eq!(order_id["maxLength"], 64);
    for path in [
        "/api/orders/{order_id}/timeline",
        "/api/orders/{order_id}/events",
    ] {
        assert_eq!(param_schema(&doc, path, "get", "order_id"), order_id);
    }
    assert_eq!(
        param_schema(&doc, "/api/orders/{order_id}/cancel", "post", "order_id"),
        order_id
    );
    let limit = param_schema(&doc, "/api/orders", "get", "limit");
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&1.into(), &500.into())
    );
    let timeout = param_schema(&doc, "/api/orders/{order_id}", "get", "timeout");
    assert!(timeout["pattern"].is_string(), "{timeout}");
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["CancelReason"]["maxLength"], 200);
    assert_eq!(schemas["CancelReason"]["minLength"], 1);
    assert_eq!(schemas["Quantity"]["maximum"], 10_000);
    assert_eq!(
        schemas["CreateOrder"]["required"],
        serde_json::json!(["userId"])
    );
    assert_eq!(schemas["CreateOrder"]["additionalProperties"], false);
    for status in [408, 413, 415, 503] {
        assert!(
            doc["paths"]["/api/orders"]["post"]["responses"][status.to_string()].is_object(),
            "POST /api/orders does not document {status}"
        );
    }
}

/// The schema of parameter `name` of `method path`.
fn param_schema(doc: &Value, path: &str, method: &str, name: &str) -> Value {
    let parameters = doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path} has no parameters"));
    let parameter = parameters
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"));
    parameter["schema"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_service_documents_every_route_it_serves() {
    let infra = Infra::start(false).await.expect("infrastructure");
    let mut config = inventory_service::Config::defaults();
    config.common = infra.common("inventory-service", inventory_service::config::SCHEMA);
    config.inventory_seed_demo_catalog = false;
    let host = inventory_service::Application::build(config)
        .await
        .expect("inventory-service");

    let doc = check_document(
        host.router(),
        &[
            ("/api/inventory", Method::GET),
            ("/api/inventory/{sku}", Method::GET),
            ("/api/inventory/{sku}", Method::PUT),
        ],
    )
    .await;
    assert!(doc["components"]["schemas"]["Product"].is_object());
    assert!(doc["components"]["schemas"]["PutProduct"].is_object());
    let sku = param_schema(&doc, "/api/inventory/{sku}", "put", "sku");
    assert_eq!(sku["pattern"], "^[A-Za-z0-9._-]+$");
    assert_eq!(sku["maxLength"], 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_service_documents_every_route_it_serves() {
    let infra = Infra::start(false).await.expect("infrastructure");
    let mut config = payment_service::Config::defaults();
    config.common = infra.common("payment-service", payment_service::config::SCHEMA);
    let host = payment_service::Application::build(config)
        .await
        .expect("payment-service");

    let doc = check_document(
        host.router(),
        &[
            ("/api/accounts/{user_id}", Method::GET),
            ("/api/accounts/{user_id}", Method::PUT),
            ("/api/payments/{order_id}", Method::GET),
        ],
    )
    .await;
    let user_id = param_schema(&doc, "/api/accounts/{user_id}", "get", "user_id");
    assert_eq!(user_id["pattern"], "^[A-Za-z0-9._-]+$");
    let credit = &doc["components"]["schemas"]["Cents"];
    assert_eq!(credit["minimum"], 0);
    let statuses = &doc["components"]["schemas"]["PaymentStatus"]["enum"];
    assert_eq!(
        statuses,
        &serde_json::json!(["APPROVED", "DECLINED", "REFUNDED"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_service_documents_every_route_it_serves() {
    let infra = Infra::start(false).await.expect("infrastructure");
    let mut config = notification_service::Config::defaults();
    config.common = infra.common("notification-service", notification_service::config::SCHEMA);
    let host = notification_service::Application::build(config)
        .await
        .expect("notification-service");

    let doc = check_document(host.router(), &[("/api/notifications", Method::GET)]).await;
    let limit = param_schema(&doc, "/api/notifications", "get", "limit");
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&1.into(), &1000.into())
    );
    let order_id = param_schema(&doc, "/api/notifications", "get", "orderId");
    assert_eq!(order_id["maxLength"], 64);
}
