//! The outbox relay publishes what was committed, and replaces a producer
//! that failed fatally instead of refusing to publish for ever.

use std::ffi::CString;
use std::time::{Duration, Instant};

use local_infra::{EmbeddedKafka, PostgresCluster};
use rdkafka::producer::Producer;
use service_kit::outbox::{self, OutboxRelay};
use service_kit::CommonConfig;
use shared_events::topics::DEFAULT_PARTITIONS;
use shared_events::{Envelope, Event, OrderCreated, OrderId, Topics, UserId};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

static NO_SERVICE_MIGRATIONS: Migrator = sqlx::migrate!("tests/fixtures/no_migrations");

const DEADLINE: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatally_failed_producer_is_replaced_and_nothing_is_lost() {
    let cluster = tokio::task::block_in_place(PostgresCluster::start_temporary).unwrap();
    cluster.ensure_database("relay").await.unwrap();
    let kafka = EmbeddedKafka::start(1).unwrap();
    let topics = Topics::default();
    kafka
        .create_topic(&topics.order_created, DEFAULT_PARTITIONS)
        .unwrap();

    let mut config = CommonConfig::defaults("relay-test", 0, "relaytest");
    config.database_url = cluster.url("relay");
    config.kafka_bootstrap_servers = kafka.bootstrap_servers();
    let pool = service_kit::db::connect(&config, &NO_SERVICE_MIGRATIONS)
        .await
        .unwrap();
    let relay = OutboxRelay::new(&config, pool.clone()).unwrap();

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

    let event = Envelope::new(
        OrderId::parse("fatal-1").unwrap(),
        Event::OrderCreated(OrderCreated {
            user_id: UserId::parse("u").unwrap(),
            items: vec![],
        }),
        "test",
    );
    let mut conn = pool.acquire().await.unwrap();
    outbox::enqueue(&mut conn, &topics, &event).await.unwrap();
    drop(conn);

    let stop = CancellationToken::new();
    let running = tokio::spawn(relay.run(stop.clone()));
    let started = Instant::now();
    loop {
        let sent: bool =
            sqlx::query_scalar("SELECT sent_at IS NOT NULL FROM outbox WHERE event_id = $1")
                .bind(event.event_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        if sent {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the event was never published"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    stop.cancel();
    running.await.unwrap().unwrap();
}
