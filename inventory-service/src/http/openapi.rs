//! inventory-service's OpenAPI document, generated from the handlers'
//! `#[utoipa::path]` attributes and the types' `ToSchema` derives.

use utoipa::OpenApi;

use super::inventory;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "inventory-service",
        description = "The catalog and its stock; reserves stock for orders all-or-nothing. Errors are application/problem+json."
    ),
    paths(inventory::list, inventory::get, inventory::put),
    tags((name = "inventory", description = "Products and stock levels"))
)]
struct ApiDoc;

/// The whole document: these routes plus those every service has.
pub fn document() -> utoipa::openapi::OpenApi {
    service_kit::openapi::document(ApiDoc::openapi())
}
