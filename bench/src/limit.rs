//! The machine's limit, measured in the same run as the load:
//!
//! - **database-bound**: the transactions the four services commit for each
//!   order, run by the services' own code straight against the same Postgres,
//!   with in-memory queues where the broker would be and no HTTP. Placers
//!   commit orders with order-service's `db::place`, one transaction each, as
//!   `POST /api/orders` does, as fast as they can. Each service has one
//!   consumer, as a service instance does: it applies the events waiting for
//!   it (up to the services' `CONSUMER_BATCH_SIZE`) in one transaction with
//!   its [`EventHandler`] through service-kit's
//!   [`consumer::apply_batch`](service_kit::consumer::apply_batch) — inbox
//!   rows, effects and caused events in the outbox — and hands the caused
//!   events to the consumers subscribed to their topics (each service's own
//!   `app::subscriptions`). A relay per schema claims and marks the outbox
//!   rows sent, woken by the commits through its service's [`Outbox`], as
//!   the services' relays are. So the limit is the same pipeline as the
//!   system, minus the broker and HTTP. It runs in scratch schemas
//!   (`bench_*`), created by the services' migrations and dropped
//!   afterwards, so the running services never see its rows;
//! - **broker round trip**: produce → consume on a scratch topic of the same
//!   broker, with the services' producer and consumer settings.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde::Serialize;
use service_kit::consumer::{apply_batch, Source};
use service_kit::kafka::{EventProducer, EventStreamConsumer};
use service_kit::outbox::Outbox;
use service_kit::{CommonConfig, EventHandler, HandlerError, ServiceConfig};
use shared_events::{
    Cents, Envelope, Event, OrderCreated, OrderId, OrderLine, Quantity, Sku, Topics, UserId,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::load::Workload;
use crate::stats::Summary;

/// The scratch schemas, one per service, and the migrations each gets.
const SCHEMA_PREFIX: &str = "bench_";
/// Outbox rows the stand-in relay claims per round, as the real one does.
const RELAY_BATCH: i64 = 100;
/// The stand-in relay's fallback poll, as the services'.
const RELAY_POLL: Duration = Duration::from_millis(1_000);
/// How long the stand-in relays may take to mark the last rows sent.
const RELAY_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Orders whose saga may be in progress at once: enough for every consumer to
/// find full batches waiting, few enough that queues stay bounded.
const MAX_IN_FLIGHT: usize = 1_000;
/// Attempts at an event that hits a transient failure in the limit run.
const TRANSIENT_ATTEMPTS: u32 = 10;
/// Messages timed one at a time for the broker round trip.
const ROUND_TRIPS: usize = 200;
/// How long the broker may take to deliver the first message (group join).
const BROKER_WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Orders per second the database work sustains.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DbLimit {
    /// Orders placed at once, each in its own transaction (as POSTs are).
    pub placers: usize,
    /// Most sagas in progress at once; a placer waits for a free slot.
    pub max_in_flight: usize,
    /// Most events a consumer applies in one transaction.
    pub batch_size: usize,
    pub orders: u64,
    pub seconds: f64,
    pub orders_per_second: f64,
    /// From the order's placement to the last event of its saga applied:
    /// mostly queueing, since up to `max_in_flight` sagas wait their turn.
    pub order_latency_ms: Summary,
    /// Mean events per consumer transaction, by service: how much the
    /// consumers batched at this throughput.
    pub events_per_transaction: BTreeMap<String, f64>,
}

impl DbLimit {
    /// `order 12.3, inventory 20.1, …`: the mean batch of each consumer.
    pub fn batching(&self) -> String {
        self.events_per_transaction
            .iter()
            .map(|(service, mean)| format!("{} {mean:.1}", service.trim_end_matches("-service")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Produce → consume on the same broker.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerLimit {
    /// One message at a time: produce, then wait until the consumer has it.
    pub round_trip_ms: Summary,
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

/// A connection pool per service, in its scratch schema, in [`services`] order.
async fn connect(database_url: &str, pool_size: u32) -> anyhow::Result<[PgPool; 4]> {
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
    Ok(pools.try_into().expect("four services"))
}

/// Runs the database work of whole sagas with `placers` placing orders for
/// `duration`, then until every saga begun has finished, and reports orders
/// per second.
pub async fn database(
    database_url: &str,
    workload: &Workload,
    placers: usize,
    duration: Duration,
) -> anyhow::Result<DbLimit> {
    drop_schemas(database_url).await?;
    let result = database_in_scratch_schemas(database_url, workload, placers, duration).await;
    drop_schemas(database_url).await?;
    result
}

/// An event on its way to one consumer.
struct Delivery {
    topic: String,
    event: Envelope,
}

/// A saga in progress.
struct InFlight {
    placed: Instant,
    /// Deliveries not yet applied; the saga is over at zero.
    outstanding: usize,
    /// Held until the saga is over, bounding the sagas in progress.
    _slot: OwnedSemaphorePermit,
}

/// What the consumers share: where each topic goes, and the sagas in progress.
struct Pipeline {
    topics: Topics,
    /// Most events a consumer applies in one transaction.
    batch_size: usize,
    /// Ends the consumers once every saga is over.
    stop: CancellationToken,
    subscribers: HashMap<String, Vec<UnboundedSender<Delivery>>>,
    in_flight: Mutex<HashMap<OrderId, InFlight>>,
    finished: Mutex<Vec<Duration>>,
    /// Stand-in Kafka offsets, unique per delivery, for the inbox rows.
    offsets: AtomicU64,
}

impl Pipeline {
    /// Hands `events` to their subscribers, counting them against their sagas.
    fn publish(&self, events: Vec<Envelope>) -> anyhow::Result<()> {
        for event in events {
            let topic = self.topics.for_event(event.event_type()).to_owned();
            let subscribers = self.subscribers.get(&topic).map_or(&[][..], Vec::as_slice);
            if let Some(saga) = self.in_flight.lock().unwrap().get_mut(&event.order_id) {
                saga.outstanding += subscribers.len();
            }
            for subscriber in subscribers {
                subscriber
                    .send(Delivery {
                        topic: topic.clone(),
                        event: event.clone(),
                    })
                    .map_err(|_| anyhow::anyhow!("a limit consumer stopped early"))?;
            }
        }
        Ok(())
    }

    /// Counts one delivery of `order`'s saga as applied.
    fn applied(&self, order: &OrderId) {
        let mut in_flight = self.in_flight.lock().unwrap();
        let Some(saga) = in_flight.get_mut(order) else {
            return;
        };
        saga.outstanding -= 1;
        if saga.outstanding == 0 {
            let saga = in_flight.remove(order).expect("present");
            self.finished.lock().unwrap().push(saga.placed.elapsed());
        }
    }
}

async fn database_in_scratch_schemas(
    database_url: &str,
    workload: &Workload,
    placers: usize,
    duration: Duration,
) -> anyhow::Result<DbLimit> {
    let placers = placers.max(1);
    let batch_size = CommonConfig::defaults("", 0, "").consumer_batch_size.max(1);
    // A connection per placer, plus a consumer's and a relay's, per service.
    let [orders, inventory, payments, notifications] =
        connect(database_url, placers as u32 + 2).await?;
    for (i, sku) in workload.skus.iter().enumerate() {
        inventory_service::db::upsert_product(
            &inventory,
            sku,
            None,
            Workload::price_cents(i),
            i32::MAX,
        )
        .await
        .context("stocking the scratch catalog")?;
    }

    let topics = Topics::default();
    let stop = CancellationToken::new();
    // One outbox per service, as each service has: a commit through it wakes
    // that service's stand-in relay.
    let [order_outbox, inventory_outbox, payment_outbox, notification_outbox] = [
        "order-service",
        "inventory-service",
        "payment-service",
        "notification-service",
    ]
    .map(|service| Outbox::new(topics.clone(), service));
    let mut queues = HashMap::new();
    let mut subscribers: HashMap<String, Vec<UnboundedSender<Delivery>>> = HashMap::new();
    for (service, subscriptions) in [
        ("order-service", order_service::app::subscriptions(&topics)),
        (
            "inventory-service",
            inventory_service::app::subscriptions(&topics),
        ),
        (
            "payment-service",
            payment_service::app::subscriptions(&topics),
        ),
        (
            "notification-service",
            notification_service::app::subscriptions(&topics),
        ),
    ] {
        let (sender, receiver) = unbounded_channel();
        for topic in subscriptions {
            subscribers
                .entry(topic.to_owned())
                .or_default()
                .push(sender.clone());
        }
        queues.insert(service, receiver);
    }
    let pipeline = Arc::new(Pipeline {
        topics: topics.clone(),
        batch_size,
        stop: stop.clone(),
        subscribers,
        in_flight: Mutex::new(HashMap::new()),
        finished: Mutex::new(Vec::new()),
        offsets: AtomicU64::new(0),
    });

    let mut relays = tokio::task::JoinSet::new();
    for (pool, outbox) in [
        (&orders, &order_outbox),
        (&inventory, &inventory_outbox),
        (&payments, &payment_outbox),
    ] {
        relays.spawn(relay(pool.clone(), outbox.clone(), stop.clone()));
    }
    let mut consumers = tokio::task::JoinSet::new();
    let mut queue = |service| queues.remove(service).expect("a queue per service");
    consumers.spawn(consume(
        "order-service",
        orders.clone(),
        order_service::consumer::OrderEvents,
        queue("order-service"),
        order_outbox.clone(),
        pipeline.clone(),
    ));
    consumers.spawn(consume(
        "inventory-service",
        inventory.clone(),
        inventory_service::consumer::InventoryEvents {
            service_name: "inventory-service".to_owned(),
            reservation_ttl_secs: inventory_service::Config::defaults()
                .inventory_reservation_ttl_secs,
        },
        queue("inventory-service"),
        inventory_outbox,
        pipeline.clone(),
    ));
    consumers.spawn(consume(
        "payment-service",
        payments.clone(),
        payment_service::consumer::PaymentEvents {
            service_name: "payment-service".to_owned(),
            // Every customer can afford every order, as in the load.
            default_credit: Cents::parse(i64::MAX / 4).expect("a valid amount"),
        },
        queue("payment-service"),
        payment_outbox,
        pipeline.clone(),
    ));
    consumers.spawn(consume(
        "notification-service",
        notifications.clone(),
        notification_service::consumer::NotificationEvents,
        queue("notification-service"),
        notification_outbox,
        pipeline.clone(),
    ));

    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    let deadline = started + duration;
    let next_order = Arc::new(AtomicU64::new(0));
    let mut placing = tokio::task::JoinSet::new();
    for _ in 0..placers {
        let (orders, pipeline, slots, next_order) = (
            orders.clone(),
            pipeline.clone(),
            slots.clone(),
            next_order.clone(),
        );
        let (workload, outbox) = (workload.clone(), order_outbox.clone());
        placing.spawn(async move {
            while Instant::now() < deadline {
                let slot = slots.clone().acquire_owned().await?;
                let n = next_order.fetch_add(1, Ordering::Relaxed);
                place(&orders, &outbox, &pipeline, &workload, n, slot).await?;
            }
            anyhow::Ok(())
        });
    }
    // Until every saga is over, a failing placer or consumer ends the run.
    let all_over = slots.acquire_many(MAX_IN_FLIGHT as u32);
    tokio::pin!(all_over);
    let mut placing_done = false;
    loop {
        tokio::select! {
            placed = placing.join_next(), if !placing_done => match placed {
                Some(done) => done.context("a placer panicked")??,
                None => placing_done = true,
            },
            consumed = consumers.join_next() => {
                consumed.context("no consumers")?.context("a limit consumer panicked")??;
                anyhow::bail!("a limit consumer stopped early");
            }
            _ = &mut all_over, if placing_done => break,
        }
    }
    // The relays' work is part of each order's: wait until they caught up.
    let relays_caught_up = async {
        for pool in [&orders, &inventory, &payments] {
            while unsent(pool).await? > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(RELAY_DRAIN_TIMEOUT, relays_caught_up)
        .await
        .context("the stand-in relays did not publish every outbox row")??;
    let seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    let mut events_per_transaction = BTreeMap::new();
    while let Some(done) = consumers.join_next().await {
        let (service, stats) = done.context("a limit consumer panicked")??;
        events_per_transaction.insert(service.to_owned(), stats.mean());
    }
    while let Some(done) = relays.join_next().await {
        done.context("a relay panicked")??;
    }
    for pool in [&orders, &inventory, &payments, &notifications] {
        pool.close().await;
    }
    let latencies = std::mem::take(&mut *pipeline.finished.lock().unwrap());
    let orders = latencies.len() as u64;
    Ok(DbLimit {
        placers,
        max_in_flight: MAX_IN_FLIGHT,
        batch_size,
        orders,
        seconds,
        orders_per_second: orders as f64 / seconds,
        order_latency_ms: Summary::of(&latencies),
        events_per_transaction,
    })
}

/// Places order number `n` as `POST /api/orders` does (order, lines and
/// `OrderCreated` in the outbox, one transaction) and starts its saga.
async fn place(
    orders: &PgPool,
    outbox: &Outbox,
    pipeline: &Pipeline,
    workload: &Workload,
    n: u64,
    slot: OwnedSemaphorePermit,
) -> anyhow::Result<()> {
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
    let new = order_service::commands::NewOrder {
        order_id: order_id.clone(),
        created: created.clone(),
    };
    let deadline = Duration::from_secs(order_service::Config::defaults().order_saga_deadline_secs);
    let placed = Instant::now();
    order_service::commands::place(orders, outbox, &new, deadline)
        .await
        .context("placing an order")?;
    pipeline.in_flight.lock().unwrap().insert(
        order_id.clone(),
        InFlight {
            placed,
            outstanding: 0,
            _slot: slot,
        },
    );
    // The event place() wrote, as consumers receive it.
    pipeline.publish(vec![Envelope::new(
        order_id,
        Event::OrderCreated(created),
        "order-service",
    )])
}

/// Events and transactions a limit consumer applied.
#[derive(Default)]
struct ConsumerStats {
    events: u64,
    transactions: u64,
}

impl ConsumerStats {
    fn mean(&self) -> f64 {
        self.events as f64 / self.transactions.max(1) as f64
    }
}

/// One service's consumer: applies what is waiting, up to `batch_size`
/// events, in one transaction, as [`service_kit::consumer`] does.
async fn consume<H: EventHandler>(
    service: &'static str,
    pool: PgPool,
    handler: H,
    mut queue: UnboundedReceiver<Delivery>,
    outbox: Outbox,
    pipeline: Arc<Pipeline>,
) -> anyhow::Result<(&'static str, ConsumerStats)> {
    let mut stats = ConsumerStats::default();
    loop {
        let first = tokio::select! {
            _ = pipeline.stop.cancelled() => return Ok((service, stats)),
            first = queue.recv() => first.context("the pipeline closed")?,
        };
        let mut batch = vec![first];
        while batch.len() < pipeline.batch_size {
            match queue.try_recv() {
                Ok(delivery) => batch.push(delivery),
                Err(_) => break,
            }
        }
        let (caused, transactions) = apply(&pool, &handler, &outbox, &pipeline, &batch).await?;
        stats.events += batch.len() as u64;
        stats.transactions += transactions;
        pipeline.publish(caused)?;
        for delivery in &batch {
            pipeline.applied(&delivery.event.order_id);
        }
    }
}

/// Applies `batch` in one transaction, exactly as a consumer commits it, or,
/// if that fails, one event per transaction with retries, as the consumer
/// loop does. Returns every event caused and the transactions committed.
async fn apply<H: EventHandler>(
    pool: &PgPool,
    handler: &H,
    outbox: &Outbox,
    pipeline: &Pipeline,
    batch: &[Delivery],
) -> anyhow::Result<(Vec<Envelope>, u64)> {
    let sourced: Vec<(Source<'_>, &Envelope)> = batch
        .iter()
        .map(|delivery| {
            let source = Source {
                topic: &delivery.topic,
                partition: 0,
                offset: pipeline.offsets.fetch_add(1, Ordering::Relaxed) as i64,
                traceparent: None,
            };
            (source, &delivery.event)
        })
        .collect();
    let (applied, transactions) = match apply_batch(pool, handler, outbox, &sourced).await {
        Ok(applied) => (applied, 1),
        Err(_) => {
            let mut one_by_one = Vec::with_capacity(sourced.len());
            for event in &sourced {
                one_by_one.push(apply_alone(pool, handler, outbox, event).await?);
            }
            (one_by_one, sourced.len() as u64)
        }
    };
    let mut caused = Vec::new();
    for events in applied {
        caused.extend(events.context("an event was applied twice")?);
    }
    Ok((caused, transactions))
}

/// One event in its own transaction, retried while the database reports a
/// transient failure, as the consumer does.
async fn apply_alone<H: EventHandler>(
    pool: &PgPool,
    handler: &H,
    outbox: &Outbox,
    (source, event): &(Source<'_>, &Envelope),
) -> anyhow::Result<Option<Vec<Envelope>>> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match apply_batch(pool, handler, outbox, &[(*source, *event)]).await {
            Ok(mut applied) => return Ok(applied.remove(0)),
            Err(HandlerError::Transient(_)) if attempts < TRANSIENT_ATTEMPTS => {}
            Err(error) => anyhow::bail!("applying an event in the limit run: {error:#}"),
        }
    }
}

/// The outbox relay's database work without the broker: woken after each
/// commit that wrote outbox rows, claim a batch, mark it sent, commit.
async fn relay(pool: PgPool, outbox: Outbox, stop: CancellationToken) -> anyhow::Result<()> {
    while !stop.is_cancelled() {
        let mut tx = pool.begin().await?;
        let rows = service_kit::outbox::claim(&mut tx, RELAY_BATCH).await?;
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        service_kit::outbox::mark_sent(&mut tx, &ids).await?;
        tx.commit().await?;
        if (ids.len() as i64) < RELAY_BATCH {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = outbox.wait_for_commit() => {}
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
pub async fn broker(
    connection: &service_kit::kafka::KafkaConnection,
    run_id: &str,
) -> anyhow::Result<BrokerLimit> {
    let topic = format!("{run_id}-round-trip");
    // Brokers that allow it create the topic here; the embedded one creates
    // it on first use.
    let _ = service_kit::kafka::create_missing_topics(connection, &[&topic], 1, -1).await;
    let mut config = CommonConfig::defaults("bench", 0, "bench");
    connection.apply_to(&mut config);
    config.kafka_group_id = format!("{run_id}-round-trip");
    let producer: EventProducer = service_kit::kafka::producer(&config)?;
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

async fn send(producer: &EventProducer, topic: &str, key: &str) -> anyhow::Result<()> {
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
