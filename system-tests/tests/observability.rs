//! Watching the system: Prometheus metrics on `/metrics` and one trace per
//! order across the four services.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::{json, Value};
use system_tests::{wait_for, TestStack};

/// One sample line of Prometheus text: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Reads `/metrics` from `base_url` and parses it as Prometheus text,
/// failing on any line that is not well-formed.
async fn scrape(stack: &TestStack, base_url: &str) -> Vec<Sample> {
    let response = stack
        .http
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    parse(&response.text().await.unwrap())
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A strict reader of the text exposition format: every line is empty, a
/// `# HELP name text` or `# TYPE name kind` comment, or a sample
/// `name{label="value",...} number` whose name a `# TYPE` line announced.
fn parse(text: &str) -> Vec<Sample> {
    let mut typed: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (kind, name, rest) = (words.next(), words.next(), words.next());
            let name = name
                .filter(|n| is_name(n))
                .unwrap_or_else(|| panic!("bad comment: {line}"));
            match (kind, rest) {
                (Some("HELP"), _) => {}
                (
                    Some("TYPE"),
                    Some(t @ ("counter" | "gauge" | "histogram" | "summary" | "untyped")),
                ) => typed.push((name.to_owned(), t.to_owned())),
                _ => panic!("bad comment line: {line}"),
            }
            continue;
        }
        let sample = parse_sample(line).unwrap_or_else(|| panic!("malformed sample line: {line}"));
        let family = typed.iter().find(|(name, kind)| {
            sample.name == *name
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| sample.name == format!("{name}{suffix}")))
        });
        assert!(family.is_some(), "sample without a # TYPE line: {line}");
        samples.push(sample);
    }
    samples
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}')?)?),
        None => (series, HashMap::new()),
    };
    is_name(name).then(|| Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y{z}"` (values may hold any character, `\"` and `\\` escaped).
fn parse_labels(text: &str) -> Option<HashMap<String, String>> {
    let mut labels = HashMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        if !is_name(name) {
            return None;
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => value.push(chars.next()?.1),
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.to_owned(), value);
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Some(labels)
}

/// The samples named `name` whose labels include all of `labels`.
fn matching<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The sum of the samples named `name` with `labels`.
fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(samples, name, labels)
        .iter()
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_after_an_order() {
    let stack = TestStack::start().await;
    stack.put_product("widget", 1_000, 5).await;
    let topics = stack.topics.clone();
    let before = scrape(&stack, &stack.order_base).await;

    let (status, _) = stack
        .post_order(&json!({"orderId": "o-metrics", "userId": "alice",
                            "items": [{"sku": "widget", "quantity": 1}]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        stack.wait_until_terminal("o-metrics").await["status"],
        "CONFIRMED"
    );

    // Counters every service moved for this order (the tests of this binary
    // share one registry, so "moved" is "grew").
    let moved: [(&str, Vec<(&str, &str)>); 7] = [
        (
            "http_requests_total",
            vec![
                ("service", "order-service"),
                ("method", "POST"),
                ("route", "/api/orders"),
                ("status", "201"),
            ],
        ),
        (
            "events_published_total",
            vec![
                ("service", "order-service"),
                ("topic", &topics.order_created),
            ],
        ),
        (
            "events_consumed_total",
            vec![
                ("service", "inventory-service"),
                ("topic", &topics.order_created),
                ("outcome", "applied"),
            ],
        ),
        (
            "events_published_total",
            vec![
                ("service", "inventory-service"),
                ("topic", &topics.inventory_reserved),
            ],
        ),
        (
            "events_consumed_total",
            vec![
                ("service", "payment-service"),
                ("topic", &topics.inventory_reserved),
                ("outcome", "applied"),
            ],
        ),
        (
            "events_published_total",
            vec![
                ("service", "payment-service"),
                ("topic", &topics.payment_processed),
            ],
        ),
        (
            "events_consumed_total",
            vec![
                ("service", "order-service"),
                ("topic", &topics.payment_processed),
                ("outcome", "applied"),
            ],
        ),
    ];
    let after = wait_for("every counter to move", || async {
        let now = scrape(&stack, &stack.order_base).await;
        moved
            .iter()
            .all(|(name, labels)| total(&now, name, labels) > total(&before, name, labels))
            .then_some(now)
    })
    .await;

    // Latency is a real histogram, labelled with the route template, never the raw path.
    let buckets = matching(
        &after,
        "http_request_duration_seconds_bucket",
        &[
            ("service", "order-service"),
            ("route", "/api/orders/{order_id}"),
            ("method", "GET"),
        ],
    );
    assert!(
        buckets.len() > 1
            && buckets
                .iter()
                .any(|s| s.labels["le"] == "+Inf" && s.value >= 1.0),
        "GET /api/orders/{{order_id}} has histogram buckets: {buckets:?}"
    );
    assert!(
        !after.iter().any(|s| s
            .labels
            .get("route")
            .is_some_and(|r| r.contains("o-metrics"))),
        "no series is labelled with a raw path"
    );

    // Gauges: the outbox backlog of each publishing service, and the lag of
    // each consumer on the partitions it owns.
    let gauges = wait_for("the backlog and lag gauges", || async {
        let now = scrape(&stack, &stack.order_base).await;
        let present =
            |name: &str, labels: &[(&str, &str)]| !matching(&now, name, labels).is_empty();
        (present("outbox_unsent_events", &[("service", "order-service")])
            && present(
                "outbox_oldest_unsent_age_seconds",
                &[("service", "order-service")],
            )
            && present(
                "kafka_consumer_lag",
                &[
                    ("service", "inventory-service"),
                    ("topic", &topics.order_created),
                ],
            ))
        .then_some(now)
    })
    .await;
    let lag = matching(
        &gauges,
        "kafka_consumer_lag",
        &[
            ("service", "inventory-service"),
            ("topic", &topics.order_created),
        ],
    );
    assert!(
        lag.iter().all(|s| s
            .labels
            .get("partition")
            .is_some_and(|p| p.parse::<i32>().is_ok())),
        "{lag:?}"
    );

    // Each service serves the registry on its own port too.
    for base in [
        &stack.inventory_base,
        &stack.payment_base,
        &stack.notification_base,
    ] {
        assert!(!scrape(&stack, base).await.is_empty());
    }
    stack.shutdown().await;
}

/// The trace id in a `traceparent` header (`00-<trace id>-<span id>-<flags>`).
fn trace_id_of(traceparent: &str) -> &str {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "not a W3C traceparent: {traceparent}");
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len()),
        ("00", 32, 16),
        "{traceparent}"
    );
    parts[1]
}

