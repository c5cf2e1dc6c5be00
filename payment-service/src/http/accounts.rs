//! `GET|PUT /api/accounts/{userId}`: a customer's credit.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use service_kit::http::{Admin, Authenticated};
use service_kit::{JsonBody, Problem};
use shared_events::{Cents, UserId};

use super::AppState;
use crate::db::{self, Account};

fn parse_user(raw: &str) -> Result<UserId, Problem> {
    UserId::parse(raw).map_err(|e| Problem::invalid_field("userId", e.0))
}

/// A customer's credit. Customers never charged yet have the default credit.
#[utoipa::path(get, path = "/api/accounts/{user_id}", tag = "payments",
    params(("user_id" = inline(UserId), Path, description = "The customer")),
    responses(
        (status = 200, description = "The customer's credit (the default credit for a customer never charged)", body = Account),
        (status = 400, description = "An invalid userId", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable for the moment; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub async fn get_account(
    State(state): State<AppState>,
    Authenticated(access): Authenticated,
    Path(user_id): Path<String>,
) -> Result<Json<Account>, Problem> {
    let user_id = parse_user(&user_id)?;
    if !access.may_see(user_id.as_str()) {
        return Err(Problem::not_found(format!("no account {user_id}")));
    }
    let account = db::find_account(&state.pool, user_id.as_str()).await?;
    Ok(Json(account.unwrap_or(Account {
        user_id: user_id.to_string(),
        credit_cents: state.default_credit_cents,
    })))
}

/// The body of `PUT /api/accounts/{userId}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutAccount {
    /// The customer's credit from now on.
    #[schema(value_type = Cents)]
    #[serde(deserialize_with = "service_kit::http::whole_number")]
    credit_cents: i64,
}

/// Sets a customer's credit.
#[utoipa::path(put, path = "/api/accounts/{user_id}", tag = "payments",
    params(("user_id" = inline(UserId), Path, description = "The customer")),
    request_body = PutAccount,
    responses(
        (status = 200, description = "The credit was set", body = Account),
        (status = 400, description = "Malformed JSON, an invalid userId or field; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body exceeds 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable for the moment; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub async fn put_account(
    State(state): State<AppState>,
    _: Admin,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<PutAccount>,
) -> Result<Json<Account>, Problem> {
    let user_id = parse_user(&user_id)?;
    if body.credit_cents < 0 {
        return Err(Problem::invalid_field(
            "creditCents",
            "creditCents must not be negative",
        ));
    }
    Ok(Json(
        db::set_credit(&state.pool, user_id.as_str(), body.credit_cents).await?,
    ))
}
