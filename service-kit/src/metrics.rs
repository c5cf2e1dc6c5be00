//! Prometheus metrics: one registry per process, rendered at `GET /metrics`.
//!
//! Everything is recorded through the `metrics` facade where it happens (HTTP
//! middleware, consumer, outbox relay, the Kafka client's statistics); every
//! series carries the service's name, so several services in one process (the
//! end-to-end tests) stay apart. The series, all documented in the README:
//!
//! | series | type | labels |
//! |---|---|---|
//! | `http_requests_total` | counter | `service`, `method`, `route`, `status` |
//! | `http_request_duration_seconds` | histogram | `service`, `method`, `route`, `status` |
//! | `events_consumed_total` | counter | `service`, `topic`, `outcome` |
//! | `events_published_total` | counter | `service`, `topic` |
//! | `events_retried_total` | counter | `service`, `topic`, `reason` |
//! | `events_dead_lettered_total` | counter | `service`, `topic` |
//! | `kafka_consumer_lag` | gauge | `service`, `topic`, `partition` |
//! | `outbox_unsent_events` | gauge | `service` |
//! | `outbox_oldest_unsent_age_seconds` | gauge | `service` |

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Upper bounds (seconds) of the histogram buckets: from a quick HTTP answer
/// to a slow saga. With buckets set, Prometheus gets real `_bucket` series
/// rather than summaries.
const BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How often histogram samples not yet scraped are folded into their buckets,
/// so memory stays bounded when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The `route` label of a request no route matched (an unknown path would
/// otherwise make a new series per path).
pub const UNMATCHED_ROUTE: &str = "unmatched";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's registry, installed as the global recorder on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS_SECONDS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will stay empty");
        }
        describe();
        let upkeep = handle.clone();
        let _detached = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            });
        handle
    })
}

/// `# HELP` lines for every series.
fn describe() {
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by route template and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time from receiving an HTTP request to answering it"
    );
    describe_counter!(
        "http_tokens_refused_total",
        "Bearer tokens refused (bad signature, expired, wrong issuer or audience, unknown key)"
    );
    describe_counter!(
        "http_requests_limited_total",
        "Write requests refused with 429 because their client went over RATE_LIMIT_PER_SECOND"
    );
    describe_counter!(
        "events_consumed_total",
        "Events taken off a topic, by outcome: applied, duplicate or dead_lettered"
    );
    describe_counter!(
        "events_published_total",
        "Events the outbox relay published and the broker acknowledged"
    );
    describe_counter!(
        "events_retried_total",
        "Failed attempts at applying an event that will be retried, by reason: transient or failed"
    );
    describe_counter!(
        "events_dead_lettered_total",
        "Events moved to a dead-letter topic"
    );
    describe_gauge!(
        "kafka_consumer_lag",
        "Messages on a partition this consumer owns that it has not processed yet"
    );
    describe_gauge!("outbox_unsent_events", "Outbox rows not published yet");
    describe_gauge!(
        "outbox_oldest_unsent_age_seconds",
        Unit::Seconds,
        "Age of the oldest outbox row not published yet; 0 when there is none"
    );
}

/// `GET /metrics`.
pub async fn render() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], handle().render())
}

/// Middleware counting and timing every request by its route template
/// (`/api/orders/{order_id}`, never the raw path) and status. `service` is the
/// service's name.
pub async fn track_http(
    State(service): State<std::sync::Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let route = route_of(&request);
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("service", service.to_string()),
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The route template a request matched, or [`UNMATCHED_ROUTE`].
pub fn route_of<B>(request: &axum::http::Request<B>) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned()
}

/// Events taken off a topic, by what became of them: `applied`,
/// `duplicate` or `dead_lettered`.
pub fn count_refused_token() {
    metrics::counter!("http_tokens_refused_total").increment(1);
}

pub fn count_rate_limited() {
    metrics::counter!("http_requests_limited_total").increment(1);
}

pub fn event_consumed(service: &str, topic: &str, outcome: &'static str) {
    metrics::counter!(
        "events_consumed_total",
        "service" => service.to_owned(),
        "topic" => topic.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

/// Events moved to a dead-letter topic.
pub fn event_dead_lettered(service: &str, topic: &str) {
    metrics::counter!(
        "events_dead_lettered_total",
        "service" => service.to_owned(),
        "topic" => topic.to_owned()
    )
    .increment(1);
}

/// Failed attempts at applying an event, by `transient` (a dependency was
/// down) or `failed` (anything else).
pub fn event_retried(service: &str, topic: &str, reason: &'static str) {
    metrics::counter!(
        "events_retried_total",
        "service" => service.to_owned(),
        "topic" => topic.to_owned(),
        "reason" => reason
    )
    .increment(1);
}

/// Events the outbox relay published (acknowledged by the broker).
pub fn events_published(service: &str, topic: &str, count: u64) {
    metrics::counter!(
        "events_published_total",
        "service" => service.to_owned(),
        "topic" => topic.to_owned()
    )
    .increment(count);
}

/// How far this service's consumer is behind on one partition.
pub fn consumer_lag(service: &str, topic: &str, partition: i32, lag: i64) {
    metrics::gauge!(
        "kafka_consumer_lag",
        "service" => service.to_owned(),
        "topic" => topic.to_owned(),
        "partition" => partition.to_string()
    )
    .set(lag as f64);
}

/// The outbox's backlog: rows not published yet, and the age of the oldest.
pub fn outbox_backlog(service: &str, unsent: i64, oldest_age: Duration) {
    metrics::gauge!("outbox_unsent_events", "service" => service.to_owned()).set(unsent as f64);
    metrics::gauge!("outbox_oldest_unsent_age_seconds", "service" => service.to_owned())
        .set(oldest_age.as_secs_f64());
}
