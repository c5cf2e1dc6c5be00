//! What only a real, replicated Kafka can show: the saga on a three-node
//! Apache Kafka cluster (replication factor 3, `min.insync.replicas=2`, no
//! unclean leader election) while nodes crash, restart, hang, and the whole
//! cluster goes away, and while inventory-service scales with the real group
//! coordinator.
//!
//! Each test streams orders in while the fault happens, then checks exact
//! invariants: every accepted order ended, none was lost, no effect was
//! applied twice (units sold = units in CONFIRMED orders, credit charged =
//! their totals, at most one payment per order, every charge approved exactly
//! for a CONFIRMED order), and prints its figures.
//!
//! They need `TEST_KAFKA=apache` (a JDK and Maven); elsewhere they say they
//! were skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use local_infra::{ApacheKafka, TestKafkaMode};
use reqwest::StatusCode;
use serde_json::json;
use system_tests::{wait_for, StackOptions, TestStack};
use tokio::task::JoinHandle;

/// Units of the one product the orders buy: fewer than they ask for in all,
/// so some orders are rejected and stock is contended.
const STOCK: i64 = 1_200;
const PRICE_CENTS: i64 = 2_500;
/// Customers share their credit across many orders, so some payments fail.
const CUSTOMERS: usize = 25;
/// What every account starts with (payment-service's default).
const INITIAL_CREDIT_CENTS: i64 = 100_000;
/// Orders in flight at once from the load generator.
const CONCURRENCY: usize = 4;
/// How long all orders may take to end after the last fault.
const SETTLE_DEADLINE: Duration = Duration::from_secs(240);

/// One cluster test at a time: three JVMs and a stack each are all a small
/// machine can carry, and a starved cluster would test the machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn cluster_stack() -> Option<(TestStack, tokio::sync::MutexGuard<'static, ()>)> {
    if TestKafkaMode::from_env().ok() != Some(TestKafkaMode::Apache)
        || std::env::var("KAFKA_BOOTSTRAP_SERVERS").is_ok()
    {
        eprintln!("skipped: the cluster tests need TEST_KAFKA=apache (a JDK and Maven)");
        return None;
    }
    let turn = ONE_AT_A_TIME.lock().await;
    let stack = TestStack::start_with(StackOptions {
        own_kafka_nodes: Some(3),
        ..StackOptions::default()
    })
    .await;
    stack.put_product("widget", PRICE_CENTS, STOCK).await;
    Some((stack, turn))
}

fn cluster(stack: &TestStack) -> &ApacheKafka {
    stack
        .kafka()
        .and_then(|kafka| kafka.own_apache())
        .expect("a cluster of the stack's own")
}

/// Posts `count` orders named `{prefix}-{i}` in the background, counting
/// those accepted; every POST must be accepted (they only touch Postgres).
struct Load {
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<Vec<String>>,
}

