//! The consumer applies every event under its order's lock, whatever the
//! handler does; a batch takes its orders' locks in one consistent order, so
//! that two batches sharing orders wait for each other instead of
//! deadlocking; and the lock is the service's own, so services sharing a
//! database do not wait for each other.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use local_infra::PostgresCluster;
use service_kit::consumer::{apply_batch, Source};
use service_kit::outbox::Outbox;
use service_kit::{CommonConfig, EventHandler, HandlerError};
use shared_events::{Envelope, Topics};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool};

mod common;
use common::order_created;

/// The test needs only the plumbing tables.
static NO_SERVICE_MIGRATIONS: Migrator = sqlx::migrate!("tests/fixtures/no_migrations");

const DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A handler that takes no lock itself and notes, for each event, whether
/// another connection could have taken its order's lock meanwhile.
struct Probe {
    /// Connections other than the consumer's transaction, as another
    /// instance of the service would hold.
    others: PgPool,
    /// (order, was its lock held while the event was applied?), in order.
    seen: Mutex<Vec<(String, bool)>>,
}

impl EventHandler for Probe {
    async fn handle(
        &self,
        _tx: &mut PgConnection,
        event: &Envelope,
    ) -> Result<Vec<Envelope>, HandlerError> {
        let order = event.order_id.as_str();
        let held = !try_lock(&self.others, order).await;
        self.seen.lock().unwrap().push((order.to_owned(), held));
        Ok(vec![])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_applied_under_its_orders_lock() {
    let (_cluster, pool) = database("lockprobe").await;
    let probe = Probe {
        others: pool.clone(),
        seen: Mutex::new(Vec::new()),
    };
    let outbox = Outbox::new(Topics::default(), "test");
    let events = [order_created("b"), order_created("a"), order_created("b")];
    let batch: Vec<(Source<'_>, &Envelope)> = events
        .iter()
        .enumerate()
        .map(|(offset, event)| (source(offset as i64), event))
        .collect();

    apply_batch(&pool, &probe, &outbox, &batch).await.unwrap();
    let lone = order_created("c");
    apply_batch(&pool, &probe, &outbox, &[(source(3), &lone)])
        .await
        .unwrap();

    assert_eq!(
        *probe.seen.lock().unwrap(),
        [
            ("b".to_owned(), true),
            ("a".to_owned(), true),
            ("b".to_owned(), true),
            ("c".to_owned(), true),
        ]
    );
    for order in ["a", "b", "c"] {
        assert!(
            try_lock(&pool, order).await,
            "order {order}'s lock is released with the commit"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waiting_for_one_orders_lock_holds_none_it_takes_later() {
    let (_cluster, pool) = database("lockorder").await;
    // Name the two orders by the order their locks are taken in.
    let (first, then) = by_lock_order(&pool, "x", "y").await;

    let mut holder = pool.begin().await.unwrap();
    service_kit::db::lock_keys(&mut holder, &[first])
        .await
        .unwrap();

    // Another batch wants both, listed the other way round.
    let mut waiter = pool.begin().await.unwrap();
    let waiter_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *waiter)
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        service_kit::db::lock_keys(&mut waiter, &[then, first])
            .await
            .map(|()| waiter)
    });
    wait_until_waiting_for_a_lock(&pool, waiter_pid).await;

    // While it waits for `first`, it holds `then` neither: a batch that
    // holds `first` and goes on to `then` is not blocked by it.
    service_kit::db::lock_keys(&mut holder, &[then])
        .await
        .unwrap();
    holder.commit().await.unwrap();

    let waiter = waiting
        .await
        .unwrap()
        .expect("the waiting batch gets both locks");
    for order in [first, then] {
        assert!(
            !try_lock(&pool, order).await,
            "{order} is held by the batch"
        );
    }
    waiter.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_sharing_a_database_do_not_wait_for_each_others_order_locks() {
    let (cluster, inventory) = database("sharedlocks").await;
    let payments = pool_for_schema(&cluster, "sharedlocks", "lockpayments").await;

    let mut holder = inventory.begin().await.unwrap();
    service_kit::db::lock_keys(&mut holder, &["o-1"])
        .await
        .unwrap();

    assert!(
        try_lock(&payments, "o-1").await,
        "another service's lock on the order is its own"
    );
    assert!(
        !try_lock(&inventory, "o-1").await,
        "the service's own other instances wait"
    );
    holder.commit().await.unwrap();
}

/// A private Postgres (kept alive by the caller) and a pool on a fresh
/// database with the plumbing tables.
async fn database(name: &str) -> (PostgresCluster, PgPool) {
    let cluster = tokio::task::block_in_place(PostgresCluster::start_temporary).unwrap();
    cluster.ensure_database(name).await.unwrap();
    let pool = pool_for_schema(&cluster, name, "locktest").await;
    (cluster, pool)
}

/// A pool on `database` pinned to `schema`, as a service's is.
async fn pool_for_schema(cluster: &PostgresCluster, database: &str, schema: &str) -> PgPool {
    let mut config = CommonConfig::defaults("lock-test", 0, schema);
    config.database_url = cluster.url(database);
    service_kit::db::connect(&config, &NO_SERVICE_MIGRATIONS)
        .await
        .unwrap()
}

fn source(offset: i64) -> Source<'static> {
    Source {
        topic: "order-created",
        partition: 0,
        offset,
        traceparent: None,
    }
}

/// The id of `key`'s lock, as [`service_kit::db::lock_keys`] makes it for
/// connections to the test's schema.
async fn lock_id(pool: &PgPool, key: &str) -> i64 {
    sqlx::query_scalar("SELECT hashtextextended($1, hashtext(current_schema()))")
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Could a transaction of its own take `order`'s lock right now? (It lets go
/// of it again at once.)
async fn try_lock(pool: &PgPool, order: &str) -> bool {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(lock_id(pool, order).await)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `a` and `b` in the order [`service_kit::db::lock_keys`] locks them.
async fn by_lock_order(
    pool: &PgPool,
    a: &'static str,
    b: &'static str,
) -> (&'static str, &'static str) {
    if lock_id(pool, a).await < lock_id(pool, b).await {
        (a, b)
    } else {
        (b, a)
    }
}

async fn wait_until_waiting_for_a_lock(pool: &PgPool, pid: i32) {
    let started = Instant::now();
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks
                            WHERE pid = $1 AND locktype = 'advisory' AND NOT granted)",
        )
        .bind(pid)
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the second batch never waited for the lock"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
