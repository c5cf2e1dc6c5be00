//! notification-service's OpenAPI document, generated from the handler's
//! `#[utoipa::path]` attribute and the types' `ToSchema` derives.

use utoipa::OpenApi;

use super::notifications;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "notification-service",
        description = "What customers were told about their orders, one notification per saga event. Errors are application/problem+json."
    ),
    paths(notifications::list),
    tags((name = "notifications", description = "Customer notifications"))
)]
struct ApiDoc;

/// The whole document: this route plus those every service has.
pub fn document() -> utoipa::openapi::OpenApi {
    service_kit::openapi::document(ApiDoc::openapi())
}
