//! `AUTH_MODE=jwt`: every route against every kind of caller.
//!
//! One stack checks tokens against a JWKS holding an ES256 and an RS256 key
//! (as a provider in the middle of a key rotation publishes). The matrix
//! sends each route's request with no token, with seven tokens that must be
//! refused (malformed, signed by a key not in the JWKS, expired, another
//! issuer, another audience, HS256 "signed" with the published key, `none`),
//! as another customer, as the owner and as an administrator (with each
//! key), and compares every status with the rule the route follows. The
//! saga runs with auth on throughout: alice's order is placed with her token
//! and ends CONFIRMED.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use local_infra::identity::{now_secs, LocalIssuer, LOCAL_AUDIENCE, LOCAL_ISSUER};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use system_tests::{StackAuth, StackOptions, TestStack};

const OWNER: &str = "alice";
const STRANGER: &str = "mallory";
const TTL: Duration = Duration::from_secs(3600);

/// Whom a request is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum As {
    NoToken,
    Refused(Bad),
    Stranger,
    Owner,
    Admin,
    AdminRs256,
}

/// Tokens that must never get past authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    Malformed,
    UnknownSigner,
    Expired,
    WrongIssuer,
    WrongAudience,
    HmacWithPublicKey,
    AlgNone,
}

const BAD: [Bad; 7] = [
    Bad::Malformed,
    Bad::UnknownSigner,
    Bad::Expired,
    Bad::WrongIssuer,
    Bad::WrongAudience,
    Bad::HmacWithPublicKey,
    Bad::AlgNone,
];

/// What a route answers each kind of signed-in caller (refused tokens are
/// always 401).
struct Rule {
    no_token: StatusCode,
    stranger: StatusCode,
    owner: StatusCode,
    admin: StatusCode,
}

const PUBLIC: Rule = Rule {
    no_token: StatusCode::OK,
    stranger: StatusCode::OK,
    owner: StatusCode::OK,
    admin: StatusCode::OK,
};

/// The owner's and the administrator's; hidden (404) from anyone else.
const OWN: Rule = Rule {
    no_token: StatusCode::UNAUTHORIZED,
    stranger: StatusCode::NOT_FOUND,
    owner: StatusCode::OK,
    admin: StatusCode::OK,
};

/// A question naming the owner: refused (403) to anyone else.
const OWN_BY_NAME: Rule = Rule {
    stranger: StatusCode::FORBIDDEN,
    ..OWN
};

const ADMIN_ONLY: Rule = Rule {
    no_token: StatusCode::UNAUTHORIZED,
    stranger: StatusCode::FORBIDDEN,
    owner: StatusCode::FORBIDDEN,
    admin: StatusCode::OK,
};

struct Tokens {
    es256: LocalIssuer,
    rs256: LocalIssuer,
    outsider: LocalIssuer,
    jwks: String,
}

impl Tokens {
    fn new() -> Tokens {
        let es256 = LocalIssuer::generate_es256("es-1").unwrap();
        let rs256 = LocalIssuer::generate_rs256("rs-1").unwrap();
        // Same kid as the trusted key, so only the signature tells them apart.
        let outsider = LocalIssuer::generate_es256("es-1").unwrap();
        let jwks = LocalIssuer::jwks_of(&[&es256, &rs256]);
        Tokens {
            es256,
            rs256,
            outsider,
            jwks,
        }
    }

    fn user(&self, user: &str, admin: bool) -> String {
        self.es256.token(user, admin, TTL).unwrap()
    }

    fn claims(&self, user: &str) -> Value {
        let now = now_secs();
        json!({"iss": LOCAL_ISSUER, "aud": LOCAL_AUDIENCE, "sub": user, "iat": now, "exp": now + 3600})
    }

