//! Command-line flags.
//!
//! Everything has a default, so `cargo run --release -p devstack` alone gives a
//! working system; each flag swaps one piece for something the developer
//! already runs or changes where state lives.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::services;

/// Port of the private PostgreSQL cluster: close to the usual 5432 but unlikely
/// to clash with a system-wide server on it.
pub const DEFAULT_PG_PORT: u16 = 54329;

/// Client port of the first node of `--kafka apache`: Kafka's usual port,
/// where the seed's Compose file also publishes its broker.
pub const DEFAULT_KAFKA_PORT: u16 = 9092;

/// The broker devstack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaKind {
    /// librdkafka's in-memory mock cluster.
    Embedded,
    /// Apache Kafka, run from the jars Maven resolves.
    Apache,
}

impl KafkaKind {
    /// The name on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            KafkaKind::Embedded => "embedded",
            KafkaKind::Apache => "apache",
        }
    }
}

fn parse_nodes(value: &str) -> Result<usize, String> {
    match value {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(format!("{value}: a cluster here has 1 or 3 nodes")),
    }
}

/// Where devstack keeps its state, relative to the current directory (ignored
/// by git).
pub const DEFAULT_DIR: &str = ".devstack";

/// Runs the order system locally: Kafka, PostgreSQL and the four services,
/// without Docker.
#[derive(Debug, Parser)]
#[command(name = "devstack", version, about)]
pub struct Cli {
    /// Runs N instances of a service (repeatable), e.g. `--scale
    /// inventory-service=3`. Extra instances get ports from 8085 upwards and
    /// names like `inventory-service#2`.
    #[arg(long = "scale", value_name = "SERVICE=N", value_parser = parse_scale)]
    pub scale: Vec<Scale>,

    /// Which Kafka devstack runs: `embedded` (librdkafka's in-memory mock
    /// broker, nothing to install, contents lost at exit) or `apache` (the
    /// real Apache Kafka from Maven Central, data kept in DIR/kafka; needs a
    /// JDK 17+ and Maven).
    #[arg(long, value_enum, default_value_t = KafkaKind::Embedded)]
    pub kafka: KafkaKind,

    /// Nodes of the `--kafka apache` cluster: 1, or 3 (every topic replicated
    /// three times, min.insync.replicas=2).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_nodes)]
    pub kafka_nodes: usize,

    /// Runs `--kafka apache` in `sasl_ssl` mode: TLS with a CA made for the
    /// cluster, a SCRAM-SHA-512 login per service and the console, and ACLs
    /// allowing each only its part of the topic table. The CA and logins
    /// are kept in DIR/kafka/security; a cluster first started without
    /// logins must be deleted (DIR/kafka) to be started with them.
    #[arg(long)]
    pub kafka_sasl: bool,

    /// Client port of the first `--kafka apache` node (moved by
    /// `--port-offset`); each node takes two ports, client and controller.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_KAFKA_PORT)]
    pub kafka_port: u16,

    /// Uses this Kafka instead of running one; missing topics are created.
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_bootstrap: Option<String>,

    /// Uses this PostgreSQL database instead of the private cluster.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// Moves every service's port up by this much (8081 becomes 8081+N, ...),
    /// to run beside another stack.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub port_offset: u16,

    /// Does not start the web console (on 9000, moved by `--port-offset`).
    /// `bench` never starts it.
    #[arg(long)]
    pub no_console: bool,

    /// Port of the private PostgreSQL cluster.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PG_PORT)]
    pub pg_port: u16,

    /// Every service checks bearer tokens (`AUTH_MODE=jwt`) signed by a key
    /// devstack keeps in DIR/auth; `devstack token --user NAME` prints one.
    #[arg(long)]
    pub auth: bool,

    /// Directory for devstack's state: PostgreSQL data, stack.json, lock file.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,

