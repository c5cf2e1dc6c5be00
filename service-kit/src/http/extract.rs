//! Extractors that answer bad input with a [`Problem`] naming what is wrong:
//! JSON bodies ([`JsonBody`], [`OptionalJsonBody`]), query strings
//! ([`QueryParams`]) and the `limit` of listings ([`page_limit`]), and the
//! JSON reading of integers ([`whole_number`]).
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

impl<T: DeserializeOwned> JsonBody<T> {
    /// What the extractor makes of a body already read (within the size
    /// limit) that came with `content_type`; for tests that feed a handler's
    /// body type hostile bytes without a server.
    pub fn decode(content_type: Option<&str>, bytes: &[u8]) -> Result<T, Problem> {
        let is_json = content_type.is_some_and(is_json_media_type);
        decode_json(is_json, bytes)
    }
}

/// Like [`JsonBody`], for a body the client may leave out: an empty body and
/// a JSON `null` are `None`, anything else must be valid JSON of `T`.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (is_json, bytes) = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        decode_json::<Option<T>>(is_json, &bytes).map(OptionalJsonBody)
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
        .is_some_and(is_json_media_type)
}

/// `application/json` or any `+json` type, parameters aside.
fn is_json_media_type(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || mime.ends_with("+json")
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

/// Reads a JSON integer for a field declared as an `i64`, accepting a number
/// written with a fraction of zero (`5.0`, `1e3`) as well.
///
/// JSON Schema, and so the OpenAPI documents, count `5.0` as an integer, and
/// some JSON encoders write whole numbers that way; serde alone refuses them.
/// A number with a fraction, or outside the `i64` range, is still refused,
/// and the field is named in the 400 like any other mistyped value.
/// Use with `#[serde(deserialize_with = "service_kit::http::whole_number")]`.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(WholeNumber)
}

struct WholeNumber;

impl serde::de::Visitor<'_> for WholeNumber {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("{v} is out of range for an integer")))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
        // i64::MAX is not exactly representable; 2^63 is the first f64 above the range.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v) {
            // Exact: the value is whole and within range.
            Ok(v as i64)
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
        }
    }
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

    #[derive(Debug, serde::Deserialize)]
    struct Count {
        #[serde(deserialize_with = "whole_number")]
        n: i64,
    }

    fn count(json: &str) -> Result<i64, String> {
        serde_json::from_str::<Count>(json)
            .map(|c| c.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_may_be_written_with_a_zero_fraction() {
        assert_eq!(count(r#"{"n": 7}"#), Ok(7));
        assert_eq!(count(r#"{"n": -7}"#), Ok(-7));
        assert_eq!(count(r#"{"n": 9994302.0}"#), Ok(9_994_302));
        // Parsed a quarter off without correct rounding, as the API fuzzer found.
        assert_eq!(
            count(r#"{"n": 2167683960340663.0}"#),
            Ok(2_167_683_960_340_663)
        );
        assert_eq!(count(r#"{"n": 1e3}"#), Ok(1000));
        assert_eq!(count(r#"{"n": -0.0}"#), Ok(0));
        assert_eq!(count(r#"{"n": 9223372036854775807}"#), Ok(i64::MAX));
    }

    #[test]
    fn fractions_and_out_of_range_numbers_are_not_integers() {
        for json in [
            r#"{"n": 2.5}"#,
            r#"{"n": 9223372036854775808}"#,
            r#"{"n": 1e19}"#,
            r#"{"n": -1e19}"#,
            r#"{"n": "7"}"#,
            r#"{"n": null}"#,
        ] {
            assert!(count(json).is_err(), "{json} was read as {:?}", count(json));
        }
    }
}
