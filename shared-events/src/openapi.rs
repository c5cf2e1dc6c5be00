//! The value types as OpenAPI schemas (`utoipa`), for the services'
//! documents: a path segment, query parameter or body field holding an
//! [`OrderId`], a [`Quantity`] or a [`CancelReason`] is documented with the
//! very rules its `parse` enforces.
//!
//! Each schema is the type's JSON Schema (the one the event schemas in
//! `docs/schemas/` use, and which the tests in [`crate::values`] hold to
//! `parse`) carried over as it is, so an OpenAPI document cannot state other
//! limits than the code applies.

use std::borrow::Cow;

use schemars::{JsonSchema, SchemaGenerator};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::values::{CancelReason, Cents, OrderId, Quantity, Sku, UserId};

/// `T`'s JSON Schema as an OpenAPI schema.
///
/// The value types' schemas use only keywords OpenAPI 3.1 shares with JSON
/// Schema (type, format, bounds, lengths, pattern, description), so the
/// conversion is lossless; a test checks it for every type.
fn schema_of<T: JsonSchema>() -> Schema {
    let json = serde_json::to_value(T::json_schema(&mut SchemaGenerator::default()))
        .expect("a JSON Schema serialises");
    serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("{} is no OpenAPI schema ({e}): {json}", T::schema_name()))
}

macro_rules! openapi_schema {
    ($($name:ident),* $(,)?) => {$(
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                RefOr::T(schema_of::<$name>())
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                <$name as JsonSchema>::schema_name()
            }
        }
    )*};
}

openapi_schema!(OrderId, UserId, Sku, Quantity, Cents, CancelReason);

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI schema, written out, is the JSON Schema keyword for keyword.
    fn assert_same<T: JsonSchema + PartialSchema>() {
        let json_schema = serde_json::to_value(T::json_schema(&mut SchemaGenerator::default()))
            .expect("JSON Schema");
        let openapi = serde_json::to_value(<T as PartialSchema>::schema()).expect("OpenAPI");
        assert_eq!(openapi, json_schema, "{}", T::schema_name());
    }

    #[test]
    fn openapi_schemas_state_the_json_schemas_rules() {
        assert_same::<OrderId>();
        assert_same::<UserId>();
        assert_same::<Sku>();
        assert_same::<Quantity>();
        assert_same::<Cents>();
        assert_same::<CancelReason>();
    }
}
