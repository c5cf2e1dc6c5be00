//! Who is calling, and what they may do.
//!
//! With `AUTH_MODE=off` (the default, so a first `curl` works) nobody is
//! checked and every request may do everything: [`Caller::Unchecked`]. With
//! `AUTH_MODE=jwt` a request may carry `Authorization: Bearer <token>`; the
//! token is verified against the keys of a JWKS (`AUTH_JWKS_FILE` or
//! `AUTH_JWKS_URL`, as an identity provider publishes them): its signature
//! (RSA or ECDSA; each key only with the algorithms of its own kind, so
//! neither `none` nor an HMAC "signed" with a public key passes), `exp` and
//! `nbf` within `AUTH_LEEWAY_SECS`, `iss` (`AUTH_ISSUER`) and `aud`
//! (`AUTH_AUDIENCE`). Its `sub` is the customer's userId; `admin` among the
//! space-separated `scope` makes an administrator.
//!
//! [`authenticate`] runs on every request and records the [`Caller`]; a token
//! that fails any check is answered 401 there, whatever the route. A request
//! without a token goes on as [`Caller::Anonymous`]: public routes (the
//! catalog, health, metrics) serve it, and the extractors the others take
//! refuse it — [`Authenticated`] (any signed-in caller, with the [`Access`]
//! they have) and [`Admin`]. Why a token was refused is logged at debug level
//! and never told to the client.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use super::Problem;
use crate::config::CommonConfig;

/// `AUTH_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication: anyone who reaches the port may do anything. For a
    /// laptop, never for a deployment reachable by others.
    #[default]
    Off,
    /// Bearer tokens verified against a JWKS; customers see only their own data.
    Jwt,
}

/// The scope that makes a token's subject an administrator.
pub const ADMIN_SCOPE: &str = "admin";

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `AUTH_MODE=off`: nobody is checked.
    Unchecked,
    /// `AUTH_MODE=jwt` and no token: public routes only.
    Anonymous,
    /// A verified token's subject.
    User(User),
}

/// The subject of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The token's `sub`: the userId orders, accounts and notifications name.
    pub id: String,
    /// Whether the token's `scope` includes [`ADMIN_SCOPE`].
    pub admin: bool,
}

/// What a signed-in caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Everybody's data: an administrator, or anyone when auth is off.
    Everything,
    /// Only what belongs to this userId: a customer.
    OwnOnly(String),
}

impl Access {
    /// Whether data owned by `owner` may be shown (or acted on). Someone
    /// else's data is answered 404 by the caller, so its existence does not leak.
    pub fn may_see(&self, owner: &str) -> bool {
        match self {
            Access::Everything => true,
            Access::OwnOnly(user) => user == owner,
        }
    }

    /// The userId a customer is restricted to; `None` for [`Access::Everything`].
    pub fn own_user(&self) -> Option<&str> {
        match self {
            Access::Everything => None,
            Access::OwnOnly(user) => Some(user),
        }
    }

    /// The userId a request about `requested` (or about nobody in particular,
    /// `None`) is answered for: a customer's own whatever they asked, anyone's
    /// for everyone else. A customer naming someone else is refused with 403
    /// naming `field`.
    pub fn user_filter(
        &self,
        requested: Option<String>,
        field: &str,
    ) -> Result<Option<String>, Problem> {
        match (self, requested) {
            (Access::Everything, requested) => Ok(requested),
            (Access::OwnOnly(own), None) => Ok(Some(own.clone())),
            (Access::OwnOnly(own), Some(requested)) if *own == requested => Ok(Some(requested)),
            (Access::OwnOnly(_), Some(_)) => Err(Problem {
                field: Some(field.to_owned()),
                ..forbidden("a customer may only ask about their own userId")
            }),
        }
    }
}

impl Caller {
    /// The access of a signed-in caller; 401 for an anonymous one.
    pub fn access(&self) -> Result<Access, Problem> {
        match self {
            Caller::Unchecked => Ok(Access::Everything),
            Caller::Anonymous => Err(unauthorized(None)),
            Caller::User(user) if user.admin => Ok(Access::Everything),
            Caller::User(user) => Ok(Access::OwnOnly(user.id.clone())),
        }
    }

