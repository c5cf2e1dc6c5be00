//! Kafka with SASL_SSL and ACLs: the services log in over TLS, each as
//! itself (SCRAM-SHA-512), and the broker allows each only what the topic
//! table (`shared_events::access::TOPIC_TABLE`) says it does.
//!
//! - the saga runs to CONFIRMED with every service under its ACLs, and the
//!   HTTP APIs checking tokens (`AUTH_MODE=jwt`) as well;
//! - inventory-service's login cannot publish to `order-created`;
//! - a service with a wrong password stays up, says on `/health/ready` that
//!   the login was refused, and logs that once rather than on every retry.
//!
//! They need `TEST_KAFKA=apache` (a JDK and Maven): the embedded broker has
//! no logins or ACLs. Elsewhere they say they were skipped. The
//! wrong-password test runs payment-service's binary, which
//! `cargo test --workspace` (or `cargo build -p payment-service`) builds.

use std::time::{Duration, Instant};

use local_infra::{KafkaCredentials, TestKafkaMode};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use reqwest::StatusCode;
use serde_json::{json, Value};
use service_kit::config::Secret;
use system_tests::processes::ServiceProcess;
use system_tests::{Infra, StackConfigs, StackOptions, TestStack, POLL_INTERVAL};

/// How long a publish may wait for the broker's answer.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the refused service is watched: several of librdkafka's
/// reconnect attempts (its backoff grows to 10 s) fall into it.
const REFUSAL_WATCH: Duration = Duration::from_secs(25);
/// How long the refused service may take to answer `/health/ready` with the reason.
const READINESS_DEADLINE: Duration = Duration::from_secs(60);
/// Lines about the refused login the log may hold after [`REFUSAL_WATCH`]:
/// one report, however often librdkafka retried.
const MAX_REFUSAL_LINES: usize = 1;

/// One secured broker at a time: each is a JVM of its own on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn wanted() -> bool {
    let wanted = TestKafkaMode::from_env().ok() == Some(TestKafkaMode::Apache)
        && std::env::var("KAFKA_BOOTSTRAP_SERVERS").is_err();
    if !wanted {
        eprintln!(
            "skipped: the ACL tests need their own sasl_ssl broker, TEST_KAFKA=apache \
             (a JDK and Maven) without KAFKA_BOOTSTRAP_SERVERS"
        );
    }
    wanted
}

fn secured() -> StackOptions {
    StackOptions {
        secured_kafka: true,
        ..StackOptions::default()
    }
}

fn login(stack: &TestStack, service: &str) -> KafkaCredentials {
    stack
        .kafka()
        .and_then(|kafka| kafka.credentials(service))
        .unwrap_or_else(|| panic!("{service} has a login on the secured broker"))
}

