//! `devstack bench`: the benchmark (crate `bench`) against the stack devstack
//! just started, or against a running deployment named by `--url`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bench::load::{Endpoints, TokenSource};
use bench::report::Report;
use bench::{Options, Process, Target};

use crate::cli::{BenchArgs, Cli, KafkaKind};
use crate::infra::{Database, Kafka};
use crate::services::{self, Instance};

/// The services' log filter during a local benchmark, unless `RUST_LOG` is
/// set: per-event info lines would measure the terminal, not the system.
pub const BENCH_SERVICE_LOG: &str = "warn";

/// Worker threads of the load generator's runtime: enough to keep thousands
/// of requests in flight without taking the services' CPU.
const LOAD_GENERATOR_THREADS: usize = 2;

/// Where the Markdown figures go by default, if the file exists.
const DEFAULT_MARKDOWN: &str = "docs/BENCHMARKS.md";

/// Benchmarks a running deployment: nothing is started; the limit is measured
/// if `--database-url` and `--kafka-bootstrap` are given.
pub async fn run_remote(cli: &Cli, args: &BenchArgs, order_url: &str) -> anyhow::Result<()> {
    let order = order_url.trim_end_matches('/').to_owned();
    let target = Target {
        endpoints: Endpoints {
            inventory: args
                .inventory_url
                .clone()
                .unwrap_or_else(|| with_port(&order, 8082)),
            payment: args
                .payment_url
                .clone()
                .unwrap_or_else(|| with_port(&order, 8083)),
            notification: args
                .notification_url
                .clone()
                .unwrap_or_else(|| with_port(&order, 8084)),
            order,
        },
        database_url: cli.database_url.clone(),
        kafka: cli
            .kafka_bootstrap
            .as_deref()
            .map(service_kit::kafka::KafkaConnection::plaintext),
        consumer_fetch_wait: service_kit::CommonConfig::defaults("", 0, "")
            .kafka
            .fetch_wait_max,
        processes: Vec::new(),
        broker: cli
            .kafka_bootstrap
            .as_ref()
            .map_or("not named".to_owned(), |bootstrap| {
                format!("at {bootstrap}")
            }),
        broker_pids: Vec::new(),
        postgres_pid: None,
        // A deployment that checks tokens has its own identity provider.
        tokens: None,
    };
    let outputs = Outputs {
        json: args.json.clone(),
        svg: args.svg.clone(),
        markdown: args.markdown.clone(),
        flame_graph: args.flame_graph.clone(),
    };
    run(target, options(args, outputs)).await.map(drop)
}

/// The brokers `devstack bench` runs on, in order.
pub fn brokers(args: &BenchArgs, default: KafkaKind) -> Vec<KafkaKind> {
    if args.brokers.is_empty() {
        vec![default]
    } else {
        args.brokers.clone()
    }
}

/// Where one run's files go. A comparison gives each broker its own JSON
/// and plot (`bench-apache.json`, ...) and writes the Markdown once, at the
/// end, with every broker's figures.
pub struct Outputs {
    json: PathBuf,
    svg: PathBuf,
    markdown: Option<PathBuf>,
    flame_graph: Option<PathBuf>,
}

impl Outputs {
    /// The files of the run on `kind`.
    pub fn for_run(args: &BenchArgs, kind: KafkaKind) -> Self {
        if brokers(args, kind).len() == 1 {
            return Self {
                json: args.json.clone(),
                svg: args.svg.clone(),
                markdown: markdown_path(args),
                flame_graph: args.flame_graph.clone(),
            };
        }
        Self {
            json: with_suffix(&args.json, kind.name()),
            svg: with_suffix(&args.svg, kind.name()),
            markdown: None,
            flame_graph: args
                .flame_graph
                .as_ref()
                .map(|path| with_suffix(path, kind.name())),
        }
    }
}

/// After a run on each of several brokers: their figures side by side in
/// the Markdown file.
pub fn write_comparison(args: &BenchArgs, runs: &[(KafkaKind, Report)]) -> anyhow::Result<()> {
    let Some(path) = markdown_path(args) else {
        return Ok(());
    };
    let svg_names: Vec<Option<String>> = runs
        .iter()
        .map(|(kind, _)| {
            with_suffix(&args.svg, kind.name())
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .collect();
    let section = bench::report::side_by_side(
        &runs
            .iter()
            .zip(&svg_names)
            .map(|((_, report), svg)| bench::report::BrokerRun {
                report,
                svg_name: svg.as_deref(),
            })
            .collect::<Vec<_>>(),
    );
    bench::report::replace_results_section(&path, &section)?;
    println!("updated {}", path.display());
    Ok(())
}

/// `--markdown`, else `docs/BENCHMARKS.md` if it exists here.
fn markdown_path(args: &BenchArgs) -> Option<PathBuf> {
    args.markdown.clone().or_else(|| {
        Path::new(DEFAULT_MARKDOWN)
            .is_file()
            .then(|| PathBuf::from(DEFAULT_MARKDOWN))
    })
}

/// `docs/bench.svg` + `apache` → `docs/bench-apache.svg`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(extension) => format!("{stem}-{suffix}.{}", extension.to_string_lossy()),
        None => format!("{stem}-{suffix}"),
    };
    path.with_file_name(name)
}

