//! Runs a service: its HTTP server, consumer and outbox relay, started together
//! and stopped together, within a bound.
//!
//! [`Infrastructure::connect`] brings up what every service needs (database
//! pool with migrations, Kafka producer, topics); [`ServiceHost`] binds the
//! port and runs the service's parts until the shutdown future resolves, then
//! stops accepting requests, lets the consumer finish the message in hand and
//! commit its offsets, and flushes the producer — all under one deadline
//! (`SHUTDOWN_TIMEOUT_MS`). What librdkafka cannot finish by then (it can
//! block for as long as the broker is unreachable) is abandoned on purpose
//! and named in one log line; see [`crate::shutdown`].

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use futures::future::BoxFuture;
use rdkafka::producer::Producer;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::CommonConfig;
use crate::consumer::{EventConsumer, EventHandler};
use crate::http::{finish_router, AccessPolicy, HealthState};
use crate::kafka::EventProducer;
use crate::outbox::{Outbox, OutboxRelay};
use crate::periodic::BatchJob;
use crate::shutdown::{Abandoned, Closing};

/// The connections every service holds.
#[derive(Clone)]
pub struct Infrastructure {
    pub config: CommonConfig,
    /// Pinned to the service's schema (see [`crate::db`]).
    pub pool: PgPool,
    /// Used for dead letters and health checks (the outbox relay has its own).
    pub producer: EventProducer,
    /// The service's outbox: open transactions that write events with
    /// [`Outbox::begin`] and end them with [`Outbox::commit`], which wakes the
    /// relay. The consumer and the batch jobs use it too.
    pub outbox: Outbox,
    /// The blocking Kafka work of this service's shutdown (consumer close,
    /// producer flush), which the host waits for until its deadline.
    pub closing: Closing,
}

