//! The machine's limit, measured in the same run as the load:
//!
//! - **database-bound**: the transactions the four services commit for one
//!   order, run by the services' own code (order-service's `db::place`, each
//!   service's [`EventHandler`] through service-kit's
//!   [`consumer::apply`](service_kit::consumer::apply), which also writes the
//!   inbox and outbox rows, and the relay's claim-and-mark of outbox rows),
//!   straight against the same Postgres at full concurrency, with no broker
//!   and no HTTP in between. It runs in scratch schemas (`bench_*`), created
//!   by the services' migrations and dropped afterwards, so the running
//!   services never see its rows;
//! - **broker round trip**: produce → consume on a scratch topic of the same
//!   broker, with the services' producer and consumer settings.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use service_kit::consumer::{apply_batch, Source};
use service_kit::kafka::EventStreamConsumer;
use service_kit::{CommonConfig, EventHandler, HandlerError, ServiceConfig};
use shared_events::{
    Cents, Envelope, Event, OrderCreated, OrderId, OrderLine, Quantity, Sku, Topics, UserId,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::load::Workload;
use crate::stats::Summary;

/// The scratch schemas, one per service, and the migrations each gets.
const SCHEMA_PREFIX: &str = "bench_";
/// Outbox rows the stand-in relay claims per round, as the real one does.
const RELAY_BATCH: i64 = 100;
/// The stand-in relay's fallback poll, should a notification be missed.
const RELAY_POLL: Duration = Duration::from_millis(100);
/// Attempts at an event that hits a transient failure (deadlock) in the limit run.
const TRANSIENT_ATTEMPTS: u32 = 10;
/// Messages timed one at a time for the broker round trip.
const ROUND_TRIPS: usize = 200;
/// How long the broker may take to deliver the first message (group join).
const BROKER_WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Orders per second the database work sustains.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DbLimit {
    /// Groups of orders in flight at once (each runs its transactions one
    /// after another).
    pub concurrency: usize,
    /// Orders whose events a service applies in one transaction, as a
    /// consumer does with the messages waiting for it (1: one per event).
    pub group: usize,
    pub orders: u64,
    pub seconds: f64,
    pub orders_per_second: f64,
    /// Duration of one group's transactions, one after another.
    pub order_latency_ms: Summary,
}

/// Produce → consume on the same broker.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerLimit {
    /// One message at a time: produce, then wait until the consumer has it.
    pub round_trip_ms: Summary,
}

/// Service handlers with the settings the services give them.
struct Handlers {
    orders: order_service::consumer::OrderEvents,
    inventory: inventory_service::consumer::InventoryEvents,
    payments: payment_service::consumer::PaymentEvents,
    notifications: notification_service::consumer::NotificationEvents,
}

/// A connection pool per service, in its scratch schema.
struct Pools {
    orders: PgPool,
    inventory: PgPool,
    payments: PgPool,
    notifications: PgPool,
}

