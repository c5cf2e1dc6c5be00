//! order-service's OpenAPI document, generated from the handlers'
//! `#[utoipa::path]` attributes and the types' `ToSchema` derives.

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

/// The whole document: these routes plus those every service has.
pub fn document() -> utoipa::openapi::OpenApi {
    service_kit::openapi::document(ApiDoc::openapi())
}
