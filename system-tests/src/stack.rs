//! The stack of one test: the four services in-process, started, stopped
//! and restarted, and its database inspected.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use local_infra::{PostgresCluster, TestKafka};
use service_kit::{CommonConfig, ServiceConfig, ServiceHost};
use shared_events::Topics;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{wait_for, Api, Infra};

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
    pub outbox_poll_interval: Duration,
    /// A broker of this stack's own with this many nodes, which the test may
    /// take down ([`TestStack::kafka`]); `None`: whatever `TEST_KAFKA` gives
    /// (possibly shared). Ignored with `KAFKA_BOOTSTRAP_SERVERS`.
    pub own_kafka_nodes: Option<usize>,
    /// order-service's admission bound (`ORDER_MAX_IN_FLIGHT`).
    pub max_orders_in_flight: u64,
    /// order-service's age bound (`ORDER_MAX_IN_PROGRESS_AGE_MS`); zero: none.
    pub max_in_progress_age: Duration,
    /// Every service checks bearer tokens (`AUTH_MODE=jwt`); `None`: auth off.
    pub auth: Option<StackAuth>,
    /// Every service limits each client's writes (`RATE_LIMIT_PER_SECOND`,
    /// `RATE_LIMIT_BURST`); `None`: no limit, the default.
    pub rate_limit: Option<RateLimitOptions>,
    /// A `sasl_ssl` broker of the stack's own (`own_kafka_nodes` nodes, one
    /// by default) with ACLs from the topic table; every service logs in as
    /// itself. Needs `TEST_KAFKA=apache`.
    pub secured_kafka: bool,
}

/// A per-client write budget for [`StackOptions::rate_limit`].
#[derive(Debug, Clone, Copy)]
pub struct RateLimitOptions {
    /// Writes per second a client may make on average.
    pub per_second: u32,
    /// Writes a client may make at once.
    pub burst: u32,
}

/// What a stack with `AUTH_MODE=jwt` checks tokens against, and the token its
/// [`Api`] helpers send.
#[derive(Debug, Clone)]
pub struct StackAuth {
    /// The JWKS file every service reads (`AUTH_JWKS_FILE`); tokens carry
    /// [`local_infra::identity::LOCAL_ISSUER`] and `LOCAL_AUDIENCE`.
    pub jwks_file: std::path::PathBuf,
    /// An administrator's token: the helpers act as the administrator.
    pub admin_token: String,
}

/// How long the tokens of [`StackAuth::generate`] are valid: longer than any test.
pub const TEST_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A test's own identity provider for a stack with `AUTH_MODE=jwt`.
pub struct TestIssuer {
    /// What the stack checks tokens against, with an administrator's token.
    pub auth: StackAuth,
    /// Signs the test's tokens ([`token`](Self::token)).
    pub issuer: local_infra::identity::LocalIssuer,
    /// Holds the JWKS file; removed when the issuer is dropped, so it must
    /// outlive the stack.
    _dir: tempfile::TempDir,
}

impl TestIssuer {
    /// A fresh ES256 key (`kid`), its JWKS in a temporary file, and an
    /// administrator's token.
    pub fn generate(kid: &str) -> TestIssuer {
        use local_infra::identity::LocalIssuer;
        let issuer = LocalIssuer::generate_es256(kid).expect("generating a signing key");
        let dir = tempfile::tempdir().expect("a temporary directory for the JWKS");
        let jwks_file = dir.path().join("jwks.json");
        std::fs::write(&jwks_file, LocalIssuer::jwks_of(&[&issuer])).expect("writing the JWKS");
        let admin_token = issuer
            .token("root", true, TEST_TOKEN_TTL)
            .expect("signing the administrator's token");
        TestIssuer {
            auth: StackAuth {
                jwks_file,
                admin_token,
            },
            issuer,
            _dir: dir,
        }
    }

    /// A customer's token for `user`.
    pub fn token(&self, user: &str) -> String {
        self.issuer
            .token(user, false, TEST_TOKEN_TTL)
            .expect("signing a customer's token")
    }
}

/// An outbox poll far longer than any test: with it, every event a test sees
/// was published because the transaction that wrote it woke the relay.
pub const WAKE_UPS_ONLY: Duration = Duration::from_secs(3_600);

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            inventory_instances: 1,
            private_postgres: false,
            saga_deadline_secs: 300,
            reservation_ttl_secs: 600,
            cancel_window_secs: None,
            outbox_poll_interval: CommonConfig::defaults("", 0, "").outbox.poll_interval,
            own_kafka_nodes: None,
            max_orders_in_flight: order_service::Config::defaults().order_max_in_flight,
            max_in_progress_age: order_service::Config::defaults().order_max_in_progress_age,
            auth: None,
            rate_limit: None,
            secured_kafka: false,
        }
    }
}

/// How often the tests' services look for overdue orders and expired reservations.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// The configuration each service of a stack was started with, to start it again.
#[derive(Clone)]
pub struct StackConfigs {
    pub order: order_service::Config,
    pub inventory: inventory_service::Config,
    pub payment: payment_service::Config,
    pub notification: notification_service::Config,
}

