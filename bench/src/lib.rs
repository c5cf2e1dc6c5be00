//! The benchmark: how many orders per second the system carries end to end,
//! how long an order takes from POST to CONFIRMED, and the machine's own limit
//! measured in the same run.
//!
//! [`run`] drives a running system over HTTP (see [`load`]): it stocks a
//! catalog and credits customers, runs closed-loop steps (C clients, each
//! POSTing back to back) to find the maximum throughput, then open-loop steps
//! (a fixed arrival rate, latency from the intended send time) at fractions of
//! it, waits after every step until each accepted order is terminal (failing
//! loudly if any is not), and optionally a long open-loop run at half the
//! maximum. Then it measures the limit ([`limit`]): the services' database
//! work for whole sagas on the same Postgres, through the same consumers'
//! batching but with in-memory queues instead of the broker, and a
//! produce→consume round trip on the same broker. [`report`] prints the table and writes the JSON,
//! the SVG plot and the Markdown figures.
//!
//! `devstack bench` starts the local stack and calls [`run`]; with `--url` it
//! measures any running deployment.

pub mod limit;
pub mod load;
pub mod machine;
pub mod profile;
pub mod report;
pub mod statements;
pub mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::load::{Client, Endpoints, Finished, TokenSource, Workload, CONFIRMED};
use crate::machine::{load_average, resident_kb, Machine};
use crate::report::{Report, ServiceMemory, Soak, SoakWindow, Step};
use crate::stats::Summary;

/// How long each part of the commit floor commits.
const COMMIT_FLOOR_DURATION: Duration = Duration::from_secs(3);

/// A service process whose memory is reported.
#[derive(Debug, Clone)]
pub struct Process {
    pub service: String,
    pub pid: u32,
}

/// The system under test.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoints: Endpoints,
    /// The Postgres the services use; without it the DB-bound limit is skipped.
    pub database_url: Option<String>,
    /// The broker the services use (with a login that may create a scratch
    /// topic); without it the round trip is skipped.
    pub kafka: Option<service_kit::kafka::KafkaConnection>,
    /// The consumers' fetch wait (`KAFKA_FETCH_WAIT_MAX_MS`) the services
    /// run with; the round trip's consumer uses it too.
    pub consumer_fetch_wait: Duration,
    /// Local service processes; empty for a remote target (memory not reported).
    pub processes: Vec<Process>,
    /// Which broker the services use, as the report names it (e.g.
    /// "Apache Kafka 4.1.2, 1 node").
    pub broker: String,
    /// The local broker's processes (the embedded broker's, or the JVMs of
    /// Apache Kafka), whose CPU the long run reports; empty for a remote one.
    pub broker_pids: Vec<u32>,
    /// The local Postgres server's postmaster, whose process tree (every
    /// backend) is counted in the CPU per order; `None` for a remote one.
    pub postgres_pid: Option<u32>,
    /// Tokens for a system that checks them (`AUTH_MODE=jwt`); `None` sends
    /// none (`AUTH_MODE=off`).
    pub tokens: Option<Arc<dyn TokenSource>>,
}

