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
use crate::outbox::{OutboxRelay, Wakeup};
use crate::periodic::BatchJob;

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
    /// Wakes the outbox relay: call [`Wakeup::committed`] after committing
    /// outbox rows outside the consumer and batch jobs (which do it themselves).
    pub outbox: Wakeup,
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
            outbox: Wakeup::default(),
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
            router: finish_router(routes, health, &infra.config.service_name),
            infra,
            listener,
            address,
            workers: Vec::new(),
            on_shutdown: Vec::new(),
        })
    }

    /// Publishes this service's outbox.
    pub fn with_outbox_relay(mut self) -> anyhow::Result<Self> {
        let relay = OutboxRelay::new(
            &self.infra.config,
            self.infra.pool.clone(),
            self.infra.outbox.clone(),
        )?;
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
            self.infra.outbox.clone(),
            subscriptions,
            handler,
        )?;
        self.workers.push((
            "consumer",
            Box::new(move |stop| Box::pin(consumer.run(stop))),
        ));
        Ok(self)
    }

    /// Runs `job` every `interval`, in batches of at most `batch` items
    /// (see [`crate::periodic`]).
    pub fn with_batch_job<J: BatchJob>(
        self,
        name: &'static str,
        interval: Duration,
        batch: i64,
        job: J,
    ) -> Self {
        let (pool, outbox) = (self.infra.pool.clone(), self.infra.outbox.clone());
        let job = std::sync::Arc::new(job);
        self.with_worker(name, move |stop| {
            crate::periodic::run_every(name, interval, stop, move || {
                let (pool, outbox, job) = (pool.clone(), outbox.clone(), job.clone());
                async move { crate::periodic::in_batches(&pool, &outbox, batch, &*job).await }
            })
        })
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
///
/// With the single argument [`HEALTHCHECK_ARG`] the binary serves nothing and
/// runs [`healthcheck`] instead, for container health checks.
pub async fn run<C, F, Fut>(build: F) -> anyhow::Result<()>
where
    C: ServiceConfig,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<ServiceHost>>,
{
    let config = crate::config::load(&C::defaults())?;
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some(HEALTHCHECK_ARG) => return healthcheck(config.common()).await,
        Some(other) => anyhow::bail!(
            "unknown argument {other:?}: run without arguments to serve, \
             or with `{HEALTHCHECK_ARG}` to probe a running instance"
        ),
    }
    crate::telemetry::init(config.common())?;
    let ran = build(config)
        .await?
        .run_until_stopped(shutdown_signal())
        .await;
    crate::telemetry::shutdown().await;
    ran
}

/// The argument that turns a service binary into a probe of a running instance.
pub const HEALTHCHECK_ARG: &str = "healthcheck";

/// What the probe asks: readiness, so an instance counts as healthy only while
/// its database and Kafka answer.
pub const READINESS_PATH: &str = "/health/ready";

/// How long the probe may take; a container runtime's own health-check timeout
/// should be longer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `<service> healthcheck`: asks the instance configured like this process
/// (same `HOST` and `PORT`) for [`READINESS_PATH`]; `Ok` if it answers 200.
///
/// Container images then need no HTTP client of their own (the runtime image
/// has no curl), and the probe cannot disagree with the port the service
/// listens on, since both read the same configuration. As a process, it exits
/// 0 when ready and 1 otherwise: what Docker's `HEALTHCHECK` expects.
pub async fn healthcheck(config: &CommonConfig) -> anyhow::Result<()> {
    let host = probe_host(&config.host);
    let status = tokio::time::timeout(
        PROBE_TIMEOUT,
        http_get_status(host, config.port, READINESS_PATH),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "no answer from {host}:{} within {}s",
            config.port,
            PROBE_TIMEOUT.as_secs()
        )
    })??;
    anyhow::ensure!(status == 200, "{READINESS_PATH} answered {status}");
    println!("ready");
    Ok(())
}

/// Where to reach a server bound to `host`: a wildcard address is reached on loopback.
fn probe_host(host: &str) -> &str {
    match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" | "[::]" => "::1",
        other => other,
    }
}

/// The status code of `GET path`: a minimal HTTP/1.1 client, enough for a health check.
async fn http_get_status(host: &str, port: u16, path: &str) -> anyhow::Result<u16> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .context("sending the request")?;
    let mut status_line = String::new();
    BufReader::new(stream)
        .read_line(&mut status_line)
        .await
        .context("reading the response")?;
    // "HTTP/1.1 200 OK"
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {status_line:?}"))
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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::routing::get;

    use super::*;

    /// Serves `status` on [`READINESS_PATH`] on a free loopback port, and returns a
    /// configuration pointing at it.
    async fn instance_answering(status: StatusCode) -> CommonConfig {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = CommonConfig::defaults("probe-test", 0, "unused");
        config.port = listener.local_addr().unwrap().port();
        let app = Router::new().route(READINESS_PATH, get(move || async move { status }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        config
    }

    #[tokio::test]
    async fn healthcheck_passes_when_the_instance_is_ready() {
        let config = instance_answering(StatusCode::OK).await;
        healthcheck(&config).await.unwrap();
    }

    #[tokio::test]
    async fn healthcheck_fails_when_the_instance_is_not_ready() {
        let config = instance_answering(StatusCode::SERVICE_UNAVAILABLE).await;
        let err = healthcheck(&config).await.unwrap_err();
        assert!(format!("{err:#}").contains("503"), "{err:#}");
    }

    #[tokio::test]
    async fn healthcheck_fails_when_nothing_listens() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = CommonConfig::defaults("probe-test", 0, "unused");
        config.port = free.local_addr().unwrap().port();
        drop(free);
        let err = healthcheck(&config).await.unwrap_err();
        assert!(format!("{err:#}").contains("connecting"), "{err:#}");
    }

    #[test]
    fn a_wildcard_bind_address_is_probed_on_loopback() {
        assert_eq!(probe_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(probe_host("::"), "::1");
        assert_eq!(probe_host("10.1.2.3"), "10.1.2.3");
    }
}
