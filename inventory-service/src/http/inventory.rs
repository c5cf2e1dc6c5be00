//! `GET /api/inventory`, `GET /api/inventory/{sku}`, `PUT /api/inventory/{sku}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use service_kit::http::Admin;
use service_kit::{JsonBody, Problem};
use shared_events::values::{is_printable_text, printable_text_pattern};
use shared_events::Sku;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::AppState;
use crate::db::{self, Product};
use crate::domain::MAX_PRICE_CENTS;

/// Longest product name accepted.
const MAX_NAME_LEN: usize = 200;

/// The whole catalog with stock levels.
#[utoipa::path(get, path = "/api/inventory", tag = "inventory",
    responses(
        (status = 200, description = "Every product", body = Vec<Product>),
        (status = 503, description = "The database is unavailable for the moment; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Product>>, Problem> {
    Ok(Json(db::list_products(&state.pool).await?))
}

fn parse_sku(raw: &str) -> Result<Sku, Problem> {
    Sku::parse(raw).map_err(|e| Problem::invalid_field("sku", e.0))
}

/// One product with its stock levels.
#[utoipa::path(get, path = "/api/inventory/{sku}", tag = "inventory",
    params(("sku" = inline(Sku), Path, description = "The product's SKU")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 400, description = "An invalid SKU", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable for the moment; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<Product>, Problem> {
    let sku = parse_sku(&sku)?;
    db::find_product(&state.pool, sku.as_str())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no product {sku}")))
}

/// The body of `PUT /api/inventory/{sku}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutProduct {
    /// 1-200 characters, no control characters and not only whitespace; a
    /// new product without one is named after its SKU.
    #[schema(value_type = Option<ProductName>)]
    name: Option<String>,
    #[schema(value_type = PriceCents)]
    #[serde(deserialize_with = "service_kit::http::whole_number")]
    price_cents: i64,
    /// Units available for new orders from now on (reserved and sold units are separate).
    #[schema(minimum = 0, maximum = 2147483647)]
    #[serde(deserialize_with = "service_kit::http::whole_number")]
    available: i64,
}

/// The schema of a product's name: the rules [`put`] applies.
pub struct ProductName;

impl PartialSchema for ProductName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "1-200 characters, no control characters and not only whitespace.",
            ))
            .min_length(Some(1))
            .max_length(Some(MAX_NAME_LEN))
            .pattern(Some(printable_text_pattern()))
            .into()
    }
}

impl ToSchema for ProductName {}

/// The schema of a unit price: the bounds [`put`] applies.
pub struct PriceCents;

impl PartialSchema for PriceCents {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .description(Some("The price of one unit, in cents."))
            .minimum(Some(0))
            .maximum(Some(MAX_PRICE_CENTS))
            .into()
    }
}

impl ToSchema for PriceCents {}

/// Creates a product (201) or sets its price and available stock (200).
#[utoipa::path(put, path = "/api/inventory/{sku}", tag = "inventory",
    params(("sku" = inline(Sku), Path, description = "The product's SKU")),
    request_body = PutProduct,
    responses(
        (status = 201, description = "The product was created", body = Product),
        (status = 200, description = "The product's price and available units were set", body = Product),
        (status = 400, description = "Malformed JSON, an invalid SKU or field; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body exceeds 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable for the moment; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub async fn put(
    State(state): State<AppState>,
    _: Admin,
    Path(sku): Path<String>,
    JsonBody(body): JsonBody<PutProduct>,
) -> Result<(StatusCode, Json<Product>), Problem> {
    let sku = parse_sku(&sku)?;
    if let Some(name) = &body.name {
        if !is_printable_text(name) || name.chars().count() > MAX_NAME_LEN {
            return Err(Problem::invalid_field(
                "name",
                format!("name must be 1-{MAX_NAME_LEN} characters, not only whitespace, without control characters"),
            ));
        }
    }
    if !(0..=MAX_PRICE_CENTS).contains(&body.price_cents) {
        return Err(Problem::invalid_field(
            "priceCents",
            format!("priceCents must be an integer from 0 to {MAX_PRICE_CENTS}"),
        ));
    }
    let available = i32::try_from(body.available)
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            Problem::invalid_field(
                "available",
                format!("available must be an integer from 0 to {}", i32::MAX),
            )
        })?;
    let (product, created) = db::upsert_product(
        &state.pool,
        sku.as_str(),
        body.name.as_deref(),
        body.price_cents,
        available,
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(product)))
}