/// What to run; the defaults are the documented benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    /// Closed loop, not recorded, so caches and connections are warm.
    pub warm_up: Duration,
    /// Length of each load step.
    pub step: Duration,
    /// Clients of the closed-loop steps.
    pub clients: Vec<usize>,
    /// Open-loop rates as fractions of the best closed-loop throughput.
    pub rate_fractions: Vec<f64>,
    /// How long the DB-bound limit places orders, per placer count.
    pub limit_duration: Duration,
    /// Orders placed at once in the DB-bound limit run, one run per value;
    /// the best is reported.
    pub limit_placers: Vec<usize>,
    /// A long open-loop run at half the maximum throughput, if set.
    pub soak: Option<Duration>,
    /// Window of the long run's time series.
    pub soak_window: Duration,
    /// Products in the catalog and customers ordering.
    pub products: usize,
    pub customers: usize,
    /// How long accepted orders may take to become terminal after a step.
    pub drain_timeout: Duration,
    pub json: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    /// A Markdown file whose generated section is replaced with the figures.
    pub markdown: Option<PathBuf>,
    /// Where to write a flame graph of the busiest service (the most CPU per
    /// order in the open-loop steps), sampled with `perf` during an extra,
    /// unrecorded open-loop run at half the maximum; `None`: no profile.
    pub flame_graph: Option<PathBuf>,
    /// How long that run samples.
    pub profile: Duration,
    /// The command line, recorded with the figures.
    pub command: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            warm_up: Duration::from_secs(3),
            step: Duration::from_secs(10),
            clients: vec![1, 8, 32],
            rate_fractions: vec![0.25, 0.5, 0.75, 0.9, 1.5],
            limit_duration: Duration::from_secs(15),
            limit_placers: vec![8, 32],
            soak: None,
            soak_window: Duration::from_secs(30),
            products: 200,
            customers: 1000,
            drain_timeout: Duration::from_secs(120),
            json: None,
            svg: None,
            markdown: None,
            flame_graph: None,
            profile: Duration::from_secs(20),
            command: String::new(),
        }
    }
}

