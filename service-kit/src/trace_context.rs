//! W3C trace context (`traceparent`) carried across services, so one order's
//! spans in all four services share a trace id.
//!
//! The context travels in the `traceparent` header of HTTP requests and Kafka
//! messages (`00-<trace id>-<span id>-<flags>`). It enters a service in two
//! places, both in this crate: the HTTP middleware ([`crate::http`]) and the
//! consumer loop ([`crate::consumer`]), which make their span a child of the
//! incoming context with [`continue_trace`] (or start a new trace). It leaves
//! through the outbox: [`crate::outbox::Outbox::enqueue`] stores
//! [`current_traceparent`] next to the event, and the relay publishes it as a
//! Kafka header. So an event written while handling a request or another
//! event continues that trace, whatever the service code between them.
//!
//! Span ids come from the OpenTelemetry layer that [`crate::telemetry`]
//! always installs, exporting or not, so the ids in headers are the ids of
//! exported spans.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Header (HTTP and Kafka) carrying the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The name of the span field that shows the trace id in log lines. Spans
/// passed to [`continue_trace`] declare it as `trace_id = tracing::field::Empty`.
pub const TRACE_ID_FIELD: &str = "trace_id";

/// A carrier holding just the `traceparent` value.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        key.eq_ignore_ascii_case(TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Makes `span` a child of the remote span `traceparent` names, if it is a
/// valid W3C trace context; otherwise `span` starts a new trace. Records the
/// trace id in the span's `trace_id` field so every log line inside shows it.
/// Call before `span` is first entered.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(value) = traceparent {
        let parent = TraceContextPropagator::new().extract(&Traceparent(value.trim()));
        if parent.span().span_context().is_valid() {
            // Fails only without the OpenTelemetry layer (then there is
            // nothing to continue) or once the span has started.
            let _ = span.set_parent(parent);
        }
    }
    if let Some(trace_id) = trace_id(span) {
        span.record(TRACE_ID_FIELD, tracing::field::display(trace_id));
    }
}

/// The trace id of `span` (32 hex digits), if it has one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The `traceparent` naming `span`, to hand on to whatever it causes.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The `traceparent` of the current span: what an event written now carries.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with_tracing<T>(f: impl FnOnce() -> T) -> T {
        let provider = crate::telemetry::tracer_provider("test", None).unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(crate::telemetry::tracer(&provider)));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn span() -> tracing::Span {
        tracing::info_span!("work", trace_id = tracing::field::Empty)
    }

    #[test]
    fn a_valid_traceparent_becomes_the_parent() {
        with_tracing(|| {
            let span = span();
            continue_trace(&span, Some(PARENT));
            assert_eq!(
                trace_id(&span).as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );
            let handed_on = traceparent_of(&span).unwrap();
            assert!(
                handed_on.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{handed_on}"
            );
            assert!(!handed_on.contains("00f067aa0ba902b7"), "a new span id");
        });
    }

    #[test]
    fn without_a_valid_traceparent_a_new_trace_starts() {
        with_tracing(|| {
            for header in [
                None,
                Some("garbage"),
                Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            ] {
                let span = span();
                continue_trace(&span, header);
                let id = trace_id(&span).expect("a new trace id");
                assert_eq!(id.len(), 32);
                assert_ne!(id, "00000000000000000000000000000000");
            }
        });
    }

    #[test]
    fn work_inside_a_span_hands_on_its_trace() {
        with_tracing(|| {
            let span = span();
            continue_trace(&span, Some(PARENT));
            let inner = span.in_scope(|| {
                let child = tracing::info_span!("step");
                child.in_scope(current_traceparent)
            });
            assert!(inner
                .unwrap()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        });
    }

    #[test]
    fn without_the_layer_nothing_is_handed_on() {
        let span = span();
        continue_trace(&span, Some(PARENT));
        assert_eq!(traceparent_of(&span), None);
    }
}