    /// Without a command, devstack runs the stack.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Tools for a running stack (or, with `--kafka-bootstrap`, any deployment).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dead-letter topics: events the services could not process.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Measures end-to-end orders per second and POST→CONFIRMED latency next
    /// to the machine's limit (DB-bound and broker round trip, same run).
    /// Starts the stack (stopped afterwards) unless `--url` names a running one.
    Bench(Box<BenchArgs>),
    /// Prints a bearer token for a stack started with `--auth` (same `--dir`).
    Token(TokenArgs),
    /// Internal: hosts the embedded broker for the stack that spawned it.
    #[command(name = crate::embedded_broker::SUBCOMMAND, hide = true)]
    EmbeddedBroker(EmbeddedBrokerArgs),
}

/// `devstack token`: whom the token names and for how long.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The customer (the token's `sub`, the userId of their orders).
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Adds the `admin` scope: restocking, accounts, dead letters, everyone's orders.
    #[arg(long)]
    pub admin: bool,
    /// How long the token is valid: `90s`, `30m`, `1h`, `2d`.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::auth::parse_ttl)]
    pub ttl: std::time::Duration,
}

/// `devstack embedded-broker`: what the stack needs of its broker.
#[derive(Debug, clap::Args)]
pub struct EmbeddedBrokerArgs {
    /// Several instances of a service will share a consumer group: give
    /// their first rebalance a longer window.
    #[arg(long)]
    pub scaled_out: bool,
}

/// `devstack bench`: the benchmark's settings; the defaults are the documented run.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Measures a running deployment instead of starting the stack:
    /// order-service's base URL, e.g. `http://host:8081`. Give the global
    /// `--database-url` and `--kafka-bootstrap` to measure the limit too.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// inventory-service's base URL with `--url` (default: its host, port 8082).
    #[arg(long, value_name = "URL", requires = "url")]
    pub inventory_url: Option<String>,
    /// payment-service's base URL with `--url` (default: its host, port 8083).
    #[arg(long, value_name = "URL", requires = "url")]
    pub payment_url: Option<String>,
    /// notification-service's base URL with `--url` (default: its host, port 8084).
    #[arg(long, value_name = "URL", requires = "url")]
    pub notification_url: Option<String>,
    /// Runs the whole benchmark on each of these brokers in turn, each on a
    /// stack started for it, and writes their figures side by side, e.g.
    /// `--brokers embedded,apache` (default: the broker `--kafka` names).
    #[arg(
        long,
        value_name = "KIND,...",
        value_delimiter = ',',
        conflicts_with = "url"
    )]
    pub brokers: Vec<KafkaKind>,
    /// Length of each load step.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub step_secs: f64,
    /// Unrecorded closed-loop warm-up.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub warm_up_secs: f64,
    /// Clients of the closed-loop steps (each POSTs back to back).
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_values_t = [1, 8, 32])]
    pub clients: Vec<usize>,
    /// Open-loop arrival rates, as fractions of the best closed-loop
    /// throughput; one above 1 overloads the system on purpose.
    #[arg(long, value_name = "F,...", value_delimiter = ',', default_values_t = [0.25, 0.5, 0.75, 0.9, 1.5])]
    pub rates: Vec<f64>,
    /// How long the DB-bound limit places orders, per placer count.
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    pub limit_secs: f64,
    /// Orders placed at once in the DB-bound limit run (each in its own
    /// transaction, as POSTs are); one run per value, the best is reported.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_values_t = [8, 32])]
    pub limit_placers: Vec<usize>,
    /// Adds a long open-loop run at half the maximum throughput (e.g. 600).
    #[arg(long, value_name = "SECS")]
    pub soak_secs: Option<f64>,
    /// Window of the long run's time series.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub soak_window_secs: f64,
    /// Products in the benchmark's catalog.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub products: usize,
    /// Customers placing orders.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub customers: usize,
    /// Where the JSON report goes.
    #[arg(long, value_name = "PATH", default_value = "bench-results/bench.json")]
    pub json: PathBuf,
    /// Where the plot goes.
    #[arg(long, value_name = "PATH", default_value = "docs/bench.svg")]
    pub svg: PathBuf,
    /// Markdown file whose generated section gets the figures (default:
    /// `docs/BENCHMARKS.md` when it exists and the stack is local).
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
    /// Also samples the busiest service (the most CPU per order) with `perf`
    /// during an extra open-loop run at half load, and writes its flame graph
    /// here (e.g. `docs/flame.svg`; per broker with `--brokers`). Needs
    /// `perf` (Debian: `linux-perf`).
    #[arg(long, value_name = "PATH")]
    pub flame_graph: Option<PathBuf>,
    /// How long that run samples.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    pub profile_secs: f64,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Lists the dead letters of a topic, with where they came from and why.
    List {
        /// The original topic, e.g. `order-created` (its dead letters are on `order-created.dlq`).
        #[arg(long)]
        topic: String,
    },
    /// Publishes the dead letters of a topic that were not replayed yet back
    /// onto the topic, once the cause is fixed.
    Replay {
        /// The original topic, e.g. `order-created`.
        #[arg(long)]
        topic: String,
    },
}

