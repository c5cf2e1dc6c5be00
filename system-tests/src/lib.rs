//! A whole order system for one test: [`TestStack::start`] gives each test its
//! own database, its own Kafka topics and the four services running in-process
//! on free ports, and helpers to drive and inspect them over HTTP and SQL.
//!
//! Infrastructure is embedded unless the environment points elsewhere:
//! - `DATABASE_URL` set: each stack creates a fresh database on that server;
//!   otherwise one temporary Postgres cluster serves the whole test binary.
//! - `KAFKA_BOOTSTRAP_SERVERS` set: each stack uses uniquely named topics and
//!   consumer groups on that broker.
//! - Otherwise `TEST_KAFKA` picks the broker (`local_infra::TestKafka`): unset,
//!   each stack gets its own embedded broker (librdkafka's mock cluster);
//!   `apache`, the stacks of a test binary share one real Apache Kafka, with
//!   topics and groups of their own. A stack that stops its broker, or needs
//!   three nodes, asks for a broker of its own
//!   ([`StackOptions::own_kafka_nodes`]).

pub mod processes;

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use local_infra::{PostgresCluster, TestKafka};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use reqwest::StatusCode;
use serde_json::Value;
use service_kit::{CommonConfig, ServiceConfig};
use shared_events::topics::DEFAULT_PARTITIONS;
use shared_events::Topics;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for an outcome before failing.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// Pause between two looks at a state that is expected to change.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Statuses that end an order's saga.
pub const TERMINAL: [&str; 4] = ["CONFIRMED", "REJECTED", "PAYMENT_FAILED", "CANCELLED"];