    fn header(&self, who: As) -> Option<String> {
        let token = match who {
            As::NoToken => return None,
            As::Stranger => self.user(STRANGER, false),
            As::Owner => self.user(OWNER, false),
            As::Admin => self.user("root", true),
            As::AdminRs256 => self.rs256.token("root", true, TTL).unwrap(),
            As::Refused(bad) => self.bad(bad),
        };
        Some(format!("Bearer {token}"))
    }

    fn bad(&self, bad: Bad) -> String {
        let mut claims = self.claims(OWNER);
        match bad {
            Bad::Malformed => "not-a.jwt".to_owned(),
            Bad::UnknownSigner => self.outsider.sign(&claims).unwrap(),
            Bad::Expired => {
                // Well past any leeway.
                claims["exp"] = json!(now_secs() - 3600);
                claims["iat"] = json!(now_secs() - 7200);
                self.es256.sign(&claims).unwrap()
            }
            Bad::WrongIssuer => {
                claims["iss"] = json!("https://idp.example.com");
                self.es256.sign(&claims).unwrap()
            }
            Bad::WrongAudience => {
                claims["aud"] = json!("another-api");
                self.es256.sign(&claims).unwrap()
            }
            Bad::HmacWithPublicKey => {
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
                header.kid = Some("es-1".to_owned());
                let secret = jsonwebtoken::EncodingKey::from_secret(self.jwks.as_bytes()).unwrap();
                jsonwebtoken::encode(&header, &claims, &secret).unwrap()
            }
            Bad::AlgNone => {
                let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"es-1"}"#);
                let body = URL_SAFE_NO_PAD.encode(claims.to_string());
                format!("{header}.{body}.")
            }
        }
    }
}

struct Route {
    method: Method,
    url: String,
    body: Option<Value>,
    rule: Rule,
    /// Status a successful call answers instead of 200 (201, 202).
    success: StatusCode,
}

fn route(method: Method, url: String, rule: Rule) -> Route {
    Route {
        method,
        url,
        body: None,
        rule,
        success: StatusCode::OK,
    }
}

impl Route {
    fn with_body(mut self, body: Value) -> Route {
        self.body = Some(body);
        self
    }

    fn succeeding_with(mut self, status: StatusCode) -> Route {
        self.success = status;
        self
    }

