//! Prometheus metrics: one registry per process, rendered at `GET /metrics`.
//!
//! Counters are recorded through the `metrics` facade where things happen
//! (consumer, outbox relay); every series carries the service's name.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Buckets of every `*_seconds` histogram (durations from milliseconds to
/// minutes), so they are exported as Prometheus histograms that can be
/// summed over instances, not as per-process summaries.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's registry, installed as the global recorder on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will stay empty");
        }
        handle
    })
}

/// `GET /metrics`.
pub async fn render() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], handle().render())
}

/// Events taken off a topic, by what became of them: `applied`,
/// `duplicate` or `dead_lettered`.
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
