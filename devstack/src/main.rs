//! devstack: the whole order system on one machine, no Docker.
//!
//! `cargo run --release -p devstack` builds the services, starts an embedded
//! Kafka (librdkafka's mock cluster, topics created, in a child process of its
//! own) and a private PostgreSQL (data kept in `.devstack/pgdata`), runs every
//! service and the web console as a child process with its output prefixed by its name, waits
//! until all answer `/health`, writes `.devstack/stack.json` and prints the
//! URLs. Crashed services are restarted; Ctrl-C or SIGTERM stops the
//! services, then PostgreSQL, then Kafka, and exits 0. If the embedded broker
//! dies, devstack says so in one line, stops the rest the same way and exits
//! non-zero. If devstack itself is killed, nothing it started keeps running:
//! the services and the broker get a signal from the kernel, PostgreSQL's
//! watchdog stops it.
//!
//! Layout:
//! - `cli`: flags;
//! - `bench`: `devstack bench`, the benchmark against this stack or a URL;
//! - `dlq`: the `dlq list|replay` tools;
//! - `services`: the services and the console, their ports, `--scale` planning;
//! - `binaries`: finding (and under `cargo run`, building) the executables;
//! - `infra`: Kafka and PostgreSQL, ours or the developer's;
//! - `embedded_broker`: the embedded broker's child process (`devstack
//!   embedded-broker`, hidden) and devstack's watch on it;
//! - `supervisor`: child processes, output, restarts, termination;
//! - `health`: waiting for `/health`;
//! - `stack_file`: the state directory's lock and `stack.json`.
//!
//! Every failure ends in a single `devstack: ...` line saying what to do.

mod auth;
mod bench;
mod binaries;
mod cli;
mod dlq;
mod embedded_broker;
mod health;
mod infra;
mod services;
mod stack_file;
mod supervisor;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use service_kit::config::CommonConfig;

use crate::binaries::Programs;
use crate::cli::{Cli, KafkaKind};
use crate::infra::{Database, Kafka, KafkaPlan};
use crate::services::Instance;
use crate::stack_file::{StackDescription, StateDir};
use crate::supervisor::Supervisor;
use ::bench::report::Report;

/// devstack's own log filter. Not `RUST_LOG`: that one is passed through to
/// the services, and turning it up for them should not flood the terminal with
/// devstack's dependencies' debug output.
const LOG_ENV: &str = "DEVSTACK_LOG";

/// devstack's log level when [`LOG_ENV`] is unset.
const DEFAULT_LOG_FILTER: &str = "info";

/// The same in the embedded broker's child: devstack reports its start, and
/// its last stderr lines are quoted if it dies, so they should be the ones
/// that matter.
const BROKER_LOG_FILTER: &str = "warn";

/// The same during `bench`, whose DB-bound limit runs the services' handlers
/// in this process: their per-event info lines would be measured too.
const BENCH_LOG_FILTER: &str = "warn,devstack=info";

/// The request from the seed project's README, to try the stack out.
const EXAMPLE_ORDER: &str = r#"{"orderId":"123","userId":"user1","status":"PENDING"}"#;

/// Single-threaded on purpose: the services get SIGTERM when the thread that
/// spawned them dies (see `supervisor`), so they must be spawned from a thread
/// that lives as long as devstack. The work here is waiting, not computing.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(match cli.command {
        Some(cli::Command::Bench(_)) => BENCH_LOG_FILTER,
        Some(cli::Command::EmbeddedBroker(_)) => BROKER_LOG_FILTER,
        _ => DEFAULT_LOG_FILTER,
    });
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<AlreadyReported>() => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("devstack: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colours only for a terminal, not in files or CI logs.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// The failure's `devstack: ...` line has been printed already.
#[derive(Debug)]
struct AlreadyReported;

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reported above")
    }
}

impl std::error::Error for AlreadyReported {}