    fn expected(&self, who: As) -> StatusCode {
        let status = match who {
            As::Refused(_) => return StatusCode::UNAUTHORIZED,
            As::NoToken => self.rule.no_token,
            As::Stranger => self.rule.stranger,
            As::Owner => self.rule.owner,
            As::Admin | As::AdminRs256 => self.rule.admin,
        };
        if status == StatusCode::OK {
            self.success
        } else {
            status
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_as_its_rule_says() {
    let tokens = Tokens::new();
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, &tokens.jwks).unwrap();
    let stack = TestStack::start_with(StackOptions {
        auth: Some(StackAuth {
            jwks_file,
            admin_token: tokens.user("root", true),
        }),
        ..StackOptions::default()
    })
    .await;
    stack.put_product("widget", 250, 100).await;

    // The saga with auth on: the owner places an order with her own token.
    let http = reqwest::Client::new();
    let owner = tokens.header(As::Owner).unwrap();
    let placed = http
        .post(stack.order_url("/api/orders"))
        .header("Authorization", &owner)
        .json(&json!({"orderId": "auth-1", "items": [{"sku": "widget", "quantity": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::CREATED);
    let placed: Value = placed.json().await.unwrap();
    assert_eq!(
        placed["userId"], OWNER,
        "the token's subject is the customer"
    );
    let order = stack.wait_until_terminal("auth-1").await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    stack.wait_for_notifications("auth-1", 1).await;

    let order_body = json!({"userId": OWNER, "items": [{"sku": "widget", "quantity": 1}]});
    let routes = [
        route(Method::POST, stack.order_url("/api/orders"), OWN_BY_NAME)
            .with_body(order_body)
            .succeeding_with(StatusCode::CREATED),
        route(
            Method::GET,
            stack.order_url("/api/orders?userId=alice"),
            OWN_BY_NAME,
        ),
        route(Method::GET, stack.order_url("/api/orders/auth-1"), OWN),
        route(
            Method::GET,
            stack.order_url("/api/orders/auth-1?waitFor=CONFIRMED&timeout=1s"),
            OWN,
        ),
        route(
            Method::GET,
            stack.order_url("/api/orders/auth-1/timeline"),
            OWN,
        ),
        route(
            Method::GET,
            stack.order_url("/api/orders/auth-1/events"),
            OWN,
        ),
        route(Method::GET, stack.inventory_url("/api/inventory"), PUBLIC),
        route(
            Method::GET,
            stack.inventory_url("/api/inventory/widget"),
            PUBLIC,
        ),
        route(
            Method::PUT,
            stack.inventory_url("/api/inventory/widget"),
            ADMIN_ONLY,
        )
        .with_body(json!({"name": "widget", "priceCents": 250, "available": 100})),
        route(Method::GET, stack.payment_url("/api/accounts/alice"), OWN),
        route(
            Method::PUT,
            stack.payment_url("/api/accounts/alice"),
            ADMIN_ONLY,
        )
        .with_body(json!({"creditCents": 100_000})),
        route(Method::GET, stack.payment_url("/api/payments/auth-1"), OWN),
        route(
            Method::GET,
            stack.notification_url("/api/notifications?userId=alice"),
            OWN_BY_NAME,
        ),
        route(Method::GET, stack.order_url("/health"), PUBLIC),
        route(Method::GET, stack.order_url("/metrics"), PUBLIC),
        // Last: it changes the order. Repeating a cancellation answers 202 again.
        route(
            Method::POST,
            stack.order_url("/api/orders/auth-1/cancel"),
            OWN,
        )
        .succeeding_with(StatusCode::ACCEPTED),
    ];
    let callers: Vec<As> = [As::NoToken]
        .into_iter()
        .chain(BAD.map(As::Refused))
        .chain([As::Stranger, As::Owner, As::Admin, As::AdminRs256])
        .collect();

    let mut wrong = Vec::new();
    for route in &routes {
        for &who in &callers {
            let mut request = http.request(route.method.clone(), &route.url);
            if let Some(header) = tokens.header(who) {
                request = request.header("Authorization", header);
            }
            if let Some(body) = &route.body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let expected = route.expected(who);
            if status != expected {
                wrong.push(format!(
                    "{} {} as {who:?}: {status}, expected {expected}",
                    route.method, route.url
                ));
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                let challenge = response.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let problem: Value = response.json().await.unwrap();
                let invalid = matches!(who, As::Refused(_));
                assert_eq!(
                    challenge.contains(r#"error="invalid_token""#),
                    invalid,
                    "{who:?}: {challenge}"
                );
                assert_eq!(problem["status"], 401);
                if invalid {
                    assert_eq!(
                        problem["detail"], "the bearer token is not valid",
                        "a refusal never says which check failed"
                    );
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // What a customer lists and reads is their own only.
    let stranger = tokens.header(As::Stranger).unwrap();
    for (url, field) in [
        (stack.order_url("/api/orders"), "userId"),
        (
            stack.notification_url("/api/notifications?orderId=auth-1"),
            "userId",
        ),
    ] {
        let seen: Value = http
            .get(&url)
            .header("Authorization", &stranger)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let seen = seen.as_array().unwrap();
        assert!(
            seen.iter().all(|item| item[field] == STRANGER),
            "{url} as {STRANGER}: {seen:?}"
        );
        assert!(seen.is_empty(), "{STRANGER} has placed nothing: {seen:?}");
    }
    let own: Value = http
        .get(stack.order_url("/api/orders"))
        .header("Authorization", &owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let own = own.as_array().unwrap();
    assert!(!own.is_empty());
    assert!(own.iter().all(|order| order["userId"] == OWNER), "{own:?}");

    stack.shutdown().await;
}
