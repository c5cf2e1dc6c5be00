//! A service run in-process stops within `SHUTDOWN_TIMEOUT_MS` while its
//! broker is gone, names what it abandoned, and leaves nothing behind that
//! would block the runtime it ran on from shutting down.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::Router;
use local_infra::{EmbeddedKafka, PostgresCluster};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use service_kit::{CommonConfig, EventHandler, HandlerError, Infrastructure, ServiceHost};
use shared_events::topics::DEFAULT_PARTITIONS;
use shared_events::Envelope;
use sqlx::migrate::Migrator;
use sqlx::PgConnection;

mod common;
use common::order_created;

static NO_SERVICE_MIGRATIONS: Migrator = sqlx::migrate!("tests/fixtures/no_migrations");

const SERVICE: &str = "shutdown-test";
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// Beyond the timeout, for a busy machine: a correctness bound.
const MARGIN: Duration = Duration::from_secs(3);
const DEADLINE: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Tells the test about every event it is given.
struct Recorder(tokio::sync::mpsc::UnboundedSender<()>);

impl EventHandler for Recorder {
    fn handle<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        _event: &'a Envelope,
    ) -> impl std::future::Future<Output = Result<Vec<Envelope>, HandlerError>> + Send + 'a {
        let _ = self.0.send(());
        std::future::ready(Ok(vec![]))
    }
}

#[test]
fn an_in_process_service_stops_within_the_bound_while_its_broker_is_gone() {
    let cluster = PostgresCluster::start_temporary().unwrap();
    let kafka = EmbeddedKafka::start(1).unwrap();
    let mut config = CommonConfig::defaults(SERVICE, 0, "shutdowntest");
    config.host = "127.0.0.1".into();
    config.database_url = cluster.url("shutdown");
    config.kafka.bootstrap_servers = kafka.bootstrap_servers();
    config.shutdown_timeout = SHUTDOWN_TIMEOUT;
    for topic in config.topics().all_with_dead_letters() {
        kafka.create_topic(&topic, DEFAULT_PARTITIONS).unwrap();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let (stopped, took) = runtime.block_on(async {
        cluster.ensure_database("shutdown").await.unwrap();
        let infra = Infrastructure::connect(&config, &NO_SERVICE_MIGRATIONS)
            .await
            .unwrap();
        let (pool, outbox) = (infra.pool.clone(), infra.outbox.clone());
        let (seen, mut handled) = tokio::sync::mpsc::unbounded_channel();
        let topic = config.topics().order_created;
        let host = ServiceHost::bind(infra, Router::new())
            .await
            .unwrap()
            .with_outbox_relay()
            .unwrap()
            .with_consumer(&[&topic], Recorder(seen))
            .unwrap();
        let (stop, stop_requested) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(host.run_reporting(async {
            let _ = stop_requested.await;
        }));

        // The consumer is in its group and consuming.
        let event = order_created("before-outage");
        publish(&config.kafka.bootstrap_servers, &topic, &event).await;
        tokio::time::timeout(DEADLINE, handled.recv())
            .await
            .expect("the consumer handled the event");

        // The broker goes; an event committed now stays in the relay's batch.
        kafka.broker_down(-1).unwrap();
        let stuck = order_created("during-outage");
        let mut tx = outbox.begin(&pool).await.unwrap();
        outbox.enqueue(&mut tx, &stuck).await.unwrap();
        outbox.commit(tx).await.unwrap();
        wait_until_the_relay_holds(&pool, &stuck).await;

        let asked = Instant::now();
        stop.send(()).unwrap();
        let stopped = tokio::time::timeout(SHUTDOWN_TIMEOUT + MARGIN, running)
            .await
            .expect("run_reporting returned within the bound")
            .unwrap();
        (stopped, asked.elapsed())
    });

    assert!(took <= SHUTDOWN_TIMEOUT + MARGIN, "took {took:?}");
    stopped.served.unwrap();
    let abandoned = stopped.abandoned.items();
    assert!(
        abandoned.contains(&format!("outbox relay of {SERVICE}")),
        "{abandoned:?}"
    );
    assert!(
        abandoned.iter().all(|what| what.contains(SERVICE)),
        "each item names the service: {abandoned:?}"
    );

    // Nothing the service left behind (clients that did not close) keeps
    // its runtime from shutting down.
    let (dropped, runtime_dropped) = mpsc::channel();
    std::thread::spawn(move || {
        drop(runtime);
        let _ = dropped.send(());
    });
    runtime_dropped
        .recv_timeout(DEADLINE)
        .expect("the runtime shut down");
}

async fn publish(bootstrap: &str, topic: &str, event: &Envelope) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(topic)
                .key(event.order_id.as_str())
                .payload(&event.to_json()),
            Timeout::After(DEADLINE),
        )
        .await
        .map_err(|(err, _)| err)
        .unwrap();
}

/// Polls until the relay has claimed (locked) `event`'s unsent row: it is
/// then waiting for the broker to acknowledge it.
async fn wait_until_the_relay_holds(pool: &sqlx::PgPool, event: &Envelope) {
    let started = Instant::now();
    loop {
        let mut tx = pool.begin().await.unwrap();
        let free: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM outbox WHERE event_id = $1 AND sent_at IS NULL FOR UPDATE SKIP LOCKED",
        )
        .bind(event.event_id)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        let unsent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE event_id = $1 AND sent_at IS NULL",
        )
        .bind(event.event_id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        if unsent == 1 && free.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the relay never claimed the row"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
