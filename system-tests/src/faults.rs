//! What every fault test shares: a stream of orders placed while the fault
//! happens ([`Load`]), and the exact invariants checked after it
//! ([`assert_invariants`]): every accepted order ended, none was lost, no
//! effect was applied twice (units sold = units in CONFIRMED orders, stock
//! conserved, credit charged = their totals, one approved payment for each
//! CONFIRMED order and no other), with the time from the last fault until
//! everything ended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::{wait_for, Api, TERMINAL};

/// The one product the orders buy.
pub const SKU: &str = "widget";
/// Its price.
pub const PRICE_CENTS: i64 = 2_500;
/// Customers share their credit across many orders, so some payments fail.
pub const CUSTOMERS: usize = 25;
/// What every account starts with (payment-service's default).
pub const INITIAL_CREDIT_CENTS: i64 = 100_000;
/// Orders in flight at once from the load generator.
const CONCURRENCY: usize = 4;
/// How long all orders may take to end after the last fault.
const SETTLE_DEADLINE: Duration = Duration::from_secs(240);
/// How long one POST may go unanswered before it is sent again (the same
/// order, so the same answer) to the next order-service.
const POST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the load generator keeps retrying one order.
const POST_DEADLINE: Duration = Duration::from_secs(180);

/// Posts orders named `{prefix}-{i}` in the background, counting those
/// accepted. Each goes to the order-service last known to answer (the
/// first of the list to begin with): a POST that gets no answer (a lost
/// host, a timeout) is sent again, the same order, to the next one, which
/// is then used from there on, as a load balancer's health check would;
/// placing an order is idempotent, so a repeat answers 200 with the stored
/// order. A 503 ("retry later") is retried after its `Retry-After`. Every
/// order must be accepted in the end.
pub struct Load {
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<Vec<String>>,
}

impl Load {
    pub fn start(order_bases: &[String], prefix: &str, count: usize) -> Load {
        let accepted = Arc::new(AtomicUsize::new(0));
        let urls: Arc<Vec<String>> = Arc::new(
            order_bases
                .iter()
                .map(|base| format!("{base}/api/orders"))
                .collect(),
        );
        let counter = Arc::clone(&accepted);
        let prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(POST_TIMEOUT)
                .build()
                .expect("an HTTP client");
            let next = Arc::new(AtomicUsize::new(0));
            let answering = Arc::new(AtomicUsize::new(0));
            let mut posters = Vec::new();
            for _ in 0..CONCURRENCY {
                let (http, urls, next, answering, counter, prefix) = (
                    http.clone(),
                    Arc::clone(&urls),
                    Arc::clone(&next),
                    Arc::clone(&answering),
                    Arc::clone(&counter),
                    prefix.clone(),
                );
                posters.push(tokio::spawn(async move {
                    let mut ids = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return ids;
                        }
                        let id = format!("{prefix}-{i}");
                        let body = json!({
                            "orderId": id,
                            "userId": format!("{prefix}-customer-{}", i % CUSTOMERS),
                            "items": [{"sku": SKU, "quantity": 1 + i % 2}],
                        });
                        place(&http, &urls, &answering, &id, &body).await;
                        counter.fetch_add(1, Ordering::Relaxed);
                        ids.push(id);
                    }
                }));
            }
            let mut ids = Vec::new();
            for poster in posters {
                ids.extend(poster.await.expect("poster"));
            }
            ids
        });
        Load { accepted, task }
    }

    /// Waits until at least `count` orders were accepted.
    pub async fn wait_for_accepted(&self, count: usize) {
        wait_for(&format!("{count} accepted orders"), || async {
            (self.accepted.load(Ordering::Relaxed) >= count).then_some(())
        })
        .await
    }

    /// Waits for the last order to be accepted; their ids.
    pub async fn finish(self) -> Vec<String> {
        self.task.await.expect("load generator")
    }
}

