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

use std::time::{Duration, Instant};

use local_infra::{ApacheKafka, TestKafkaMode};
use reqwest::StatusCode;
use system_tests::faults::{busiest_leader, Load, PRICE_CENTS, SKU};
use system_tests::{StackOptions, TestStack};

/// Units of the one product the orders buy: fewer than they ask for in all,
/// so some orders are rejected and stock is contended.
const STOCK: i64 = 1_200;

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
    stack.put_product(SKU, PRICE_CENTS, STOCK).await;
    Some((stack, turn))
}

fn cluster(stack: &TestStack) -> &ApacheKafka {
    stack
        .kafka()
        .and_then(|kafka| kafka.own_apache())
        .expect("a cluster of the stack's own")
}

/// The load generator, on the stack's one order-service.
fn load(stack: &TestStack, prefix: &str, count: usize) -> Load {
    Load::start(std::slice::from_ref(&stack.order_base), prefix, count)
}

/// The exact invariants after `fault`.
async fn assert_invariants(stack: &TestStack, test: &str, ids: &[String], fault: Instant) {
    system_tests::faults::assert_invariants(stack, &stack.db, test, ids, STOCK, fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_crashing_under_a_thousand_orders_loses_and_doubles_nothing() {
    let Some((stack, _turn)) = cluster_stack().await else {
        return;
    };
    let kafka = cluster(&stack);
    let load = load(&stack, "crash", 1_000);
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
    let load = load(&stack, "rolling", 600);
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
    let load = load(&stack, "blackout", 400);
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
    let load = load(&stack, "scale", 600);
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
    let load = load(&stack, "hang", 400);
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