/// Runs the benchmark against `target`, prints progress and the table, writes
/// the files `options` names, and returns the report.
pub async fn run(target: &Target, options: &Options) -> anyhow::Result<Report> {
    let mut machine = Machine::describe();
    let run_id = format!("b{:x}", chrono::Utc::now().timestamp_millis());
    let client = Client::new(
        target.endpoints.clone(),
        Workload::new(&run_id, options.products, options.customers),
        target.tokens.as_deref(),
    )?;
    let mut notes = Vec::new();
    let idle = rss_mb(&target.processes);
    let mut peak = idle.clone();

    progress(&format!(
        "setting up {} products and {} customers",
        options.products, options.customers
    ));
    client.set_up().await?;
    // Numbers each stream of orders, so ids never repeat within the run.
    let mut stream = 0;

    if !options.warm_up.is_zero() {
        progress("warming up");
        let sent = client.closed_loop(4, options.warm_up, stream).await;
        client.collect(&sent.placed, options.drain_timeout).await?;
        client.wait_until_idle(options.drain_timeout).await?;
    }

    let cpu = CpuMeter::of(target);
    let mut steps = Vec::new();
    for &clients in &options.clients {
        progress(&format!(
            "closed loop, {clients} clients, {}s",
            options.step.as_secs_f64()
        ));
        stream += 1;
        let cpu_before = cpu.read();
        let sent = client.closed_loop(clients, options.step, stream).await;
        let finished = client.collect(&sent.placed, options.drain_timeout).await?;
        client.wait_until_idle(options.drain_timeout).await?;
        let mut step = summarise("closed", Some(clients), None, &sent.errors, &finished);
        step.cpu_ms_per_order = cpu.per_order(&cpu_before, finished.len());
        progress(&format!(
            "  {:.1} orders/s, POST→CONFIRMED p99 {:.1} ms",
            step.orders_per_second, step.confirmed_ms.p99
        ));
        steps.push(step);
        track_peak(&mut peak, &target.processes);
    }
    let max = steps
        .iter()
        .map(|step| step.orders_per_second)
        .fold(0.0, f64::max);

    for &fraction in &options.rate_fractions {
        let rate = (max * fraction).max(1.0);
        progress(&format!(
            "open loop, {rate:.1} orders/s, {}s",
            options.step.as_secs_f64()
        ));
        stream += 1;
        let cpu_before = cpu.read();
        let sent = client.open_loop(rate, options.step, 1, stream).await;
        let finished = client.collect(&sent.placed, options.drain_timeout).await?;
        client.wait_until_idle(options.drain_timeout).await?;
        let mut step = summarise("open", None, Some(rate), &sent.errors, &finished);
        step.cpu_ms_per_order = cpu.per_order(&cpu_before, finished.len());
        progress(&format!(
            "  POST p99 {:.1} ms, POST→CONFIRMED p50 {:.1} ms, p99 {:.1} ms",
            step.post_ms.p99, step.confirmed_ms.p50, step.confirmed_ms.p99
        ));
        steps.push(step);
        track_peak(&mut peak, &target.processes);
    }

    let (flame_graph, postgres_statements) = match &options.flame_graph {
        Some(path) if max > 0.0 => {
            stream += 1;
            match profile_busiest(&client, target, options, &steps, path, max / 2.0, stream).await {
                Ok(profiled) => (
                    kept(&mut notes, "flame graph", profiled.flame),
                    kept(
                        &mut notes,
                        "Postgres statement profile",
                        profiled.statements,
                    ),
                ),
                Err(error) => (kept(&mut notes, "flame graph", Err(error)), None),
            }
        }
        _ => (None, None),
    };

    // The limit right after the steps whose maximum it is compared with, on
    // a database in the same state; the long run comes last.
    let db_limit = match &target.database_url {
        Some(url) => {
            let mut best: Option<limit::DbLimit> = None;
            for &placers in &options.limit_placers {
                progress(&format!(
                    "DB-bound limit, {placers} placers, {}s",
                    options.limit_duration.as_secs_f64()
                ));
                let measured =
                    match limit::database(url, client.workload(), placers, options.limit_duration)
                        .await
                    {
                        Ok(measured) => measured,
                        // Keep what the run measured so far; say what failed.
                        Err(error) => {
                            let note = format!(
                                "the DB-bound limit with {placers} placers failed: {error:#}"
                            );
                            progress(&note);
                            notes.push(note);
                            continue;
                        }
                    };
                progress(&format!("  {:.1} orders/s", measured.orders_per_second));
                if best
                    .as_ref()
                    .is_none_or(|b| measured.orders_per_second > b.orders_per_second)
                {
                    best = Some(measured);
                }
            }
            best
        }
        None => {
            notes.push("no database URL given: the DB-bound limit was not measured".to_owned());
            None
        }
    };
    let commit_floor = match &target.database_url {
        Some(url) => {
            progress("Postgres commit floor");
            let concurrency = options.clients.iter().copied().max().unwrap_or(1);
            match limit::commit_floor(url, concurrency, COMMIT_FLOOR_DURATION).await {
                Ok(floor) => Some(floor),
                Err(error) => {
                    let note = format!("the commit floor failed: {error:#}");
                    progress(&note);
                    notes.push(note);
                    None
                }
            }
        }
        None => None,
    };
    let broker = match &target.kafka {
        Some(connection) => {
            progress("broker round trip");
            match limit::broker(connection, target.consumer_fetch_wait, &run_id).await {
                Ok(broker) => Some(broker),
                Err(error) => {
                    let note = format!("the broker round trip failed: {error:#}");
                    progress(&note);
                    notes.push(note);
                    None
                }
            }
        }
        None => {
            notes.push(
                "no Kafka bootstrap given: the broker round trip was not measured".to_owned(),
            );
            None
        }
    };
    let soak = match options.soak {
        Some(duration) if max > 0.0 => {
            let soak = run_soak(&client, target, options, duration, max / 2.0, stream + 1).await?;
            Some(soak)
        }
        _ => None,
    };
    let after = rss_mb(&target.processes);
    track_peak(&mut peak, &target.processes);

    if target.processes.is_empty() {
        notes.push("remote target: service memory is not reported".to_owned());
    }

    machine.load_at_end = load_average();
    let memory = target
        .processes
        .iter()
        .map(|process| ServiceMemory {
            service: process.service.clone(),
            pid: process.pid,
            idle_mb: idle.get(&process.service).copied().unwrap_or_default(),
            peak_mb: peak.get(&process.service).copied().unwrap_or_default(),
            after_mb: after.get(&process.service).copied().unwrap_or_default(),
        })
        .collect();
    let fraction_of_db_limit = db_limit.as_ref().map(|limit| max / limit.orders_per_second);
    let mut report = Report {
        generated_at: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        command: options.command.clone(),
        machine,
        kafka: target.broker.clone(),
        target: format!(
            "order-service {}, inventory-service {}, payment-service {}, notification-service {}; {}",
            target.endpoints.order,
            target.endpoints.inventory,
            target.endpoints.payment,
            target.endpoints.notification,
            if target.tokens.is_some() {
                "AUTH_MODE=jwt (a bearer token on every request, each customer's own on its orders)"
            } else {
                "AUTH_MODE=off"
            }
        ),
        steps,
        max_orders_per_second: max,
        db_limit,
        commit_floor,
        broker,
        fraction_of_db_limit,
        memory,
        soak,
        flame_graph,
        postgres_statements,
        goals: Vec::new(),
        notes,
    };
    report.judge();

    println!("{}", report.table());
    if let Some(path) = &options.json {
        report.write_json(path)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &options.svg {
        report.write_svg(path)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &options.markdown {
        let svg_name = options
            .svg
            .as_ref()
            .and_then(|svg| svg.file_name())
            .map(|name| name.to_string_lossy().into_owned());
        report.update_markdown(path, svg_name.as_deref())?;
        println!("updated {}", path.display());
    }
    Ok(report)
}

/// `result`'s value; an error becomes a note saying why `what` is missing, and
/// the run goes on with its figures.
fn kept<T>(notes: &mut Vec<String>, what: &str, result: anyhow::Result<T>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            let note = format!("no {what}: {error:#}");
            progress(&note);
            notes.push(note);
            None
        }
    }
}

