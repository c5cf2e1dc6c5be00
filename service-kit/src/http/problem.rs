//! RFC 9457 problem details: the one shape of every error response of every
//! service, and how errors become one.
//!
//! Handlers return `Result<_, Problem>` and use `?` all the way: a database
//! error converts by itself. One rule, [`crate::db::is_transient`], decides
//! what it means for the client, the same rule the consumer uses to decide
//! whether to retry an event: a transient failure (connection lost, pool
//! exhausted, serialisation conflict, statement timeout) answers 503 with
//! `Retry-After`, anything else 500. Either way the cause chain is logged
//! inside the request's span, and the body reveals nothing of it.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Content type of every problem response.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// What a 503 for a transient failure tells the client to wait before trying
/// again (`Retry-After`). Short, because the commonest transient failures
/// (a serialisation conflict, a busy pool) are over at once; a client that
/// meets an outage is answered 503 again and waits again.
pub const TRANSIENT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// An RFC 9457 problem detail. Every error response of every service is one.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI reference naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    #[serde(serialize_with = "serialize_status")]
    pub status: StatusCode,
    pub detail: String,
    /// The request field at fault, e.g. `items[0].quantity`, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Sent as the `Retry-After` header (whole seconds, at least one): set
    /// when the same request may succeed if the client waits this long.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
    /// Sent as the `WWW-Authenticate` header of a 401: how to authenticate.
    #[serde(skip)]
    pub challenge: Option<&'static str>,
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    /// A problem with no field at fault and no `Retry-After`.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            kind,
            title,
            status,
            detail: detail.into(),
            field: None,
            retry_after: None,
            challenge: None,
        }
    }

    /// 400: a field is missing or invalid.
    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem {
            field: Some(field.into()),
            ..Problem::new(
                StatusCode::BAD_REQUEST,
                "/problems/invalid-field",
                "Invalid request field",
                detail,
            )
        }
    }

    /// 400: the body is not the JSON we expect, and no single field is to blame.
    pub fn malformed(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "/problems/malformed-body",
            "Malformed request body",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "/problems/not-found",
            "Not found",
            detail,
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::CONFLICT,
            "/problems/conflict",
            "Conflict",
            detail,
        )
    }

    /// 500: a failure that waiting will not mend. The cause is logged where
    /// the error is converted; the body reveals nothing.
    pub fn internal() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "/problems/internal",
            "Internal error",
            "the request could not be completed; it is safe to retry",
        )
    }

    /// 503 with `Retry-After`: a dependency is unavailable or overloaded for
    /// the moment, and the same request may succeed later.
    pub fn unavailable() -> Problem {
        Problem {
            retry_after: Some(TRANSIENT_RETRY_AFTER),
            ..Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/unavailable",
                "Service unavailable",
                "a dependency is unavailable; retry later",
            )
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
            )],
            body,
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs().max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// A database error while handling a request: 503 (with `Retry-After`) when
/// [`crate::db::is_transient`] says it may pass, else 500. The error and its
/// sources are logged here, in the request's span; the client is told
/// nothing about them.
impl From<sqlx::Error> for Problem {
    fn from(err: sqlx::Error) -> Problem {
        let transient = crate::db::is_transient(&err);
        let err = anyhow::Error::new(err);
        if transient {
            tracing::warn!(
                error = format!("{err:#}"),
                "database unavailable while handling a request"
            );
            Problem::unavailable()
        } else {
            tracing::error!(
                error = format!("{err:#}"),
                "database error while handling a request"
            );
            Problem::internal()
        }
    }
}
