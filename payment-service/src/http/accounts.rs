//! `GET|PUT /api/accounts/{userId}`: a customer's credit.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use service_kit::http::{Admin, Authenticated};
use service_kit::{JsonBody, Problem};
use shared_events::UserId;

use super::AppState;
use crate::db::{self, Account};

fn parse_user(raw: &str) -> Result<UserId, Problem> {
    UserId::parse(raw).map_err(|e| Problem::invalid_field("userId", e.0))
}

/// A customer's credit. Customers never charged yet have the default credit.
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutAccount {
    credit_cents: i64,
}

/// Sets a customer's credit.
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