/// The `traceparent` headers of `order_id`'s events on each saga topic, by
/// event type.
async fn traceparents(stack: &TestStack, order_id: &str) -> HashMap<String, String> {
    let mut found = HashMap::new();
    for topic in [
        &stack.topics.order_created,
        &stack.topics.inventory_reserved,
        &stack.topics.payment_processed,
    ] {
        let (headers, body): (HashMap<String, String>, Value) =
            stack.read_message(topic, order_id).await;
        let event_type = body["eventType"].as_str().unwrap().to_owned();
        let traceparent = headers
            .get("traceparent")
            .unwrap_or_else(|| panic!("{event_type} on {topic} has no traceparent: {headers:?}"));
        found.insert(event_type, traceparent.clone());
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_id_set_on_the_post_travels_with_every_event_of_the_order() {
    let stack = TestStack::start().await;
    stack.put_product("widget", 1_000, 5).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let incoming = format!("00-{trace_id}-00f067aa0ba902b7-01");

    let response = stack
        .http
        .post(stack.order_url("/api/orders"))
        .header("traceparent", &incoming)
        .json(&json!({"orderId": "o-traced", "userId": "alice",
                      "items": [{"sku": "widget", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    // A request without a traceparent starts a trace of its own.
    let (status, _) = stack
        .post_order(&json!({"orderId": "o-fresh", "userId": "bob"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        stack.wait_until_terminal("o-traced").await["status"],
        "CONFIRMED"
    );
    assert_eq!(
        stack.wait_until_terminal("o-fresh").await["status"],
        "CONFIRMED"
    );

    let traced = traceparents(&stack, "o-traced").await;
    for event_type in ["OrderCreated", "InventoryReserved", "PaymentProcessed"] {
        let traceparent = &traced[event_type];
        assert_eq!(
            trace_id_of(traceparent),
            trace_id,
            "{event_type}: {traceparent}"
        );
        assert_ne!(
            traceparent, &incoming,
            "{event_type} comes from a span of its own"
        );
    }

    let fresh = traceparents(&stack, "o-fresh").await;
    let fresh_id = trace_id_of(&fresh["OrderCreated"]);
    assert_ne!(fresh_id, trace_id);
    for (event_type, traceparent) in &fresh {
        assert_eq!(
            trace_id_of(traceparent),
            fresh_id,
            "{event_type}: {traceparent}"
        );
    }
    stack.shutdown().await;
}