impl StackConfigs {
    /// Each service's configuration on `infra`, as `options` ask.
    pub fn new(infra: &Infra, options: &StackOptions) -> StackConfigs {
        let common = |name: &str, schema: &str| {
            let mut config = infra.common(name, schema);
            config.outbox.poll_interval = options.outbox_poll_interval;
            if let Some(auth) = &options.auth {
                config.auth_mode = service_kit::config::AuthMode::Jwt;
                config.auth_jwks_file = auth.jwks_file.display().to_string();
                config.auth_issuer = local_infra::identity::LOCAL_ISSUER.to_owned();
                config.auth_audience = local_infra::identity::LOCAL_AUDIENCE.to_owned();
            }
            if let Some(limit) = options.rate_limit {
                config.rate_limit_per_second = limit.per_second;
                config.rate_limit_burst = limit.burst;
            }
            config
        };
        let mut order = order_service::Config::defaults();
        order.common = common("order-service", order_service::config::SCHEMA);
        order.order_saga_deadline = Duration::from_secs(options.saga_deadline_secs);
        order.order_deadline_check_interval = SWEEP_INTERVAL;
        order.order_cancel_window = options.cancel_window_secs.map(Duration::from_secs);
        order.order_max_in_flight = options.max_orders_in_flight;
        order.order_max_in_progress_age = options.max_in_progress_age;
        let mut inventory = inventory_service::Config::defaults();
        inventory.common = common("inventory-service", inventory_service::config::SCHEMA);
        inventory.inventory_seed_demo_catalog = false;
        inventory.inventory_reservation_ttl = Duration::from_secs(options.reservation_ttl_secs);
        inventory.inventory_expiry_check_interval = SWEEP_INTERVAL;
        let mut payment = payment_service::Config::defaults();
        payment.common = common("payment-service", payment_service::config::SCHEMA);
        let mut notification = notification_service::Config::defaults();
        notification.common = common("notification-service", notification_service::config::SCHEMA);
        StackConfigs {
            order,
            inventory,
            payment,
            notification,
        }
    }

    /// `service`'s configuration as the environment its binary reads.
    pub fn env(&self, service: &str) -> BTreeMap<String, String> {
        let env = match service {
            "order-service" => service_kit::config::to_env(&self.order),
            "inventory-service" => service_kit::config::to_env(&self.inventory),
            "payment-service" => service_kit::config::to_env(&self.payment),
            "notification-service" => service_kit::config::to_env(&self.notification),
            other => panic!("no service called {other}"),
        };
        env.expect("a configuration encodes as environment variables")
    }
}

/// The helpers' HTTP client: with auth on, every request carries the
/// administrator's token.
fn api_client(auth: Option<&StackAuth>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(auth) = auth {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", auth.admin_token).parse()?,
        );
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

/// Builds a service (as its `main` does) and runs it in this process.
async fn spawn(
    name: &str,
    build: impl Future<Output = anyhow::Result<ServiceHost>>,
) -> anyhow::Result<RunningService> {
    let host = build.await?;
    let port = host.port();
    Ok(RunningService::spawn(name, port, |s| {
        host.run_until_stopped(until_stopped(s))
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
    /// How the test's own clients reach the broker (with full rights).
    pub kafka_admin: service_kit::kafka::KafkaConnection,
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
        let infra = Infra::start_full(
            options.private_postgres,
            options.own_kafka_nodes,
            options.secured_kafka,
        )
        .await?;
        let configs = StackConfigs::new(&infra, &options);
        let groups = HashMap::from([
            ("order-service", configs.order.common.kafka.group_id.clone()),
            (
                "inventory-service",
                configs.inventory.common.kafka.group_id.clone(),
            ),
            (
                "payment-service",
                configs.payment.common.kafka.group_id.clone(),
            ),
            (
                "notification-service",
                configs.notification.common.kafka.group_id.clone(),
            ),
        ]);

        let order = spawn(
            "order-service",
            order_service::Application::build(configs.order.clone()),
        )
        .await?;
        let mut inventory = Vec::new();
        for instance in 0..options.inventory_instances {
            let name = format!("inventory-service#{}", instance + 1);
            inventory.push(
                spawn(
                    &name,
                    inventory_service::Application::build(configs.inventory.clone()),
                )
                .await?,
            );
        }
        let payment = spawn(
            "payment-service",
            payment_service::Application::build(configs.payment.clone()),
        )
        .await?;
        let notification = spawn(
            "notification-service",
            notification_service::Application::build(configs.notification.clone()),
        )
        .await?;

        let Infra {
            postgres,
            database_url,
            kafka,
            kafka_bootstrap,
            kafka_admin,
            topics,
            ..
        } = infra;
        let api = Api {
            http: api_client(options.auth.as_ref())?,
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
            kafka_admin,
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
        self.payment = spawn(
            "payment-service",
            payment_service::Application::build(self.configs.payment.clone()),
        )
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
        let instance = spawn(
            "inventory-service#1",
            inventory_service::Application::build(self.configs.inventory.clone()),
        )
        .await
        .expect("starting inventory-service");
        self.api.inventory_base = instance.base_url.clone();
        self.inventory = vec![instance];
    }

    /// Starts one more inventory-service instance in the same consumer group.
    pub async fn add_inventory(&mut self) {
        let name = format!("inventory-service#{}", self.inventory.len() + 1);
        let instance = spawn(
            &name,
            inventory_service::Application::build(self.configs.inventory.clone()),
        )
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