/// Checks the prerequisites that need nothing started, then brings the stack
/// up, runs it until a signal, and tears down whatever was started.
async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(cli::Command::EmbeddedBroker(args)) = &cli.command {
        return embedded_broker::serve(args).await;
    }
    if let Some(cli::Command::Token(args)) = &cli.command {
        return auth::print_token(&cli.dir, args);
    }
    if let Some(cli::Command::Dlq(command)) = &cli.command {
        return dlq::run(&cli, command).await;
    }
    if let Some(cli::Command::Bench(args)) = &cli.command {
        if let Some(url) = &args.url {
            return bench::run_remote(&cli, args, url).await;
        }
    }
    let mut instances = services::plan(&cli.scale, cli.port_offset)?;
    // A viewer, not part of what the benchmark measures.
    if !cli.no_console && !matches!(cli.command, Some(cli::Command::Bench(_))) {
        let console = services::console(&instances, cli.port_offset)?;
        instances.push(console);
    }
    let state = StateDir::open(&cli.dir)?;
    services::ensure_ports_free(&instances)?;
    // Before the signal handlers: a Ctrl-C during the build should simply end
    // devstack (and cargo), as nothing is running yet.
    let programs = binaries::prepare()?;
    let stop = listen_for_stop_signals()?;

    let bench_args = match &cli.command {
        Some(cli::Command::Bench(args)) => Some(args.as_ref()),
        _ => None,
    };
    let brokers = bench_args.map_or(vec![cli.kafka], |args| bench::brokers(args, cli.kafka));
    let mut reports = Vec::new();
    for kind in brokers {
        if *stop.borrow() {
            return Ok(());
        }
        let mut stack = Stack::default();
        let result = stack
            .bring_up_and_run(&cli, kind, &state, &instances, &programs, stop.clone())
            .await;
        // Before the teardown, which takes seconds: the reason comes first (a
        // dead broker, say), then the services' and PostgreSQL's goodbyes.
        if let Err(error) = &result {
            eprintln!("devstack: {error:#}");
        }
        stack.tear_down(&state).await;
        match result {
            Ok(Some(report)) => reports.push((kind, report)),
            Ok(None) => return Ok(()),
            Err(_) => return Err(AlreadyReported.into()),
        }
    }
    match bench_args {
        Some(args) if reports.len() > 1 => bench::write_comparison(args, &reports),
        _ => Ok(()),
    }
}

/// A `watch` that turns true on the first SIGINT (Ctrl-C) or SIGTERM.
fn listen_for_stop_signals() -> anyhow::Result<watch::Receiver<bool>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping the stack");
        sender.send_replace(true);
    });
    Ok(receiver)
}

