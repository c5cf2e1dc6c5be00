//! The machine's limit, measured in the same run as the load:
//!
//! - **database-bound**: the four services' own pipelines straight against
//!   the same Postgres, with an in-memory broker
//!   ([`service_kit::backend::memory`]) where Kafka would be and no HTTP.
//!   Placers commit orders with order-service's `commands::place`, one
//!   transaction each, as `POST /api/orders` does, as fast as they can. Each
//!   service runs its real [`EventConsumer`] (one, as a service instance
//!   does: batches, inbox, retries, dead letters) with its own
//!   [`EventHandler`] and subscriptions, and each publishing service its real
//!   [`OutboxRelay`], woken by the commits through its [`Outbox`]. So the
//!   limit is the shipped pipeline, minus the broker and HTTP. It runs in
//!   scratch schemas (`bench_*`), created by the services' migrations and
//!   dropped afterwards, so the running services never see its rows;
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
use service_kit::backend::memory::{Batches, MemoryBroker};
use service_kit::backend::{MessageSource, Received};
use service_kit::consumer::EventConsumer;
use service_kit::dlq;
use service_kit::kafka::{EventProducer, EventStreamConsumer};
use service_kit::outbox::{Outbox, OutboxRelay};
use service_kit::shutdown::Closing;
use service_kit::{CommonConfig, EventHandler, HandlerError, ServiceConfig};
use shared_events::events::headers;
use shared_events::topics::dead_letter_topic;
use shared_events::{
    Cents, Envelope, Event, OrderCreated, OrderId, OrderLine, Quantity, Sku, Topics, UserId,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::load::Workload;
use crate::stats::Summary;

/// The scratch schemas, one per service, and the migrations each gets.
const SCHEMA_PREFIX: &str = "bench_";
/// How long the relays may take to mark the last rows sent.
const RELAY_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Orders whose saga may be in progress at once: enough for every consumer to
/// find full batches waiting, few enough that queues stay bounded.
const MAX_IN_FLIGHT: usize = 1_000;
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
    /// Mean events per consumer batch (applied in one transaction), by
    /// service: how much the consumers batched at this throughput.
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

/// Durable single-row commits on the same Postgres, with the services'
/// `synchronous_commit` (the server's), as fast as they go.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitFloor {
    /// One connection committing back to back: what one commit costs.
    pub commit_ms: Summary,
    /// Connections committing at once: the benchmark's largest client count.
    pub connections: usize,
    /// Commits per second those connections made together.
    pub commits_per_second: f64,
}

/// Commits on the critical path of one order: the POST, then inventory's
/// reservation, payment's charge and order-service's confirmation, one
/// consumer transaction each.
pub const COMMITS_PER_ORDER: f64 = 4.0;
/// Broker hops on it: `order-created`, `inventory-reserved`, `payment-processed`.
pub const BROKER_HOPS_PER_ORDER: f64 = 3.0;

/// The scratch schema the commit floor writes in.
const COMMIT_FLOOR_SCHEMA: &str = "bench_commit_floor";

