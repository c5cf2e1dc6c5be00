//! The outbox relay publishes what was committed, as soon as the committer
//! wakes it, and replaces a producer that failed fatally instead of refusing
//! to publish for ever.

use std::ffi::CString;
use std::time::{Duration, Instant};

use local_infra::{EmbeddedKafka, PostgresCluster};
use rdkafka::producer::Producer;
use service_kit::outbox::{Outbox, OutboxRelay};
use service_kit::CommonConfig;
use shared_events::topics::DEFAULT_PARTITIONS;
use shared_events::Envelope;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

mod common;
use common::order_created;

static NO_SERVICE_MIGRATIONS: Migrator = sqlx::migrate!("tests/fixtures/no_migrations");

const DEADLINE: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatally_failed_producer_is_replaced_and_nothing_is_lost() {
    let (_cluster, _kafka, config) = infrastructure().await;
    let pool = service_kit::db::connect(&config, &NO_SERVICE_MIGRATIONS)
        .await
        .unwrap();
    let outbox = Outbox::of(&config);
    let relay = OutboxRelay::new(&config, pool.clone(), outbox.clone()).unwrap();

    // Put the relay's producer in librdkafka's fatal state, as a broken
    // idempotence sequence would.
    let reason = CString::new("injected by the test").unwrap();
    // SAFETY: the handle is alive (owned by `relay`) and `reason` outlives the call.
    unsafe {
        rdkafka::bindings::rd_kafka_test_fatal_error(
            relay.producer().client().native_ptr(),
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        );
    }
    assert!(relay.producer().client().fatal_error().is_some());

    let event = commit_event(&pool, &outbox, "fatal-1").await;

    let stop = CancellationToken::new();
    let running = tokio::spawn(relay.run(stop.clone()));
    wait_until_sent(&pool, &event).await;
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_idle_relay_without_waiting_for_its_poll() {
    let (_cluster, _kafka, mut config) = infrastructure().await;
    // Far longer than the test's deadline: only the wake-up can publish in time.
    config.outbox.poll_interval = Duration::from_secs(3_600);
    let pool = service_kit::db::connect(&config, &NO_SERVICE_MIGRATIONS)
        .await
        .unwrap();
    let outbox = Outbox::of(&config);
    let relay = OutboxRelay::new(&config, pool.clone(), outbox.clone()).unwrap();
    // Committed before the relay starts: its first round publishes it, and
    // then it idles.
    let first = commit_event(&pool, &outbox, "wake-1").await;
    let stop = CancellationToken::new();
    let running = tokio::spawn(relay.run(stop.clone()));
    wait_until_sent(&pool, &first).await;

    for order in ["wake-2", "wake-3"] {
        let event = commit_event(&pool, &outbox, order).await;
        wait_until_sent(&pool, &event).await;
    }
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// A private Postgres and broker (kept alive by the caller) and a relay
/// configuration pointing at them.
async fn infrastructure() -> (PostgresCluster, EmbeddedKafka, CommonConfig) {
    let cluster = tokio::task::block_in_place(PostgresCluster::start_temporary).unwrap();
    cluster.ensure_database("relay").await.unwrap();
    let kafka = EmbeddedKafka::start(1).unwrap();
    let mut config = CommonConfig::defaults("relay-test", 0, "relaytest");
    kafka
        .create_topic(&config.topics().order_created, DEFAULT_PARTITIONS)
        .unwrap();
    config.database_url = cluster.url("relay");
    config.kafka.bootstrap_servers = kafka.bootstrap_servers();
    (cluster, kafka, config)
}

/// Commits an OrderCreated for `order` to the outbox, as a service would.
async fn commit_event(pool: &sqlx::PgPool, outbox: &Outbox, order: &str) -> Envelope {
    let event = order_created(order);
    let mut tx = outbox.begin(pool).await.unwrap();
    outbox.enqueue(&mut tx, &event).await.unwrap();
    outbox.commit(tx).await.unwrap();
    event
}

async fn wait_until_sent(pool: &sqlx::PgPool, event: &Envelope) {
    let started = Instant::now();
    loop {
        let sent: bool =
            sqlx::query_scalar("SELECT sent_at IS NOT NULL FROM outbox WHERE event_id = $1")
                .bind(event.event_id)
                .fetch_one(pool)
                .await
                .unwrap();
        if sent {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "event of order {} was never published",
            event.order_id
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