/// What the profiled run gave: either part may be missing, for its own reason.
struct Profiled {
    flame: anyhow::Result<profile::FlameGraph>,
    statements: anyhow::Result<statements::StatementProfile>,
}

/// Samples the service with the most CPU per order over the open-loop
/// `steps` while an unrecorded open-loop run at `rate` loads it, and writes
/// its flame graph to `path`; Postgres' statement counters cover the same
/// run. An error (the run's note says it) when no service's CPU was
/// measured: a remote target's processes are out of reach.
async fn profile_busiest(
    client: &Client,
    target: &Target,
    options: &Options,
    steps: &[Step],
    path: &std::path::Path,
    rate: f64,
    stream: usize,
) -> anyhow::Result<Profiled> {
    let mut cost: BTreeMap<&str, f64> = BTreeMap::new();
    for step in steps.iter().filter(|step| step.mode == "open") {
        for process in &target.processes {
            if let Some(ms) = step.cpu_ms_per_order.get(&process.service) {
                *cost.entry(&process.service).or_default() += ms;
            }
        }
    }
    let (service, _) = cost
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .context("no local service process to sample")?;
    let pid = target
        .processes
        .iter()
        .find(|process| process.service == service)
        .map(|process| process.pid)
        .context("the busiest service has no process")?;
    progress(&format!(
        "profiling {service} (pid {pid}) at {rate:.1} orders/s for {}s",
        options.profile.as_secs()
    ));
    let counting = match &target.database_url {
        Some(url) => statements::reset(url).await.map(|()| url.as_str()),
        None => Err(anyhow::anyhow!("no database URL given")),
    };
    let (sent, script) = tokio::join!(
        client.open_loop(rate, options.profile, 1, stream),
        profile::record(pid, options.profile)
    );
    client.collect(&sent.placed, options.drain_timeout).await?;
    client.wait_until_idle(options.drain_timeout).await?;
    let statements = match counting {
        Ok(url) => statements::read(url, sent.placed.len()).await,
        Err(error) => Err(error),
    };
    let title = format!(
        "{service} at {rate:.0} orders/s on {} ({}s of CPU-clock samples)",
        target.broker,
        options.profile.as_secs()
    );
    let flame = script
        .and_then(|script| profile::write(path, &script, &title))
        .map(|cpu_seconds| {
            progress(&format!(
                "  {cpu_seconds:.1} s of CPU sampled, wrote {}",
                path.display()
            ));
            profile::FlameGraph {
                service: service.to_owned(),
                pid,
                offered_per_second: rate,
                seconds: options.profile.as_secs_f64(),
                cpu_seconds,
                file: path
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            }
        });
    Ok(Profiled { flame, statements })
}

