//! Fuzzing the body of `POST /api/orders`, the input anyone on the network
//! can send: every body is either an order that keeps the rules (at most
//! `MAX_LINES` lines, each SKU once, valid ids and quantities, a customer
//! ordering only for themself) or a 4xx problem naming the field at fault. A
//! body valid by those rules is always accepted. No panic, no 5xx.
//!
//! Inputs are generated valid orders, then the same with one field replaced
//! by hostile JSON, or with their bytes edited (`shared_events::fuzzing`).
//! The run is bounded by [`CASES`]; proptest keeps a shrunk failure in
//! `proptest-regressions/http/orders/fuzz.txt`, committed and replayed first.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use proptest::prelude::*;
use serde_json::{json, Value};
use service_kit::http::Access;
use service_kit::{JsonBody, Problem};
use shared_events::events::MAX_LINES;
use shared_events::fuzzing::{byte_edit, config, edited, json_value, with_replaced};
use shared_events::values::MAX_QUANTITY;

use super::CreateOrder;
use crate::commands::NewOrder;

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 2048;

/// The customer whose token the "customer" caller carries.
const CUSTOMER: &str = "user1";

/// The callers every body is tried as: auth off (or an administrator), and
/// the customer `user1`.
fn callers() -> [Access; 2] {
    [Access::Everything, Access::OwnOnly(CUSTOMER.to_owned())]
}

/// A body that keeps every rule: ids from the documented alphabet, up to
/// a few distinct SKUs, quantities within bounds.
fn valid_body() -> impl Strategy<Value = Value> {
    let line = ("[a-zA-Z0-9._-]{1,64}", 1..=i64::from(MAX_QUANTITY));
    (
        prop::option::of("[a-zA-Z0-9._-]{1,64}"),
        prop::collection::btree_map(line.0, line.1, 0..5),
        any::<bool>(),
    )
        .prop_map(|(order_id, lines, with_status)| {
            let items: Vec<Value> = lines
                .into_iter()
                .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity}))
                .collect();
            let mut body = json!({"userId": CUSTOMER, "items": items});
            if let Some(order_id) = order_id {
                body["orderId"] = json!(order_id);
            }
            if with_status {
                body["status"] = json!("PENDING");
            }
            body
        })
}

fn place(bytes: &[u8], caller: &Access) -> Result<NewOrder, Problem> {
    JsonBody::<CreateOrder>::decode(Some("application/json"), bytes)?.validate(caller)
}

/// Either an order that keeps the rules, or a 400/403 that says why.
fn accepted_or_refused_with_reason(bytes: &[u8]) -> Result<(), TestCaseError> {
    for caller in callers() {
        match place(bytes, &caller) {
            Ok(order) => {
                let lines = &order.created.items;
                prop_assert!(lines.len() <= MAX_LINES);
                let skus: BTreeSet<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
                prop_assert_eq!(skus.len(), lines.len(), "a SKU on two lines");
                if let Some(own) = caller.own_user() {
                    prop_assert_eq!(order.created.user_id.as_str(), own);
                }
            }
            Err(problem) => {
                prop_assert!(
                    matches!(
                        problem.status,
                        StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN
                    ),
                    "status {} for {:?}",
                    problem.status,
                    String::from_utf8_lossy(bytes)
                );
                prop_assert!(!problem.detail.is_empty());
                if problem.kind == "/problems/invalid-field" {
                    prop_assert!(
                        problem.field.is_some(),
                        "no field named: {}",
                        problem.detail
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn a_body_that_keeps_the_rules_is_accepted(body in valid_body()) {
        let bytes = serde_json::to_vec(&body).unwrap();
        for caller in callers() {
            let placed = place(&bytes, &caller);
            prop_assert!(placed.is_ok(), "{body} refused: {:?}", placed.err());
        }
    }

    #[test]
    fn a_body_with_a_field_replaced_is_accepted_or_refused_with_a_reason(
        body in valid_body(),
        target in any::<usize>(),
        replacement in json_value(),
    ) {
        let body = with_replaced(body, target, replacement);
        accepted_or_refused_with_reason(&serde_json::to_vec(&body).unwrap())?;
    }

    #[test]
    fn an_edited_body_is_accepted_or_refused_with_a_reason(
        body in valid_body(),
        edits in prop::collection::vec(byte_edit(), 1..6),
    ) {
        let bytes = edited(serde_json::to_vec(&body).unwrap(), &edits);
        accepted_or_refused_with_reason(&bytes)?;
    }
}
