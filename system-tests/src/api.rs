//! The four services' HTTP APIs, as a test drives them.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::{wait_for, TERMINAL};

/// The four services' HTTP APIs, wherever they run (in-process or as processes).
pub struct Api {
    pub http: reqwest::Client,
    pub order_base: String,
    pub inventory_base: String,
    pub payment_base: String,
    pub notification_base: String,
}

impl Api {
    /// `GET {base_url}/metrics`: the Prometheus text.
    pub async fn metrics(&self, base_url: &str) -> String {
        let response = self
            .http
            .get(format!("{base_url}/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK, "GET {base_url}/metrics");
        response.text().await.expect("a /metrics body")
    }

    /// Polls `GET {base_url}/health` until it answers `status`.
    pub async fn wait_for_health(&self, base_url: &str, status: StatusCode) {
        wait_for(&format!("{base_url}/health to answer {status}"), || async {
            let answered = self
                .http
                .get(format!("{base_url}/health"))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            (answered.map(|r| r.status()).ok() == Some(status)).then_some(())
        })
        .await
    }

    pub fn order_url(&self, path: &str) -> String {
        format!("{}{path}", self.order_base)
    }

    pub fn inventory_url(&self, path: &str) -> String {
        format!("{}{path}", self.inventory_base)
    }

    pub fn payment_url(&self, path: &str) -> String {
        format!("{}{path}", self.payment_base)
    }

    pub fn notification_url(&self, path: &str) -> String {
        format!("{}{path}", self.notification_base)
    }

    /// POSTs `body` to `/api/orders`; returns the status and the JSON body.
    pub async fn post_order(&self, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.order_url("/api/orders"))
            .json(body)
            .send()
            .await
            .expect("POST /api/orders");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_json(&self, url: &str) -> (StatusCode, Value) {
        let response = self.http.get(url).send().await.expect("GET");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn order(&self, order_id: &str) -> Value {
        let (status, body) = self
            .get_json(&self.order_url(&format!("/api/orders/{order_id}")))
            .await;
        assert_eq!(status, StatusCode::OK, "GET order {order_id}: {body}");
        body
    }

    /// Polls the order until its status is terminal and returns it.
    pub async fn wait_until_terminal(&self, order_id: &str) -> Value {
        wait_for(
            &format!("order {order_id} to reach a final status"),
            || async {
                let order = self.order(order_id).await;
                TERMINAL
                    .contains(&order["status"].as_str().unwrap_or_default())
                    .then_some(order)
            },
        )
        .await
    }

    /// Polls the order until it has `status` and returns it.
    pub async fn wait_for_status(&self, order_id: &str, status: &str) -> Value {
        self.wait_for_status_in(order_id, &[status]).await
    }

    /// Polls until the order's status is one of `statuses`.
    pub async fn wait_for_status_in(&self, order_id: &str, statuses: &[&str]) -> Value {
        wait_for(
            &format!("order {order_id} to be one of {statuses:?}"),
            || async {
                let order = self.order(order_id).await;
                let status = order["status"].as_str().unwrap_or_default();
                statuses.contains(&status).then_some(order)
            },
        )
        .await
    }

    /// `POST /api/orders/{orderId}/cancel`, with `body` if given.
    pub async fn cancel_order(&self, order_id: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let request = self
            .http
            .post(self.order_url(&format!("/api/orders/{order_id}/cancel")));
        let request = match body {
            Some(body) => request.json(body),
            None => request,
        };
        let response = request.send().await.expect("POST cancel");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET /api/orders/{orderId}/timeline`'s events.
    pub async fn timeline(&self, order_id: &str) -> Vec<Value> {
        let (status, body) = self
            .get_json(&self.order_url(&format!("/api/orders/{order_id}/timeline")))
            .await;
        assert_eq!(status, StatusCode::OK, "GET timeline {order_id}: {body}");
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// `GET /api/payments/{orderId}`: `None` when the order was never charged.
    pub async fn payment(&self, order_id: &str) -> Option<Value> {
        let (status, body) = self
            .get_json(&self.payment_url(&format!("/api/payments/{order_id}")))
            .await;
        match status {
            StatusCode::OK => Some(body),
            StatusCode::NOT_FOUND => None,
            other => panic!("GET payment {order_id}: {other} {body}"),
        }
    }

    /// Creates or restocks a product.
    pub async fn put_product(&self, sku: &str, price_cents: i64, available: i64) {
        let response = self
            .http
            .put(self.inventory_url(&format!("/api/inventory/{sku}")))
            .json(&serde_json::json!({ "name": sku, "priceCents": price_cents, "available": available }))
            .send()
            .await
            .expect("PUT product");
        assert!(
            response.status().is_success(),
            "PUT product {sku}: {}",
            response.status()
        );
    }

    pub async fn product(&self, sku: &str) -> Value {
        let (status, body) = self
            .get_json(&self.inventory_url(&format!("/api/inventory/{sku}")))
            .await;
        assert_eq!(status, StatusCode::OK, "GET product {sku}: {body}");
        body
    }

    pub async fn account(&self, user_id: &str) -> Value {
        let (status, body) = self
            .get_json(&self.payment_url(&format!("/api/accounts/{user_id}")))
            .await;
        assert_eq!(status, StatusCode::OK, "GET account {user_id}: {body}");
        body
    }

    pub async fn notifications(&self, order_id: &str) -> Vec<Value> {
        let (status, body) = self
            .get_json(&self.notification_url(&format!("/api/notifications?orderId={order_id}")))
            .await;
        assert_eq!(status, StatusCode::OK, "GET notifications: {body}");
        body.as_array().cloned().unwrap_or_default()
    }

    /// Polls until the order has `count` notifications, and returns their kinds.
    pub async fn wait_for_notifications(&self, order_id: &str, count: usize) -> Vec<String> {
        let what = format!("{count} notifications for order {order_id}");
        wait_for(&what, || async {
            let notes = self.notifications(order_id).await;
            (notes.len() >= count).then(|| {
                notes
                    .iter()
                    .map(|n| n["kind"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
        })
        .await
    }

    /// Polls until no unit of `sku` is reserved any more (every sale booked,
    /// every release done) and returns the product.
    pub async fn wait_until_settled(&self, sku: &str) -> Value {
        wait_for(&format!("{sku}'s reservations to settle"), || async {
            let product = self.product(sku).await;
            (product["reserved"] == 0).then_some(product)
        })
        .await
    }
}
