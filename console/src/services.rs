//! The services' public HTTP APIs, as the console calls them: orders and
//! their timelines (order-service), stock (inventory-service), and every
//! service's `/metrics`. The console has no database access: what it shows
//! of the services' state is what their APIs answer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;

/// Why a call to a service failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{service} did not answer: {reason}")]
    Unavailable {
        service: &'static str,
        reason: String,
    },
    /// The service answered with a problem (4xx/5xx); its `detail` and status.
    #[error("{service} answered {status}: {detail}")]
    Refused {
        service: &'static str,
        status: u16,
        detail: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: String,
    pub user_id: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub items: Vec<Item>,
    #[serde(default)]
    pub total_cents: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// Whether the saga is over (nothing will change the status but a cancellation).
    pub fn is_final(&self) -> bool {
        FINAL_STATUSES.contains(&self.status.as_str())
    }
}

/// Statuses after which an order's saga has stopped.
pub const FINAL_STATUSES: [&str; 4] = ["CONFIRMED", "REJECTED", "PAYMENT_FAILED", "CANCELLED"];
/// Every status, for the filter.
pub const STATUSES: [&str; 6] = [
    "PENDING",
    "RESERVED",
    "CONFIRMED",
    "REJECTED",
    "PAYMENT_FAILED",
    "CANCELLED",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub sku: String,
    pub quantity: i64,
}

/// One step of an order's saga as order-service recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub event_id: String,
    pub event_type: String,
    pub service: String,
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    /// The event that caused this one (absent for the first, and from an
    /// order-service older than this field).
    #[serde(default)]
    pub causation_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub order_id: String,
    pub status: String,
    pub events: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
}

/// Filters of the orders page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OrderFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl OrderFilter {
    /// Empty strings (an untouched form field) mean "no filter".
    pub fn normalised(self) -> OrderFilter {
        let keep = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        OrderFilter {
            status: keep(self.status),
            user_id: keep(self.user_id),
        }
    }
}

/// A service the console knows, with its base URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: &'static str,
    pub url: String,
}

/// Calls the services. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Services {
    client: reqwest::Client,
    pub order: Endpoint,
    pub inventory: Endpoint,
    pub all: Vec<Endpoint>,
}

/// How many orders the orders page lists at most.
const ORDERS_SHOWN: u32 = 100;