/// Benchmarks the stack devstack runs: `instances` with their `pids`, on
/// `kafka` and `database` (whose server's CPU is counted when devstack runs it), sending `tokens` when the stack checks them (`--auth`), writing
/// the files `outputs` names.
pub async fn run_local(
    args: &BenchArgs,
    instances: &[Instance],
    pids: BTreeMap<String, u32>,
    database: &Database,
    kafka: &Kafka,
    tokens: Option<Arc<dyn TokenSource>>,
    outputs: Outputs,
) -> anyhow::Result<Report> {
    let url_of = |service: &str| {
        instances
            .iter()
            .find(|instance| instance.service == service)
            .map(Instance::url)
            .with_context(|| format!("the benchmark needs {service}; do not scale it to 0"))
    };
    let target = Target {
        endpoints: Endpoints {
            order: url_of(services::ORDER_SERVICE)?,
            inventory: url_of("inventory-service")?,
            payment: url_of("payment-service")?,
            notification: url_of("notification-service")?,
        },
        database_url: Some(database.url.clone()),
        kafka: Some(kafka.admin_connection()),
        consumer_fetch_wait: kafka.services_fetch_wait()?,
        processes: pids
            .into_iter()
            .map(|(service, pid)| Process { service, pid })
            .collect(),
        broker: kafka.description(),
        broker_pids: kafka.pids(),
        postgres_pid: database.server_pid(),
        tokens,
    };
    run(target, options(args, outputs)).await
}

/// Runs the benchmark on a multi-threaded runtime of its own: devstack's is
/// single-threaded on purpose (see `main`), which would make the load
/// generator the bottleneck. On a plain thread rather than tokio's blocking
/// pool, so that a stop signal ends devstack without waiting for it.
async fn run(target: Target, options: Options) -> anyhow::Result<Report> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench".to_owned())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(LOAD_GENERATOR_THREADS)
                .enable_all()
                .build()
                .context("starting the load generator's runtime")
                .and_then(|runtime| runtime.block_on(bench::run(&target, &options)));
            let _ = done.send(result);
        })
        .context("starting the benchmark thread")?;
    result.await.context("the benchmark panicked")?
}

fn options(args: &BenchArgs, outputs: Outputs) -> Options {
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    Options {
        warm_up: secs(args.warm_up_secs),
        step: secs(args.step_secs),
        clients: args.clients.clone(),
        rate_fractions: args.rates.clone(),
        limit_duration: secs(args.limit_secs),
        limit_placers: args.limit_placers.clone(),
        soak: args.soak_secs.map(secs),
        soak_window: secs(args.soak_window_secs),
        products: args.products,
        customers: args.customers,
        json: Some(outputs.json),
        svg: Some(outputs.svg),
        markdown: outputs.markdown,
        flame_graph: outputs.flame_graph,
        profile: secs(args.profile_secs),
        command: command_line(),
        ..Options::default()
    }
}

/// How this run was started, as a user would type it.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo run --release -p devstack -- {}", args.join(" "))
}

/// `http://host:8081` → `http://host:{port}`.
fn with_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split('/').next().unwrap_or(rest);
    let host = match host.rsplit_once(':') {
        Some((name, maybe_port)) if maybe_port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    format!("{scheme}://{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_broker_of_a_comparison_gets_its_own_files() {
        assert_eq!(
            with_suffix(Path::new("docs/bench.svg"), "apache"),
            PathBuf::from("docs/bench-apache.svg")
        );
        assert_eq!(
            with_suffix(Path::new("out/report"), "embedded"),
            PathBuf::from("out/report-embedded")
        );
    }

    #[test]
    fn sibling_services_are_found_on_the_same_host() {
        assert_eq!(
            with_port("http://example.org:8081", 8082),
            "http://example.org:8082"
        );
        assert_eq!(
            with_port("https://shop.test", 8083),
            "https://shop.test:8083"
        );
    }
}
