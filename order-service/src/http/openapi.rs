//! order-service's OpenAPI document, generated from the handlers'
//! `#[utoipa::path]` attributes and the types' `ToSchema` derives, with the
//! rules that depend on configuration (the long poll's longest wait) filled
//! in when the router is built.

use std::time::Duration;

use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::OpenApi;

use super::{cancel, orders, timeline, watch};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "order-service",
        description = "Accepts orders and follows each through the saga (inventory, payment) to CONFIRMED, REJECTED or PAYMENT_FAILED, or cancels it (by the customer or a deadline). Errors are application/problem+json."
    ),
    paths(
        orders::create,
        orders::list,
        orders::get_order,
        watch::events,
        cancel::cancel,
        timeline::timeline
    ),
    tags((name = "orders", description = "Placing orders and following them"))
)]
struct ApiDoc;

/// The whole document: these routes plus those every service has. `max_wait`
/// is the longest long poll (`ORDER_LIVE_MAX_WAIT_SECS`), the bound of
/// `timeout`.
pub fn document(max_wait: Duration) -> utoipa::openapi::OpenApi {
    let mut doc = service_kit::openapi::document(ApiDoc::openapi());
    let string = |pattern: String| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .into()
    };
    let path = "/api/orders/{order_id}";
    service_kit::openapi::set_parameter_schema(
        &mut doc,
        HttpMethod::Get,
        path,
        "waitFor",
        string(watch::wait_for_pattern()),
    );
    service_kit::openapi::set_parameter_schema(
        &mut doc,
        HttpMethod::Get,
        path,
        "timeout",
        string(watch::timeout_pattern(max_wait)),
    );
    refuse_identical_lines(&mut doc);
    doc
}

/// `uniqueItems` on the lines of `POST /api/orders`: a SKU may be on one line
/// only. JSON Schema can only forbid identical lines, the part of the rule it
/// can state; the `items` description states the rest (the same SKU with
/// two quantities), which `scripts/api_fuzz_hooks.py` tells schemathesis.
fn refuse_identical_lines(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, Schema};
    let components = doc.components.as_mut().expect("the document has schemas");
    let Some(RefOr::T(Schema::Object(create))) = components.schemas.get_mut("CreateOrder") else {
        panic!("CreateOrder is an object schema");
    };
    let Some(RefOr::T(Schema::Array(items))) = create.properties.get_mut("items") else {
        panic!("CreateOrder.items is an array schema");
    };
    items.unique_items = true;
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use shared_events::events::MAX_LINES;

    use super::*;

    #[test]
    fn the_order_body_states_the_line_limit() {
        let doc = serde_json::to_value(document(Duration::from_secs(25))).unwrap();
        let items = &doc["components"]["schemas"]["CreateOrder"]["properties"]["items"];
        assert_eq!(items["maxItems"], Value::from(MAX_LINES), "{items}");
        assert_eq!(items["uniqueItems"], Value::Bool(true), "{items}");
    }
}
