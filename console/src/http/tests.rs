//! Router-level tests against a real broker (the embedded one, or Apache
//! Kafka with `TEST_KAFKA=apache`): pages and JSON endpoints answer what the
//! broker holds, and bad input is a clear 4xx, never a 500.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use local_infra::TestKafka;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use service_kit::ServiceConfig;
use tower::ServiceExt;

use crate::{Application, Config};

struct Console {
    _kafka: TestKafka,
    router: axum::Router,
    producer: FutureProducer,
    topic: String,
}

/// Topics with two partitions, each led before this returns.
fn create_topics(kafka: &TestKafka, names: &[&str]) {
    for name in names {
        kafka.create_topic(name, 2).expect("topic created");
    }
}

impl Console {
    async fn start() -> Console {
        let kafka = TestKafka::start().expect("a broker");
        let bootstrap = kafka.bootstrap_servers();
        let topic = format!("console-test-{}", uuid::Uuid::new_v4());
        let dlq = shared_events::topics::dead_letter_topic(&topic);
        create_topics(&kafka, &[&topic, &dlq]);
        let mut config = Config::defaults();
        config.common.kafka.bootstrap_servers = bootstrap.clone();
        config.common.port = 0;
        config.common.host = "127.0.0.1".to_owned();
        config.console_max_message_bytes = 200;
        config.console_order_service_url = "http://127.0.0.1:9".to_owned();
        config.console_inventory_service_url = "http://127.0.0.1:9".to_owned();
        let router = Application::build(config).await.unwrap().router();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        Console {
            _kafka: kafka,
            router,
            producer,
            topic,
        }
    }

    async fn send(&self, key: &str, payload: &[u8]) {
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(key)
                    .payload(payload)
                    .partition(0),
                std::time::Duration::from_secs(10),
            )
            .await
            .expect("sent");
    }

    async fn get(&self, uri: &str) -> (StatusCode, String) {
        let response = self
            .router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Polls `uri` until `done` holds for its body, within a deadline.
    async fn get_until(&self, uri: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (status, body) = self.get(uri).await;
            if status == StatusCode::OK && done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{uri}: {status} {body}"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn lists_topics_with_their_message_counts() {
    let console = Console::start().await;
    console.send("k", b"{}").await;
    let topic = console.topic.clone();
    let body = console
        .get_until("/api/topics", |b| b.contains(&topic))
        .await;
    let topics: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ours = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic.as_str())
        .unwrap();
    assert_eq!(ours["partitions"].as_array().unwrap().len(), 2);
    let (status, page) = console.get("/topics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&topic));
}

#[tokio::test]
async fn decodes_json_shows_text_escaped_and_cuts_oversized_messages() {
    let console = Console::start().await;
    console
        .send("order-1", br#"{"eventId":"e1","eventType":"OrderCreated","orderId":"order-1","correlationId":"e1","producer":"order-service"}"#)
        .await;
    console.send("raw", b"<b>not json</b>").await;
    console.send("big", "x".repeat(500).as_bytes()).await;
    let uri = format!("/api/topics/{}/messages?partition=0", console.topic);
    let body = console
        .get_until(&uri, |b| b.matches("\"offset\"").count() == 3)
        .await;
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(
        messages[0]["body"]["cut"], true,
        "newest first: the oversized one"
    );
    assert_eq!(messages[1]["body"]["shown"]["value"], "<b>not json</b>");
    assert_eq!(messages[2]["envelope"]["eventType"], "OrderCreated");

    let (status, html) = console
        .get(&format!("/topics/{}?partition=0&key=raw", console.topic))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("&lt;b&gt;not json&lt;/b&gt;"));
    assert!(!html.contains("<b>not json"));
}

#[tokio::test]
async fn bad_input_gets_a_clear_answer_never_a_500() {
    let console = Console::start().await;
    let (status, body) = console.get("/api/topics/no-such-topic/messages").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("no-such-topic"));
    let (status, _) = console.get("/topics/no-such-topic").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let topic = console.topic.clone();
    let (status, body) = console
        .get(&format!(
            "/api/topics/{topic}/messages?partition=0&before=99"
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = console
        .get(&format!("/api/topics/{topic}/messages?partition=x"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = console
        .get(&format!("/api/topics/{topic}/messages?partition=7"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = console.get("/orders").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "order-service is not running"
    );
}

#[tokio::test]
async fn shows_a_groups_lag() {
    let console = Console::start().await;
    console.send("k", b"1").await;
    console.send("k", b"2").await;
    let group = format!("console-test-group-{}", uuid::Uuid::new_v4());
    let bootstrap = console._kafka.bootstrap_servers();
    let topic = console.topic.clone();
    let committer_group = group.clone();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &committer_group)
            .create()
            .unwrap();
        let mut offsets = rdkafka::TopicPartitionList::new();
        offsets
            .add_partition_offset(&topic, 0, rdkafka::Offset::Offset(1))
            .unwrap();
        consumer.commit(&offsets, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
    let body = console
        .get_until(&format!("/api/groups/{group}"), |b| {
            b.contains("\"totalLag\":1")
        })
        .await;
    assert!(body.contains(&console.topic));
}

#[tokio::test]
async fn replays_dead_letters() {
    let console = Console::start().await;
    let topic = console.topic.clone();
    let dlq = shared_events::topics::dead_letter_topic(&topic);
    let producer = console.producer.clone();
    producer
        .send(
            FutureRecord::to(&dlq)
                .key("order-9")
                .payload("poison")
                .headers(
                    rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                        key: service_kit::dlq::headers::ERROR,
                        value: Some("not an event"),
                    }),
                ),
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("dead letter sent");
    let page = console
        .get_until(&format!("/dlq/{topic}"), |b| b.contains("not an event"))
        .await;
    assert!(page.contains("order-9"));
    let response = console
        .router
        .clone()
        .oneshot(
            Request::post(format!("/api/dlq/{topic}/replay"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["replayed"],
        1
    );
    console
        .get_until(&format!("/api/topics/{topic}/messages?key=order-9"), |b| {
            b.contains("poison")
        })
        .await;
}

#[tokio::test]
async fn the_dead_letter_page_reads_the_newest_page_not_the_whole_topic() {
    let console = Console::start().await;
    let topic = console.topic.clone();
    let dlq = shared_events::topics::dead_letter_topic(&topic);
    let page_size = crate::Config::defaults().console_page_size;
    let sent = page_size + 10;
    for n in 0..sent {
        console
            .producer
            .send(
                FutureRecord::to(&dlq)
                    .key(&format!("letter-{n}"))
                    .payload("poison")
                    .partition(0),
                std::time::Duration::from_secs(10),
            )
            .await
            .expect("dead letter sent");
    }
    let body = console
        .get_until(&format!("/api/dlq/{topic}"), |b| {
            b.contains(&format!("\"total\":{sent}"))
        })
        .await;
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let letters = listed["letters"].as_array().unwrap();
    assert_eq!(letters.len(), page_size, "one page, not all {sent}");
    assert_eq!(
        letters[0]["key"],
        format!("letter-{}", sent - 1),
        "newest first"
    );
    assert_eq!(
        letters[page_size - 1]["key"],
        format!("letter-{}", sent - page_size)
    );
}
