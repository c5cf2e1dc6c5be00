//! Extractors that answer bad input with a [`Problem`] naming what is wrong:
//! JSON bodies ([`JsonBody`], [`OptionalJsonBody`]), query strings
//! ([`QueryParams`]) and the `limit` of listings ([`page_limit`]).
//!
//! Unlike axum's own extractors, whose rejections are plain text, every
//! refusal here is problem+json, and a decoding error names the field by its
//! path in the request (`items[0].quantity`), so a client can tell which of
//! its values was refused.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::{Problem, MAX_BODY_BYTES};

/// A JSON request body, decoded with the path of any faulty field reported.
///
/// Unlike `axum::Json`, every rejection is a [`Problem`]: wrong content type
/// (415), too large (413), malformed or mistyped (400, with `field`).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (is_json, bytes) = read_body(req, state).await?;
        decode_json(is_json, &bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], for a body the client may leave out: an empty body is
/// `None`, anything else must be valid JSON of `T`.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (is_json, bytes) = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        decode_json(is_json, &bytes).map(|value| OptionalJsonBody(Some(value)))
    }
}

/// Whether the request says its body is JSON, and the body (within the size limit).
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<(bool, Bytes), Problem> {
    let is_json = has_json_content_type(req.headers());
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(body_problem)?;
    Ok((is_json, bytes))
}

fn has_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false)
}

fn decode_json<T: DeserializeOwned>(is_json: bool, bytes: &[u8]) -> Result<T, Problem> {
    if !is_json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "/problems/unsupported-media-type",
            "Unsupported media type",
            "send the body as Content-Type: application/json",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(decode_problem)
}

fn body_problem(rejection: BytesRejection) -> Problem {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "/problems/body-too-large",
            "Request body too large",
            format!("the body must not exceed {MAX_BODY_BYTES} bytes"),
        )
    } else {
        Problem::malformed(rejection.body_text())
    }
}

fn decode_problem(err: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return Problem::malformed(format!("the body is not valid JSON: {inner}"));
    }
    let message = inner.to_string();
    // serde reports unknown and missing fields against the enclosing object;
    // name the field itself.
    let field = match named_field(&message) {
        Some(name) if path == "." => name.to_owned(),
        Some(name) if !path.ends_with(name) => format!("{path}.{name}"),
        _ => path,
    };
    if field == "." {
        Problem::malformed(message)
    } else {
        Problem::invalid_field(field, message)
    }
}

/// The field in serde's "unknown field `x`" / "missing field `x`" messages.
fn named_field(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    rest.split('`').next()
}

/// Query parameters, with a [`Problem`] naming the parameter on failure.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(QueryParams)
            .map_err(|err| {
                let path = err.path().to_string();
                let message = err.into_inner().to_string();
                let field = named_field(&message).map(str::to_owned).unwrap_or(path);
                Problem::invalid_field(field, message)
            })
    }
}

/// The `limit` query parameter of a listing: `default` when absent, else it
/// must be from 1 to `max`.
pub fn page_limit(requested: Option<i64>, default: i64, max: i64) -> Result<i64, Problem> {
    let limit = requested.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::invalid_field(
            "limit",
            format!("limit must be from 1 to {max}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_from_serde_messages() {
        assert_eq!(
            named_field("unknown field `quantiy`, expected one of `sku`, `quantity`"),
            Some("quantiy")
        );
        assert_eq!(
            named_field("missing field `userId` at line 1"),
            Some("userId")
        );
        assert_eq!(named_field("invalid type: string"), None);
    }
}
