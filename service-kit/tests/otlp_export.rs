//! With an OTLP endpoint configured, spans go to the collector over HTTP as
//! protobuf, with the trace id they continued. The collector here is a tiny
//! HTTP server in the test that records what it receives.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use service_kit::{telemetry, trace_context};
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt;

/// How long the exporter may take to deliver.
const DEADLINE: Duration = Duration::from_secs(30);

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_posted_to_the_collector_as_otlp_protobuf() {
    let (received, mut posts) = mpsc::unbounded_channel::<(String, Bytes)>();
    let collector = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let received = received.clone();
            async move {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let _ = received.send((content_type, body));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let provider = telemetry::tracer_provider("otlp-export-test", Some(&endpoint)).unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(telemetry::tracer(&provider)));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
        trace_context::continue_trace(&span, Some(&format!("00-{TRACE_ID}-00f067aa0ba902b7-01")));
        span.in_scope(|| tracing::info!("handled"));
    });
    // Flushing waits for the export, which runs on this runtime.
    let flushing = provider.clone();
    tokio::task::spawn_blocking(move || flushing.force_flush())
        .await
        .unwrap()
        .expect("the batch was exported");

    let (content_type, body) = tokio::time::timeout(DEADLINE, posts.recv())
        .await
        .expect("the collector received a POST in time")
        .unwrap();
    assert_eq!(content_type, "application/x-protobuf");
    assert!(
        contains(&body, &hex_bytes(TRACE_ID)),
        "the exported span carries the trace id it continued"
    );
    assert!(contains(&body, b"otlp-export-test"), "the service name");
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
}