/// An open-loop run of `duration` at `rate`, cut into windows, sampling memory
/// at the end of each.
async fn run_soak(
    client: &Client,
    target: &Target,
    options: &Options,
    duration: Duration,
    rate: f64,
    stream: usize,
) -> anyhow::Result<Soak> {
    let windows = (duration.as_secs_f64() / options.soak_window.as_secs_f64())
        .round()
        .max(1.0) as usize;
    progress(&format!(
        "long run: {rate:.1} orders/s for {}s ({windows} windows)",
        duration.as_secs()
    ));
    let window = duration / windows as u32;
    let processes = target.processes.clone();
    let broker_cpu_seconds = {
        let pids = target.broker_pids.clone();
        move || {
            (!pids.is_empty())
                .then(|| {
                    pids.iter()
                        .map(|&pid| machine::process_cpu_seconds(pid))
                        .sum::<Option<f64>>()
                })
                .flatten()
        }
    };
    let sampler = tokio::spawn(async move {
        let started = Instant::now();
        let mut broker_cpu = broker_cpu_seconds();
        let mut samples = Vec::new();
        for i in 1..=windows {
            tokio::time::sleep_until(started + window * i as u32).await;
            let now = broker_cpu_seconds();
            let broker_percent = match (broker_cpu, now) {
                (Some(before), Some(after)) => {
                    Some((after - before) / window.as_secs_f64() * 100.0)
                }
                _ => None,
            };
            broker_cpu = now;
            samples.push((rss_mb(&processes), broker_percent));
        }
        samples
    });
    let sent = client.open_loop(rate, duration, windows, stream).await;
    let finished = client.collect(&sent.placed, options.drain_timeout).await?;
    let samples = sampler.await.context("the memory sampler panicked")?;
    let windows = (0..windows)
        .map(|i| {
            let mine: Vec<&Finished> = finished.iter().filter(|f| f.window == i).collect();
            let confirmed: Vec<Duration> = mine
                .iter()
                .filter(|f| f.status == CONFIRMED)
                .map(|f| f.end_to_end())
                .collect();
            SoakWindow {
                orders: mine.len(),
                post_ms: Summary::of(&mine.iter().map(|f| f.post).collect::<Vec<_>>()),
                confirmed_ms: Summary::of(&confirmed),
                rss_mb: samples.get(i).map(|s| s.0.clone()).unwrap_or_default(),
                broker_cpu_percent: samples.get(i).and_then(|s| s.1),
            }
        })
        .collect();
    Ok(Soak {
        offered_per_second: rate,
        window_seconds: window.as_secs_f64(),
        windows,
    })
}

/// Turns one step's orders into its figures.
fn summarise(
    mode: &str,
    clients: Option<usize>,
    offered: Option<f64>,
    errors: &[String],
    finished: &[Finished],
) -> Step {
    let mut error_counts = BTreeMap::new();
    for error in errors {
        *error_counts.entry(error.clone()).or_default() += 1;
    }
    let mut statuses = BTreeMap::new();
    for order in finished {
        *statuses.entry(order.status.clone()).or_default() += 1;
    }
    let first_created = finished.iter().map(|f| f.created_at).min();
    let last_completed = finished.iter().map(|f| f.completed_at).max();
    let orders_per_second = match (first_created, last_completed) {
        (Some(first), Some(last)) if last > first => {
            finished.len() as f64 / (last - first).to_std().unwrap_or_default().as_secs_f64()
        }
        _ => 0.0,
    };
    let confirmed: Vec<Duration> = finished
        .iter()
        .filter(|f| f.status == CONFIRMED)
        .map(Finished::end_to_end)
        .collect();
    Step {
        mode: mode.to_owned(),
        clients,
        offered_per_second: offered,
        orders: finished.len(),
        errors: error_counts,
        statuses,
        orders_per_second,
        post_ms: Summary::of(&finished.iter().map(|f| f.post).collect::<Vec<_>>()),
        confirmed_ms: Summary::of(&confirmed),
        cpu_ms_per_order: BTreeMap::new(),
    }
}