/// Places one order at `urls[answering]`, moving on to the next URL (and
/// round again) until one answers; the answer must accept it.
async fn place(
    http: &reqwest::Client,
    urls: &[String],
    answering: &AtomicUsize,
    id: &str,
    body: &serde_json::Value,
) {
    let started = Instant::now();
    loop {
        let turn = answering.load(Ordering::Relaxed);
        match http.post(&urls[turn % urls.len()]).json(body).send().await {
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                // "Retry later": the order's fate is not known yet (a row
                // the lost host's open transaction holds, say), and asking
                // again with the same order is what the answer asks for.
                assert!(
                    started.elapsed() < POST_DEADLINE,
                    "order {id} was refused with 503 for {POST_DEADLINE:?}"
                );
                tokio::time::sleep(retry_after(&response)).await;
            }
            Ok(response) => {
                let status = response.status();
                assert!(
                    status == StatusCode::CREATED || status == StatusCode::OK,
                    "order {id}: {status} {}",
                    response.text().await.unwrap_or_default()
                );
                return;
            }
            Err(error) => {
                assert!(
                    started.elapsed() < POST_DEADLINE,
                    "order {id} was not accepted by any order-service: {error}"
                );
                // Others may have moved on already; move on from this one once.
                let _ = answering.compare_exchange(
                    turn,
                    turn + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }
}

/// The pause a 503 asks for (`Retry-After`, in seconds), else one second.
fn retry_after(response: &reqwest::Response) -> Duration {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
}

/// Waits until every order ended, then checks that nothing was lost or
/// applied twice; prints the figures with `test`'s name and the time since
/// `fault` (the last fault injected), and returns that time. `stock` is what
/// the product started with; `db` reaches every schema.
pub async fn assert_invariants(
    api: &Api,
    db: &PgPool,
    test: &str,
    ids: &[String],
    stock: i64,
    fault: Instant,
) -> Duration {
    let started = Instant::now();
    let statuses = loop {
        let rows: Vec<(String, String, Option<i64>)> =
            sqlx::query_as("SELECT order_id, status, total_cents FROM orders.orders")
                .fetch_all(db)
                .await
                .unwrap();
        let ended = rows
            .iter()
            .filter(|(_, status, _)| TERMINAL.contains(&status.as_str()))
            .count();
        if ended == ids.len() && rows.len() == ids.len() {
            break rows;
        }
        assert!(
            started.elapsed() < SETTLE_DEADLINE,
            "{test}: only {ended} of {} orders ended ({} stored)",
            ids.len(),
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let recovered = fault.elapsed();

    let by_id: HashMap<&str, (&str, Option<i64>)> = statuses
        .iter()
        .map(|(id, status, total)| (id.as_str(), (status.as_str(), *total)))
        .collect();
    for id in ids {
        assert!(by_id.contains_key(id.as_str()), "{test}: order {id} lost");
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (status, _) in by_id.values() {
        *counts.entry(status).or_default() += 1;
    }
    assert_eq!(counts.get("CANCELLED"), None, "{test}: no saga timed out");
    let confirmed: Vec<&str> = by_id
        .iter()
        .filter(|(_, (status, _))| *status == "CONFIRMED")
        .map(|(id, _)| *id)
        .collect();
    let confirmed_totals: i64 = by_id
        .values()
        .filter(|(status, _)| *status == "CONFIRMED")
        .map(|(_, total)| total.expect("a confirmed order has a total"))
        .sum();

    // Stock: what was sold is exactly what CONFIRMED orders bought.
    let units_confirmed: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(i.quantity), 0)::BIGINT FROM orders.order_items i \
         JOIN orders.orders o USING (order_id) WHERE o.status = 'CONFIRMED'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    let product = api.wait_until_settled(SKU).await;
    assert_eq!(product["sold"], units_confirmed, "{test}: {product}");
    assert_eq!(
        product["available"].as_i64().unwrap() + product["sold"].as_i64().unwrap(),
        stock,
        "{test}: stock conserved"
    );

    // Credit: charged exactly the CONFIRMED totals, once each.
    let (accounts, credit_left): (i64, i64) = sqlx::query_as(
        "SELECT count(*), COALESCE(sum(credit_cents), 0)::BIGINT FROM payments.accounts",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(
        accounts * INITIAL_CREDIT_CENTS - credit_left,
        confirmed_totals,
        "{test}: credit charged = totals of CONFIRMED orders"
    );
    let mut approved: Vec<String> =
        sqlx::query_scalar("SELECT order_id FROM payments.payments WHERE status = 'APPROVED'")
            .fetch_all(db)
            .await
            .unwrap();
    approved.sort();
    let mut confirmed_sorted: Vec<String> = confirmed.iter().map(|id| (*id).to_owned()).collect();
    confirmed_sorted.sort();
    assert_eq!(
        approved, confirmed_sorted,
        "{test}: one approved payment for each CONFIRMED order, no other"
    );

    eprintln!(
        "{test}: {} orders accepted, all ended ({} CONFIRMED, {} REJECTED, {} PAYMENT_FAILED); \
         {} units sold, {} cents charged; all ended {:.1} s after the last fault",
        ids.len(),
        counts.get("CONFIRMED").copied().unwrap_or(0),
        counts.get("REJECTED").copied().unwrap_or(0),
        counts.get("PAYMENT_FAILED").copied().unwrap_or(0),
        units_confirmed,
        confirmed_totals,
        recovered.as_secs_f64()
    );
    recovered
}

/// The node leading the most partitions of `topic`.
pub fn busiest_leader(kafka: &local_infra::ApacheKafka, topic: &str) -> i32 {
    let mut led: HashMap<i32, usize> = HashMap::new();
    for partition in 0..shared_events::topics::DEFAULT_PARTITIONS {
        if let Ok(Some(leader)) = kafka.leader_of(topic, partition) {
            *led.entry(leader).or_default() += 1;
        }
    }
    led.into_iter()
        .max_by_key(|(_, count)| *count)
        .map(|(leader, _)| leader)
        .expect("the topic has leaders")
}