    /// The subject of the token, when there is one.
    pub fn user(&self) -> Option<&User> {
        match self {
            Caller::User(user) => Some(user),
            Caller::Unchecked | Caller::Anonymous => None,
        }
    }
}

/// 401 with the `WWW-Authenticate` challenge RFC 6750 asks for: bare when no
/// token was sent, `error="invalid_token"` when the one sent was refused.
fn unauthorized(error: Option<&'static str>) -> Problem {
    let challenge = match error {
        Some(_) => r#"Bearer error="invalid_token""#,
        None => "Bearer",
    };
    Problem {
        challenge: Some(challenge),
        ..Problem::new(
            StatusCode::UNAUTHORIZED,
            "/problems/unauthorized",
            "Unauthorized",
            error.unwrap_or("this resource needs a bearer token"),
        )
    }
}

/// 401 for a request that needs a token and has none.
pub fn token_required() -> Problem {
    unauthorized(None)
}

/// 403: signed in, but not allowed to do this.
pub fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "/problems/forbidden",
        "Forbidden",
        detail,
    )
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!("a handler asked who is calling, but no authentication layer ran");
            Problem::internal()
        })
    }
}

/// A signed-in caller (401 otherwise), with what they may see.
pub struct Authenticated(pub Access);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Caller::from_request_parts(parts, state)
            .await?
            .access()
            .map(Authenticated)
    }
}

/// An administrator: 401 for an anonymous caller, 403 for a customer.
pub struct Admin;

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match Authenticated::from_request_parts(parts, state).await? {
            Authenticated(Access::Everything) => Ok(Admin),
            Authenticated(Access::OwnOnly(_)) => {
                Err(forbidden(format!("this needs the {ADMIN_SCOPE:?} scope")))
            }
        }
    }
}

/// Middleware: establishes the request's [`Caller`], or answers 401 for a
/// token that does not pass.
pub async fn authenticate(
    State(authenticator): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    match authenticator.caller(authorization.as_ref()).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(problem) => problem.into_response(),
    }
}

/// Checks tokens, or (auth off) lets everyone in. Cheap to clone.
#[derive(Clone, Default)]
pub struct Authenticator {
    /// `None` with `AUTH_MODE=off`.
    verifier: Option<Arc<Verifier>>,
}

/// How often at most the JWKS is read again because a token names a key it
/// does not hold (the identity provider rotated its keys).
const JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(30);

struct Verifier {
    source: JwksSource,
    keys: RwLock<KeySet>,
    issuer: String,
    audience: String,
    leeway: Duration,
}

enum JwksSource {
    File(PathBuf),
    Url {
        url: String,
        client: reqwest::Client,
    },
}

struct KeySet {
    keys: Vec<VerifyingKey>,
    read_at: Instant,
}

/// One key of the JWKS and the algorithms a token signed with it may name.
struct VerifyingKey {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// Claims a token must carry beyond what [`Validation`] checks.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: String,
}

impl Authenticator {
    /// Lets every request in ([`Caller::Unchecked`]).
    pub fn off() -> Authenticator {
        Authenticator::default()
    }

    /// The authenticator `config` asks for; with `jwt`, reads the JWKS now,
    /// so a service with unusable keys does not start.
    pub async fn from_config(config: &CommonConfig) -> anyhow::Result<Authenticator> {
        if config.auth_mode == AuthMode::Off {
            return Ok(Authenticator::off());
        }
        let source = match (
            config.auth_jwks_file.as_str(),
            config.auth_jwks_url.as_str(),
        ) {
            (file, "") if !file.is_empty() => JwksSource::File(PathBuf::from(file)),
            ("", url) if !url.is_empty() => JwksSource::Url {
                url: url.to_owned(),
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .context("building the JWKS client")?,
            },
            _ => bail!("AUTH_MODE=jwt needs exactly one of AUTH_JWKS_FILE and AUTH_JWKS_URL"),
        };
        let keys = source.read().await?;
        Ok(Authenticator {
            verifier: Some(Arc::new(Verifier {
                source,
                keys: RwLock::new(keys),
                issuer: config.auth_issuer.clone(),
                audience: config.auth_audience.clone(),
                leeway: config.auth_leeway,
            })),
        })
    }

