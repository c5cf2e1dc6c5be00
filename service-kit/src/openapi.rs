//! OpenAPI: the parts every service's document shares, and the routes that
//! serve it.
//!
//! A service describes its own routes with `#[utoipa::path]` and
//! `#[derive(utoipa::OpenApi)]`; [`document`] adds what [`crate::http`]
//! serves for every service (health, metrics, this document and its page)
//! and the [`Problem`] schema, and [`routes`] serves the result at
//! [`DOCUMENT_PATH`] with a Swagger UI page at [`UI_PATH`].
//!
//! The page loads Swagger UI's script and stylesheet from a public CDN in the
//! reader's browser, pinned to one version and checked with Subresource
//! Integrity hashes. The service itself downloads nothing, at build time or at
//! run time, and the JSON document works without the page.

use std::borrow::Cow;

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::openapi::path::{HttpMethod, Operation, PathItem};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{OpenApi, RefOr, ResponseBuilder};
use utoipa::{OpenApi as _, PartialSchema, ToSchema};

use crate::http::{Problem, REQUEST_TIMEOUT};

/// Where the OpenAPI document is served.
pub const DOCUMENT_PATH: &str = "/api-docs/openapi.json";
/// Where the Swagger UI page for the document is served.
pub const UI_PATH: &str = "/api-docs";
/// Content type of problem responses, for `#[utoipa::path]` responses.
pub use crate::http::PROBLEM_CONTENT_TYPE;

/// Swagger UI release the page loads, and the SHA-384 of its two files
/// (computed from the `swagger-ui-dist` package of that version).
const SWAGGER_UI_VERSION: &str = "5.35.0";
const SWAGGER_UI_JS_SRI: &str =
    "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9";
const SWAGGER_UI_CSS_SRI: &str =
    "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I";

impl PartialSchema for Problem {
    fn schema() -> RefOr<Schema> {
        let string = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        ObjectBuilder::new()
            .description(Some(
                "An RFC 9457 problem detail, sent as application/problem+json with every error.",
            ))
            .property(
                "type",
                string("A URI reference naming the kind of problem, e.g. /problems/not-found."),
            )
            .property("title", string("A short summary of the kind of problem."))
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("The HTTP status code.")),
            )
            .property("detail", string("What went wrong in this case."))
            .property(
                "field",
                string("The request field or parameter at fault, e.g. items[0].quantity."),
            )
            .required("type")
            .required("title")
            .required("status")
            .required("detail")
            .into()
    }
}

impl ToSchema for Problem {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Problem")
    }
}

/// The readiness answer of `GET /health` (documentation only; the endpoint
/// lives in [`crate::http`]).
#[derive(Serialize, ToSchema)]
#[schema(as = Health)]
#[allow(dead_code)]
struct HealthDoc {
    /// `UP` when every check is `UP`, else `DOWN`.
    status: String,
    checks: HealthChecksDoc,
}

#[derive(Serialize, ToSchema)]
#[schema(as = HealthChecks)]
#[allow(dead_code)]
struct HealthChecksDoc {
    /// `UP` or `DOWN`.
    database: String,
    /// `UP` or `DOWN`.
    kafka: String,
}

/// Readiness: 200 when the database and Kafka answer, 503 otherwise.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "The database and Kafka answer", body = HealthDoc),
        (status = 503, description = "A dependency is down; `checks` names it", body = HealthDoc),
    ))]
#[allow(dead_code)]
fn health() {}

/// Readiness, the same as `GET /health`.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "The database and Kafka answer", body = HealthDoc),
        (status = 503, description = "A dependency is down; `checks` names it", body = HealthDoc),
    ))]
#[allow(dead_code)]
fn health_ready() {}

/// Liveness: 200 while the process serves HTTP, whatever its dependencies do.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "The process is serving", body = serde_json::Value)))]
#[allow(dead_code)]
fn health_live() {}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
#[allow(dead_code)]
fn metrics() {}

/// This OpenAPI document.
#[utoipa::path(get, path = "/api-docs/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this service", body = serde_json::Value)))]
#[allow(dead_code)]
fn openapi_document() {}

/// A Swagger UI page showing this document.
#[utoipa::path(get, path = "/api-docs", tag = "operations",
    responses((status = 200, description = "An HTML page", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn openapi_page() {}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(health, health_ready, health_live, metrics, openapi_document, openapi_page),
    components(schemas(Problem)),
    tags((name = "operations", description = "Health, metrics and API documentation, the same in every service"))
)]
struct Shared;

/// A service's document completed with the routes and schemas every service
/// has, and on every operation the answers the common middleware can give
/// whatever the route ([`common_responses`]).
pub fn document(service: OpenApi) -> OpenApi {
    let mut doc = service.merge_from(Shared::openapi());
    for item in doc.paths.paths.values_mut() {
        for operation in operations(item) {
            common_responses(operation);
        }
    }
    doc
}

