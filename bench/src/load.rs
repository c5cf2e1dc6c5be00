//! Driving the system over HTTP: a catalog and customers to order from,
//! closed-loop and open-loop order streams, and waiting until every accepted
//! order has reached a terminal status.
//!
//! Latency is taken in two parts. The client times `POST /api/orders` (in an
//! open loop from the *intended* send time, so a client that falls behind does
//! not hide the queueing); the saga's duration comes from the order's own
//! timestamps, `createdAt` → `completedAt`, written by order-service. POST →
//! terminal is their sum: it counts the part of the POST after the order was
//! stored twice, so it errs on the slow side by well under a POST's latency.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Statuses an order cannot leave.
pub const TERMINAL: [&str; 3] = ["CONFIRMED", "REJECTED", "PAYMENT_FAILED"];

/// The status every benchmark order should end in (stock and credit suffice).
pub const CONFIRMED: &str = "CONFIRMED";

/// Units of each benchmark product: more than any run sells.
const STOCK_PER_SKU: i64 = 1_000_000_000;
/// Credit of each benchmark customer, in cents: more than any run spends.
const CREDIT_CENTS: i64 = 1_000_000_000_000;
/// Most lines in one benchmark order, and most units in one line.
const MAX_LINES: u64 = 3;
const MAX_QUANTITY: u64 = 3;
/// One HTTP request may take this long before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests in flight while setting up and while collecting results.
const SIDE_CONCURRENCY: usize = 16;
/// Pause before looking again at an order that is not terminal yet.
const COLLECT_POLL: Duration = Duration::from_millis(20);
/// The system counts as idle once its event counters stood still this long.
const QUIET_FOR: Duration = Duration::from_secs(1);
/// Pause between two readings of the event counters.
const QUIET_POLL: Duration = Duration::from_millis(250);
/// Counters of `GET /metrics` that move while any service has work in hand.
const ACTIVITY_COUNTERS: [&str; 2] = ["events_consumed_total", "events_published_total"];

/// Base URLs of the services the benchmark talks to.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub order: String,
    pub inventory: String,
    pub payment: String,
    pub notification: String,
}

/// The products and customers of one run, and its order bodies.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Prefix of every id this run creates, so runs never collide.
    pub run_id: String,
    pub skus: Vec<String>,
    pub users: Vec<String>,
}

impl Workload {
    pub fn new(run_id: &str, products: usize, customers: usize) -> Workload {
        Workload {
            run_id: run_id.to_owned(),
            skus: (0..products.max(1))
                .map(|i| format!("{run_id}-sku-{i}"))
                .collect(),
            users: (0..customers.max(1))
                .map(|i| format!("{run_id}-user-{i}"))
                .collect(),
        }
    }

    /// Price of product `index`, in cents.
    pub fn price_cents(index: usize) -> i64 {
        100 + (index as i64 * 37) % 900
    }

    /// Customer and lines `(sku index, quantity)` of order number `n`:
    /// pseudo-random, the same for the same `n`.
    pub fn order_lines(&self, n: u64) -> (usize, Vec<(usize, u32)>) {
        let mut rng = SplitMix(n ^ 0x5eed);
        let user = (rng.next_u64() % self.users.len() as u64) as usize;
        let lines = 1 + rng.next_u64() % MAX_LINES.min(self.skus.len() as u64);
        let mut chosen: Vec<(usize, u32)> = Vec::new();
        while (chosen.len() as u64) < lines {
            let sku = (rng.next_u64() % self.skus.len() as u64) as usize;
            if chosen.iter().all(|(s, _)| *s != sku) {
                chosen.push((sku, 1 + (rng.next_u64() % MAX_QUANTITY) as u32));
            }
        }
        (user, chosen)
    }

    fn order_body(&self, order_id: &str, n: u64) -> Value {
        let (user, lines) = self.order_lines(n);
        let items: Vec<Value> = lines
            .iter()
            .map(|(sku, quantity)| json!({"sku": self.skus[*sku], "quantity": quantity}))
            .collect();
        json!({"orderId": order_id, "userId": self.users[user], "items": items})
    }
}

