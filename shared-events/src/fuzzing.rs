//! Generators for fuzzing what arrives from outside (feature `fuzzing`, for
//! tests only): hostile JSON values, byte-level edits of a valid input, and
//! field-by-field replacement inside a JSON document. The event decoder's
//! fuzz test (service-kit) and the services' request-body fuzz tests share
//! them, so every input surface is attacked the same way.
//!
//! The number of cases is bounded ([`config`]) so the properties run inside
//! `cargo test`; `PROPTEST_CASES` raises it for a longer run. proptest shrinks
//! a failing input and writes it to the test's `proptest-regressions/` file,
//! which is committed and replayed first from then on.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

/// The configuration of a fuzz property: `cases` cases, unless
/// `PROPTEST_CASES` is set.
pub fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// One change to a byte string; positions wrap around its length.
#[derive(Debug, Clone)]
pub enum ByteEdit {
    /// XOR one byte with a non-zero mask.
    Flip { at: usize, mask: u8 },
    /// Insert a byte.
    Insert { at: usize, byte: u8 },
    /// Remove a byte.
    Remove { at: usize },
    /// Cut the input short.
    Truncate { at: usize },
}

/// Any [`ByteEdit`].
pub fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<usize>(), 1..=u8::MAX).prop_map(|(at, mask)| ByteEdit::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| ByteEdit::Insert { at, byte }),
        any::<usize>().prop_map(|at| ByteEdit::Remove { at }),
        any::<usize>().prop_map(|at| ByteEdit::Truncate { at }),
    ]
}

/// `bytes` with `edits` applied in order.
pub fn edited(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for edit in edits {
        if bytes.is_empty() {
            break;
        }
        match *edit {
            ByteEdit::Flip { at, mask } => {
                let at = at % bytes.len();
                bytes[at] ^= mask;
            }
            ByteEdit::Insert { at, byte } => bytes.insert(at % (bytes.len() + 1), byte),
            ByteEdit::Remove { at } => {
                bytes.remove(at % bytes.len());
            }
            ByteEdit::Truncate { at } => bytes.truncate(at % bytes.len()),
        }
    }
    bytes
}

/// Any JSON value, nested a few levels, favouring what trips decoders and
/// validators: integer extremes and the edges of 32-bit ranges, floats
/// (whole and not), empty and long strings, control characters and
/// non-ASCII text.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(i64::from(i32::MAX)),
            Just(i64::from(i32::MAX) + 1),
            Just(i64::from(u32::MAX) + 1),
        ]
        .prop_map(Value::from),
        prop_oneof![Just(1.0f64), Just(2.5), Just(-0.0), Just(1e300)].prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[a-zA-Z0-9._-]{0,130}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// `document` with the value at one of its paths replaced by `replacement`:
/// the `target % n`-th of its `n` paths in document order, the whole document
/// being the first.
pub fn with_replaced(mut document: Value, target: usize, replacement: Value) -> Value {
    let mut all = Vec::new();
    collect_paths(&document, &mut Vec::new(), &mut all);
    let path = &all[target % all.len()];
    *value_at(&mut document, path) = replacement;
    document
}

/// A step into a JSON document.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn collect_paths(value: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                prefix.push(Step::Key(key.clone()));
                collect_paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(Step::Index(i));
                collect_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn value_at<'v>(value: &'v mut Value, path: &[Step]) -> &'v mut Value {
    path.iter().fold(value, |node, step| match step {
        Step::Key(key) => &mut node[key.as_str()],
        Step::Index(i) => &mut node[*i],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn edits_wrap_around_the_input() {
        let edits = [
            ByteEdit::Flip { at: 5, mask: 0x20 },
            ByteEdit::Insert { at: 0, byte: b'[' },
            ByteEdit::Remove { at: 9 },
        ];
        // "abc": flip index 2 ('c' -> 'C'), insert '[' first, remove index 9 % 4 = 1.
        assert_eq!(edited(b"abc".to_vec(), &edits), b"[bC");
        assert_eq!(
            edited(b"abc".to_vec(), &[ByteEdit::Truncate { at: 4 }]),
            b"a"
        );
        assert!(edited(Vec::new(), &edits).is_empty());
    }

    #[test]
    fn a_replacement_lands_at_the_chosen_path() {
        let document = json!({"a": [1, {"b": 2}]});
        // Paths in order: the document, a, a[0], a[1], a[1].b.
        let replaced = |target| with_replaced(document.clone(), target, json!("X"));
        assert_eq!(replaced(0), json!("X"));
        assert_eq!(replaced(2), json!({"a": ["X", {"b": 2}]}));
        assert_eq!(replaced(4), json!({"a": [1, {"b": "X"}]}));
        assert_eq!(replaced(5), json!("X"));
    }
}
