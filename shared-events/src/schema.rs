//! JSON Schemas of the events, generated from the types in this crate.
//!
//! One schema per event type: the envelope with that type's `eventType`,
//! `version` and payload. They are committed under `docs/schemas/` for
//! consumers in other languages; a test (`tests/schemas.rs`) fails when the
//! committed files differ from what the code generates, and
//! `UPDATE_SCHEMAS=1 cargo test -p shared-events --test schemas` rewrites them.

use schemars::JsonSchema;
use serde_json::{json, Value};

use crate::events::{
    EventType, InventoryReserved, OrderCancelled, OrderCreated, PaymentProcessed, PaymentRefunded,
    Wire,
};

fn envelope_of<P: JsonSchema>() -> Value {
    schemars::schema_for!(Wire<P>).to_value()
}

/// The JSON Schema (draft 2020-12) of an event of type `kind`, envelope included.
pub fn event_schema(kind: EventType) -> Value {
    let mut schema = match kind {
        EventType::OrderCreated => envelope_of::<OrderCreated>(),
        EventType::InventoryReserved => envelope_of::<InventoryReserved>(),
        EventType::PaymentProcessed => envelope_of::<PaymentProcessed>(),
        EventType::PaymentRefunded => envelope_of::<PaymentRefunded>(),
        EventType::OrderCancelled => envelope_of::<OrderCancelled>(),
    };
    let name = kind.as_str();
    schema["$id"] = json!(format!("{name}.schema.json"));
    schema["title"] = json!(name);
    schema["description"] = json!(format!(
        "Event {name} (version {}) in its envelope, as published on Kafka.",
        kind.current_version()
    ));
    let properties = &mut schema["properties"];
    properties["eventType"] = json!({ "const": name });
    properties["version"] = json!({ "const": kind.current_version() });
    schema
}

/// [`event_schema`] as the text committed under `docs/schemas/`: pretty
/// JSON, keys sorted, with a final newline.
pub fn event_schema_file(kind: EventType) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(event_schema(kind)))
        .expect("a JSON value always serialises");
    text.push('\n');
    text
}

/// The file name of `kind`'s schema under `docs/schemas/`.
pub fn event_schema_file_name(kind: EventType) -> String {
    format!("{}.schema.json", kind.as_str())
}

/// `value` with every object's keys in sorted order, so the text is the same
/// whether or not serde_json keeps insertion order in this build.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
