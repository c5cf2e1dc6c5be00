//! The event schemas committed under `docs/schemas/` are the ones the code
//! generates, and events the code writes validate against them. After
//! changing an event type, regenerate the files with
//!
//! ```sh
//! UPDATE_SCHEMAS=1 cargo test -p shared-events --test schemas
//! ```

use std::path::PathBuf;

use shared_events::schema::{event_schema_file, event_schema_file_name};
use shared_events::EventType;

const REGENERATE: &str = "UPDATE_SCHEMAS=1 cargo test -p shared-events --test schemas";

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas")
}

#[test]
fn committed_event_schemas_match_the_code() {
    let dir = schemas_dir();
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some_and(|v| !v.is_empty() && v != "0");
    let mut stale = Vec::new();
    for kind in EventType::ALL {
        let path = dir.join(event_schema_file_name(kind));
        let generated = event_schema_file(kind);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let same = match (
            serde_json::from_str::<serde_json::Value>(&committed),
            serde_json::from_str::<serde_json::Value>(&generated),
        ) {
            (Ok(committed), Ok(generated)) => committed == generated,
            _ => false,
        };
        if !same {
            stale.push(format!("docs/schemas/{}", event_schema_file_name(kind)));
        }
    }
    assert!(
        stale.is_empty(),
        "the committed event schemas differ from the code: {}; regenerate them with `{REGENERATE}`",
        stale.join(", ")
    );
}

#[test]
fn no_schema_is_committed_for_an_event_that_no_longer_exists() {
    let known: Vec<String> = EventType::ALL
        .into_iter()
        .map(event_schema_file_name)
        .collect();
    let Ok(entries) = std::fs::read_dir(schemas_dir()) else {
        return;
    };
    for entry in entries {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".schema.json") {
            assert!(
                known.contains(&name),
                "docs/schemas/{name} names no event type; delete it"
            );
        }
    }
}
