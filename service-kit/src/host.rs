//! Runs a service: its HTTP server, consumer and outbox relay, started together
//! and stopped together.
//!
//! [`Infrastructure::connect`] brings up what every service needs (database
//! pool with migrations, Kafka producer, topics); [`ServiceHost`] binds the
//! port and runs the service's parts until the shutdown future resolves, then
//! stops accepting requests, lets the consumer finish the message in hand and
//! commit its offsets, and flushes the producer.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use futures::future::BoxFuture;
use rdkafka::producer::{FutureProducer, Producer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::CommonConfig;
use crate::consumer::{EventConsumer, EventHandler};
use crate::http::{finish_router, HealthState};
use crate::outbox::OutboxRelay;

/// How long background work may take to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// How long the producer may take to deliver what it still holds at shutdown.
const PRODUCER_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The connections every service holds.
#[derive(Clone)]
pub struct Infrastructure {
    pub config: CommonConfig,
    /// Pinned to the service's schema (see [`crate::db`]).
    pub pool: PgPool,
    /// Used for dead letters and health checks (the outbox relay has its own).
    pub producer: FutureProducer,
}

impl Infrastructure {
    /// Connects to Postgres (running `migrations` in the service's schema),
    /// creates the Kafka producer, and makes sure the topics exist where the
    /// broker allows creating them.
    pub async fn connect(
        config: &CommonConfig,
        migrations: &'static Migrator,
    ) -> anyhow::Result<Self> {
        crate::metrics::handle();
        let pool = crate::db::connect(config, migrations).await?;
        let producer = crate::kafka::producer(config)?;
        let topics = config.topics().all_with_dead_letters();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        crate::kafka::ensure_topics(config, &topics).await;
        Ok(Infrastructure {
            config: config.clone(),
            pool,
            producer,
        })
    }
}

type Worker = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> + Send>;

/// A bound service, ready to run.
pub struct ServiceHost {
    infra: Infrastructure,
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    workers: Vec<(&'static str, Worker)>,
    /// Cancelled as soon as shutdown begins, so long-lived responses (event
    /// streams, long polls) end and the HTTP server can drain.
    on_shutdown: Vec<CancellationToken>,
}

impl ServiceHost {
    /// Binds `host:port` (port 0 picks a free port) and adds health endpoints
    /// and middleware to `routes`.
    pub async fn bind(infra: Infrastructure, routes: Router) -> anyhow::Result<Self> {
        let wanted = format!("{}:{}", infra.config.host, infra.config.port);
        let listener = TcpListener::bind(&wanted)
            .await
            .with_context(|| format!("binding {wanted}"))?;
        let address = listener.local_addr()?;
        let health = HealthState {
            pool: infra.pool.clone(),
            producer: infra.producer.clone(),
        };
        Ok(ServiceHost {
            router: finish_router(routes, health),
            infra,
            listener,
            address,
            workers: Vec::new(),
            on_shutdown: Vec::new(),
        })
    }

    /// Publishes this service's outbox.
    pub fn with_outbox_relay(mut self) -> anyhow::Result<Self> {
        let relay = OutboxRelay::new(&self.infra.config, self.infra.pool.clone())?;
        self.workers.push((
            "outbox relay",
            Box::new(move |stop| Box::pin(relay.run(stop))),
        ));
        Ok(self)
    }

    /// Consumes `subscriptions` with `handler`.
    pub fn with_consumer<H: EventHandler>(
        mut self,
        subscriptions: &[&str],
        handler: H,
    ) -> anyhow::Result<Self> {
        let consumer = EventConsumer::new(
            &self.infra.config,
            self.infra.pool.clone(),
            self.infra.producer.clone(),
            subscriptions,
            handler,
        )?;
        self.workers.push((
            "consumer",
            Box::new(move |stop| Box::pin(consumer.run(stop))),
        ));
        Ok(self)
    }

    /// Runs `work` beside the HTTP server until the token it is given is
    /// cancelled; like the consumer, if it stops by itself the service stops.
    pub fn with_worker<F, Fut>(mut self, name: &'static str, work: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.workers
            .push((name, Box::new(move |stop| Box::pin(work(stop)))));
        self
    }

    /// Cancels `token` when shutdown begins, before the HTTP server waits for
    /// open responses: responses that would otherwise never end (an event
    /// stream) watch it and finish.
    pub fn cancel_on_shutdown(mut self, token: CancellationToken) -> Self {
        self.on_shutdown.push(token);
        self
    }

    /// The complete router: the service's routes, health, metrics and middleware.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The port actually bound (useful when 0 was asked for).
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves until `shutdown` resolves, then stops everything in order.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let service = self.infra.config.service_name.clone();
        tracing::info!(%service, address = %self.address, "listening");
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        for (name, worker) in self.workers {
            let work = worker(stop.child_token());
            tasks.spawn(async move { (name, work.await) });
        }

        let stop_http = stop.clone();
        let on_shutdown = self.on_shutdown;
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown => {},
                _ = stop_http.cancelled() => {},
            }
            on_shutdown.iter().for_each(CancellationToken::cancel);
        });
        // A worker that fails brings the service down rather than leaving it half-working.
        let stop_on_failure = stop.clone();
        let served = tokio::select! {
            served = server => served.context("HTTP server failed"),
            Some(Ok((name, result))) = tasks.join_next() => {
                stop_on_failure.cancel();
                result.with_context(|| format!("{name} stopped"))
                    .and_then(|()| anyhow::bail!("{name} stopped unexpectedly"))
            }
        };
        tracing::info!(%service, "shutting down");
        stop.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(joined) = tasks.join_next().await {
                if let Ok((name, Err(err))) = joined {
                    tracing::error!(worker = name, error = format!("{err:#}"), "worker failed");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("background work did not finish in time; abandoning it");
        }
        let producer = self.infra.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(PRODUCER_FLUSH_TIMEOUT)).await;
        tracing::info!(%service, "stopped");
        served
    }
}

/// What a service's configuration offers the generic start-up in [`run`].
pub trait ServiceConfig: Serialize + DeserializeOwned + Send + 'static {
    /// The documented defaults, the first configuration layer.
    fn defaults() -> Self;
    /// The settings every service has.
    fn common(&self) -> &CommonConfig;
}

/// The whole of a service's `main`: load the configuration (defaults →
/// `CONFIG_FILE` → environment), set up logging, build the service with
/// `build` and run it until Ctrl-C or SIGTERM.
pub async fn run<C, F, Fut>(build: F) -> anyhow::Result<()>
where
    C: ServiceConfig,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<ServiceHost>>,
{
    let config = crate::config::load(&C::defaults())?;
    crate::telemetry::init(config.common().log_format);
    build(config)
        .await?
        .run_until_stopped(shutdown_signal())
        .await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