/// A small, fast, seedable generator (SplitMix64): enough to vary orders.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The problem type order-service's admission control refuses with.
const OVERLOADED: &str = "/problems/overloaded";

/// How a refused order is counted among a step's errors: apart from failures,
/// since refusing work it cannot finish in time is the system doing its job.
pub const REFUSED: &str = "refused (overloaded)";

/// An order the service accepted (201).
#[derive(Debug, Clone)]
pub struct Placed {
    pub order_id: String,
    /// POST latency; in an open loop, from the intended send time.
    pub post: Duration,
    /// Which window of a long run it was sent in.
    pub window: usize,
}

/// What one stream of orders produced.
#[derive(Debug, Default)]
pub struct Sent {
    pub placed: Vec<Placed>,
    /// Requests that got no 201: status or transport error, with counts.
    pub errors: Vec<String>,
    /// Wall time from the first intended send to the last response.
    pub elapsed: Duration,
}

impl Sent {
    fn absorb(&mut self, result: Result<Placed, String>) {
        match result {
            Ok(placed) => self.placed.push(placed),
            Err(error) => self.errors.push(error),
        }
    }
}

/// An accepted order once terminal, as its service reports it.
#[derive(Debug, Clone)]
pub struct Finished {
    pub post: Duration,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub window: usize,
}

impl Finished {
    /// POST → terminal: the client's POST latency plus the saga's duration by
    /// the service's clock.
    pub fn end_to_end(&self) -> Duration {
        let saga = (self.completed_at - self.created_at)
            .to_std()
            .unwrap_or_default();
        self.post + saga
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderView {
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

/// Mints bearer tokens for a system that checks them (`AUTH_MODE=jwt`).
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A token whose subject is `user`; an administrator's if `admin`.
    fn token(&self, user: &str, admin: bool) -> anyhow::Result<String>;
}

/// The subject of the administrator's token, which sets up the catalog and
/// the accounts and reads the orders back.
const ADMIN_SUBJECT: &str = "bench-admin";

/// The `Authorization` headers of one run: minted once, before the clock
/// starts, so signing is not measured.
struct Tokens {
    admin: String,
    /// Each customer's own, for placing their orders (a customer may only
    /// order for themself).
    customers: HashMap<String, String>,
}

impl Tokens {
    fn mint(source: &dyn TokenSource, workload: &Workload) -> anyhow::Result<Tokens> {
        let header = |token: String| format!("Bearer {token}");
        let customers = workload
            .users
            .iter()
            .map(|user| Ok((user.clone(), header(source.token(user, false)?))))
            .collect::<anyhow::Result<_>>()
            .context("minting the customers' tokens")?;
        Ok(Tokens {
            admin: header(
                source
                    .token(ADMIN_SUBJECT, true)
                    .context("minting the administrator's token")?,
            ),
            customers,
        })
    }
}

/// HTTP access to the system.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Arc<Endpoints>,
    workload: Arc<Workload>,
    /// `None` when the system takes requests without tokens (`AUTH_MODE=off`).
    tokens: Option<Arc<Tokens>>,
}

impl Client {
    /// A client of `endpoints`; with `tokens`, every request carries a bearer
    /// token: the customer's for an order, the administrator's otherwise.
    pub fn new(
        endpoints: Endpoints,
        workload: Workload,
        tokens: Option<&dyn TokenSource>,
    ) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        let tokens = tokens
            .map(|source| Tokens::mint(source, &workload))
            .transpose()?
            .map(Arc::new);
        Ok(Client {
            http,
            endpoints: Arc::new(endpoints),
            workload: Arc::new(workload),
            tokens,
        })
    }

    /// `request` as the administrator, when tokens are checked.
    fn as_admin(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.tokens {
            Some(tokens) => request.header(reqwest::header::AUTHORIZATION, &tokens.admin),
            None => request,
        }
    }