/// Measures [`CommitFloor`]: `duration` of back-to-back commits on one
/// connection, then `duration` on `connections` at once, each an insert of
/// one row into a scratch table, dropped afterwards.
pub async fn commit_floor(
    database_url: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<CommitFloor> {
    let options = PgConnectOptions::from_str(database_url).context("parsing the database URL")?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections.max(1) as u32)
        .connect_with(options)
        .await
        .context("connecting to the database")?;
    // The names are constants of this module: safe to splice.
    for statement in [
        format!("DROP SCHEMA IF EXISTS {COMMIT_FLOOR_SCHEMA} CASCADE"),
        format!("CREATE SCHEMA {COMMIT_FLOOR_SCHEMA}"),
        format!(
            "CREATE TABLE {COMMIT_FLOOR_SCHEMA}.commits (id BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ),
    ] {
        sqlx::query(&statement)
            .execute(&pool)
            .await
            .context("preparing the commit floor's table")?;
    }
    let insert = format!("INSERT INTO {COMMIT_FLOOR_SCHEMA}.commits DEFAULT VALUES");
    let measured = async {
        let mut samples = Vec::new();
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            let began = Instant::now();
            sqlx::query(&insert).execute(&pool).await?;
            samples.push(began.elapsed());
        }
        let started = Instant::now();
        let deadline = started + duration;
        let mut committers = tokio::task::JoinSet::new();
        for _ in 0..connections.max(1) {
            let (pool, insert) = (pool.clone(), insert.clone());
            committers.spawn(async move {
                let mut commits = 0u64;
                while Instant::now() < deadline {
                    sqlx::query(&insert).execute(&pool).await?;
                    commits += 1;
                }
                anyhow::Ok(commits)
            });
        }
        let mut commits = 0;
        while let Some(done) = committers.join_next().await {
            commits += done.context("a committer panicked")??;
        }
        anyhow::Ok(CommitFloor {
            commit_ms: Summary::of(&samples),
            connections: connections.max(1),
            commits_per_second: commits as f64 / started.elapsed().as_secs_f64(),
        })
    }
    .await;
    sqlx::query(&format!(
        "DROP SCHEMA IF EXISTS {COMMIT_FLOOR_SCHEMA} CASCADE"
    ))
    .execute(&pool)
    .await
    .context("dropping the commit floor's table")?;
    pool.close().await;
    measured
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

/// One service of the limit run: its configuration (the defaults, in its
/// scratch schema), its pool there, and its outbox.
struct Service {
    config: CommonConfig,
    pool: PgPool,
    outbox: Outbox,
}

/// The four services, in [`services`] order.
async fn connect(database_url: &str, pool_size: u32) -> anyhow::Result<[Service; 4]> {
    let mut connected = Vec::new();
    for (name, schema, migrations) in services() {
        let mut config = CommonConfig::defaults(name, 0, &format!("{SCHEMA_PREFIX}{schema}"));
        config.database_url = database_url.to_owned();
        config.database_max_connections = pool_size;
        let pool = service_kit::db::connect(&config, migrations)
            .await
            .with_context(|| format!("preparing the scratch schema of {name}"))?;
        let outbox = Outbox::of(&config);
        connected.push(Service {
            config,
            pool,
            outbox,
        });
    }
    Ok(connected
        .try_into()
        .unwrap_or_else(|_| unreachable!("four services")))
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

/// A saga in progress.
struct InFlight {
    placed: Instant,
    /// Deliveries not yet applied; the saga is over at zero.
    outstanding: usize,
    /// Held until the saga is over, bounding the sagas in progress.
    _slot: OwnedSemaphorePermit,
}

/// The sagas in progress, followed through what the consumers apply: a
/// saga is over once every delivery of every event it caused was applied
/// (and its offset stored).
struct Sagas {
    topics: Topics,
    /// How many consumers read each topic.
    fan_out: HashMap<String, usize>,
    in_flight: Mutex<HashMap<String, InFlight>>,
    /// Deliveries each applied event caused, by its eventId: written by the
    /// handler (a rolled-back attempt is applied again and overwrites its
    /// count), taken when the consumer stores the message.
    caused: Mutex<HashMap<Uuid, usize>>,
    finished: Mutex<Vec<Duration>>,
}

impl Sagas {
    /// The consumers that receive an event of `event`'s type.
    fn deliveries(&self, event: &Envelope) -> usize {
        let topic = self.topics.for_event(event.event_type());
        self.fan_out.get(topic).copied().unwrap_or(0)
    }

    /// `order` is about to be placed with `created`.
    fn begin(&self, order: &OrderId, created: &Envelope, slot: OwnedSemaphorePermit) {
        self.in_flight.lock().unwrap().insert(
            order.as_str().to_owned(),
            InFlight {
                placed: Instant::now(),
                outstanding: self.deliveries(created),
                _slot: slot,
            },
        );
    }

    /// The event `applied` caused `events`.
    fn caused(&self, applied: &Envelope, events: &[Envelope]) {
        let deliveries = events.iter().map(|event| self.deliveries(event)).sum();
        self.caused
            .lock()
            .unwrap()
            .insert(applied.event_id, deliveries);
    }

    /// A consumer is done with `message`.
    fn stored(&self, message: &Received) {
        let caused = message
            .header(headers::EVENT_ID)
            .and_then(|id| Uuid::parse_str(id).ok())
            .and_then(|id| self.caused.lock().unwrap().remove(&id))
            .unwrap_or(0);
        let Some(order) = message.key.as_deref() else {
            return;
        };
        let order = String::from_utf8_lossy(order);
        let mut in_flight = self.in_flight.lock().unwrap();
        let Some(saga) = in_flight.get_mut(order.as_ref()) else {
            return;
        };
        saga.outstanding = saga.outstanding + caused - 1;
        if saga.outstanding == 0 {
            let saga = in_flight.remove(order.as_ref()).expect("present");
            self.finished.lock().unwrap().push(saga.placed.elapsed());
        }
    }
}

/// A service's handler, telling [`Sagas`] what each event caused.
struct Followed<H> {
    handler: H,
    sagas: Arc<Sagas>,
}

impl<H: EventHandler> EventHandler for Followed<H> {
    async fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
    ) -> Result<Vec<Envelope>, HandlerError> {
        let caused = self.handler.handle(tx, event).await?;
        self.sagas.caused(event, &caused);
        Ok(caused)
    }
}

/// The consumers of a limit run, each the real one of its service.
struct Consumers {
    broker: MemoryBroker,
    sagas: Arc<Sagas>,
    stop: CancellationToken,
    running: tokio::task::JoinSet<anyhow::Result<()>>,
    /// How each took its messages, by service.
    batches: BTreeMap<String, Arc<Batches>>,
}

impl Consumers {
    /// Starts `service`'s consumer over the broker, subscribed to
    /// `subscriptions` as the service is, with `handler` followed by the sagas.
    fn start<H: EventHandler>(&mut self, service: &Service, subscriptions: Vec<&str>, handler: H) {
        let sagas = self.sagas.clone();
        let source = self
            .broker
            .subscribe(&subscriptions)
            .on_store(Arc::new(move |message: &Received| sagas.stored(message)));
        self.batches
            .insert(service.config.service_name.clone(), source.batches());
        let consumer = EventConsumer::with_backend(
            &service.config,
            service.pool.clone(),
            service.outbox.clone(),
            Closing::default(),
            Followed {
                handler,
                sagas: self.sagas.clone(),
            },
            source,
            self.broker.publisher(),
        );
        self.running.spawn(consumer.run(self.stop.clone()));
    }
}

async fn database_in_scratch_schemas(
    database_url: &str,
    workload: &Workload,
    placers: usize,
    duration: Duration,
) -> anyhow::Result<DbLimit> {
    let placers = placers.max(1);
    // A connection per placer, plus a consumer's and a relay's, per service.
    let [orders, inventory, payments, notifications] =
        connect(database_url, placers as u32 + 2).await?;
    let batch_size = orders.config.consumer.batch_size;
    for (i, sku) in workload.skus.iter().enumerate() {
        inventory_service::db::upsert_product(
            &inventory.pool,
            sku,
            None,
            Workload::price_cents(i),
            i32::MAX,
        )
        .await
        .context("stocking the scratch catalog")?;
    }

    let topics = Topics::default();
    let subscriptions = [
        order_service::app::subscriptions(&topics),
        inventory_service::app::subscriptions(&topics),
        payment_service::app::subscriptions(&topics),
        notification_service::app::subscriptions(&topics),
    ];
    let mut fan_out = HashMap::new();
    for topic in subscriptions.iter().flatten() {
        *fan_out.entry((*topic).to_owned()).or_default() += 1;
    }
    let broker = MemoryBroker::new();
    // Nothing should be dead-lettered: if anything is, the run is wrong.
    let dead_letter_topics: Vec<String> = fan_out.keys().map(|t| dead_letter_topic(t)).collect();
    let dead_letters = broker.subscribe(
        &dead_letter_topics
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );

    let sagas = Arc::new(Sagas {
        topics: topics.clone(),
        fan_out,
        in_flight: Mutex::new(HashMap::new()),
        caused: Mutex::new(HashMap::new()),
        finished: Mutex::new(Vec::new()),
    });
    let broker = MemoryBroker::new();
    let stop = CancellationToken::new();
    let [order_subscriptions, inventory_subscriptions, payment_subscriptions, notification_subscriptions] =
        subscriptions;
    let mut consumers = Consumers {
        broker: broker.clone(),
        sagas: sagas.clone(),
        stop: stop.clone(),
        running: tokio::task::JoinSet::new(),
        batches: BTreeMap::new(),
    };
    consumers.start(
        &orders,
        order_subscriptions,
        order_service::consumer::OrderEvents,
    );
    consumers.start(
        &inventory,
        inventory_subscriptions,
        inventory_service::consumer::InventoryEvents {
            service_name: "inventory-service".to_owned(),
            reservation_ttl: inventory_service::Config::defaults().inventory_reservation_ttl,
        },
    );
    consumers.start(
        &payments,
        payment_subscriptions,
        payment_service::consumer::PaymentEvents {
            service_name: "payment-service".to_owned(),
            // Every customer can afford every order, as in the load.
            default_credit: Cents::parse(i64::MAX / 4).expect("a valid amount"),
        },
    );
    consumers.start(
        &notifications,
        notification_subscriptions,
        notification_service::consumer::NotificationEvents,
    );
    let Consumers {
        running: mut consumers,
        batches,
        ..
    } = consumers;

    // The services that publish events run their relays, as they do.
    let mut relays = tokio::task::JoinSet::new();
    for service in [&orders, &inventory, &payments] {
        let relay = OutboxRelay::with_publisher(
            &service.config,
            service.pool.clone(),
            service.outbox.clone(),
            broker.publisher(),
        );
        relays.spawn(relay.run(stop.clone()));
    }

    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    let deadline = started + duration;
    let next_order = Arc::new(AtomicU64::new(0));
    let mut placing = tokio::task::JoinSet::new();
    for _ in 0..placers {
        let (pool, outbox, sagas, slots, next_order) = (
            orders.pool.clone(),
            orders.outbox.clone(),
            sagas.clone(),
            slots.clone(),
            next_order.clone(),
        );
        let workload = workload.clone();
        placing.spawn(async move {
            while Instant::now() < deadline {
                let slot = slots.clone().acquire_owned().await?;
                let n = next_order.fetch_add(1, Ordering::Relaxed);
                place(&pool, &outbox, &sagas, &workload, n, slot).await?;
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
            letter = dead_letters.recv() => anyhow::bail!(
                "an event was dead-lettered in the limit run: {}",
                letter.header(dlq::headers::ERROR).unwrap_or("no reason given")
            ),
            _ = &mut all_over, if placing_done => break,
        }
    }
    // The relays' work is part of each order's: wait until they caught up.
    let relays_caught_up = async {
        for service in [&orders, &inventory, &payments] {
            while unsent(&service.pool).await? > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(RELAY_DRAIN_TIMEOUT, relays_caught_up)
        .await
        .context("the relays did not publish every outbox row")??;
    let seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    while let Some(done) = consumers.join_next().await {
        done.context("a limit consumer panicked")??;
    }
    while let Some(done) = relays.join_next().await {
        done.context("a relay panicked")??;
    }
    for service in [&orders, &inventory, &payments, &notifications] {
        service.pool.close().await;
    }
    let latencies = std::mem::take(&mut *sagas.finished.lock().unwrap());
    let orders = latencies.len() as u64;
    Ok(DbLimit {
        placers,
        max_in_flight: MAX_IN_FLIGHT,
        batch_size,
        orders,
        seconds,
        orders_per_second: orders as f64 / seconds,
        order_latency_ms: Summary::of(&latencies),
        events_per_transaction: batches
            .into_iter()
            .map(|(service, batches)| (service, batches.mean()))
            .collect(),
    })
}

/// Places order number `n` as `POST /api/orders` does (order, lines and
/// `OrderCreated` in the outbox, one transaction), which starts its saga.
async fn place(
    orders: &PgPool,
    outbox: &Outbox,
    sagas: &Sagas,
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
    let deadline = order_service::Config::defaults().order_saga_deadline;
    // Followed before it is placed: its event may be applied before
    // place() returns.
    let event = Envelope::new(order_id, Event::OrderCreated(created), "order-service");
    sagas.begin(&new.order_id, &event, slot);
    order_service::commands::place(orders, outbox, &new, deadline)
        .await
        .context("placing an order")?;
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
/// a scratch topic, with the producer and consumer settings the services use
/// (their defaults and `fetch_wait`).
pub async fn broker(
    connection: &service_kit::kafka::KafkaConnection,
    fetch_wait: Duration,
    run_id: &str,
) -> anyhow::Result<BrokerLimit> {
    let topic = format!("{run_id}-round-trip");
    // Brokers that allow it create the topic here; the embedded one creates
    // it on first use.
    let _ = service_kit::kafka::create_missing_topics(connection, &[&topic], 1, -1).await;
    let mut config = CommonConfig::defaults("bench", 0, "bench");
    connection.apply_to(&mut config);
    config.kafka.group_id = format!("{run_id}-round-trip");
    config.kafka.fetch_wait_max = fetch_wait;
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
