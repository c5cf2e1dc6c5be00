//! RFC 9457 problem details: the one shape of every error response of every
//! service.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

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
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    /// 400: a field is missing or invalid.
    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "/problems/invalid-field",
            title: "Invalid request field",
            status: StatusCode::BAD_REQUEST,
            detail: detail.into(),
            field: Some(field.into()),
        }
    }

    /// 400: the body is not the JSON we expect, and no single field is to blame.
    pub fn malformed(detail: impl Into<String>) -> Problem {
        Problem {
            kind: "/problems/malformed-body",
            title: "Malformed request body",
            status: StatusCode::BAD_REQUEST,
            detail: detail.into(),
            field: None,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem {
            kind: "/problems/not-found",
            title: "Not found",
            status: StatusCode::NOT_FOUND,
            detail: detail.into(),
            field: None,
        }
    }

    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem {
            kind: "/problems/conflict",
            title: "Conflict",
            status: StatusCode::CONFLICT,
            detail: detail.into(),
            field: None,
        }
    }

    /// 500. The cause is logged by the caller; the body reveals nothing.
    pub fn internal() -> Problem {
        Problem {
            kind: "/problems/internal",
            title: "Internal error",
            status: StatusCode::INTERNAL_SERVER_ERROR,
            detail: "the request could not be completed; it is safe to retry".into(),
            field: None,
        }
    }

    /// 503: a dependency is down; the request may succeed later.
    pub fn unavailable() -> Problem {
        Problem {
            kind: "/problems/unavailable",
            title: "Service unavailable",
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: "a dependency is unavailable; retry later".into(),
            field: None,
        }
    }

    /// A problem with no field at fault.
    pub(super) fn with_status(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: String,
    ) -> Problem {
        Problem {
            kind,
            title,
            status,
            detail,
            field: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

/// Maps a database error to a response, logging the cause. Pool exhaustion
/// and lost connections mean "try later" (503); anything else is a 500.
pub fn database_problem(err: &sqlx::Error) -> Problem {
    tracing::error!(error = %err, "database error while handling a request");
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            Problem::unavailable()
        }
        _ => Problem::internal(),
    }
}