impl Load {
    fn start(stack: &TestStack, prefix: &str, count: usize) -> Load {
        let accepted = Arc::new(AtomicUsize::new(0));
        let url = stack.order_url("/api/orders");
        let counter = Arc::clone(&accepted);
        let prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let next = Arc::new(AtomicUsize::new(0));
            let mut posters = Vec::new();
            for _ in 0..CONCURRENCY {
                let (http, url, next, counter, prefix) = (
                    http.clone(),
                    url.clone(),
                    Arc::clone(&next),
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
                            "items": [{"sku": "widget", "quantity": 1 + i % 2}],
                        });
                        let response = http.post(&url).json(&body).send().await.expect("POST");
                        assert_eq!(response.status(), StatusCode::CREATED, "order {id}");
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
    async fn wait_for_accepted(&self, count: usize) {
        wait_for(&format!("{count} accepted orders"), || async {
            (self.accepted.load(Ordering::Relaxed) >= count).then_some(())
        })
        .await
    }

    async fn finish(self) -> Vec<String> {
        self.task.await.expect("load generator")
    }
}

/// Waits until every order ended, then checks that nothing was lost or
/// applied twice; prints the figures with `test`'s name and the time since
/// `fault` (the last fault injected).
async fn assert_invariants(stack: &TestStack, test: &str, ids: &[String], fault: Instant) {
    let started = Instant::now();
    let statuses = loop {
        let rows: Vec<(String, String, Option<i64>)> =
            sqlx::query_as("SELECT order_id, status, total_cents FROM orders.orders")
                .fetch_all(&stack.db)
                .await
                .unwrap();
        let ended = rows
            .iter()
            .filter(|(_, status, _)| system_tests::TERMINAL.contains(&status.as_str()))
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
    .fetch_one(&stack.db)
    .await
    .unwrap();
    let widget = stack.wait_until_settled("widget").await;
    assert_eq!(widget["sold"], units_confirmed, "{test}: {widget}");
    assert_eq!(
        widget["available"].as_i64().unwrap() + widget["sold"].as_i64().unwrap(),
        STOCK,
        "{test}: stock conserved"
    );

    // Credit: charged exactly the CONFIRMED totals, once each.
    let (accounts, credit_left): (i64, i64) = sqlx::query_as(
        "SELECT count(*), COALESCE(sum(credit_cents), 0)::BIGINT FROM payments.accounts",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    assert_eq!(
        accounts * INITIAL_CREDIT_CENTS - credit_left,
        confirmed_totals,
        "{test}: credit charged = totals of CONFIRMED orders"
    );
    let approved: Vec<String> =
        sqlx::query_scalar("SELECT order_id FROM payments.payments WHERE status = 'APPROVED'")
            .fetch_all(&stack.db)
            .await
            .unwrap();
    let mut approved_sorted = approved.clone();
    approved_sorted.sort();
    let mut confirmed_sorted: Vec<String> = confirmed.iter().map(|id| (*id).to_owned()).collect();
    confirmed_sorted.sort();
    assert_eq!(
        approved_sorted, confirmed_sorted,
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
}

/// The node leading the most partitions of `topic`.
fn busiest_leader(kafka: &ApacheKafka, topic: &str) -> i32 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_crashing_under_a_thousand_orders_loses_and_doubles_nothing() {
    let Some((stack, _turn)) = cluster_stack().await else {
        return;
    };
    let kafka = cluster(&stack);
    let load = Load::start(&stack, "crash", 1_000);
    load.wait_for_accepted(200).await;

    let leader = busiest_leader(kafka, &stack.topics.order_created);
    tokio::task::block_in_place(|| kafka.kill_node(leader)).unwrap();
    let killed = Instant::now();
    load.wait_for_accepted(600).await;
    tokio::task::block_in_place(|| kafka.start_node(leader)).unwrap();
    eprintln!(
        "leader {leader} SIGKILLed, back after {:.1} s",
        killed.elapsed().as_secs_f64()
    );

    let ids = load.finish().await;
    assert_invariants(&stack, "leader crash", &ids, killed).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_under_load_loses_and_doubles_nothing() {
    let Some((stack, _turn)) = cluster_stack().await else {
        return;
    };
    let kafka = cluster(&stack);
    let load = Load::start(&stack, "rolling", 600);
    let mut last = Instant::now();
    for (step, id) in kafka.node_ids().into_iter().enumerate() {
        load.wait_for_accepted(100 * (step + 1)).await;
        last = Instant::now();
        tokio::task::block_in_place(|| {
            kafka.stop_node(id)?;
            kafka.start_node(id)
        })
        .unwrap();
        eprintln!(
            "node {id} restarted in {:.1} s",
            last.elapsed().as_secs_f64()
        );
    }
    let ids = load.finish().await;
    assert_invariants(&stack, "rolling restart", &ids, last).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_gone_for_thirty_seconds_loses_and_doubles_nothing() {
    let Some((stack, _turn)) = cluster_stack().await else {
        return;
    };
    let kafka = cluster(&stack);
    let load = Load::start(&stack, "blackout", 400);
    load.wait_for_accepted(100).await;

    let down = Instant::now();
    tokio::task::block_in_place(|| {
        kafka
            .node_ids()
            .into_iter()
            .try_for_each(|id| kafka.stop_node(id))
    })
    .unwrap();
    // The services keep accepting orders: the outbox holds their events.
    stack
        .wait_for_health(&stack.order.base_url, StatusCode::SERVICE_UNAVAILABLE)
        .await;
    let outage = Duration::from_secs(30);
    while down.elapsed() < outage {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM orders.outbox WHERE sent_at IS NULL")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    tokio::task::block_in_place(|| kafka.start_all()).unwrap();
    eprintln!(
        "cluster down for {:.1} s; {held} events waited in order-service's outbox",
        down.elapsed().as_secs_f64()
    );
    let up = Instant::now();

    let ids = load.finish().await;
    assert_invariants(&stack, "whole cluster stopped", &ids, up).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_scaling_one_to_three_to_one_under_load_loses_and_doubles_nothing() {
    let Some((mut stack, _turn)) = cluster_stack().await else {
        return;
    };
    let load = Load::start(&stack, "scale", 600);
    load.wait_for_accepted(100).await;
    stack.add_inventory().await;
    stack.add_inventory().await;
    assert_eq!(stack.inventory_instances(), 3);
    load.wait_for_accepted(300).await;
    stack.remove_inventory().await;
    stack.remove_inventory().await;
    let scaled_back = Instant::now();
    assert_eq!(stack.inventory_instances(), 1);

    let ids = load.finish().await;
    assert_invariants(&stack, "inventory 1 -> 3 -> 1", &ids, scaled_back).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hung_past_the_session_timeout_loses_and_doubles_nothing() {
    let Some((stack, _turn)) = cluster_stack().await else {
        return;
    };
    let kafka = cluster(&stack);
    let load = Load::start(&stack, "hang", 400);
    load.wait_for_accepted(100).await;

    let hung = busiest_leader(kafka, &stack.topics.inventory_reserved);
    kafka.pause_node(hung).unwrap();
    let paused = Instant::now();
    // Longer than the brokers' session with the controller (9 s) and the
    // consumers' session timeout (10 s): the cluster fences the node and the
    // groups move on.
    let hang_for = Duration::from_secs(20);
    while paused.elapsed() < hang_for {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kafka.resume_node(hung).unwrap();
    eprintln!(
        "node {hung} SIGSTOPped for {:.1} s",
        paused.elapsed().as_secs_f64()
    );
    let resumed = Instant::now();

    let ids = load.finish().await;
    assert_invariants(&stack, "node hung", &ids, resumed).await;
    stack.shutdown().await;
}
