//! SIGTERM ends every service binary within `SHUTDOWN_TIMEOUT_MS` (plus a
//! margin for the exit itself), whatever state the broker and Postgres are
//! in; the log names what the shutdown had to abandon; and what it abandoned
//! is done after the restart.
//!
//! With the broker gone, librdkafka's consumer close does not return (each
//! service logs "consumer close of <service>" as abandoned); without the
//! bound, these processes would not exit at all.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use reqwest::StatusCode;
use serde_json::json;
use shared_events::{Envelope, Event, OrderCreated, OrderId, UserId};
use system_tests::processes::ServiceProcess;
use system_tests::{wait_for, Api, Infra, StackConfigs, StackOptions, DEADLINE};

/// Short, so the tests do not wait long for what is abandoned.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(3_000);
/// Beyond the timeout: exiting, and a busy machine's scheduling. A
/// correctness bound (the process does exit), not a performance target.
const EXIT_MARGIN: Duration = Duration::from_secs(4);
/// The one line a shutdown that gave up on something writes.
const ABANDONED: &str = "abandoned at shutdown:";
const SERVICES: [&str; 4] = [
    "order-service",
    "inventory-service",
    "payment-service",
    "notification-service",
];

/// The four binaries against `infra`, logs captured, the shutdown line and
/// the start of shutdown logged.
fn start_services(infra: &Infra) -> Vec<ServiceProcess> {
    let configs = StackConfigs::new(infra, &StackOptions::default());
    SERVICES
        .iter()
        .map(|name| {
            let mut env: BTreeMap<String, String> = configs.env(name);
            env.insert(
                "SHUTDOWN_TIMEOUT_MS".into(),
                SHUTDOWN_TIMEOUT.as_millis().to_string(),
            );
            env.insert("RUST_LOG".into(), "warn,service_kit::host=info".into());
            ServiceProcess::start_capturing(name, &env)
        })
        .collect()
}

fn api(services: &[ServiceProcess]) -> Api {
    Api {
        http: reqwest::Client::new(),
        order_base: services[0].base_url(),
        inventory_base: services[1].base_url(),
        payment_base: services[2].base_url(),
        notification_base: services[3].base_url(),
    }
}

async fn wait_until_ready(api: &Api, services: &[ServiceProcess]) {
    for service in services {
        api.wait_for_health(&service.base_url(), StatusCode::OK)
            .await;
    }
}