impl Infrastructure {
    /// Connects to Postgres (running `migrations` in the service's schema),
    /// creates the Kafka producer, and makes sure the topics exist where the
    /// broker allows creating them.
    pub async fn connect(
        config: &CommonConfig,
        migrations: &'static Migrator,
    ) -> anyhow::Result<Self> {
        config.validate().context("invalid configuration")?;
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
            outbox: Outbox::of(config),
            closing: Closing::default(),
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

/// How a service's run ended, and what its shutdown left undone.
pub struct Stopped {
    /// `Ok` if the service served until it was asked to stop; otherwise the
    /// failure that stopped it (the HTTP server or a worker).
    pub served: anyhow::Result<()>,
    /// What the deadline cut short; empty after a complete shutdown.
    pub abandoned: Abandoned,
    /// When shutdown's time runs out: anything the caller still does before
    /// exiting (exporting traces) must be done by then too.
    pub deadline: Instant,
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
            kafka_login: crate::kafka::KafkaConnection::of(&infra.config).login_watch(),
        };
        let policy = AccessPolicy::from_config(&infra.config).await?;
        Ok(ServiceHost {
            router: finish_router(routes, health, &infra.config.service_name, policy),
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
            self.infra.closing.clone(),
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

    /// Serves until `shutdown` resolves, then stops everything in order
    /// within `SHUTDOWN_TIMEOUT_MS`, logging one line naming whatever it
    /// had to abandon. Returns within that bound whatever state the broker
    /// and the database are in, so tests can run services in-process.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stopped = self.run_reporting(shutdown).await;
        stopped.abandoned.log();
        stopped.served
    }

    /// [`ServiceHost::run_until_stopped`], with the account of the shutdown
    /// returned instead of logged.
    ///
    /// The graceful sequence: stop accepting requests and let open ones
    /// finish; stop the workers (the consumer finishes the message in hand,
    /// the relay its batch); the consumer's final offset commit and close and
    /// the producer's flush and close on threads of their own. One deadline,
    /// set when shutdown begins, bounds all of it; whatever is still running
    /// then is abandoned: workers are aborted (their Kafka clients released
    /// off-thread), and Kafka clients that did not close are left to the
    /// process's exit, never dropped where that could block.
    pub async fn run_reporting(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Stopped {
        let ServiceHost {
            infra,
            listener,
            address,
            router,
            workers,
            on_shutdown,
        } = self;
        let Infrastructure {
            config,
            producer,
            closing,
            ..
        } = infra;
        let service = config.service_name;
        tracing::info!(%service, %address, "listening");

        let stop_workers = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut running = HashMap::new();
        for (name, worker) in workers {
            let work = worker(stop_workers.child_token());
            running.insert(tasks.spawn(work).id(), name);
        }
        let stop_http = CancellationToken::new();
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown({
            let stop_http = stop_http.clone();
            async move {
                stop_http.cancelled().await;
                on_shutdown.iter().for_each(CancellationToken::cancel);
            }
        });
        let mut server = Box::pin(server.into_future());

        // A worker that stops brings the service down rather than leaving it half-working.
        let (mut served, mut http_done) = tokio::select! {
            _ = shutdown => (Ok(()), false),
            ended = &mut server => {
                let ended = ended
                    .context("HTTP server failed")
                    .and_then(|()| anyhow::bail!("HTTP server stopped unexpectedly"));
                (ended, true)
            }
            Some(joined) = tasks.join_next_with_id() => {
                (worker_ended(joined, &mut running).and_then(|name| {
                    anyhow::bail!("{name} stopped unexpectedly")
                }), false)
            }
        };
        let deadline = Instant::now() + config.shutdown_timeout;
        tracing::info!(%service, timeout_ms = config.shutdown_timeout.as_millis() as u64, "shutting down");
        let mut abandoned = Abandoned::default();

        // 1. HTTP: no new requests, open ones may finish.
        stop_http.cancel();
        if !http_done {
            match timeout_at(deadline, &mut server).await {
                Ok(result) => {
                    if let Err(err) = result {
                        tracing::error!(error = %err, "HTTP server failed while stopping");
                    }
                    http_done = true;
                }
                Err(_) => abandoned.push(format!("open HTTP requests of {service}")),
            }
        }
        drop(server);

        // 2. Workers: the consumer finishes its message and hands its close
        // to `closing`, the relay finishes its batch.
        stop_workers.cancel();
        let drained = timeout_at(deadline, async {
            while let Some(joined) = tasks.join_next_with_id().await {
                if let Err(err) = worker_ended(joined, &mut running) {
                    tracing::error!(error = format!("{err:#}"), "worker failed");
                    if served.is_ok() {
                        served = Err(err);
                    }
                }
            }
        })
        .await;
        if drained.is_err() {
            let mut names: Vec<&str> = running.values().copied().collect();
            names.sort_unstable();
            for name in names {
                abandoned.push(format!("{name} of {service}"));
            }
        }
        // Aborted, the abandoned workers release their Kafka clients off-thread.
        drop(tasks);

        // 3. Kafka: the consumer's close (already running) and the
        // producer's flush, each on a thread of its own.
        let flush = format!("producer flush of {service}");
        let flushing = producer.clone();
        let flush_for = deadline.saturating_duration_since(Instant::now());
        closing.spawn(flush.clone(), move || {
            if let Err(err) = flushing.flush(flush_for) {
                tracing::debug!(error = %err, "final producer flush");
            }
        });
        let _ = timeout_at(deadline, closing.finished()).await;
        let unfinished_flush = |what: &String| *what == flush;
        for what in closing.unfinished() {
            if !unfinished_flush(&what) {
                abandoned.push(what);
            } else if producer.in_flight_count() > 0 {
                // A flush still running with nothing left to deliver gives up nothing.
                abandoned.push(format!(
                    "{what} with {} messages",
                    producer.in_flight_count()
                ));
            }
        }
        if abandoned.is_empty() && http_done {
            // Everything else let go of the producer: destroy it too,
            // off-thread and within the deadline.
            closing.spawn(format!("producer close of {service}"), move || {
                drop(producer)
            });
            let _ = timeout_at(deadline, closing.finished()).await;
            for what in closing.unfinished() {
                if !unfinished_flush(&what) {
                    abandoned.push(what);
                }
            }
        } else {
            // Aborted workers and open requests may still hold clones: keep
            // one for ever, so that no drop of theirs destroys the client
            // where that could block.
            std::mem::forget(producer);
        }
        tracing::info!(%service, "stopped");
        Stopped {
            served,
            abandoned,
            deadline,
        }
    }
}

/// The name of the worker that ended with `joined`, or why it failed.
fn worker_ended(
    joined: Result<(tokio::task::Id, anyhow::Result<()>), tokio::task::JoinError>,
    running: &mut HashMap<tokio::task::Id, &'static str>,
) -> anyhow::Result<&'static str> {
    let (id, result) = match joined {
        Ok((id, result)) => (id, result.map_err(Ok)),
        // A cancelled task is the runtime shutting down, not a bug of ours.
        Err(err) => (
            err.id(),
            Err(Err(if err.is_cancelled() {
                "was cancelled"
            } else {
                "panicked"
            })),
        ),
    };
    let name = running.remove(&id).unwrap_or("worker");
    match result {
        Ok(()) => Ok(name),
        Err(Ok(err)) => Err(err.context(format!("{name} stopped"))),
        Err(Err(how)) => anyhow::bail!("{name} {how}"),
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
/// `build` and run it until Ctrl-C or SIGTERM, then exit the process within
/// `SHUTDOWN_TIMEOUT_MS` (a second signal exits at once; see
/// [`crate::shutdown::shutdown_signals`]).
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
    let service = config.common().service_name.clone();
    let host = build(config).await?;
    let shutdown = crate::shutdown::shutdown_signals().context("listening for signals")?;
    let Stopped {
        served,
        mut abandoned,
        deadline,
    } = host.run_reporting(shutdown).await;
    if crate::telemetry::is_exporting()
        && timeout_at(deadline, crate::telemetry::shutdown())
            .await
            .is_err()
    {
        abandoned.push(format!("trace export of {service}"));
    }
    abandoned.log();
    // Exit here rather than return: returning would drop the runtime, which
    // waits for blocking tasks, and with them for the broker.
    let code = match served {
        Ok(()) => 0,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "service failed");
            eprintln!("Error: {err:?}");
            1
        }
    };
    crate::shutdown::exit_now(code)
}

/// The argument that turns a service binary into a probe of a running instance.
pub const HEALTHCHECK_ARG: &str = "healthcheck";

/// What the probe asks: readiness, so an instance counts as healthy only while
/// its database and Kafka answer. Kubernetes' readiness probe asks it too.
pub const READINESS_PATH: &str = "/health/ready";

/// Liveness: answers while the process serves HTTP, whatever its
/// dependencies do (what Kubernetes' liveness probe asks).
pub const LIVENESS_PATH: &str = "/health/live";

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
    let url = readiness_url(&config.host, config.port);
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .context("building the health-check client")?;
    let response = client.get(&url).send().await.map_err(|err| {
        if err.is_timeout() {
            anyhow::anyhow!("no answer from {url} within {}s", PROBE_TIMEOUT.as_secs())
        } else if err.is_connect() {
            anyhow::anyhow!("nothing answers at {url}")
        } else {
            anyhow::anyhow!("asking {url}: {err}")
        }
    })?;
    let status = response.status();
    anyhow::ensure!(status == 200, "{READINESS_PATH} answered {status}");
    println!("ready");
    Ok(())
}

/// Where to ask a server bound to `host`: a wildcard address is reached on
/// loopback, an IPv6 address in brackets.
fn readiness_url(host: &str, port: u16) -> String {
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" | "[::]" => "[::1]",
        other if other.contains(':') && !other.starts_with('[') => {
            return format!("http://[{other}]:{port}{READINESS_PATH}")
        }
        other => other,
    };
    format!("http://{host}:{port}{READINESS_PATH}")
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
        assert!(format!("{err:#}").contains("nothing answers"), "{err:#}");
    }

    #[test]
    fn a_wildcard_bind_address_is_probed_on_loopback() {
        assert_eq!(
            readiness_url("0.0.0.0", 8081),
            "http://127.0.0.1:8081/health/ready"
        );
        assert_eq!(readiness_url("::", 8081), "http://[::1]:8081/health/ready");
        assert_eq!(
            readiness_url("fd00::7", 8081),
            "http://[fd00::7]:8081/health/ready"
        );
        assert_eq!(
            readiness_url("10.1.2.3", 8081),
            "http://10.1.2.3:8081/health/ready"
        );
    }
}