    /// `request` as the customer `user`, when tokens are checked.
    fn as_customer(&self, request: reqwest::RequestBuilder, user: &str) -> reqwest::RequestBuilder {
        match self.tokens.as_ref().and_then(|t| t.customers.get(user)) {
            Some(token) => request.header(reqwest::header::AUTHORIZATION, token),
            None => self.as_admin(request),
        }
    }

    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// Creates the run's products (`PUT /api/inventory/{sku}`) and customers
    /// (`PUT /api/accounts/{userId}`) with more stock and credit than the run
    /// can use.
    pub async fn set_up(&self) -> anyhow::Result<()> {
        let products = self.workload.skus.iter().enumerate().map(|(i, sku)| {
            let url = format!("{}/api/inventory/{sku}", self.endpoints.inventory);
            let body = json!({"name": sku, "priceCents": Workload::price_cents(i), "available": STOCK_PER_SKU.min(i32::MAX as i64)});
            (url, body)
        });
        let customers = self.workload.users.iter().map(|user| {
            let url = format!("{}/api/accounts/{user}", self.endpoints.payment);
            (url, json!({"creditCents": CREDIT_CENTS}))
        });
        let requests: Vec<(String, Value)> = products.chain(customers).collect();
        let results: Vec<anyhow::Result<()>> = stream::iter(requests)
            .map(|(url, body)| async move {
                let response = self
                    .as_admin(self.http.put(&url))
                    .json(&body)
                    .send()
                    .await
                    .with_context(|| format!("PUT {url}"))?;
                if !response.status().is_success() {
                    bail!(
                        "PUT {url} answered {}: {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    );
                }
                Ok(())
            })
            .buffer_unordered(SIDE_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// POSTs order number `n` of step `step` and times it from `since`.
    async fn place(
        &self,
        step: usize,
        n: u64,
        since: Instant,
        window: usize,
    ) -> Result<Placed, String> {
        let order_id = format!("{}-{step}-{n}", self.workload.run_id);
        let body = self
            .workload
            .order_body(&order_id, n ^ ((step as u64) << 40));
        let user = body["userId"].as_str().unwrap_or_default();
        let response = self
            .as_customer(
                self.http
                    .post(format!("{}/api/orders", self.endpoints.order)),
                user,
            )
            .json(&body)
            .send()
            .await;
        let post = since.elapsed();
        match response {
            Ok(response) if response.status() == StatusCode::CREATED => Ok(Placed {
                order_id,
                post,
                window,
            }),
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                // Admission control's fast refusal is told apart from a failure.
                let problem: Value = response.json().await.unwrap_or_default();
                if problem["type"] == OVERLOADED {
                    Err(REFUSED.to_owned())
                } else {
                    Err("HTTP 503".to_owned())
                }
            }
            Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
            Err(error) if error.is_timeout() => Err("timeout".to_owned()),
            Err(_) => Err("connection error".to_owned()),
        }
    }

    /// Closed loop: `clients` clients, each sending its next order as soon as
    /// the previous POST is answered, for `duration`. `step` numbers the
    /// stream, so order ids never repeat within a run.
    pub async fn closed_loop(&self, clients: usize, duration: Duration, step: usize) -> Sent {
        let started = Instant::now();
        let deadline = started + duration;
        let mut tasks = JoinSet::new();
        for client in 0..clients as u64 {
            let this = self.clone();
            tasks.spawn(async move {
                let mut sent = Sent::default();
                let mut n = client;
                while Instant::now() < deadline {
                    sent.absorb(this.place(step, n, Instant::now(), 0).await);
                    n += clients as u64;
                }
                sent
            });
        }
        let mut all = Sent::default();
        while let Some(done) = tasks.join_next().await {
            let sent = done.expect("a client task panicked");
            all.placed.extend(sent.placed);
            all.errors.extend(sent.errors);
        }
        all.elapsed = started.elapsed();
        all
    }

    /// Open loop: orders sent at a fixed `rate` per second for `duration`,
    /// each on its own schedule whatever happened to the earlier ones; POST
    /// latency counts from the intended send time. `windows` splits a long run
    /// into equal windows (1 for a plain step). `step` numbers the stream.
    pub async fn open_loop(
        &self,
        rate: f64,
        duration: Duration,
        windows: usize,
        step: usize,
    ) -> Sent {
        let count = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
        let per_window = count.div_ceil(windows.max(1) as u64);
        let interval = Duration::from_secs_f64(1.0 / rate.max(f64::MIN_POSITIVE));
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for i in 0..count {
            let intended = started + interval.mul_f64(i as f64);
            tokio::time::sleep_until(intended).await;
            let this = self.clone();
            let window = (i / per_window) as usize;
            tasks.spawn(async move { this.place(step, i, intended, window).await });
        }
        let mut all = Sent::default();
        while let Some(done) = tasks.join_next().await {
            all.absorb(done.expect("a sender task panicked"));
        }
        all.elapsed = started.elapsed();
        all
    }

    /// Waits until every order in `placed` is terminal and returns them as
    /// their service reports them. Fails, naming some, if any is still not
    /// terminal after `timeout`.
    pub async fn collect(
        &self,
        placed: &[Placed],
        timeout: Duration,
    ) -> anyhow::Result<Vec<Finished>> {
        let deadline = Instant::now() + timeout;
        let results: Vec<Result<Finished, String>> = stream::iter(placed)
            .map(|order| self.wait_terminal(order, deadline))
            .buffered(SIDE_CONCURRENCY)
            .collect()
            .await;
        let mut finished = Vec::with_capacity(results.len());
        let mut missing = Vec::new();
        for result in results {
            match result {
                Ok(order) => finished.push(order),
                Err(order_id) => missing.push(order_id),
            }
        }
        if !missing.is_empty() {
            bail!(
                "{} of {} accepted orders did not reach a terminal status within {}s, e.g. {}",
                missing.len(),
                placed.len(),
                timeout.as_secs(),
                missing
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(finished)
    }

    /// Waits until no service has consumed or published an event for
    /// [`QUIET_FOR`]: the work an order causes after it is terminal
    /// (notifications, settling stock) is done, so the next step starts on an
    /// idle system. Fails after `timeout`.
    pub async fn wait_until_idle(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        let mut still_since = Instant::now();
        loop {
            let now = self.activity().await;
            if now.is_some() && now == last {
                if still_since.elapsed() >= QUIET_FOR {
                    return Ok(());
                }
            } else {
                still_since = Instant::now();
                last = now;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the services were still busy {}s after the last order was terminal",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(QUIET_POLL).await;
        }
    }

    /// The sum of every service's event counters, or `None` if one does not
    /// answer.
    async fn activity(&self) -> Option<f64> {
        let e = &self.endpoints;
        let mut total = 0.0;
        for base in [&e.order, &e.inventory, &e.payment, &e.notification] {
            let text = self
                .http
                .get(format!("{base}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            total += text
                .lines()
                .filter(|line| ACTIVITY_COUNTERS.iter().any(|c| line.starts_with(c)))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        }
        Some(total)
    }

    async fn wait_terminal(&self, order: &Placed, deadline: Instant) -> Result<Finished, String> {
        let url = format!("{}/api/orders/{}", self.endpoints.order, order.order_id);
        loop {
            if let Ok(response) = self.as_admin(self.http.get(&url)).send().await {
                if let Ok(view) = response.json::<OrderView>().await {
                    if TERMINAL.contains(&view.status.as_str()) {
                        return Ok(Finished {
                            post: order.post,
                            status: view.status,
                            created_at: view.created_at,
                            // A service without `completedAt` still has
                            // `updatedAt`, which is the same unless prices
                            // arrived after the payment outcome.
                            completed_at: view.completed_at.unwrap_or(view.updated_at),
                            window: order.window,
                        });
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(order.order_id.clone());
            }
            tokio::time::sleep(COLLECT_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_have_distinct_skus_and_valid_quantities() {
        let workload = Workload::new("t", 5, 3);
        for n in 0..1000 {
            let (user, lines) = workload.order_lines(n);
            assert!(user < 3);
            assert!(!lines.is_empty() && lines.len() as u64 <= MAX_LINES);
            for (i, (sku, quantity)) in lines.iter().enumerate() {
                assert!(*sku < 5 && (1..=MAX_QUANTITY as u32).contains(quantity));
                assert!(lines[..i].iter().all(|(other, _)| other != sku));
            }
        }
    }

    #[test]
    fn a_single_product_catalog_gives_single_line_orders() {
        let workload = Workload::new("t", 1, 1);
        assert_eq!(workload.order_lines(7).1.len(), 1);
    }
}