/// Which CPU time of its processes an account counts.
#[derive(Debug, Clone, Copy)]
enum Counted {
    /// The processes' own.
    Own,
    /// Theirs and that of every process below them (Postgres' backends).
    Tree,
}

/// Processes whose CPU time is reported together, under one name.
struct CpuAccount {
    name: String,
    pids: Vec<u32>,
    counted: Counted,
}

/// The processes whose CPU an order costs, by the name the report gives
/// them: each service (its instances together), Postgres with every backend,
/// the broker, and this process, which generates the load. Empty for a
/// remote target, whose processes are out of reach.
struct CpuMeter {
    accounts: Vec<CpuAccount>,
}

impl CpuMeter {
    fn of(target: &Target) -> CpuMeter {
        let mut accounts: Vec<CpuAccount> = Vec::new();
        if target.processes.is_empty() {
            return CpuMeter { accounts };
        }
        let mut account = |name: &str, pids: Vec<u32>, counted| {
            accounts.push(CpuAccount {
                name: name.to_owned(),
                pids,
                counted,
            })
        };
        let mut services: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for process in &target.processes {
            services
                .entry(&process.service)
                .or_default()
                .push(process.pid);
        }
        for (service, pids) in services {
            account(service, pids, Counted::Own);
        }
        if let Some(pid) = target.postgres_pid {
            account(report::CPU_POSTGRES, vec![pid], Counted::Tree);
        }
        if !target.broker_pids.is_empty() {
            account(
                report::CPU_BROKER,
                target.broker_pids.clone(),
                Counted::Tree,
            );
        }
        account(
            report::CPU_LOAD_GENERATOR,
            vec![std::process::id()],
            Counted::Own,
        );
        CpuMeter { accounts }
    }

    /// CPU seconds each account has used so far.
    fn read(&self) -> BTreeMap<String, f64> {
        self.accounts
            .iter()
            .map(|account| {
                let seconds = account
                    .pids
                    .iter()
                    .filter_map(|&pid| match account.counted {
                        Counted::Own => machine::process_cpu_seconds(pid),
                        Counted::Tree => machine::tree_cpu_seconds(pid),
                    })
                    .sum();
                (account.name.clone(), seconds)
            })
            .collect()
    }

    /// CPU milliseconds per order of each account since `before`, over
    /// `orders`; empty if there were none or nothing is measured.
    fn per_order(&self, before: &BTreeMap<String, f64>, orders: usize) -> BTreeMap<String, f64> {
        if orders == 0 {
            return BTreeMap::new();
        }
        self.read()
            .into_iter()
            .map(|(name, now)| {
                let used = now - before.get(&name).copied().unwrap_or(now);
                (name, used.max(0.0) * 1000.0 / orders as f64)
            })
            .collect()
    }
}

/// Resident MB of each process now.
fn rss_mb(processes: &[Process]) -> BTreeMap<String, f64> {
    processes
        .iter()
        .filter_map(|p| Some((p.service.clone(), resident_kb(p.pid)? as f64 / 1024.0)))
        .collect()
}

fn track_peak(peak: &mut BTreeMap<String, f64>, processes: &[Process]) {
    for (service, mb) in rss_mb(processes) {
        let entry = peak.entry(service).or_insert(mb);
        *entry = entry.max(mb);
    }
}

fn progress(message: &str) {
    eprintln!("bench: {message}");
}