/// The service names, their schemas' suffixes and migrations.
fn services() -> [(&'static str, &'static str, &'static Migrator); 4] {
    [
        ("order-service", "orders", &order_service::app::MIGRATIONS),
        (
            "inventory-service",
            "inventory",
            &inventory_service::app::MIGRATIONS,
        ),
        (
            "payment-service",
            "payments",
            &payment_service::app::MIGRATIONS,
        ),
        (
            "notification-service",
            "notifications",
            &notification_service::app::MIGRATIONS,
        ),
    ]
}

/// Drops the scratch schemas (left over from an interrupted run, or ours).
async fn drop_schemas(database_url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(database_url).context("parsing the database URL")?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .context("connecting to the database")?;
    for (_, schema, _) in services() {
        // The names are constants of this module: safe to splice.
        sqlx::query(&format!(
            "DROP SCHEMA IF EXISTS {SCHEMA_PREFIX}{schema} CASCADE"
        ))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping schema {SCHEMA_PREFIX}{schema}"))?;
    }
    conn.close().await.ok();
    Ok(())
}

async fn connect(database_url: &str, pool_size: u32) -> anyhow::Result<Pools> {
    let mut pools = Vec::new();
    for (name, schema, migrations) in services() {
        let mut config = CommonConfig::defaults(name, 0, &format!("{SCHEMA_PREFIX}{schema}"));
        config.database_url = database_url.to_owned();
        config.database_max_connections = pool_size;
        pools.push(
            service_kit::db::connect(&config, migrations)
                .await
                .with_context(|| format!("preparing the scratch schema of {name}"))?,
        );
    }
    let [orders, inventory, payments, notifications]: [PgPool; 4] =
        pools.try_into().expect("four services");
    Ok(Pools {
        orders,
        inventory,
        payments,
        notifications,
    })
}

/// Runs the per-order database work of the whole saga with `concurrency`
/// orders in flight for `duration`, and reports orders per second.
pub async fn database(
    database_url: &str,
    workload: &Workload,
    concurrency: usize,
    group: usize,
    duration: Duration,
) -> anyhow::Result<DbLimit> {
    drop_schemas(database_url).await?;
    let result =
        database_in_scratch_schemas(database_url, workload, concurrency, group, duration).await;
    drop_schemas(database_url).await?;
    result
}

async fn database_in_scratch_schemas(
    database_url: &str,
    workload: &Workload,
    concurrency: usize,
    group: usize,
    duration: Duration,
) -> anyhow::Result<DbLimit> {
    let group = group.max(1);
    // A connection per order in flight and one for each relay, per service.
    let pools = Arc::new(connect(database_url, concurrency as u32 + 2).await?);
    for (i, sku) in workload.skus.iter().enumerate() {
        inventory_service::db::upsert_product(
            &pools.inventory,
            sku,
            None,
            Workload::price_cents(i),
            i32::MAX,
        )
        .await
        .context("stocking the scratch catalog")?;
    }
    let handlers = Arc::new(Handlers {
        orders: order_service::consumer::OrderEvents,
        inventory: inventory_service::consumer::InventoryEvents {
            service_name: "inventory-service".to_owned(),
            reservation_ttl_secs: inventory_service::Config::defaults()
                .inventory_reservation_ttl_secs,
        },
        payments: payment_service::consumer::PaymentEvents {
            service_name: "payment-service".to_owned(),
            // Every customer can afford every order, as in the load.
            default_credit: Cents::parse(i64::MAX / 4).expect("a valid amount"),
        },
        notifications: notification_service::consumer::NotificationEvents,
    });

    let stop_relays = CancellationToken::new();
    let relays: Vec<_> = [
        (&pools.orders, "orders"),
        (&pools.inventory, "inventory"),
        (&pools.payments, "payments"),
    ]
    .into_iter()
    .map(|(pool, schema)| {
        tokio::spawn(relay(
            pool.clone(),
            format!("outbox_{SCHEMA_PREFIX}{schema}"),
            stop_relays.clone(),
        ))
    })
    .collect();

    let offsets = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency as u64 {
        let (pools, handlers, offsets) = (pools.clone(), handlers.clone(), offsets.clone());
        let workload = workload.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut next = worker * group as u64;
            while Instant::now() < deadline {
                let numbers: Vec<u64> = (next..next + group as u64).collect();
                let began = Instant::now();
                order_group(&pools, &handlers, &workload, &numbers, &offsets).await?;
                latencies.extend(std::iter::repeat_n(began.elapsed(), group));
                next += (concurrency * group) as u64;
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = workers.join_next().await {
        latencies.extend(done.context("a limit worker panicked")??);
    }
    // The relays' work is part of each order's: wait until they caught up.
    for pool in [&pools.orders, &pools.inventory, &pools.payments] {
        while unsent(pool).await? > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    stop_relays.cancel();
    for relay in relays {
        relay.await.context("a relay panicked")??;
    }
    for pool in [
        &pools.orders,
        &pools.inventory,
        &pools.payments,
        &pools.notifications,
    ] {
        pool.close().await;
    }
    let orders = latencies.len() as u64;
    Ok(DbLimit {
        concurrency,
        group,
        orders,
        seconds,
        orders_per_second: orders as f64 / seconds,
        order_latency_ms: Summary::of(&latencies),
    })
}

/// Every transaction the services commit for a group of confirmed orders, in
/// saga order: place each (order-service, one transaction per order, as
/// POSTs are), then each event applied by each service that consumes it, the
/// group's events together in one transaction as a consumer batches the
/// messages waiting for it (a group of one: one transaction per event), the
/// caused events feeding the next step.
async fn order_group(
    pools: &Pools,
    handlers: &Handlers,
    workload: &Workload,
    numbers: &[u64],
    offsets: &AtomicU64,
) -> anyhow::Result<()> {
    let topics = Topics::default();
    let mut created_events = Vec::with_capacity(numbers.len());
    for &n in numbers {
        let (user, lines) = workload.order_lines(n);
        let order_id = OrderId::parse(&format!("{}-limit-{n}", workload.run_id))?;
        let created = OrderCreated {
            user_id: UserId::parse(&workload.users[user])?,
            items: lines
                .iter()
                .map(|(sku, quantity)| {
                    Ok(OrderLine {
                        sku: Sku::parse(&workload.skus[*sku])?,
                        quantity: Quantity::parse(*quantity as i64)?,
                    })
                })
                .collect::<Result<_, shared_events::InvalidValue>>()?,
        };
        let new = order_service::db::NewOrder {
            order_id: order_id.clone(),
            created: created.clone(),
        };
        let deadline =
            Duration::from_secs(order_service::Config::defaults().order_saga_deadline_secs);
        order_service::db::place(&pools.orders, &topics, "order-service", &new, deadline)
            .await
            .context("placing an order")?;
        // The event place() wrote, as consumers receive it.
        created_events.push(Envelope::new(
            order_id,
            Event::OrderCreated(created),
            "order-service",
        ));
    }

    let reserved = step(
        &pools.inventory,
        &handlers.inventory,
        &topics.order_created,
        &created_events,
        offsets,
    )
    .await?;
    step(
        &pools.notifications,
        &handlers.notifications,
        &topics.order_created,
        &created_events,
        offsets,
    )
    .await?;

    let processed = step(
        &pools.payments,
        &handlers.payments,
        &topics.inventory_reserved,
        &reserved,
        offsets,
    )
    .await?;
    step(
        &pools.orders,
        &handlers.orders,
        &topics.inventory_reserved,
        &reserved,
        offsets,
    )
    .await?;
    step(
        &pools.notifications,
        &handlers.notifications,
        &topics.inventory_reserved,
        &reserved,
        offsets,
    )
    .await?;
    anyhow::ensure!(
        processed.len() == numbers.len(),
        "expected a PaymentProcessed per order, got {} for {}",
        processed.len(),
        numbers.len()
    );

    for (pool, handler) in [
        (&pools.inventory, &handlers.inventory as &dyn Apply),
        (&pools.orders, &handlers.orders as &dyn Apply),
        (&pools.notifications, &handlers.notifications as &dyn Apply),
    ] {
        handler
            .apply_to(pool, &topics.payment_processed, &processed, offsets)
            .await?;
    }
    Ok(())
}

/// [`step`] for any handler, so the last fan-out can loop.
trait Apply: Sync {
    fn apply_to<'a>(
        &'a self,
        pool: &'a PgPool,
        topic: &'a str,
        events: &'a [Envelope],
        offsets: &'a AtomicU64,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<Vec<Envelope>>>;
}

impl<H: EventHandler> Apply for H {
    fn apply_to<'a>(
        &'a self,
        pool: &'a PgPool,
        topic: &'a str,
        events: &'a [Envelope],
        offsets: &'a AtomicU64,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<Vec<Envelope>>> {
        Box::pin(step(pool, self, topic, events, offsets))
    }
}

/// Events applied by one service in one transaction, exactly as its consumer
/// commits them; returns every event they caused.
async fn step<H: EventHandler>(
    pool: &PgPool,
    handler: &H,
    topic: &str,
    events: &[Envelope],
    offsets: &AtomicU64,
) -> anyhow::Result<Vec<Envelope>> {
    let sourced: Vec<(Source<'_>, &Envelope)> = events
        .iter()
        .map(|event| {
            let source = Source {
                topic,
                partition: 0,
                offset: offsets.fetch_add(1, Ordering::Relaxed) as i64,
                traceparent: None,
            };
            (source, event)
        })
        .collect();
    let topics = Topics::default();
    let applied = match apply_batch(pool, handler, &topics, &sourced).await {
        Ok(applied) => applied,
        // Groups in flight lock rows in different orders and may deadlock;
        // as the consumer loop does with a failed batch, apply one by one.
        Err(_) if sourced.len() > 1 => {
            let mut one_by_one = Vec::with_capacity(sourced.len());
            for event in &sourced {
                one_by_one.push(apply_alone(pool, handler, &topics, event).await?);
            }
            one_by_one
        }
        Err(_) => vec![apply_alone(pool, handler, &topics, &sourced[0]).await?],
    };
    let mut caused = Vec::new();
    for events in applied {
        caused.extend(events.context("an event was applied twice")?);
    }
    Ok(caused)
}

/// One event in its own transaction, retried while the database reports a
/// transient failure (a deadlock with another group), as the consumer does.
async fn apply_alone<H: EventHandler>(
    pool: &PgPool,
    handler: &H,
    topics: &Topics,
    (source, event): &(Source<'_>, &Envelope),
) -> anyhow::Result<Option<Vec<Envelope>>> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match apply_batch(pool, handler, topics, &[(*source, *event)]).await {
            Ok(mut applied) => return Ok(applied.remove(0)),
            Err(HandlerError::Transient(_)) if attempts < TRANSIENT_ATTEMPTS => {}
            Err(error) => anyhow::bail!("applying an event in the limit run: {error:#}"),
        }
    }
}

/// The outbox relay's database work without the broker: woken by the outbox
/// trigger's notification, claim a batch, mark it sent, commit.
async fn relay(pool: PgPool, channel: String, stop: CancellationToken) -> anyhow::Result<()> {
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(&channel).await?;
    while !stop.is_cancelled() {
        let mut tx = pool.begin().await?;
        let rows = service_kit::outbox::claim(&mut tx, RELAY_BATCH).await?;
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        service_kit::outbox::mark_sent(&mut tx, &ids).await?;
        tx.commit().await?;
        if (ids.len() as i64) < RELAY_BATCH {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = listener.recv() => {}
                _ = tokio::time::sleep(RELAY_POLL) => {}
            }
        }
    }
    Ok(())
}

async fn unsent(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(pool)
            .await?,
    )
}

/// Times [`ROUND_TRIPS`] messages, one at a time, from produce to consume on
/// a scratch topic, with the producer and consumer settings the services use.
pub async fn broker(bootstrap: &str, run_id: &str) -> anyhow::Result<BrokerLimit> {
    let topic = format!("{run_id}-round-trip");
    // Brokers that allow it create the topic here; the embedded one creates
    // it on first use.
    let _ = service_kit::kafka::create_missing_topics(bootstrap, &[&topic], 1, -1).await;
    let mut config = CommonConfig::defaults("bench", 0, "bench");
    config.kafka_bootstrap_servers = bootstrap.to_owned();
    config.kafka_group_id = format!("{run_id}-round-trip");
    let producer: FutureProducer = service_kit::kafka::producer(&config)?;
    // The first message creates the topic (on brokers that create on first
    // use) and waits for the group: not timed.
    send(&producer, &topic, "warm-up").await?;
    let consumer: EventStreamConsumer = service_kit::kafka::consumer(&config, &[&topic])?;
    tokio::time::timeout(BROKER_WARM_UP_TIMEOUT, receive(&consumer, "warm-up"))
        .await
        .context("the broker did not deliver the first message in time")??;

    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS {
        let key = format!("m{i}");
        let began = Instant::now();
        send(&producer, &topic, &key).await?;
        tokio::time::timeout(BROKER_WARM_UP_TIMEOUT, receive(&consumer, &key))
            .await
            .context("a round-trip message was not delivered")??;
        samples.push(began.elapsed());
    }
    Ok(BrokerLimit {
        round_trip_ms: Summary::of(&samples),
    })
}

async fn send(producer: &FutureProducer, topic: &str, key: &str) -> anyhow::Result<()> {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(key),
            Timeout::After(BROKER_WARM_UP_TIMEOUT),
        )
        .await
        .map_err(|(error, _)| anyhow::anyhow!("producing to the scratch topic: {error}"))?;
    Ok(())
}

/// Consumes until the message with `key` arrives. Errors are skipped: until
/// the first message creates the scratch topic, the consumer reports it
/// missing; the caller's timeout bounds the wait.
async fn receive(consumer: &EventStreamConsumer, key: &str) -> anyhow::Result<()> {
    loop {
        if let Ok(message) = consumer.recv().await {
            if message.key() == Some(key.as_bytes()) {
                return Ok(());
            }
        }
    }
}