/// A whole saga, so that every consumer has joined its group and committed.
async fn complete_an_order(api: &Api, order_id: &str) {
    let (status, body) = api
        .post_order(&json!({"orderId": order_id, "userId": "u1", "items": [{"sku": "widget", "quantity": 1}]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let order = api.wait_until_terminal(order_id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    api.wait_for_notifications(order_id, 2).await;
}

/// SIGTERM to every service at once; each must exit successfully within the
/// bound and say it was shutting down. Returns each one's log.
fn terminate_all_within_bound(services: &mut [ServiceProcess]) -> Vec<String> {
    services.iter_mut().for_each(ServiceProcess::send_sigterm);
    let bound = SHUTDOWN_TIMEOUT + EXIT_MARGIN;
    services
        .iter_mut()
        .map(|service| {
            let exited = service.wait_for_exit(bound);
            let log = service.output();
            let exited = exited.unwrap_or_else(|| {
                panic!(
                    "{} still ran {bound:?} after SIGTERM; its log:\n{log}",
                    service.name
                )
            });
            assert!(
                exited.status.success(),
                "{} exited with {}; its log:\n{log}",
                service.name,
                exited.status
            );
            assert!(log.contains("shutting down"), "{}: {log}", service.name);
            // At most one account of what was abandoned, naming the service.
            let accounts: Vec<&str> = log.lines().filter(|l| l.contains(ABANDONED)).collect();
            assert!(accounts.len() <= 1, "{}: {log}", service.name);
            if let Some(account) = accounts.first() {
                assert!(account.contains(service.name), "{account}");
            }
            log
        })
        .collect()
}

/// The account of what a shutdown abandoned, if its log has one.
fn abandoned(log: &str) -> Option<&str> {
    log.lines().find(|l| l.contains(ABANDONED))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_exits_within_the_bound_while_the_broker_is_gone() {
    // A broker of this test's own: the embedded one refuses connections, the
    // real one is SIGKILLed.
    let infra = Infra::start_with(false, Some(1))
        .await
        .expect("test infrastructure");
    let Some(kafka) = infra.kafka.as_ref() else {
        eprintln!("skipped: KAFKA_BOOTSTRAP_SERVERS points at a broker this test cannot stop");
        return;
    };
    let mut services = start_services(&infra);
    let api = api(&services);
    wait_until_ready(&api, &services).await;
    api.put_product("widget", 100, 100).await;
    complete_an_order(&api, "before-outage").await;

    tokio::task::block_in_place(|| kafka.take_down()).unwrap();
    // Accepted while the broker is gone: its OrderCreated waits in the
    // outbox, in a batch the relay cannot get acknowledged.
    let (status, body) = api
        .post_order(&json!({"orderId": "during-outage", "userId": "u1", "items": [{"sku": "widget", "quantity": 1}]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let db = sqlx::PgPool::connect(&infra.database_url).await.unwrap();
    wait_until_the_relay_holds(&db, "during-outage").await;

    let logs = terminate_all_within_bound(&mut services);

    let order_log = &logs[0];
    let account = abandoned(order_log)
        .unwrap_or_else(|| panic!("order-service abandoned nothing? its log:\n{order_log}"));
    assert!(
        account.contains("outbox relay of order-service"),
        "{account}"
    );

    // Nothing abandoned is lost: after a restart the order completes.
    tokio::task::block_in_place(|| kafka.bring_up()).unwrap();
    services.iter_mut().for_each(ServiceProcess::restart);
    wait_until_ready(&api, &services).await;
    let order = api.wait_until_terminal("during-outage").await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_exits_within_the_bound_while_postgres_is_stopped() {
    let mut infra = Infra::start(true).await.expect("test infrastructure");
    if infra.postgres.is_none() {
        eprintln!("DATABASE_URL points at an external server, which this test cannot stop");
        return;
    }
    let mut services = start_services(&infra);
    let api = api(&services);
    wait_until_ready(&api, &services).await;
    api.put_product("widget", 100, 100).await;
    complete_an_order(&api, "before-outage").await;

    tokio::task::block_in_place(|| infra.postgres.as_mut().unwrap().stop()).unwrap();
    // An event the consumers cannot apply while the database is down: they
    // are retrying it when SIGTERM arrives.
    let event = Envelope::new(
        OrderId::parse("during-outage").unwrap(),
        Event::OrderCreated(OrderCreated {
            user_id: UserId::parse("u1").unwrap(),
            items: vec![],
        }),
        "shutdown-test",
    );
    publish(&infra, &event).await;

    terminate_all_within_bound(&mut services);

    // Nothing abandoned is lost: after a restart the event is applied.
    tokio::task::block_in_place(|| infra.postgres.as_mut().unwrap().start()).unwrap();
    services.iter_mut().for_each(ServiceProcess::restart);
    wait_until_ready(&api, &services).await;
    let db = sqlx::PgPool::connect(&infra.database_url).await.unwrap();
    wait_for(
        "inventory-service to apply the event sent during the outage",
        || async {
            let applied: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM inventory.inbox WHERE event_id = $1)",
            )
            .bind(event.event_id)
            .fetch_one(&db)
            .await
            .unwrap();
            applied.then_some(())
        },
    )
    .await;
}

/// Polls until order-service's relay has claimed (locked) the unsent
/// outbox row of `order_id`: it is then in the middle of publishing it.
async fn wait_until_the_relay_holds(db: &sqlx::PgPool, order_id: &str) {
    wait_for(
        &format!("the relay to claim {order_id}'s event"),
        || async {
            let mut tx = db.begin().await.unwrap();
            let unsent: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM orders.outbox WHERE message_key = $1 AND sent_at IS NULL",
            )
            .bind(order_id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            let free: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM orders.outbox WHERE message_key = $1 AND sent_at IS NULL
             FOR UPDATE SKIP LOCKED",
            )
            .bind(order_id)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
            tx.rollback().await.unwrap();
            (unsent == 1 && free.is_empty()).then_some(())
        },
    )
    .await
}

/// Publishes `event` to its topic, as order-service's relay would.
async fn publish(infra: &Infra, event: &Envelope) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &infra.kafka_bootstrap)
        .create()
        .expect("test producer");
    producer
        .send(
            FutureRecord::to(&infra.topics.order_created)
                .key(event.order_id.as_str())
                .payload(&event.to_json()),
            Timeout::After(DEADLINE),
        )
        .await
        .map_err(|(err, _)| err)
        .expect("publishing");
}