static POSTGRES: OnceLock<PostgresCluster> = OnceLock::new();

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Some`, and fails the
/// test, naming `what`, if that takes longer than [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Logs go through the test harness (shown for failing tests only); warnings
/// and errors by default, `RUST_LOG` for more. Trace context propagates as in
/// a service.
fn init_logging() {
    service_kit::telemetry::init_for_tests("warn");
}

/// One service running inside the test process.
pub struct RunningService {
    pub name: String,
    pub base_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningService {
    fn spawn<F>(
        name: &str,
        port: u16,
        run: impl FnOnce(oneshot::Receiver<()>) -> F,
    ) -> RunningService
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        RunningService {
            name: name.to_owned(),
            base_url: format!("http://127.0.0.1:{port}"),
            stop: Some(stop),
            task: Some(tokio::spawn(run(stopped))),
        }
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.context("service task panicked")??;
        }
        Ok(())
    }
}

async fn until_stopped(stopped: oneshot::Receiver<()>) {
    let _ = stopped.await;
}

/// Options for [`TestStack::start_with`].
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// How many inventory-service instances share the consumer group.
    pub inventory_instances: usize,
    /// Give this stack a Postgres cluster of its own, which the test may stop
    /// and start (ignored when `DATABASE_URL` points at an external server).
    pub private_postgres: bool,
    /// order-service's saga deadline. Generous by default, so that tests of
    /// other failures (crashes, outages) are not cut short by it.
    pub saga_deadline_secs: u64,
    /// inventory-service's reservation expiry; longer than the deadline.
    pub reservation_ttl_secs: u64,
    /// How long after confirmation a customer may cancel (`None`: always).
    pub cancel_window_secs: Option<u64>,
    /// Every service's outbox relay fallback poll. [`WAKE_UPS_ONLY`] leaves
    /// publishing to the wake-up each commit gives its own process's relay.
    pub outbox_poll_interval_ms: u64,
    /// A broker of this stack's own with this many nodes, which the test may
    /// take down ([`TestStack::kafka`]); `None`: whatever `TEST_KAFKA` gives
    /// (possibly shared). Ignored with `KAFKA_BOOTSTRAP_SERVERS`.
    pub own_kafka_nodes: Option<usize>,
}

/// An outbox poll far longer than any test: with it, every event a test sees
/// was published because the transaction that wrote it woke the relay.
pub const WAKE_UPS_ONLY: u64 = 3_600_000;

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            inventory_instances: 1,
            private_postgres: false,
            saga_deadline_secs: 300,
            reservation_ttl_secs: 600,
            cancel_window_secs: None,
            outbox_poll_interval_ms: CommonConfig::defaults("", 0, "").outbox_poll_interval_ms,
            own_kafka_nodes: None,
        }
    }
}

/// How often the tests' services look for overdue orders and expired reservations.
const SWEEP_INTERVAL_MS: u64 = 100;

/// The configuration each service of a stack was started with, to start it again.
#[derive(Clone)]
pub struct StackConfigs {
    pub order: order_service::Config,
    pub inventory: inventory_service::Config,
    pub payment: payment_service::Config,
    pub notification: notification_service::Config,
}

async fn spawn_order(config: order_service::Config) -> anyhow::Result<RunningService> {
    let app = order_service::Application::build(config).await?;
    let port = app.port();
    Ok(RunningService::spawn("order-service", port, |s| {
        app.run_until_stopped(until_stopped(s))
    }))
}

async fn spawn_inventory(
    config: inventory_service::Config,
    name: &str,
) -> anyhow::Result<RunningService> {
    let app = inventory_service::Application::build(config).await?;
    let port = app.port();
    Ok(RunningService::spawn(name, port, |s| {
        app.run_until_stopped(until_stopped(s))
    }))
}

async fn spawn_payment(config: payment_service::Config) -> anyhow::Result<RunningService> {
    let app = payment_service::Application::build(config).await?;
    let port = app.port();
    Ok(RunningService::spawn("payment-service", port, |s| {
        app.run_until_stopped(until_stopped(s))
    }))
}

async fn spawn_notification(
    config: notification_service::Config,
) -> anyhow::Result<RunningService> {
    let app = notification_service::Application::build(config).await?;
    let port = app.port();
    Ok(RunningService::spawn("notification-service", port, |s| {
        app.run_until_stopped(until_stopped(s))
    }))
}

/// The four services, their database and their broker.
pub struct TestStack {
    pub order: RunningService,
    pub inventory: Vec<RunningService>,
    pub payment: RunningService,
    pub notification: RunningService,
    /// Connected to the stack's database without a search_path: assertions
    /// name schemas explicitly (`inventory.products`).
    pub db: PgPool,
    pub topics: Topics,
    /// Consumer group of each service, by service name.
    pub groups: HashMap<&'static str, String>,
    pub kafka_bootstrap: String,
    /// HTTP helpers, also reachable directly through `Deref`.
    pub api: Api,
    /// `None` when an external broker is used.
    kafka: Option<TestKafka>,
    /// The stack's own cluster, with [`StackOptions::private_postgres`].
    postgres: Option<PostgresCluster>,
    configs: StackConfigs,
    stopped: bool,
}

impl TestStack {
    pub async fn start() -> TestStack {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> TestStack {
        init_logging();
        Self::try_start(options)
            .await
            .expect("starting the test stack")
    }

    async fn try_start(options: StackOptions) -> anyhow::Result<TestStack> {
        let infra = Infra::start_with(options.private_postgres, options.own_kafka_nodes).await?;
        let common = |name: &str, schema: &str| CommonConfig {
            outbox_poll_interval_ms: options.outbox_poll_interval_ms,
            ..infra.common(name, schema)
        };

        let mut order_config = order_service::Config::defaults();
        order_config.common = common("order-service", order_service::config::SCHEMA);
        order_config.order_saga_deadline_secs = options.saga_deadline_secs;
        order_config.order_deadline_check_interval_ms = SWEEP_INTERVAL_MS;
        order_config.order_cancel_window_secs = options.cancel_window_secs;
        let mut inventory_config = inventory_service::Config::defaults();
        inventory_config.common = common("inventory-service", inventory_service::config::SCHEMA);
        inventory_config.inventory_seed_demo_catalog = false;
        inventory_config.inventory_reservation_ttl_secs = options.reservation_ttl_secs;
        inventory_config.inventory_expiry_check_interval_ms = SWEEP_INTERVAL_MS;
        let mut payment_config = payment_service::Config::defaults();
        payment_config.common = common("payment-service", payment_service::config::SCHEMA);
        let mut notification_config = notification_service::Config::defaults();
        notification_config.common =
            common("notification-service", notification_service::config::SCHEMA);
        let configs = StackConfigs {
            order: order_config,
            inventory: inventory_config,
            payment: payment_config,
            notification: notification_config,
        };
        let groups = HashMap::from([
            ("order-service", configs.order.common.kafka_group_id.clone()),
            (
                "inventory-service",
                configs.inventory.common.kafka_group_id.clone(),
            ),
            (
                "payment-service",
                configs.payment.common.kafka_group_id.clone(),
            ),
            (
                "notification-service",
                configs.notification.common.kafka_group_id.clone(),
            ),
        ]);

        let order = spawn_order(configs.order.clone()).await?;
        let mut inventory = Vec::new();
        for instance in 0..options.inventory_instances {
            let name = format!("inventory-service#{}", instance + 1);
            inventory.push(spawn_inventory(configs.inventory.clone(), &name).await?);
        }
        let payment = spawn_payment(configs.payment.clone()).await?;
        let notification = spawn_notification(configs.notification.clone()).await?;

        let Infra {
            postgres,
            database_url,
            kafka,
            kafka_bootstrap,
            topics,
            ..
        } = infra;
        let api = Api {
            http: reqwest::Client::new(),
            order_base: order.base_url.clone(),
            inventory_base: inventory[0].base_url.clone(),
            payment_base: payment.base_url.clone(),
            notification_base: notification.base_url.clone(),
        };
        Ok(TestStack {
            order,
            inventory,
            payment,
            notification,
            db: PgPool::connect(&database_url).await?,
            topics,
            groups,
            kafka_bootstrap,
            api,
            kafka,
            postgres,
            configs,
            stopped: false,
        })
    }

    /// Stops payment-service gracefully, as if it were down.
    pub async fn stop_payment(&mut self) {
        self.payment.stop().await.expect("stopping payment-service");
    }

    /// Starts payment-service again with its configuration (on a new port).
    pub async fn start_payment(&mut self) {
        self.payment = spawn_payment(self.configs.payment.clone())
            .await
            .expect("starting payment-service");
        self.api.payment_base = self.payment.base_url.clone();
    }

    /// Stops every inventory-service instance gracefully.
    pub async fn stop_inventory(&mut self) {
        for instance in &mut self.inventory {
            instance.stop().await.expect("stopping inventory-service");
        }
    }

    /// Starts one inventory-service instance again, in place of the stopped ones.
    pub async fn start_inventory(&mut self) {
        let instance = spawn_inventory(self.configs.inventory.clone(), "inventory-service#1")
            .await
            .expect("starting inventory-service");
        self.api.inventory_base = instance.base_url.clone();
        self.inventory = vec![instance];
    }

    /// Starts one more inventory-service instance in the same consumer group.
    pub async fn add_inventory(&mut self) {
        let name = format!("inventory-service#{}", self.inventory.len() + 1);
        let instance = spawn_inventory(self.configs.inventory.clone(), &name)
            .await
            .expect("starting inventory-service");
        self.inventory.push(instance);
    }

    /// Stops the newest inventory-service instance gracefully (the first one,
    /// which the API helpers talk to, stays).
    pub async fn remove_inventory(&mut self) {
        assert!(self.inventory.len() > 1, "the last instance stays");
        let mut instance = self.inventory.pop().expect("an instance");
        instance.stop().await.expect("stopping inventory-service");
    }

    /// How many inventory-service instances run.
    pub fn inventory_instances(&self) -> usize {
        self.inventory.len()
    }

    /// Stops every service gracefully; the broker goes last.
    pub async fn shutdown(mut self) {
        for service in [&mut self.order, &mut self.payment, &mut self.notification]
            .into_iter()
            .chain(self.inventory.iter_mut())
        {
            service
                .stop()
                .await
                .unwrap_or_else(|err| panic!("{} did not stop cleanly: {err:#}", service.name));
        }
        self.stopped = true;
    }

    /// The stack's broker, for fault injection; `None` with an external broker.
    pub fn kafka(&self) -> Option<&TestKafka> {
        self.kafka.as_ref()
    }

    /// The stack's own Postgres, for outages; `None` unless
    /// [`StackOptions::private_postgres`] was asked for and possible.
    pub fn postgres(&mut self) -> Option<&mut PostgresCluster> {
        self.postgres.as_mut()
    }

    /// The events stored in `schema`'s outbox for an order, oldest first, as JSON.
    pub async fn outbox_events(&self, schema: &str, order_id: &str) -> Vec<(String, Vec<u8>)> {
        sqlx::query_as(&format!(
            "SELECT topic, payload FROM {schema}.outbox WHERE message_key = $1 ORDER BY id"
        ))
        .bind(order_id)
        .fetch_all(&self.db)
        .await
        .expect("reading the outbox")
    }

    /// Polls until `schema`'s service has processed an event of `event_type`
    /// about `order_id` (it is in that service's inbox).
    pub async fn wait_until_handled(&self, schema: &str, order_id: &str, event_type: &str) {
        let what = format!("{schema} to handle {event_type} of order {order_id}");
        wait_for(&what, || async {
            let handled: bool = sqlx::query_scalar(&format!(
                "SELECT EXISTS (SELECT 1 FROM {schema}.inbox WHERE order_id = $1 AND event_type = $2)"
            ))
            .bind(order_id)
            .bind(event_type)
            .fetch_one(&self.db)
            .await
            .expect("reading an inbox");
            handled.then_some(())
        })
        .await
    }

    /// Publishes raw bytes to a topic with `key`, as a faulty or repeating
    /// producer would, and returns the partition and offset it landed at.
    pub async fn publish_raw(&self, topic: &str, key: &str, payload: &[u8]) -> (i32, i64) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka_bootstrap)
            .create()
            .expect("test producer");
        let delivery = producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Timeout::After(DEADLINE),
            )
            .await
            .map_err(|(err, _)| err)
            .expect("publishing");
        (delivery.partition, delivery.offset)
    }

    /// Reads `topic` from the beginning with a fresh consumer group until the
    /// first message keyed `key` appears; returns its headers and body.
    pub async fn read_message(&self, topic: &str, key: &str) -> (HashMap<String, String>, Value) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka_bootstrap)
            .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("topic reader");
        consumer.subscribe(&[topic]).expect("subscribing");
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < DEADLINE,
                "no message keyed {key} on {topic}"
            );
            let polled = tokio::task::block_in_place(|| consumer.poll(POLL_INTERVAL));
            let Some(Ok(message)) = polled else { continue };
            if message.key() != Some(key.as_bytes()) {
                continue;
            }
            let headers = message
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                            (h.key.to_owned(), value.unwrap_or_default())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let body = serde_json::from_slice(message.payload().unwrap_or_default())
                .expect("a JSON event");
            return (headers, body);
        }
    }

    /// Polls until `service`'s consumer group has committed past `offset` on
    /// `topic`/`partition`: the message there has been fully processed.
    pub async fn wait_until_consumed(
        &self,
        service: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka_bootstrap)
            .set("group.id", &self.groups[service])
            .create()
            .expect("offset reader");
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(topic, partition);
        let what = format!("{service} to consume {topic}[{partition}]@{offset}");
        wait_for(&what, || {
            let committed = tokio::task::block_in_place(|| {
                consumer.committed_offsets(wanted.clone(), Duration::from_secs(5))
            });
            let next = committed
                .ok()
                .and_then(|list| list.find_partition(topic, partition).map(|p| p.offset()));
            std::future::ready(
                matches!(next, Some(Offset::Offset(next)) if next > offset).then_some(()),
            )
        })
        .await
    }
}

/// The four services' HTTP APIs, wherever they run (in-process or as processes).
pub struct Api {
    pub http: reqwest::Client,
    pub order_base: String,
    pub inventory_base: String,
    pub payment_base: String,
    pub notification_base: String,
}

impl Api {
    /// Polls `GET {base_url}/health` until it answers `status`.
    pub async fn wait_for_health(&self, base_url: &str, status: StatusCode) {
        wait_for(&format!("{base_url}/health to answer {status}"), || async {
            let answered = self
                .http
                .get(format!("{base_url}/health"))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            (answered.map(|r| r.status()).ok() == Some(status)).then_some(())
        })
        .await
    }

    pub fn order_url(&self, path: &str) -> String {
        format!("{}{path}", self.order_base)
    }

    pub fn inventory_url(&self, path: &str) -> String {
        format!("{}{path}", self.inventory_base)
    }

    pub fn payment_url(&self, path: &str) -> String {
        format!("{}{path}", self.payment_base)
    }

    pub fn notification_url(&self, path: &str) -> String {
        format!("{}{path}", self.notification_base)
    }

    /// POSTs `body` to `/api/orders`; returns the status and the JSON body.
    pub async fn post_order(&self, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.order_url("/api/orders"))
            .json(body)
            .send()
            .await
            .expect("POST /api/orders");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_json(&self, url: &str) -> (StatusCode, Value) {
        let response = self.http.get(url).send().await.expect("GET");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn order(&self, order_id: &str) -> Value {
        let (status, body) = self
            .get_json(&self.order_url(&format!("/api/orders/{order_id}")))
            .await;
        assert_eq!(status, StatusCode::OK, "GET order {order_id}: {body}");
        body
    }

    /// Polls the order until its status is terminal and returns it.
    pub async fn wait_until_terminal(&self, order_id: &str) -> Value {
        wait_for(
            &format!("order {order_id} to reach a final status"),
            || async {
                let order = self.order(order_id).await;
                TERMINAL
                    .contains(&order["status"].as_str().unwrap_or_default())
                    .then_some(order)
            },
        )
        .await
    }

    /// Polls the order until it has `status` and returns it.
    pub async fn wait_for_status(&self, order_id: &str, status: &str) -> Value {
        self.wait_for_status_in(order_id, &[status]).await
    }

    /// Polls until the order's status is one of `statuses`.
    pub async fn wait_for_status_in(&self, order_id: &str, statuses: &[&str]) -> Value {
        wait_for(
            &format!("order {order_id} to be one of {statuses:?}"),
            || async {
                let order = self.order(order_id).await;
                let status = order["status"].as_str().unwrap_or_default();
                statuses.contains(&status).then_some(order)
            },
        )
        .await
    }

    /// `POST /api/orders/{orderId}/cancel`, with `body` if given.
    pub async fn cancel_order(&self, order_id: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let request = self
            .http
            .post(self.order_url(&format!("/api/orders/{order_id}/cancel")));
        let request = match body {
            Some(body) => request.json(body),
            None => request,
        };
        let response = request.send().await.expect("POST cancel");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET /api/orders/{orderId}/timeline`'s events.
    pub async fn timeline(&self, order_id: &str) -> Vec<Value> {
        let (status, body) = self
            .get_json(&self.order_url(&format!("/api/orders/{order_id}/timeline")))
            .await;
        assert_eq!(status, StatusCode::OK, "GET timeline {order_id}: {body}");
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// `GET /api/payments/{orderId}`: `None` when the order was never charged.
    pub async fn payment(&self, order_id: &str) -> Option<Value> {
        let (status, body) = self
            .get_json(&self.payment_url(&format!("/api/payments/{order_id}")))
            .await;
        match status {
            StatusCode::OK => Some(body),
            StatusCode::NOT_FOUND => None,
            other => panic!("GET payment {order_id}: {other} {body}"),
        }
    }

    /// Creates or restocks a product.
    pub async fn put_product(&self, sku: &str, price_cents: i64, available: i64) {
        let response = self
            .http
            .put(self.inventory_url(&format!("/api/inventory/{sku}")))
            .json(&serde_json::json!({ "name": sku, "priceCents": price_cents, "available": available }))
            .send()
            .await
            .expect("PUT product");
        assert!(
            response.status().is_success(),
            "PUT product {sku}: {}",
            response.status()
        );
    }

    pub async fn product(&self, sku: &str) -> Value {
        let (status, body) = self
            .get_json(&self.inventory_url(&format!("/api/inventory/{sku}")))
            .await;
        assert_eq!(status, StatusCode::OK, "GET product {sku}: {body}");
        body
    }

    pub async fn account(&self, user_id: &str) -> Value {
        let (status, body) = self
            .get_json(&self.payment_url(&format!("/api/accounts/{user_id}")))
            .await;
        assert_eq!(status, StatusCode::OK, "GET account {user_id}: {body}");
        body
    }

    pub async fn notifications(&self, order_id: &str) -> Vec<Value> {
        let (status, body) = self
            .get_json(&self.notification_url(&format!("/api/notifications?orderId={order_id}")))
            .await;
        assert_eq!(status, StatusCode::OK, "GET notifications: {body}");
        body.as_array().cloned().unwrap_or_default()
    }

    /// Polls until the order has `count` notifications, and returns their kinds.
    pub async fn wait_for_notifications(&self, order_id: &str, count: usize) -> Vec<String> {
        let what = format!("{count} notifications for order {order_id}");
        wait_for(&what, || async {
            let notes = self.notifications(order_id).await;
            (notes.len() >= count).then(|| {
                notes
                    .iter()
                    .map(|n| n["kind"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
        })
        .await
    }

    /// Polls until no unit of `sku` is reserved any more (every sale booked,
    /// every release done) and returns the product.
    pub async fn wait_until_settled(&self, sku: &str) -> Value {
        wait_for(&format!("{sku}'s reservations to settle"), || async {
            let product = self.product(sku).await;
            (product["reserved"] == 0).then_some(product)
        })
        .await
    }
}

impl std::ops::Deref for TestStack {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        if !self.stopped {
            // A test failed before shutting down: services are still running and
            // their Kafka clients would block on a vanished broker. Leave the
            // broker to the end of the process.
            if let Some(kafka) = self.kafka.take() {
                std::mem::forget(kafka);
            }
        }
    }
}

/// A database and a broker for one test: fresh and embedded unless the
/// environment names external ones (see the crate documentation).
pub struct Infra {
    /// A cluster of this test's own, when asked for and possible.
    pub postgres: Option<PostgresCluster>,
    pub database_url: String,
    /// `None` when an external broker is used.
    pub kafka: Option<TestKafka>,
    pub kafka_bootstrap: String,
    /// Replication factor of the stack's topics.
    pub replication_factor: i32,
    pub topics: Topics,
    /// Appended to consumer group names so tests sharing a broker stay apart.
    pub group_suffix: String,
}

impl Infra {
    pub async fn start(private_postgres: bool) -> anyhow::Result<Infra> {
        Self::start_with(private_postgres, None).await
    }

    /// As [`start`](Self::start), with a broker of the caller's own of
    /// `own_kafka_nodes` nodes if given.
    pub async fn start_with(
        private_postgres: bool,
        own_kafka_nodes: Option<usize>,
    ) -> anyhow::Result<Infra> {
        let id = format!("t{}", uuid::Uuid::new_v4().simple());
        let (postgres, database_url) = if private_postgres && std::env::var("DATABASE_URL").is_err()
        {
            let cluster = tokio::task::block_in_place(PostgresCluster::start_temporary)?;
            cluster.ensure_database(&id).await?;
            let url = cluster.url(&id);
            (Some(cluster), url)
        } else {
            (None, fresh_database(&id).await?)
        };
        let (kafka, kafka_bootstrap, topics, group_suffix) =
            match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
                Ok(bootstrap) => {
                    let topics = Topics::default().prefixed(&id);
                    (None, bootstrap, topics, format!("-{id}"))
                }
                Err(_) => {
                    let kafka = tokio::task::block_in_place(|| match own_kafka_nodes {
                        Some(nodes) => TestKafka::start_own(nodes),
                        None => TestKafka::start(),
                    })?;
                    let (topics, group_suffix) = if kafka.is_shared() {
                        (Topics::default().prefixed(&id), format!("-{id}"))
                    } else {
                        (Topics::default(), String::new())
                    };
                    tokio::task::block_in_place(|| {
                        topics
                            .all_with_dead_letters()
                            .iter()
                            .try_for_each(|topic| kafka.create_topic(topic, DEFAULT_PARTITIONS))
                    })?;
                    let bootstrap = kafka.bootstrap_servers();
                    (Some(kafka), bootstrap, topics, group_suffix)
                }
            };
        let replication_factor = kafka.as_ref().map_or(1, TestKafka::replication_factor);
        Ok(Infra {
            postgres,
            database_url,
            kafka,
            kafka_bootstrap,
            replication_factor,
            topics,
            group_suffix,
        })
    }

    /// A service's configuration pointing at this infrastructure.
    pub fn common(&self, name: &str, schema: &str) -> CommonConfig {
        let mut c = CommonConfig::defaults(name, 0, schema);
        c.host = "127.0.0.1".into();
        c.database_url = self.database_url.clone();
        c.database_max_connections = 5;
        c.kafka_bootstrap_servers = self.kafka_bootstrap.clone();
        c.kafka_replication_factor = self.replication_factor;
        c.kafka_group_id = format!("{}{}", c.kafka_group_id, self.group_suffix);
        c.set_topics(&self.topics);
        c.consumer_retry_max_ms = 500;
        c.kafka_statistics_interval_ms = 500;
        c
    }

    /// The same settings as the environment variables a service binary reads.
    pub fn env(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        let c = self.common(name, "unused");
        [
            ("DATABASE_URL", c.database_url),
            ("KAFKA_BOOTSTRAP_SERVERS", c.kafka_bootstrap_servers),
            ("KAFKA_GROUP_ID", c.kafka_group_id),
            (
                "KAFKA_REPLICATION_FACTOR",
                c.kafka_replication_factor.to_string(),
            ),
            ("TOPIC_ORDER_CREATED", c.topic_order_created),
            ("TOPIC_INVENTORY_RESERVED", c.topic_inventory_reserved),
            ("TOPIC_PAYMENT_PROCESSED", c.topic_payment_processed),
            ("TOPIC_ORDER_CANCELLED", c.topic_order_cancelled),
            (
                "DATABASE_MAX_CONNECTIONS",
                c.database_max_connections.to_string(),
            ),
            ("CONSUMER_RETRY_MAX_MS", c.consumer_retry_max_ms.to_string()),
            ("INVENTORY_SEED_DEMO_CATALOG", "false".to_owned()),
            // As in-process stacks: crash and outage tests must not be cut short.
            ("ORDER_SAGA_DEADLINE_SECS", "300".to_owned()),
            ("INVENTORY_RESERVATION_TTL_SECS", "600".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// A new, empty database for one stack.
async fn fresh_database(name: &str) -> anyhow::Result<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let server = PgConnectOptions::from_str(&url).context("DATABASE_URL")?;
            let mut conn = sqlx::PgConnection::connect_with(&server).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await?;
            let mut stack_url = reqwest::Url::parse(&url).context("DATABASE_URL")?;
            stack_url.set_path(&format!("/{name}"));
            Ok(stack_url.to_string())
        }
        Err(_) => {
            let cluster = tokio::task::block_in_place(|| {
                POSTGRES.get_or_init(|| {
                    PostgresCluster::start_temporary().expect("starting a temporary Postgres")
                })
            });
            cluster.ensure_database(name).await?;
            Ok(cluster.url(name))
        }
    }
}