/// Resolves once a stop signal has arrived.
async fn stop_requested(mut stop: watch::Receiver<bool>) {
    // An error means the listener is gone without a signal: never stop then.
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What has been started so far, so that teardown stops exactly that, in
/// reverse order, whichever step failed.
#[derive(Default)]
struct Stack {
    /// Started first, dropped last: services need it until they have stopped.
    kafka: Option<Kafka>,
    /// Stopped after the services, before Kafka.
    database: Option<Database>,
    /// The service processes.
    supervisor: Option<Supervisor>,
}

impl Stack {
    /// Starts Kafka (of `kind`), PostgreSQL and the services, waits for
    /// health, publishes `stack.json`, then waits for a stop signal (or, for
    /// `bench`, runs the benchmark). Returns `Ok(None)` when stopped by a
    /// signal, the report when the benchmark finished, an error if start-up
    /// or the benchmark failed or the embedded broker died.
    async fn bring_up_and_run(
        &mut self,
        cli: &Cli,
        kind: KafkaKind,
        state: &StateDir,
        instances: &[Instance],
        programs: &Programs,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Option<Report>> {
        // A signal abandons a step half-way; whatever it had started is
        // dropped, which stops it (PostgreSQL's blocking start finishes first,
        // then its cluster is dropped and stopped).
        let first_port = cli
            .kafka_port
            .checked_add(cli.port_offset)
            .with_context(|| {
                format!(
                    "--port-offset {} moves Kafka's port {} beyond 65535",
                    cli.port_offset, cli.kafka_port
                )
            })?;
        let starting = Kafka::start(KafkaPlan {
            kind,
            nodes: cli.kafka_nodes,
            sasl: cli.kafka_sasl,
            first_port,
            data_dir: state.kafka_dir(),
            external: cli.kafka_bootstrap.as_deref(),
            scaled_out: services::is_scaled_out(instances),
        });
        let kafka = tokio::select! {
            kafka = starting => kafka?,
            _ = stop_requested(stop.clone()) => return Ok(None),
        };
        let kafka = self.kafka.insert(kafka);
        let pgdata = state.pgdata();
        let starting = Database::start(cli.database_url.as_deref(), &pgdata, cli.pg_port);
        let database = tokio::select! {
            database = starting => database?,
            died = kafka.died() => return Err(died.into()),
            _ = stop_requested(stop.clone()) => return Ok(None),
        };
        let database = self.database.insert(database);

        let instances = &with_own_credentials(instances, database, kafka)?;
        let mut env = service_env()?;
        let mut issuer = None;
        if cli.auth {
            let dir = auth::auth_dir(state.path());
            let loaded = auth::load_or_create(&dir)?;
            env.extend(auth::service_env(&loaded, &dir)?);
            issuer = Some(loaded);
        }
        let bench = match &cli.command {
            Some(cli::Command::Bench(args)) => Some(args),
            _ => None,
        };
        if bench.is_some() && std::env::var_os("RUST_LOG").is_none() {
            env.insert("RUST_LOG".to_owned(), bench::BENCH_SERVICE_LOG.to_owned());
        }
        let supervisor = self
            .supervisor
            .insert(Supervisor::start(instances, programs, &env));
        tracing::info!(
            "waiting up to {}s for {} instance(s) to answer /health",
            health::STARTUP_TIMEOUT.as_secs(),
            instances.len()
        );
        tokio::select! {
            healthy = health::wait_until_healthy(instances, health::STARTUP_TIMEOUT) => healthy?,
            failure = supervisor.startup_failure() => return Err(failure.into()),
            died = kafka.died() => return Err(died.into()),
            _ = stop_requested(stop.clone()) => return Ok(None),
        }
        supervisor.mark_running();

        let description = StackDescription {
            kafka_bootstrap: kafka.bootstrap.clone(),
            kafka_mode: kafka.kind().to_owned(),
            kafka_brokers: kafka.brokers(),
            kafka_secured: kafka.is_secured(),
            database_url: database.url.clone(),
            services: instances
                .iter()
                .map(|instance| (instance.name.clone(), instance.url()))
                .collect(),
        };
        state.write_stack_file(&description)?;
        print_banner(kafka, database, instances, state, cli.auth);

        if let Some(args) = bench {
            let pids = supervisor.pids();
            let measured = bench::run_local(
                args,
                instances,
                pids,
                database,
                kafka,
                issuer.map(|issuer| {
                    Arc::new(auth::BenchTokens(issuer)) as Arc<dyn ::bench::load::TokenSource>
                }),
                bench::Outputs::for_run(args, kind),
            );
            return tokio::select! {
                result = measured => result.map(Some),
                died = kafka.died() => Err(died.into()),
                _ = stop_requested(stop) => Ok(None),
            };
        }
        tokio::select! {
            died = kafka.died() => Err(died.into()),
            _ = stop_requested(stop) => Ok(None),
        }
    }

    /// Stops the services, then PostgreSQL, then Kafka; removes `stack.json`.
    async fn tear_down(&mut self, state: &StateDir) {
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.shut_down().await;
        }
        if let Some(database) = self.database.take() {
            database.shut_down().await;
        }
        if let Some(kafka) = self.kafka.take() {
            kafka.shut_down().await;
            tracing::debug!("Kafka released");
        }
        state.remove_stack_file();
    }
}

/// `instances`, each with its own credentials: a service's `DATABASE_URL`
/// of its own role, and every program's Kafka connection (with
/// `--kafka-sasl`, its own login) with the settings its broker needs.
fn with_own_credentials(
    instances: &[Instance],
    database: &Database,
    kafka: &Kafka,
) -> anyhow::Result<Vec<Instance>> {
    instances
        .iter()
        .cloned()
        .map(|mut instance| {
            if let Some(url) = database.url_for_service(instance.service) {
                instance.env.insert("DATABASE_URL".to_owned(), url);
            }
            instance
                .env
                .extend(kafka.connection_for(instance.service).env()?);
            instance.env.extend(kafka.client_env()?);
            Ok(instance)
        })
        .collect()
}

/// The environment every instance gets, besides its `PORT` and its own
/// credentials (`DATABASE_URL`, the Kafka connection): the partition count of
/// the topics devstack creates. Everything else (`RUST_LOG`, `LOG_FORMAT`,
/// any other setting) the services inherit from devstack's own environment.
fn service_env() -> anyhow::Result<BTreeMap<String, String>> {
    let mut config = CommonConfig::defaults("", 0, "");
    config.kafka.topic_partitions = shared_events::topics::DEFAULT_PARTITIONS;
    service_kit::config::env_of(&config, &["KAFKA_TOPIC_PARTITIONS"])
}

fn print_banner(
    kafka: &Kafka,
    database: &Database,
    instances: &[Instance],
    state: &StateDir,
    auth: bool,
) {
    let width = instances
        .iter()
        .map(|instance| instance.name.len())
        .max()
        .unwrap_or_default();
    let mut banner = String::from("\ndevstack is up\n");
    let security = if kafka.is_secured() {
        format!(
            ", sasl_ssl: logins and CA in {}",
            crate::stack_file::kafka_dir(state.path())
                .join("security")
                .display()
        )
    } else {
        String::new()
    };
    banner.push_str(&format!(
        "  {:width$}  {} ({}{security})\n",
        "kafka",
        kafka.bootstrap,
        kafka.kind()
    ));
    banner.push_str(&format!(
        "  {:width$}  {} ({})\n",
        "postgres",
        database.url,
        database.kind()
    ));
    for instance in instances {
        banner.push_str(&format!("  {:width$}  {}\n", instance.name, instance.url()));
    }
    banner.push_str(&format!(
        "  {:width$}  {}\n",
        "stack file",
        state.stack_file().display()
    ));
    let order = instances
        .iter()
        .find(|instance| instance.service == services::ORDER_SERVICE);
    if let (Some(order), true) = (order, auth) {
        banner.push_str(&format!(
            "\nTokens are checked (--auth). Try:\n  TOKEN=$(cargo run -q -p devstack -- token --user user1)\n  \
             curl -X POST http://localhost:{}/api/orders -H \"Authorization: Bearer $TOKEN\" \
             -H \"Content-Type: application/json\" -d '{EXAMPLE_ORDER}'\n",
            order.port
        ));
    } else if let Some(order) = order {
        banner.push_str(&format!(
            "\nTry:\n  curl -X POST http://localhost:{}/api/orders -H \"Content-Type: \
             application/json\" -d '{EXAMPLE_ORDER}'\n",
            order.port
        ));
    }
    if let Some(console) = instances
        .iter()
        .find(|instance| instance.service == services::CONSOLE.name)
    {
        banner.push_str(&format!(
            "\nWatch it in the console: http://localhost:{}\n",
            console.port
        ));
    }
    banner.push_str("\nPress Ctrl-C to stop.\n");
    println!("{banner}");
}
