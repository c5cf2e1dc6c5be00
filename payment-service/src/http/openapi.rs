//! payment-service's OpenAPI document, generated from the handlers'
//! `#[utoipa::path]` attributes and the types' `ToSchema` derives.

use utoipa::OpenApi;

use super::{accounts, payments};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "payment-service",
        description = "Customers' credit accounts, and the payment of each order: charged when its stock is reserved, refunded when it is cancelled. Errors are application/problem+json."
    ),
    paths(accounts::get_account, accounts::put_account, payments::get_payment),
    tags((name = "payments", description = "Credit accounts and payments"))
)]
struct ApiDoc;

/// The whole document: these routes plus those every service has.
pub fn document() -> utoipa::openapi::OpenApi {
    service_kit::openapi::document(ApiDoc::openapi())
}
