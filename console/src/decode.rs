//! Turns a message's bytes into what a page shows: a JSON envelope decoded
//! and pretty-printed, any other text as text, anything else as hex, always
//! cut to the configured number of bytes. Pure, so every shape of bad input
//! is unit-tested here. Escaping is the templates' job (maud escapes all
//! text it is given), so text here is raw.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::kafka::RawMessage;

/// A message ready to be shown.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decoded {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<DateTime<Utc>>,
    pub key: Option<Shown>,
    pub headers: Vec<(String, Shown)>,
    pub body: Body,
    /// The payload's whole size in bytes.
    pub size: usize,
    /// The envelope's fields, when the payload is one of our events.
    pub envelope: Option<EnvelopeSummary>,
}

/// Bytes as text when they are UTF-8 without control characters, else hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "camelCase")]
pub enum Shown {
    Text(String),
    Hex(String),
}

impl Shown {
    pub fn of(bytes: &[u8]) -> Shown {
        match std::str::from_utf8(bytes) {
            Ok(text) if !text.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
                Shown::Text(text.to_owned())
            }
            _ => Shown::Hex(hex(bytes)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Shown::Text(text) | Shown::Hex(text) => text,
        }
    }
}

/// The payload as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Body {
    /// No payload (a tombstone).
    Empty,
    /// Valid JSON, pretty-printed.
    Json { pretty: String },
    /// Not JSON (or too long to decode); its first bytes as text or hex.
    Raw {
        shown: Shown,
        /// Whether the payload was longer than what is shown.
        cut: bool,
    },
}

/// The envelope fields every event carries (see `shared_events::Envelope`),
/// read loosely: a half-valid event still shows what it has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvelopeSummary {
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    pub order_id: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub producer: Option<String>,
    pub occurred_at: Option<String>,
}

impl EnvelopeSummary {
    fn of(value: &Value) -> Option<EnvelopeSummary> {
        let object = value.as_object()?;
        let field = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_owned);
        let summary = EnvelopeSummary {
            event_type: field("eventType"),
            event_id: field("eventId"),
            order_id: field("orderId"),
            correlation_id: field("correlationId"),
            causation_id: field("causationId"),
            producer: field("producer"),
            occurred_at: field("occurredAt"),
        };
        (summary.event_type.is_some() || summary.event_id.is_some()).then_some(summary)
    }
}

/// Decodes `message`, showing at most `max_bytes` of its payload.
pub fn decode(message: &RawMessage, max_bytes: usize) -> Decoded {
    let payload = message.payload.as_deref();
    let (body, envelope) = match payload {
        None => (Body::Empty, None),
        Some(bytes) => body_of(bytes, max_bytes),
    };
    Decoded {
        topic: message.topic.clone(),
        partition: message.partition,
        offset: message.offset,
        timestamp: message
            .timestamp_ms
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        key: message.key.as_deref().map(|k| Shown::of(cut(k, max_bytes))),
        headers: message
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = value
                    .as_deref()
                    .map_or(Shown::Text(String::new()), |v| Shown::of(cut(v, max_bytes)));
                (name.clone(), shown)
            })
            .collect(),
        body,
        size: payload.map_or(0, <[u8]>::len),
        envelope,
    }
}

fn body_of(bytes: &[u8], max_bytes: usize) -> (Body, Option<EnvelopeSummary>) {
    if bytes.len() <= max_bytes {
        if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            return (Body::Json { pretty }, EnvelopeSummary::of(&value));
        }
    }
    // Too long to show whole: not decoded, so one request's work stays bounded.
    let shown = cut(bytes, max_bytes);
    let raw = Body::Raw {
        shown: Shown::of(text_boundary(shown)),
        cut: shown.len() < bytes.len(),
    };
    (raw, None)
}

fn cut(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

/// `bytes` without a UTF-8 sequence cut in half at its end, if it is text at all.
fn text_boundary(bytes: &[u8]) -> &[u8] {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes,
        Err(error) if error.error_len().is_none() => &bytes[..error.valid_up_to()],
        Err(_) => bytes,
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(if i % 16 == 0 { '\n' } else { ' ' });
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> RawMessage {
        RawMessage {
            topic: "order-created".to_owned(),
            partition: 2,
            offset: 7,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some(b"order-1".to_vec()),
            headers: vec![("eventType".to_owned(), Some(b"OrderCreated".to_vec()))],
            payload: Some(payload.to_vec()),
        }
    }

    #[test]
    fn decodes_an_envelope_and_pretty_prints_it() {
        let payload = br#"{"eventId":"e1","eventType":"OrderCreated","orderId":"order-1","correlationId":"e1","causationId":null,"producer":"order-service","payload":{}}"#;
        let decoded = decode(&message(payload), 1024);
        let envelope = decoded.envelope.unwrap();
        assert_eq!(envelope.event_type.as_deref(), Some("OrderCreated"));
        assert_eq!(envelope.order_id.as_deref(), Some("order-1"));
        assert_eq!(envelope.causation_id, None);
        let Body::Json { pretty } = decoded.body else {
            panic!("not JSON")
        };
        assert!(pretty.contains("\n  \"eventType\": \"OrderCreated\""));
        assert_eq!(decoded.key, Some(Shown::Text("order-1".to_owned())));
        assert_eq!(decoded.timestamp.unwrap().timestamp(), 1_700_000_000);
    }

    #[test]
    fn shows_text_that_is_not_json_as_text() {
        let decoded = decode(&message(b"<script>alert(1)</script>"), 1024);
        assert_eq!(
            decoded.body,
            Body::Raw {
                shown: Shown::Text("<script>alert(1)</script>".to_owned()),
                cut: false
            }
        );
        assert!(decoded.envelope.is_none());
    }

    #[test]
    fn shows_binary_as_hex() {
        let decoded = decode(&message(&[0, 1, 0xfe, 0xff]), 1024);
        assert_eq!(
            decoded.body,
            Body::Raw {
                shown: Shown::Hex("00 01 fe ff".to_owned()),
                cut: false
            }
        );
    }

    #[test]
    fn cuts_an_oversized_message_without_decoding_it() {
        let big = format!(
            "{{\"eventType\":\"OrderCreated\",\"pad\":\"{}\"}}",
            "x".repeat(500)
        );
        let decoded = decode(&message(big.as_bytes()), 100);
        assert_eq!(decoded.size, big.len());
        let Body::Raw { shown, cut } = decoded.body else {
            panic!("decoded although oversized")
        };
        assert!(cut);
        assert_eq!(shown.as_str().len(), 100);
    }

    #[test]
    fn an_oversized_cut_never_splits_a_character() {
        let text = "é".repeat(100);
        let decoded = decode(&message(text.as_bytes()), 51);
        let Body::Raw { shown, .. } = decoded.body else {
            panic!("not raw")
        };
        assert_eq!(shown, Shown::Text("é".repeat(25)));
    }

    #[test]
    fn a_tombstone_has_an_empty_body() {
        let mut tombstone = message(b"");
        tombstone.payload = None;
        assert_eq!(decode(&tombstone, 10).body, Body::Empty);
    }
}