    /// The caller a request's `Authorization` header makes, or the 401 it gets.
    pub async fn caller(&self, authorization: Option<&HeaderValue>) -> Result<Caller, Problem> {
        let Some(verifier) = &self.verifier else {
            return Ok(Caller::Unchecked);
        };
        let Some(value) = authorization else {
            return Ok(Caller::Anonymous);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|token| !token.is_empty());
        let Some(token) = token else {
            return Err(refused("the Authorization header is not `Bearer <token>`"));
        };
        verifier
            .verify(token)
            .await
            .map(Caller::User)
            .map_err(|reason| refused(&reason))
    }
}

/// The 401 for a refused token; the reason goes to the debug log only.
fn refused(reason: &str) -> Problem {
    tracing::debug!(reason, "bearer token refused");
    crate::metrics::count_refused_token();
    unauthorized(Some("the bearer token is not valid"))
}

impl Verifier {
    async fn verify(&self, token: &str) -> Result<User, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        let kid = header.kid.as_deref();
        let key = match self.key_for(kid, header.alg).await {
            Some(key) => key,
            None => {
                self.refresh().await;
                self.key_for(kid, header.alg)
                    .await
                    .ok_or_else(|| format!("no key {kid:?} for {:?}", header.alg))?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| format!("claims or signature: {e}"))?
            .claims;
        if claims.sub.is_empty() {
            return Err("empty sub".to_owned());
        }
        let admin = claims.scope.split_whitespace().any(|s| s == ADMIN_SCOPE);
        Ok(User {
            id: claims.sub,
            admin,
        })
    }

    /// The key a token names (by `kid`; without one, the only key there is)
    /// that may verify `alg`.
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let set = self.keys.read().await;
        let mut candidates = set.keys.iter().filter(|key| match kid {
            Some(kid) => key.kid.as_deref() == Some(kid),
            None => true,
        });
        let key = candidates.next()?;
        if kid.is_none() && candidates.next().is_some() {
            return None;
        }
        key.algorithms.contains(&alg).then(|| key.key.clone())
    }

    /// Reads the JWKS again, unless that was done a moment ago. A failed read
    /// keeps the keys held.
    async fn refresh(&self) {
        if self.keys.read().await.read_at.elapsed() < JWKS_REFRESH_MIN_INTERVAL {
            return;
        }
        let mut set = self.keys.write().await;
        if set.read_at.elapsed() < JWKS_REFRESH_MIN_INTERVAL {
            return;
        }
        match self.source.read().await {
            Ok(fresh) => *set = fresh,
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), "could not read the JWKS again");
                set.read_at = Instant::now();
            }
        }
    }
}

impl JwksSource {
    async fn read(&self) -> anyhow::Result<KeySet> {
        let text = match self {
            JwksSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("reading AUTH_JWKS_FILE {}", path.display()))?,
            JwksSource::Url { url, client } => client
                .get(url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .with_context(|| format!("fetching AUTH_JWKS_URL {url}"))?
                .text()
                .await
                .with_context(|| format!("reading AUTH_JWKS_URL {url}"))?,
        };
        let set: JwkSet = serde_json::from_str(&text).context("the JWKS is not a JSON key set")?;
        let keys = verifying_keys(&set)?;
        Ok(KeySet {
            keys,
            read_at: Instant::now(),
        })
    }
}