/// What [`crate::http::finish_router`]'s layers answer on any route: 408 when
/// the request outlives [`REQUEST_TIMEOUT`] (with an empty body).
fn common_responses(operation: &mut Operation) {
    let timeout = ResponseBuilder::new()
        .description(format!(
            "The request took longer than {} s and was abandoned (empty body)",
            REQUEST_TIMEOUT.as_secs()
        ))
        .build();
    operation
        .responses
        .responses
        .entry(StatusCode::REQUEST_TIMEOUT.as_u16().to_string())
        .or_insert(RefOr::T(timeout));
}

/// Every operation of a path.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The schema of a listing's `limit` query parameter: an integer from 1 to
/// `MAX`, `DEFAULT` when left out, the bounds [`crate::http::page_limit`]
/// enforces when given the same two numbers. A listing names it once,
/// `type ListLimit = PageLimit<DEFAULT_LIMIT, MAX_LIMIT>;`, and documents
/// the parameter as `inline(Option<ListLimit>)`.
pub struct PageLimit<const DEFAULT: i64, const MAX: i64>;

impl<const DEFAULT: i64, const MAX: i64> PartialSchema for PageLimit<DEFAULT, MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .maximum(Some(MAX))
            .default(Some(DEFAULT.into()))
            .into()
    }
}

/// Replaces the schema of parameter `name` of the operation `method path`
/// (for a rule only known at run time, such as a configured maximum).
///
/// # Panics
///
/// When the document has no such parameter: the document and the code that
/// completes it have drifted apart.
pub fn set_parameter_schema(
    doc: &mut OpenApi,
    method: HttpMethod,
    path: &str,
    name: &str,
    schema: RefOr<Schema>,
) {
    let item = doc
        .paths
        .paths
        .get_mut(path)
        .unwrap_or_else(|| panic!("the document has no path {path}"));
    let (verb, operation) = match method {
        HttpMethod::Get => ("GET", item.get.as_mut()),
        HttpMethod::Put => ("PUT", item.put.as_mut()),
        HttpMethod::Post => ("POST", item.post.as_mut()),
        HttpMethod::Delete => ("DELETE", item.delete.as_mut()),
        HttpMethod::Options => ("OPTIONS", item.options.as_mut()),
        HttpMethod::Head => ("HEAD", item.head.as_mut()),
        HttpMethod::Patch => ("PATCH", item.patch.as_mut()),
        HttpMethod::Trace => ("TRACE", item.trace.as_mut()),
    };
    let operation =
        operation.unwrap_or_else(|| panic!("the document has no operation {verb} {path}"));
    let parameter = operation
        .parameters
        .iter_mut()
        .flatten()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{verb} {path} has no parameter {name}"));
    parameter.schema = Some(schema);
}

/// Serves `doc` at [`DOCUMENT_PATH`] and its Swagger UI page at [`UI_PATH`].
pub fn routes(doc: &OpenApi) -> Router {
    let json = doc
        .to_pretty_json()
        .expect("an OpenAPI document always serialises");
    let page = ui_page(&doc.info.title);
    Router::new()
        .route(
            DOCUMENT_PATH,
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json) }),
        )
        .route(
            UI_PATH,
            get(move || async move { Html(page).into_response() }),
        )
}

fn ui_page(title: &str) -> String {
    let title: String = title
        .chars()
        .filter(|c| c.is_alphanumeric() || " -_.".contains(*c))
        .collect();
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} API</title>
  <link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}/swagger-ui.css"
        integrity="{SWAGGER_UI_CSS_SRI}" crossorigin="anonymous">
</head>
<body>
  <noscript>The raw document is at <a href="{DOCUMENT_PATH}">{DOCUMENT_PATH}</a>.</noscript>
  <div id="swagger-ui"></div>
  <script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}/swagger-ui-bundle.js"
          integrity="{SWAGGER_UI_JS_SRI}" crossorigin="anonymous"></script>
  <script>
    window.onload = () => {{
      window.ui = SwaggerUIBundle({{ url: "{DOCUMENT_PATH}", dom_id: "#swagger-ui" }});
    }};
  </script>
</body>
</html>
"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_document_has_the_common_routes_and_the_problem_schema() {
        let doc = document(OpenApi::default());
        for path in [
            "/health",
            "/health/ready",
            "/health/live",
            "/metrics",
            DOCUMENT_PATH,
            UI_PATH,
        ] {
            assert!(doc.paths.paths.contains_key(path), "{path} missing");
        }
        let schemas = &doc.components.expect("components").schemas;
        assert!(schemas.contains_key("Problem"));
        assert!(schemas.contains_key("Health"));
    }
}
