//! Fuzzing the event decoder the consumer loop runs on every message:
//! whatever bytes arrive on a topic, from a misbehaving producer or anyone
//! with write access, `Envelope::from_json` returns an event or a
//! `DecodeError` (which the loop dead-letters). It never panics, and an event
//! it accepts is one this build writes back unchanged.
//!
//! Inputs are random bytes and the committed seed corpus in
//! `tests/corpus/events/` (one valid envelope of each event and outcome, and
//! `hostile-*` shapes that must be refused), mutated byte by byte and field
//! by field (`shared_events::fuzzing`). [`CASES`] bounds the run; a failure is
//! shrunk and kept in `proptest-regressions/fuzz_events.txt`, committed and
//! replayed first from then on.

use std::path::Path;

use proptest::prelude::*;
use serde_json::Value;
use shared_events::fuzzing::{byte_edit, config, edited, json_value, with_replaced};
use shared_events::Envelope;

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 4096;

/// The longest input generated from scratch; events are far shorter.
const MAX_RANDOM_BYTES: usize = 2048;

/// The seed corpus: every file of `tests/corpus/events/`, in name order.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/events");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// The corpus files that hold valid events (all but `hostile-*`).
fn valid_seeds() -> Vec<Vec<u8>> {
    corpus()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("hostile-"))
        .map(|(_, bytes)| bytes)
        .collect()
}

/// Decodes `bytes`; an accepted event must survive this build's own encoding
/// unchanged, and its payload check must not panic either.
fn decode_and_round_trip(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(envelope) = Envelope::from_json(bytes) {
        let _ = envelope.event.validate();
        let again = Envelope::from_json(&envelope.to_json());
        prop_assert_eq!(again.ok(), Some(envelope));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn arbitrary_bytes_are_decoded_or_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..MAX_RANDOM_BYTES)
    ) {
        decode_and_round_trip(&bytes)?;
    }

    #[test]
    fn mutated_events_are_decoded_or_refused(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(byte_edit(), 1..8),
    ) {
        let seeds = valid_seeds();
        let bytes = edited(seeds[seed.index(seeds.len())].clone(), &edits);
        decode_and_round_trip(&bytes)?;
    }

    #[test]
    fn events_with_a_field_replaced_are_decoded_or_refused(
        seed in any::<prop::sample::Index>(),
        target in any::<usize>(),
        replacement in json_value(),
    ) {
        let seeds = valid_seeds();
        let event: Value = serde_json::from_slice(&seeds[seed.index(seeds.len())]).unwrap();
        let event = with_replaced(event, target, replacement);
        decode_and_round_trip(&serde_json::to_vec(&event).unwrap())?;
    }
}

#[test]
fn every_valid_seed_decodes_and_every_hostile_one_is_refused() {
    let corpus = corpus();
    assert!(corpus.len() >= 8, "the seed corpus is missing files");
    for (name, bytes) in corpus {
        let decoded = Envelope::from_json(&bytes);
        if name.starts_with("hostile-") {
            assert!(decoded.is_err(), "{name} was accepted: {decoded:?}");
        } else {
            let envelope = decoded.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                Envelope::from_json(&envelope.to_json()).unwrap(),
                envelope,
                "{name} does not round-trip"
            );
        }
    }
}