/// The JWKS's signature keys. Symmetric (`oct`) keys are refused: a JWKS is
/// public, and accepting one would let anyone who read it sign tokens.
fn verifying_keys(set: &JwkSet) -> anyhow::Result<Vec<VerifyingKey>> {
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let algorithms = algorithms_of(jwk)?;
        let key = DecodingKey::from_jwk(jwk)
            .with_context(|| format!("the JWKS key {:?} is not usable", jwk.common.key_id))?;
        keys.push(VerifyingKey {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    ensure!(!keys.is_empty(), "the JWKS holds no signature key");
    let mut kids = HashSet::new();
    for key in &keys {
        ensure!(
            kids.insert(key.kid.clone()),
            "the JWKS holds two keys with kid {:?}",
            key.kid
        );
    }
    Ok(keys)
}

/// The algorithms a token verified by `jwk` may name: those of the key's own
/// kind, narrowed to its `alg` when it states one.
fn algorithms_of(jwk: &Jwk) -> anyhow::Result<Vec<Algorithm>> {
    let of_kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            ref other => bail!(
                "the JWKS key {:?} is on an unsupported curve {other:?}",
                jwk.common.key_id
            ),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => bail!(
            "the JWKS key {:?} is a shared secret; only public keys belong in a JWKS",
            jwk.common.key_id
        ),
        _ => {
            bail!(
                "the JWKS key {:?} is of an unsupported type",
                jwk.common.key_id
            )
        }
    };
    let Some(stated) = jwk.common.key_algorithm else {
        return Ok(of_kind);
    };
    let narrowed: Vec<Algorithm> = of_kind
        .into_iter()
        .filter(|alg| KeyAlgorithm::from(*alg) == stated)
        .collect();
    ensure!(
        !narrowed.is_empty(),
        "the JWKS key {:?} states alg {stated:?}, which does not fit its type",
        jwk.common.key_id
    );
    Ok(narrowed)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use local_infra::identity::{LocalIssuer, LOCAL_AUDIENCE, LOCAL_ISSUER};

    use super::*;

    fn config_for(jwks: &str, dir: &std::path::Path) -> CommonConfig {
        let path = dir.join("jwks.json");
        std::fs::write(&path, jwks).unwrap();
        CommonConfig {
            auth_mode: AuthMode::Jwt,
            auth_jwks_file: path.display().to_string(),
            auth_issuer: LOCAL_ISSUER.to_owned(),
            auth_audience: LOCAL_AUDIENCE.to_owned(),
            ..CommonConfig::defaults("test-service", 0, "test")
        }
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    #[tokio::test]
    async fn a_token_names_its_subject_and_the_admin_scope_makes_an_administrator() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = LocalIssuer::generate_es256("k").unwrap();
        let auth = Authenticator::from_config(&config_for(&issuer.jwks_json(), dir.path()))
            .await
            .unwrap();
        let ttl = Duration::from_secs(60);
        let customer = auth
            .caller(Some(&bearer(&issuer.token("alice", false, ttl).unwrap())))
            .await
            .unwrap();
        assert_eq!(
            customer.access().unwrap(),
            Access::OwnOnly("alice".to_owned())
        );
        let admin = auth
            .caller(Some(&bearer(&issuer.token("ops", true, ttl).unwrap())))
            .await
            .unwrap();
        assert_eq!(admin.access().unwrap(), Access::Everything);
        assert_eq!(auth.caller(None).await.unwrap(), Caller::Anonymous);
        let basic = HeaderValue::from_static("Basic YWxpY2U6c2VjcmV0");
        let refused = auth.caller(Some(&basic)).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn with_auth_off_everyone_may_do_everything() {
        let auth = Authenticator::off();
        let caller = auth.caller(None).await.unwrap();
        assert_eq!(caller.access().unwrap(), Access::Everything);
    }

    #[tokio::test]
    async fn a_jwks_holding_a_shared_secret_stops_the_service_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = r#"{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}"#;
        let err = Authenticator::from_config(&config_for(jwks, dir.path()))
            .await
            .err()
            .expect("a shared secret is refused");
        assert!(format!("{err:#}").contains("shared secret"), "{err:#}");
    }

    #[test]
    fn jwt_mode_without_issuer_audience_or_keys_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let complete = config_for("{}", dir.path());
        assert!(complete.validate().is_ok());
        for (broken, names) in [
            (
                CommonConfig {
                    auth_issuer: String::new(),
                    ..complete.clone()
                },
                "AUTH_ISSUER",
            ),
            (
                CommonConfig {
                    auth_audience: String::new(),
                    ..complete.clone()
                },
                "AUTH_AUDIENCE",
            ),
            (
                CommonConfig {
                    auth_jwks_file: String::new(),
                    ..complete.clone()
                },
                "AUTH_JWKS_FILE",
            ),
            (
                CommonConfig {
                    auth_jwks_url: "https://idp.example/jwks".to_owned(),
                    ..complete.clone()
                },
                "AUTH_JWKS_URL",
            ),
        ] {
            let err = broken.validate().unwrap_err();
            assert!(format!("{err:#}").contains(names), "{err:#}");
        }
    }
}
