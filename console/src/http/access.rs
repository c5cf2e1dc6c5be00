//! Who may use the console.
//!
//! With `AUTH_MODE=off` everyone may, as with the services. With `jwt` the
//! console is an administrator's tool: it shows every customer's orders and
//! messages and can place orders and replay dead letters, so every page and
//! endpoint but health, the assets and the sign-in page needs a token with
//! the `admin` scope. A browser signs in once at `/login` by pasting a token
//! (`devstack token --user NAME --admin`, or one from the identity
//! provider), kept in an HttpOnly, SameSite=Strict cookie, so another site
//! can neither read it nor make the browser send it; scripts send
//! `Authorization: Bearer` as to the services.
//!
//! The console calls the services with the caller's own token (see
//! [`crate::services::as_caller`]), so they apply their own rules to it.

use axum::extract::{Form, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use serde::Deserialize;
use service_kit::http::auth::{forbidden, token_required};
use service_kit::http::{AccessPolicy, Caller};

use super::layout::page;
use super::AppState;

/// The cookie that holds a signed-in browser's token.
pub const TOKEN_COOKIE: &str = "console_token";

/// Paths anyone may fetch: what a load balancer probes, what the sign-in
/// page itself needs.
const OPEN_PREFIXES: [&str; 3] = ["/health", "/assets/", "/login"];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(sign_in))
        .route("/logout", post(sign_out))
}

/// Wraps the console's routes: the token from the cookie when the request
/// has no `Authorization`, the services' authentication, and the
/// administrators-only rule.
pub fn guard(routes: Router, policy: AccessPolicy) -> Router {
    let routes = routes.layer(axum::middleware::from_fn(admins_only));
    service_kit::http::with_access_policy(routes, policy)
        .layer(axum::middleware::from_fn(token_from_cookie))
}

/// A browser's cookie becomes the request's bearer token.
async fn token_from_cookie(mut request: Request, next: Next) -> Response {
    if !request.headers().contains_key(header::AUTHORIZATION) {
        let token = cookie(request.headers(), TOKEN_COOKIE);
        if let Some(value) = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
        {
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
    }
    next.run(request).await
}

/// Lets administrators (and everyone with auth off) through; sends an
/// anonymous browser to the sign-in page, and answers the rest 401 or 403.
/// The caller's token goes with every call the console makes for them.
async fn admins_only(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let open = OPEN_PREFIXES.iter().any(|prefix| path.starts_with(prefix));
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous);
    let allowed = match &caller {
        Caller::Unchecked => true,
        Caller::User(user) => user.admin,
        Caller::Anonymous => false,
    };
    if !allowed && !open {
        let is_page = !path.starts_with("/api/");
        return match caller {
            Caller::Anonymous if is_page => Redirect::to("/login").into_response(),
            Caller::Anonymous => token_required().into_response(),
            _ => {
                forbidden("the console is for administrators: the token needs the \"admin\" scope")
                    .into_response()
            }
        };
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    crate::services::as_caller(token, next.run(request)).await
}

/// The value of cookie `name`, if the request carries it.
fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

async fn login_page() -> maud::Markup {
    page(
        "Sign in",
        html! {
            h1 { "Sign in" }
            p { "The console is for administrators. Paste a bearer token with the "
                code { "admin" } " scope (with devstack: "
                code { "cargo run -p devstack -- token --user you --admin" } ")." }
            form method="post" action="/login" {
                label for="token" { "Token" }
                textarea id="token" name="token" rows="6" required {}
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// Keeps the token in the cookie and goes to the overview, which checks it
/// (a token that is not an administrator's is answered there).
async fn sign_in(Form(form): Form<SignIn>) -> Response {
    let token = form.token.trim();
    let valid_chars = !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid_chars {
        return (
            StatusCode::BAD_REQUEST,
            "a token is three base64url parts joined by dots",
        )
            .into_response();
    }
    let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn sign_out() -> Response {
    let cookie = format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}