/// Publishes one message as `login`; the broker's verdict.
async fn publish_as(
    login: &KafkaCredentials,
    bootstrap: &str,
    topic: &str,
) -> Result<(), KafkaError> {
    let producer: FutureProducer = login
        .client_config(bootstrap)
        .set(
            "message.timeout.ms",
            PUBLISH_TIMEOUT.as_millis().to_string(),
        )
        .create()
        .expect("a producer");
    producer
        .send(
            FutureRecord::to(topic).key("acl-probe").payload("{}"),
            Timeout::After(PUBLISH_TIMEOUT),
        )
        .await
        .map(|_| ())
        .map_err(|(err, _)| err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_confirms_an_order_with_every_service_under_its_acls_and_auth_on() {
    if !wanted() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    // HTTP tokens too (`AUTH_MODE=jwt`): the whole system locked down at once.
    let issuer = system_tests::TestIssuer::generate("acl-saga");
    let stack = TestStack::start_with(StackOptions {
        auth: Some(issuer.auth.clone()),
        ..secured()
    })
    .await;
    stack.put_product("widget", 1_250, 5).await;

    // alice places her order with her own token.
    let created = reqwest::Client::new()
        .post(stack.order_url("/api/orders"))
        .bearer_auth(issuer.token("alice"))
        .json(&json!({
            "orderId": "o-acl",
            "items": [{"sku": "widget", "quantity": 2}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    let order = stack.wait_until_terminal("o-acl").await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let kinds = stack.wait_for_notifications("o-acl", 2).await;
    assert_eq!(kinds, ["ORDER_RECEIVED", "ORDER_CONFIRMED"]);

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_service_may_not_publish_to_order_created() {
    if !wanted() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = TestStack::start_with(secured()).await;
    let inventory = login(&stack, "inventory-service");

    let refused = publish_as(
        &inventory,
        &stack.kafka_bootstrap,
        &stack.topics.order_created,
    )
    .await
    .expect_err("inventory-service must not publish OrderCreated");
    assert_eq!(
        refused.rdkafka_error_code(),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "{refused}"
    );

    publish_as(
        &inventory,
        &stack.kafka_bootstrap,
        &stack.topics.inventory_reserved,
    )
    .await
    .expect("inventory-service publishes to its own topic");

    stack.shutdown().await;
}

/// Lines of `log` about a refused login.
fn refusal_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.to_lowercase().contains("authentication failed"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_a_wrong_password_stays_up_not_ready_and_says_why_once() {
    if !wanted() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let infra = Infra::start_full(false, None, true)
        .await
        .expect("a secured broker and a database");
    let mut configs = StackConfigs::new(&infra, &StackOptions::default());
    configs.payment.common.kafka.sasl_password = Secret::new("not-the-password");
    let mut payment =
        ServiceProcess::start_capturing("payment-service", &configs.env("payment-service"));
    let http = reqwest::Client::new();
    let ready_url = format!("{}/health/ready", payment.base_url());

    let started = Instant::now();
    let reasons = loop {
        assert!(
            payment.is_running(),
            "payment-service exited:\n{}",
            payment.output()
        );
        if let Ok(response) = http.get(&ready_url).send().await {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or_default();
            assert_ne!(
                status,
                StatusCode::OK,
                "ready with a wrong password: {body}"
            );
            let reasons = body["reasons"].to_string();
            if reasons.contains("authentication failed") {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(body["checks"]["kafka"], "DOWN", "{body}");
                break reasons;
            }
        }
        assert!(
            started.elapsed() < READINESS_DEADLINE,
            "/health/ready never gave the refused login as the reason:\n{}",
            payment.output()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    assert!(reasons.contains("kafka"), "{reasons}");

    // Watched for a while: librdkafka retries the login over and over; the
    // process stays up and not ready, and the log does not fill up.
    let watching = Instant::now();
    while watching.elapsed() < REFUSAL_WATCH {
        assert!(
            payment.is_running(),
            "payment-service exited:\n{}",
            payment.output()
        );
        let status = http
            .get(&ready_url)
            .send()
            .await
            .map(|response| response.status());
        assert!(
            matches!(status, Ok(StatusCode::SERVICE_UNAVAILABLE)),
            "readiness changed to {status:?}"
        );
        tokio::time::sleep(POLL_INTERVAL * 10).await;
    }
    let log = payment.output();
    let lines = refusal_lines(&log);
    assert!(
        !lines.is_empty() && lines.len() <= MAX_REFUSAL_LINES,
        "expected one report of the refused login, got {}:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines[0].contains("Kafka authentication failed"),
        "{}",
        lines[0]
    );
    assert!(!log.contains("not-the-password"), "the password was logged");
    payment.terminate();
}

#[test]
fn refusal_lines_are_counted_whatever_their_case() {
    let log =
        "ERROR Kafka authentication failed: x\nINFO other\nWARN SASL: Authentication failed\n";
    assert_eq!(refusal_lines(log).len(), 2);
}

#[test]
fn the_saga_is_the_minimum_the_grants_allow() {
    // The grants the broker gets are derived from the same table the services
    // subscribe by: a service's subscriptions are exactly what it may read.
    let topics = shared_events::Topics::default();
    let grants = shared_events::access::grants(&topics);
    for service in shared_events::access::SERVICES {
        let readable: Vec<String> = grants
            .iter()
            .filter(|grant| {
                grant.principal == service
                    && grant.operation == shared_events::access::Operation::Read
            })
            .filter_map(|grant| match &grant.resource {
                shared_events::access::Resource::Topic(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        let mut subscribed: Vec<String> = topics
            .consumed_by(service)
            .into_iter()
            .map(str::to_owned)
            .collect();
        subscribed.sort();
        assert_eq!(readable, subscribed, "{service}");
    }
}