/// One `--scale SERVICE=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    /// A name from [`services::SERVICES`].
    pub service: &'static str,
    /// How many instances to run; 0 leaves the service out (e.g. to run it
    /// from a debugger against the stack).
    pub instances: u16,
}

fn parse_scale(text: &str) -> Result<Scale, String> {
    let (name, count) = text
        .split_once('=')
        .ok_or_else(|| format!("expected SERVICE=N, got `{text}`"))?;
    let service = services::find(name.trim()).ok_or_else(|| {
        format!(
            "unknown service `{name}`; known: {}",
            services::SERVICES
                .iter()
                .map(|service| service.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let instances = count
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of instances, got `{count}`"))?;
    Ok(Scale {
        service: service.name,
        instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_names_a_known_service_and_a_count() {
        assert_eq!(
            parse_scale("inventory-service=3"),
            Ok(Scale {
                service: "inventory-service",
                instances: 3
            })
        );
    }

    #[test]
    fn scale_rejects_unknown_services_and_bad_counts() {
        assert!(parse_scale("billing-service=2")
            .unwrap_err()
            .contains("known: order-service"));
        assert!(parse_scale("inventory-service=lots").is_err());
        assert!(parse_scale("inventory-service").is_err());
    }

    #[test]
    fn bench_defaults_are_the_documented_run() {
        let cli = Cli::try_parse_from(["devstack", "bench"]).unwrap();
        let Some(Command::Bench(args)) = cli.command else {
            panic!("not the bench command");
        };
        assert_eq!(args.clients, [1, 8, 32]);
        assert_eq!(args.rates, [0.25, 0.5, 0.75, 0.9, 1.5]);
        assert!(args.url.is_none());
        assert!(args.brokers.is_empty());
        assert!(Cli::try_parse_from(["devstack", "bench", "--payment-url", "http://x"]).is_err());
    }

    #[test]
    fn bench_takes_several_brokers_but_not_with_a_url() {
        let cli =
            Cli::try_parse_from(["devstack", "bench", "--brokers", "embedded,apache"]).unwrap();
        let Some(Command::Bench(args)) = cli.command else {
            panic!("not the bench command");
        };
        assert_eq!(args.brokers, [KafkaKind::Embedded, KafkaKind::Apache]);
        assert!(Cli::try_parse_from([
            "devstack",
            "bench",
            "--brokers",
            "apache",
            "--url",
            "http://x"
        ])
        .is_err());
    }

    #[test]
    fn the_broker_command_is_hidden_from_help() {
        use clap::CommandFactory;
        let mut command = Cli::command();
        let help = command.render_long_help().to_string();
        assert!(!help.contains(crate::embedded_broker::SUBCOMMAND), "{help}");
        let cli = Cli::try_parse_from(["devstack", "embedded-broker", "--scaled-out"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::EmbeddedBroker(EmbeddedBrokerArgs {
                scaled_out: true
            }))
        ));
    }

    #[test]
    fn defaults_need_no_flags() {
        let cli = Cli::try_parse_from(["devstack"]).unwrap();
        assert_eq!(cli.pg_port, DEFAULT_PG_PORT);
        assert_eq!(cli.dir, PathBuf::from(DEFAULT_DIR));
        assert!(cli.scale.is_empty());
    }
}
