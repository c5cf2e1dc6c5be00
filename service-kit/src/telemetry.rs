//! Logging and tracing set-up.
//!
//! - Logs: `RUST_LOG` filters, `LOG_FORMAT` picks human-readable text (the
//!   default) or one JSON object per line. Lines inside a request or an event
//!   carry their span's fields: `trace_id`, and `order_id` where the request
//!   or event is about an order.
//! - Traces: an OpenTelemetry layer is always installed, so every request and
//!   event span has W3C trace and span ids that [`crate::trace_context`] hands
//!   on in HTTP and Kafka headers. Spans are exported over OTLP/HTTP
//!   (protobuf) only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::config::{CommonConfig, LogFormat};

/// Filter used when `RUST_LOG` is not set: our code at info, chatty libraries at warn.
const DEFAULT_FILTER: &str = "info,sqlx=warn,rdkafka=warn,tower_http=info";

/// Path of the traces endpoint under an OTLP/HTTP collector's base URL.
const OTLP_TRACES_PATH: &str = "/v1/traces";

/// Spans at this level and above become OpenTelemetry spans, whatever
/// `RUST_LOG` says: the request and event spans must exist for their trace
/// context to be handed on even when logs are quiet.
const TRACE_LEVEL: LevelFilter = LevelFilter::INFO;

/// Name of the instrumentation scope of our spans.
const TRACER_NAME: &str = "service-kit";

/// The process's tracer provider, kept to flush exported spans at shutdown.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// Whether [`PROVIDER`] exports spans, i.e. whether [`shutdown`] has work to do.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// A tracer provider for `service`. With an `otlp_endpoint` (a collector's
/// base URL, e.g. `http://localhost:4318`) spans are batched and posted to
/// `<endpoint>/v1/traces` from the Tokio runtime, which must be running;
/// without one, spans only get ids and are dropped when they end.
pub fn tracer_provider(
    service: &str,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<SdkTracerProvider> {
    let resource = Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = otlp_endpoint {
        let url = format!("{}{OTLP_TRACES_PATH}", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .build()
            .with_context(|| format!("creating the OTLP exporter for {url}"))?;
        let processor =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        builder = builder.with_span_processor(processor);
    }
    Ok(builder.build())
}

/// The tracer our spans are made with.
pub fn tracer(provider: &SdkTracerProvider) -> Tracer {
    provider.tracer(TRACER_NAME)
}

fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer(provider))
        .with_filter(TRACE_LEVEL)
}

fn env_filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Installs the global subscriber for a service: logs as configured, trace
/// ids always, OTLP export when `otel_exporter_otlp_endpoint` is set (call
/// from within the Tokio runtime then). Safe to call more than once (tests
/// do): later calls leave the first subscriber in place.
pub fn init(config: &CommonConfig) -> anyhow::Result<()> {
    let endpoint = Some(config.otel_exporter_otlp_endpoint.trim()).filter(|e| !e.is_empty());
    let provider = tracer_provider(&config.service_name, endpoint)?;
    // Colours only for a terminal: under devstack or a log collector, output is a pipe.
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format {
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => fmt::layer().json().flatten_event(true).boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(env_filter(DEFAULT_FILTER)))
        .with(otel_layer(&provider))
        .try_init();
    if installed.is_ok() {
        if let Some(url) = endpoint {
            tracing::info!(endpoint = url, "exporting traces over OTLP/HTTP");
            EXPORTING.store(true, Ordering::Relaxed);
        }
        let _ = PROVIDER.set(provider);
    }
    Ok(())
}

/// The subscriber for tests running services in-process: text logs through
/// the test harness (filtered by `RUST_LOG`, else `default_filter`) and the
/// OpenTelemetry layer without export, so trace context propagates as in a
/// service. Later calls leave the first subscriber in place.
pub fn init_for_tests(default_filter: &str) {
    let provider = match tracer_provider("test", None) {
        Ok(provider) => provider,
        Err(_) => return,
    };
    let logs: Box<dyn Layer<Registry> + Send + Sync> = fmt::layer().with_test_writer().boxed();
    let _already_set = tracing_subscriber::registry()
        .with(logs.with_filter(env_filter(default_filter)))
        .with(otel_layer(&provider))
        .try_init();
}

/// Whether spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` was set).
pub fn is_exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Exports the spans still buffered, if exporting. Called once the service
/// has stopped.
pub async fn shutdown() {
    if !is_exporting() {
        return;
    }
    if let Some(provider) = PROVIDER.get() {
        let provider = provider.clone();
        // Shutting down waits for the export, which runs on the runtime:
        // wait off the runtime's worker threads.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}