impl Services {
    pub fn new(config: &Config) -> anyhow::Result<Services> {
        let client = reqwest::Client::builder()
            .timeout(config.console_http_timeout)
            .build()?;
        let endpoint = |name, url: &str| Endpoint {
            name,
            url: url.trim_end_matches('/').to_owned(),
        };
        let order = endpoint("order-service", &config.console_order_service_url);
        let inventory = endpoint("inventory-service", &config.console_inventory_service_url);
        let all = vec![
            order.clone(),
            inventory.clone(),
            endpoint("payment-service", &config.console_payment_service_url),
            endpoint(
                "notification-service",
                &config.console_notification_service_url,
            ),
        ];
        Ok(Services {
            client,
            order,
            inventory,
            all,
        })
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        endpoint: &Endpoint,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ServiceError> {
        let request = self
            .client
            .get(format!("{}{path}", endpoint.url))
            .query(query);
        answer(endpoint, request).await
    }

    pub async fn orders(&self, filter: &OrderFilter) -> Result<Vec<Order>, ServiceError> {
        let mut query = vec![("limit", ORDERS_SHOWN.to_string())];
        if let Some(status) = &filter.status {
            query.push(("status", status.clone()));
        }
        if let Some(user) = &filter.user_id {
            query.push(("userId", user.clone()));
        }
        self.get(&self.order, "/api/orders", &query).await
    }

    pub async fn order(&self, order_id: &str) -> Result<Order, ServiceError> {
        let path = format!("/api/orders/{}", path_segment(order_id));
        self.get(&self.order, &path, &[]).await
    }

    pub async fn timeline(&self, order_id: &str) -> Result<Timeline, ServiceError> {
        let path = format!("/api/orders/{}/timeline", path_segment(order_id));
        self.get(&self.order, &path, &[]).await
    }

    /// Places an order: the body as order-service's `POST /api/orders` takes it.
    pub async fn place_order(&self, order: &Value) -> Result<Order, ServiceError> {
        let request = self
            .client
            .post(format!("{}/api/orders", self.order.url))
            .json(order);
        answer(&self.order, request).await
    }

    pub async fn stock(&self) -> Result<Vec<Product>, ServiceError> {
        self.get(&self.inventory, "/api/inventory", &[]).await
    }

    /// `endpoint`'s Prometheus text.
    pub async fn metrics(&self, endpoint: &Endpoint) -> Result<String, ServiceError> {
        let unavailable = |e: reqwest::Error| ServiceError::Unavailable {
            service: endpoint.name,
            reason: e.to_string(),
        };
        self.client
            .get(format!("{}/metrics", endpoint.url))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .text()
            .await
            .map_err(unavailable)
    }
}

tokio::task_local! {
    /// The bearer token of the request being handled, sent on to the services.
    static CALLER_TOKEN: Option<String>;
}

/// Runs `work` (a request's handling) with the caller's bearer `token`: every
/// call it makes to a service carries it, so each service applies its own
/// rules to the console's user. Calls made outside (the metrics sampler, which
/// reads only the public `/metrics`) carry none.
pub async fn as_caller<F: std::future::Future>(token: Option<String>, work: F) -> F::Output {
    CALLER_TOKEN.scope(token, work).await
}

/// `stream`, polled with the current request's token in scope, wherever it
/// is polled: a streamed response (server-sent events) outlives its handler,
/// so [`as_caller`]'s scope has ended by the time its body is read.
pub fn keep_caller<S: futures::Stream>(stream: S) -> impl futures::Stream<Item = S::Item> {
    CallerStream {
        token: CALLER_TOKEN.try_with(Clone::clone).ok().flatten(),
        inner: Box::pin(stream),
    }
}

/// See [`keep_caller`].
struct CallerStream<S> {
    token: Option<String>,
    inner: std::pin::Pin<Box<S>>,
}

impl<S: futures::Stream> futures::Stream for CallerStream<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let this = &mut *self;
        CALLER_TOKEN.sync_scope(this.token.clone(), || this.inner.as_mut().poll_next(cx))
    }
}

async fn answer<T: for<'de> Deserialize<'de>>(
    endpoint: &Endpoint,
    request: reqwest::RequestBuilder,
) -> Result<T, ServiceError> {
    let token = CALLER_TOKEN.try_with(Clone::clone).ok().flatten();
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let unavailable = |e: reqwest::Error| ServiceError::Unavailable {
        service: endpoint.name,
        reason: e.without_url().to_string(),
    };
    let response = request.send().await.map_err(unavailable)?;
    let status = response.status();
    if !status.is_success() {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let detail = body
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or("no detail")
            .to_owned();
        return Err(ServiceError::Refused {
            service: endpoint.name,
            status: status.as_u16(),
            detail,
        });
    }
    response.json().await.map_err(unavailable)
}

/// `value` percent-encoded for one URL path segment.
fn path_segment(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Sums every sample of `metric` in Prometheus text (all label sets).
pub fn sum_metric(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let name_end = line.find(['{', ' '])?;
            (&line[..name_end] == metric).then_some(line)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_metric_over_its_label_sets() {
        let text = "# HELP events_consumed_total x\n\
                    events_consumed_total{service=\"a\",topic=\"t\"} 3\n\
                    events_consumed_total{service=\"a\",topic=\"u\"} 4\n\
                    events_consumed_total_other 100\n\
                    kafka_consumer_lag{partition=\"0\"} 2\n";
        assert_eq!(sum_metric(text, "events_consumed_total"), 7.0);
        assert_eq!(sum_metric(text, "kafka_consumer_lag"), 2.0);
        assert_eq!(sum_metric(text, "missing"), 0.0);
    }

    #[test]
    fn encodes_an_order_id_for_a_path() {
        assert_eq!(path_segment("a b/../c"), "a%20b%2F..%2Fc");
    }

    #[test]
    fn blank_filters_mean_no_filter() {
        let filter = OrderFilter {
            status: Some(String::new()),
            user_id: Some(" alice ".to_owned()),
        }
        .normalised();
        assert_eq!(filter.status, None);
        assert_eq!(filter.user_id.as_deref(), Some("alice"));
    }
}
