//! What a run found, and its three renderings: a table on stdout, a JSON file,
//! an SVG plot of latency against offered rate, and a Markdown section that
//! replaces the figures in `docs/BENCHMARKS.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use crate::limit::{BrokerLimit, CommitFloor, DbLimit, BROKER_HOPS_PER_ORDER, COMMITS_PER_ORDER};
use crate::machine::Machine;
use crate::stats::Summary;

/// Marks the generated part of the Markdown file; everything outside stays.
pub const MARKDOWN_BEGIN: &str = "<!-- bench:results:begin -->";
pub const MARKDOWN_END: &str = "<!-- bench:results:end -->";

/// The goals the benchmark is judged by.
pub const GOAL_FRACTION_OF_LIMIT: f64 = 0.80;
pub const GOAL_CONFIRMED_P99_MS: f64 = 50.0;
pub const GOAL_POST_P99_MS: f64 = 5.0;
/// Under overload, the accepted orders' p99 POST→CONFIRMED at most this.
pub const GOAL_OVERLOAD_P99_MS: f64 = 1_000.0;
pub const GOAL_IDLE_RSS_MB: f64 = 30.0;
/// "Flat" over a long run: the mean of the last third of the windows within
/// this factor of the mean of the first third (thirds, not single windows, so
/// one noisy window decides nothing).
pub const FLAT_MEMORY_FACTOR: f64 = 1.2;
pub const FLAT_LATENCY_FACTOR: f64 = 1.25;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub generated_at: String,
    /// How to get these figures again.
    pub command: String,
    pub machine: Machine,
    /// Which broker carried the events.
    pub kafka: String,
    /// Where the system under test ran (URLs).
    pub target: String,
    pub steps: Vec<Step>,
    /// The best end-to-end throughput of the closed-loop steps.
    pub max_orders_per_second: f64,
    pub db_limit: Option<DbLimit>,
    pub commit_floor: Option<CommitFloor>,
    pub broker: Option<BrokerLimit>,
    /// `max_orders_per_second / db_limit.orders_per_second`.
    pub fraction_of_db_limit: Option<f64>,
    pub memory: Vec<ServiceMemory>,
    pub soak: Option<Soak>,
    /// The busiest service's flame graph, if one was drawn.
    pub flame_graph: Option<crate::profile::FlameGraph>,
    /// Postgres' statements over the flame graph's run, most expensive first.
    pub postgres_statements: Option<crate::statements::StatementProfile>,
    pub goals: Vec<Goal>,
    /// Why a part was not measured (e.g. no database URL for a remote target).
    pub notes: Vec<String>,
}

/// One load step.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// `closed` (clients × back-to-back POSTs) or `open` (fixed arrival rate).
    pub mode: String,
    pub clients: Option<usize>,
    pub offered_per_second: Option<f64>,
    /// Accepted orders.
    pub orders: usize,
    /// Requests that were not accepted, by cause.
    pub errors: BTreeMap<String, usize>,
    /// Terminal statuses of the accepted orders.
    pub statuses: BTreeMap<String, usize>,
    /// Orders over the span from the first `createdAt` to the last
    /// `completedAt`, by the service's clock.
    pub orders_per_second: f64,
    pub post_ms: Summary,
    /// POST → CONFIRMED of the confirmed orders.
    pub confirmed_ms: Summary,
    /// CPU milliseconds per accepted order, by process (see
    /// [`CPU_POSTGRES`] and its neighbours for the shared ones), from the
    /// step's start until every order of it was terminal and the system idle.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_ms_per_order: BTreeMap<String, f64>,
}

/// The CPU-per-order column of Postgres: the postmaster and every backend.
pub const CPU_POSTGRES: &str = "Postgres";
/// The column of the broker's processes.
pub const CPU_BROKER: &str = "broker";
/// The column of the benchmark's own process.
pub const CPU_LOAD_GENERATOR: &str = "load generator";

impl Step {
    pub fn error_count(&self) -> usize {
        self.errors.values().sum()
    }

    /// Requests admission control refused (counted among the errors).
    pub fn refused(&self) -> usize {
        self.errors
            .get(crate::load::REFUSED)
            .copied()
            .unwrap_or_default()
    }

    fn label(&self) -> String {
        match (self.clients, self.offered_per_second) {
            (Some(clients), _) => format!("closed c={clients}"),
            (_, Some(rate)) => format!("open {rate:.0}/s"),
            _ => self.mode.clone(),
        }
    }
}

/// Resident memory of one service process, in MB.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMemory {
    pub service: String,
    pub pid: u32,
    /// Before any load (after start-up).
    pub idle_mb: f64,
    /// Highest seen after a step.
    pub peak_mb: f64,
    /// After the last step, once every order was terminal.
    pub after_mb: f64,
}

/// A long open-loop run at half the maximum throughput, in windows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Soak {
    pub offered_per_second: f64,
    pub window_seconds: f64,
    pub windows: Vec<SoakWindow>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SoakWindow {
    pub orders: usize,
    pub post_ms: Summary,
    pub confirmed_ms: Summary,
    /// Service name → resident MB at the end of the window.
    pub rss_mb: BTreeMap<String, f64>,
    /// CPU used by the local broker's processes in this window, in percent
    /// of one core (`None` when the broker is not local).
    pub broker_cpu_percent: Option<f64>,
}

/// One target and how the run fared.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Goal {
    pub goal: String,
    pub measured: String,
    /// `None` when the run could not tell (part not measured).
    pub met: Option<bool>,
}

impl Report {
    /// Judges the run against the goals.
    pub fn judge(&mut self) {
        let mut goals = vec![Goal {
            goal: format!(
                "end-to-end throughput ≥ {:.0}% of the DB-bound limit",
                GOAL_FRACTION_OF_LIMIT * 100.0
            ),
            measured: match (self.fraction_of_db_limit, &self.db_limit) {
                (Some(fraction), Some(limit)) => format!(
                    "{:.0}% ({:.0} of {:.0} orders/s)",
                    fraction * 100.0,
                    self.max_orders_per_second,
                    limit.orders_per_second
                ),
                _ => "limit not measured".to_owned(),
            },
            met: self
                .fraction_of_db_limit
                .map(|fraction| fraction >= GOAL_FRACTION_OF_LIMIT),
        }];
        let half = self.half_load_step();
        goals.push(Goal {
            goal: format!(
                "p99 POST→CONFIRMED ≤ {GOAL_CONFIRMED_P99_MS:.0} ms at half the maximum throughput"
            ),
            measured: half.map_or("no open-loop step at half load".to_owned(), |step| {
                format!(
                    "{:.1} ms at {:.0}/s",
                    step.confirmed_ms.p99,
                    step.offered_per_second.unwrap_or_default()
                )
            }),
            met: half.map(|step| step.confirmed_ms.p99 <= GOAL_CONFIRMED_P99_MS),
        });
        goals.push(Goal {
            goal: format!("POST p99 ≤ {GOAL_POST_P99_MS:.0} ms (at half the maximum throughput)"),
            measured: half.map_or("no open-loop step at half load".to_owned(), |step| {
                format!("{:.1} ms", step.post_ms.p99)
            }),
            met: half.map(|step| step.post_ms.p99 <= GOAL_POST_P99_MS),
        });
        let overload = self.worst_overload_step();
        goals.push(Goal {
            goal: format!(
                "under overload, accepted orders' p99 POST→CONFIRMED ≤ {GOAL_OVERLOAD_P99_MS:.0} ms, the rest refused"
            ),
            measured: overload.map_or(
                "no overload step (closed loop with several clients, or open loop above the maximum)"
                    .to_owned(),
                |step| {
                    format!(
                        "worst {}: {:.1} ms, {} refused",
                        step.label(),
                        step.confirmed_ms.p99,
                        step.refused()
                    )
                },
            ),
            met: overload.map(|step| step.confirmed_ms.p99 <= GOAL_OVERLOAD_P99_MS),
        });
        let largest_idle = self
            .memory
            .iter()
            .map(|service| service.idle_mb)
            .fold(None, |max: Option<f64>, mb| {
                Some(max.map_or(mb, |m| m.max(mb)))
            });
        goals.push(Goal {
            goal: format!("each service ≤ {GOAL_IDLE_RSS_MB:.0} MB resident when idle"),
            measured: largest_idle.map_or("not measured (remote target)".to_owned(), |mb| {
                format!("largest {mb:.1} MB")
            }),
            met: largest_idle.map(|mb| mb <= GOAL_IDLE_RSS_MB),
        });
        let flat = self.soak.as_ref().and_then(Soak::flatness);
        goals.push(Goal {
            goal: "flat memory and latency over a long run".to_owned(),
            measured: match (&self.soak, flat) {
                (Some(soak), Some((memory, latency))) => format!(
                    "{:.0} s: memory ×{memory:.2}, POST→CONFIRMED p99 ×{latency:.2} (last third of the windows / first third)",
                    soak.window_seconds * soak.windows.len() as f64
                ),
                _ => "no long run (--soak-secs)".to_owned(),
            },
            met: flat.map(|(memory, latency)| {
                memory <= FLAT_MEMORY_FACTOR && latency <= FLAT_LATENCY_FACTOR
            }),
        });
        self.goals = goals;
    }

    /// The steps that offer more than the system carries: closed loops of
    /// several clients (each POSTs again as soon as it is answered) and
    /// open loops above the maximum; of those, the one whose accepted
    /// orders waited longest (p99).
    pub fn worst_overload_step(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|step| match (step.clients, step.offered_per_second) {
                (Some(clients), _) => clients > 1,
                (_, Some(rate)) => rate > self.max_orders_per_second,
                _ => false,
            })
            .max_by(|a, b| a.confirmed_ms.p99.total_cmp(&b.confirmed_ms.p99))
    }

    /// All of a step's CPU per order, every process together.
    pub fn total_cpu_ms(step: &Step) -> Option<f64> {
        (!step.cpu_ms_per_order.is_empty()).then(|| step.cpu_ms_per_order.values().sum())
    }

    /// The least POST→CONFIRMED can take here: the broker hops and the
    /// commits on an order's critical path, each at its measured p50.
    pub fn latency_floor_ms(&self) -> Option<f64> {
        let commit = self.commit_floor.as_ref()?.commit_ms.p50;
        let hop = self.broker.as_ref()?.round_trip_ms.p50;
        Some(BROKER_HOPS_PER_ORDER * hop + COMMITS_PER_ORDER * commit)
    }

    /// The floor and the p50 of the gentlest open-loop step, in words.
    fn floor_comparison(&self) -> Option<String> {
        let floor = self.latency_floor_ms()?;
        let gentlest = self
            .steps
            .iter()
            .filter(|step| step.offered_per_second.is_some())
            .min_by(|a, b| {
                a.offered_per_second
                    .partial_cmp(&b.offered_per_second)
                    .unwrap()
            })?;
        Some(format!(
            "{floor:.1} ms ({BROKER_HOPS_PER_ORDER:.0} broker round trips + {COMMITS_PER_ORDER:.0} commits, p50 each); POST→CONFIRMED p50 at {:.0}/s is {:.1} ms, {:.1} ms above it",
            gentlest.offered_per_second.unwrap_or_default(),
            gentlest.confirmed_ms.p50,
            gentlest.confirmed_ms.p50 - floor
        ))
    }

    /// The open-loop step closest to half the maximum throughput.
    pub fn half_load_step(&self) -> Option<&Step> {
        let half = self.max_orders_per_second / 2.0;
        self.steps
            .iter()
            .filter(|step| step.mode == "open")
            .min_by(|a, b| {
                let distance = |s: &Step| (s.offered_per_second.unwrap_or_default() - half).abs();
                distance(a).total_cmp(&distance(b))
            })
    }

    /// The human-readable summary printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nmachine: {} cores, {} ({} MB), load {:.2} → {:.2}",
            self.machine.cores,
            self.machine.cpu,
            self.machine.memory_mb,
            self.machine.load_at_start,
            self.machine.load_at_end
        );
        let _ = writeln!(out, "broker: {}", self.kafka);
        let _ = writeln!(out, "target: {}\n", self.target);
        out.push_str(&steps_table(&self.steps, TableStyle::Text));
        out.push_str(&cpu_table(&self.steps, TableStyle::Text));
        let _ = writeln!(
            out,
            "\nmax end-to-end throughput: {:.1} orders/s",
            self.max_orders_per_second
        );
        if let Some(limit) = &self.db_limit {
            let _ = writeln!(
                out,
                "DB-bound limit: {:.1} orders/s ({} placers, {} orders; events per consumer transaction: {})",
                limit.orders_per_second,
                limit.placers,
                limit.orders,
                limit.batching()
            );
        }
        if let Some(fraction) = self.fraction_of_db_limit {
            let _ = writeln!(out, "achieved / DB-bound limit: {:.0}%", fraction * 100.0);
        }
        if let Some(broker) = &self.broker {
            let b = &broker.round_trip_ms;
            let _ = writeln!(
                out,
                "broker produce→consume round trip: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                b.p50, b.p99, b.max
            );
        }
        if let Some(floor) = &self.commit_floor {
            let c = &floor.commit_ms;
            let _ = writeln!(
                out,
                "Postgres commit floor: one commit p50 {:.2} ms, p99 {:.2} ms; {} connections: {:.0} commits/s",
                c.p50, c.p99, floor.connections, floor.commits_per_second
            );
        }
        if let Some(comparison) = self.floor_comparison() {
            let _ = writeln!(out, "latency floor: {comparison}");
        }
        for service in &self.memory {
            let _ = writeln!(
                out,
                "{:<22} resident: idle {:.1} MB, peak {:.1} MB, after load {:.1} MB",
                service.service, service.idle_mb, service.peak_mb, service.after_mb
            );
        }
        out.push('\n');
        for goal in &self.goals {
            let verdict = match goal.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "n/a",
            };
            let _ = writeln!(out, "[{verdict:^6}] {}: {}", goal.goal, goal.measured);
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// The figures as Markdown, for `docs/BENCHMARKS.md`.
    pub fn markdown(&self, svg_name: Option<&str>) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "Generated {} by `{}`.\n\nBroker: {}.\nMachine: {} cores ({}), {} MB of memory; one-minute load average {:.2} at the start, {:.2} at the end.\nTarget: {}.\n",
            self.generated_at, self.command, self.kafka, m.cores, m.cpu, m.memory_mb, m.load_at_start, m.load_at_end, self.target
        );
        out.push_str(&steps_table(&self.steps, TableStyle::Markdown));
        out.push_str(&cpu_table(&self.steps, TableStyle::Markdown));
        out.push('\n');
        let _ = writeln!(out, "| measure | value |\n|---|---|");
        let _ = writeln!(
            out,
            "| max end-to-end throughput | {:.1} orders/s |",
            self.max_orders_per_second
        );
        if let Some(limit) = &self.db_limit {
            let _ = writeln!(
                out,
                "| DB-bound limit (same run) | {:.1} orders/s ({} placers, up to {} sagas in progress; events per consumer transaction: {}) |",
                limit.orders_per_second,
                limit.placers,
                limit.max_in_flight,
                limit.batching()
            );
        }
        if let Some(fraction) = self.fraction_of_db_limit {
            let _ = writeln!(
                out,
                "| achieved / DB-bound limit | {:.0}% |",
                fraction * 100.0
            );
        }
        if let Some(broker) = &self.broker {
            let b = &broker.round_trip_ms;
            let _ = writeln!(
                out,
                "| broker produce→consume round trip | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms |",
                b.p50, b.p99, b.max
            );
        }
        if let Some(floor) = &self.commit_floor {
            let c = &floor.commit_ms;
            let _ = writeln!(
                out,
                "| Postgres commit floor (one-row durable commits) | one connection: p50 {:.2} ms, p99 {:.2} ms; {} connections: {:.0} commits/s |",
                c.p50, c.p99, floor.connections, floor.commits_per_second
            );
        }
        if let Some(comparison) = self.floor_comparison() {
            let _ = writeln!(out, "| latency floor | {comparison} |");
        }
        for service in &self.memory {
            let _ = writeln!(
                out,
                "| {} resident | idle {:.1} MB, peak {:.1} MB, after load {:.1} MB |",
                service.service, service.idle_mb, service.peak_mb, service.after_mb
            );
        }
        if let Some(soak) = &self.soak {
            let services: Vec<&str> = soak
                .windows
                .first()
                .map(|w| {
                    w.rss_mb
                        .keys()
                        .map(|s| s.trim_end_matches("-service"))
                        .collect()
                })
                .unwrap_or_default();
            let broker = soak.windows.iter().any(|w| w.broker_cpu_percent.is_some());
            let _ = writeln!(
                out,
                "\nLong run at {:.0} orders/s, windows of {:.0} s:\n\n| window | orders | POST p99 | POST→CONFIRMED p50 | p99 | max | resident MB ({}) |{}\n|---|---|---|---|---|---|---|{}",
                soak.offered_per_second,
                soak.window_seconds,
                services.join(" / "),
                if broker { " broker CPU |" } else { "" },
                if broker { "---|" } else { "" },
            );
            for (i, window) in soak.windows.iter().enumerate() {
                let rss: Vec<String> = window
                    .rss_mb
                    .values()
                    .map(|mb| format!("{mb:.1}"))
                    .collect();
                let broker_cpu = match (broker, window.broker_cpu_percent) {
                    (false, _) => String::new(),
                    (true, Some(percent)) => format!(" {percent:.0}% |"),
                    (true, None) => " |".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |{broker_cpu}",
                    i + 1,
                    window.orders,
                    window.post_ms.p99,
                    window.confirmed_ms.p50,
                    window.confirmed_ms.p99,
                    window.confirmed_ms.max,
                    rss.join(" / ")
                );
            }
        }
        let _ = writeln!(out, "\n| goal | measured | met |\n|---|---|---|");
        for goal in &self.goals {
            let verdict = match goal.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            let _ = writeln!(out, "| {} | {} | {verdict} |", goal.goal, goal.measured);
        }
        for note in &self.notes {
            let _ = writeln!(out, "\nNote: {note}");
        }
        if let Some(svg) = svg_name {
            let _ = writeln!(
                out,
                "\n![POST→CONFIRMED latency percentiles against offered rate]({svg})"
            );
        }
        if let Some(flame) = &self.flame_graph {
            let _ = writeln!(
                out,
                "\nThe busiest service by CPU per order, {}, sampled by `perf` for {:.0} s at {:.0} orders/s ({:.1} s of its CPU; an extra run, not among the steps above):\n\n![flame graph of {}]({})",
                flame.service,
                flame.seconds,
                flame.offered_per_second,
                flame.cpu_seconds,
                flame.service,
                flame.file
            );
        }
        if let Some(statements) = &self.postgres_statements {
            let _ = writeln!(
                out,
                "\nPostgres during that run (`pg_stat_statements`, {} orders): the statements by execution time per order, over every service's roles. Execution only: the time a statement waits for its client or the network is not in it.\n\n{}",
                statements.orders,
                statements.markdown()
            );
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        create_parent(path)?;
        let json = serde_json::to_vec_pretty(self).context("serialising the report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
    }

    /// Replaces the figures between the markers of `path` with this run's.
    pub fn update_markdown(&self, path: &Path, svg_name: Option<&str>) -> anyhow::Result<()> {
        replace_results_section(path, &self.markdown(svg_name))
    }

    /// Latency percentiles against offered rate, from the open-loop steps.
    pub fn write_svg(&self, path: &Path) -> anyhow::Result<()> {
        create_parent(path)?;
        let mut points: Vec<(f64, &Step)> = self
            .steps
            .iter()
            .filter_map(|step| Some((step.offered_per_second?, step)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let max_rate = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
        let max_ms = points
            .iter()
            .map(|p| p.1.confirmed_ms.p99.max(p.1.post_ms.p99))
            .fold(1.0, f64::max)
            * 1.15;

        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Latency against offered rate ({} cores, DB-bound limit {})",
                    self.machine.cores,
                    self.db_limit
                        .as_ref()
                        .map_or("not measured".to_owned(), |l| format!(
                            "{:.0} orders/s",
                            l.orders_per_second
                        ))
                ),
                ("sans-serif", 20),
            )
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_rate, 0.0..max_ms)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("offered rate (orders/s, open loop)")
            .y_desc("latency (ms)")
            .draw()
            .map_err(plot_error)?;
        type Pick = fn(&Step) -> f64;
        let series: [(&str, Pick, RGBColor); 4] = [
            ("POST→CONFIRMED p50", |s| s.confirmed_ms.p50, BLUE),
            ("POST→CONFIRMED p90", |s| s.confirmed_ms.p90, GREEN),
            ("POST→CONFIRMED p99", |s| s.confirmed_ms.p99, RED),
            ("POST p99", |s| s.post_ms.p99, BLACK),
        ];
        for (name, pick, color) in series {
            let line: Vec<(f64, f64)> = points.iter().map(|(rate, s)| (*rate, pick(s))).collect();
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                .map_err(plot_error)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(line.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
        Ok(())
    }
}

impl Soak {
    /// (memory, p99 latency) of the last window relative to the first.
    /// How much resident memory (all services) and POST→CONFIRMED p99 grew:
    /// mean of the last third of the windows over mean of the first third.
    fn flatness(&self) -> Option<(f64, f64)> {
        let third = self.windows.len().div_ceil(3);
        if third == 0 {
            return None;
        }
        let (first, last) = (
            &self.windows[..third],
            &self.windows[self.windows.len() - third..],
        );
        let mean = |windows: &[SoakWindow], of: fn(&SoakWindow) -> f64| {
            windows.iter().map(of).sum::<f64>() / windows.len() as f64
        };
        let growth =
            |of: fn(&SoakWindow) -> f64| mean(last, of) / mean(first, of).max(f64::MIN_POSITIVE);
        Some((
            growth(|w| w.rss_mb.values().sum()),
            growth(|w| w.confirmed_ms.p99),
        ))
    }
}

fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {error:?}")
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum TableStyle {
    Text,
    Markdown,
}

fn steps_table(steps: &[Step], style: TableStyle) -> String {
    let header = [
        "step",
        "orders",
        "errors",
        "refused",
        "orders/s",
        "POST p50",
        "p90",
        "p99",
        "max",
        "→CONFIRMED p50",
        "p90",
        "p99",
        "max",
    ];
    let rows: Vec<[String; 13]> = steps
        .iter()
        .map(|s| {
            let p = &s.post_ms;
            let c = &s.confirmed_ms;
            let unconfirmed = s.orders - s.statuses.get("CONFIRMED").copied().unwrap_or(0);
            let failed = s.error_count() - s.refused();
            let errors = if unconfirmed > 0 {
                format!("{failed} (+{unconfirmed} not confirmed)")
            } else {
                failed.to_string()
            };
            [
                s.label(),
                s.orders.to_string(),
                errors,
                s.refused().to_string(),
                format!("{:.1}", s.orders_per_second),
                format!("{:.1}", p.p50),
                format!("{:.1}", p.p90),
                format!("{:.1}", p.p99),
                format!("{:.1}", p.max),
                format!("{:.1}", c.p50),
                format!("{:.1}", c.p90),
                format!("{:.1}", c.p99),
                format!("{:.1}", c.max),
            ]
        })
        .collect();
    let mut out = String::new();
    match style {
        TableStyle::Markdown => {
            let _ = writeln!(out, "| {} |", header.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
            for row in &rows {
                let _ = writeln!(out, "| {} |", row.join(" | "));
            }
            out.push_str("\nLatencies in ms.\n");
        }
        TableStyle::Text => {
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].len())
                        .chain([header[i].chars().count()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<String>| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:>w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            let _ = writeln!(
                out,
                "{}",
                line(header.iter().map(|h| h.to_string()).collect())
            );
            for row in rows {
                let _ = writeln!(out, "{}", line(row.to_vec()));
            }
            out.push_str("(latencies in ms; orders/s from the services' own timestamps)\n");
        }
    }
    out
}

/// CPU milliseconds per order of each step, by process: the services, then
/// Postgres, the broker and the load generator, then their total. Empty if
/// no step measured any.
fn cpu_table(steps: &[Step], style: TableStyle) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for step in steps {
        for name in step.cpu_ms_per_order.keys() {
            if !columns.contains(&name.as_str()) {
                columns.push(name);
            }
        }
    }
    if columns.is_empty() {
        return String::new();
    }
    let shared = [CPU_POSTGRES, CPU_BROKER, CPU_LOAD_GENERATOR];
    columns.sort_by_key(|name| (shared.iter().position(|s| s == name), *name));
    let mut out = String::new();
    let header: Vec<String> = std::iter::once("step".to_owned())
        .chain(
            columns
                .iter()
                .map(|c| c.trim_end_matches("-service").to_owned()),
        )
        .chain(["total".to_owned()])
        .collect();
    let rows: Vec<Vec<String>> = steps
        .iter()
        .filter(|step| !step.cpu_ms_per_order.is_empty())
        .map(|step| {
            let cells = columns
                .iter()
                .map(|c| step.cpu_ms_per_order.get(*c).copied().unwrap_or_default());
            std::iter::once(step.label())
                .chain(cells.clone().map(|ms| format!("{ms:.2}")))
                .chain([format!("{:.2}", cells.sum::<f64>())])
                .collect()
        })
        .collect();
    match style {
        TableStyle::Markdown => {
            let _ = writeln!(out, "\n| {} |", header.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
            for row in &rows {
                let _ = writeln!(out, "| {} |", row.join(" | "));
            }
            out.push_str(
                "\nCPU milliseconds per order, by process, from each step's start until its last order was terminal.\n",
            );
        }
        TableStyle::Text => {
            let _ = writeln!(out, "\nCPU ms per order: {}", header.join(" / "));
            for row in &rows {
                let _ = writeln!(out, "  {}", row.join(" / "));
            }
        }
    }
    out
}

/// One broker's run of a comparison, and the name of its plot.
pub struct BrokerRun<'a> {
    pub report: &'a Report,
    pub svg_name: Option<&'a str>,
}

/// The figures of runs on several brokers, one invocation: the headline
/// measures side by side, then each run's whole section.
pub fn side_by_side(runs: &[BrokerRun<'_>]) -> String {
    let mut out = String::new();
    let Some(first) = runs.first() else {
        return out;
    };
    let _ = writeln!(
        out,
        "Generated {} by `{}`: the same benchmark on each broker, one after the other.\n",
        first.report.generated_at, first.report.command
    );
    let header: Vec<&str> = runs.iter().map(|run| run.report.kafka.as_str()).collect();
    let _ = writeln!(
        out,
        "| measure | {} |\n|---|{}",
        header.join(" | "),
        "---|".repeat(runs.len())
    );
    let row = |out: &mut String, measure: &str, cell: &dyn Fn(&Report) -> String| {
        let cells: Vec<String> = runs.iter().map(|run| cell(run.report)).collect();
        let _ = writeln!(out, "| {measure} | {} |", cells.join(" | "));
    };
    row(&mut out, "max end-to-end throughput", &|r| {
        format!("{:.1} orders/s", r.max_orders_per_second)
    });
    row(&mut out, "DB-bound limit (same run)", &|r| {
        r.db_limit
            .as_ref()
            .map_or("not measured".to_owned(), |limit| {
                format!("{:.1} orders/s", limit.orders_per_second)
            })
    });
    row(&mut out, "achieved / DB-bound limit", &|r| {
        r.fraction_of_db_limit.map_or("–".to_owned(), |fraction| {
            format!("{:.0}%", fraction * 100.0)
        })
    });
    row(&mut out, "POST→CONFIRMED p50 / p99 at half load", &|r| {
        r.half_load_step().map_or("–".to_owned(), |step| {
            format!(
                "{:.1} / {:.1} ms at {:.0}/s",
                step.confirmed_ms.p50,
                step.confirmed_ms.p99,
                step.offered_per_second.unwrap_or_default()
            )
        })
    });
    row(&mut out, "POST p99 at half load", &|r| {
        r.half_load_step().map_or("–".to_owned(), |step| {
            format!("{:.1} ms", step.post_ms.p99)
        })
    });
    row(
        &mut out,
        "broker produce→consume round trip p50 / p99",
        &|r| {
            r.broker
                .as_ref()
                .map_or("not measured".to_owned(), |broker| {
                    format!(
                        "{:.2} / {:.2} ms",
                        broker.round_trip_ms.p50, broker.round_trip_ms.p99
                    )
                })
        },
    );
    row(
        &mut out,
        "Postgres commit p50 / p99 (one connection)",
        &|r| {
            r.commit_floor
                .as_ref()
                .map_or("not measured".to_owned(), |floor| {
                    format!("{:.2} / {:.2} ms", floor.commit_ms.p50, floor.commit_ms.p99)
                })
        },
    );
    row(
        &mut out,
        "latency floor (3 broker round trips + 4 commits)",
        &|r| {
            r.latency_floor_ms()
                .map_or("not measured".to_owned(), |floor| format!("{floor:.1} ms"))
        },
    );
    row(
        &mut out,
        "CPU per order at half load, all processes",
        &|r| {
            r.half_load_step()
                .and_then(Report::total_cpu_ms)
                .map_or("not measured".to_owned(), |ms| format!("{ms:.1} ms"))
        },
    );
    row(&mut out, "overload: worst accepted p99, refused", &|r| {
        r.worst_overload_step().map_or("–".to_owned(), |step| {
            format!(
                "{:.1} ms ({}), {} refused",
                step.confirmed_ms.p99,
                step.label(),
                step.refused()
            )
        })
    });
    row(&mut out, "one-minute load average, start → end", &|r| {
        format!(
            "{:.2} → {:.2}",
            r.machine.load_at_start, r.machine.load_at_end
        )
    });
    for run in runs {
        let _ = writeln!(out, "\n### {}\n", run.report.kafka);
        out.push_str(&run.report.markdown(run.svg_name));
    }
    out
}

/// Replaces what lies between the markers of `path` with `section`.
pub fn replace_results_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(begin), Some(end)) = (text.find(MARKDOWN_BEGIN), text.find(MARKDOWN_END)) else {
        anyhow::bail!(
            "{} has no {MARKDOWN_BEGIN} … {MARKDOWN_END} section to fill",
            path.display()
        );
    };
    let updated = format!(
        "{}{MARKDOWN_BEGIN}\n{section}{}",
        &text[..begin],
        &text[end..]
    );
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(p99: f64, rss: f64) -> SoakWindow {
        let confirmed = Summary::of(&[std::time::Duration::from_secs_f64(p99 / 1000.0)]);
        SoakWindow {
            orders: 1,
            post_ms: confirmed,
            confirmed_ms: confirmed,
            rss_mb: BTreeMap::from([("order-service".to_owned(), rss)]),
            broker_cpu_percent: None,
        }
    }

    fn soak(p99s: &[f64]) -> Soak {
        Soak {
            offered_per_second: 1.0,
            window_seconds: 30.0,
            windows: p99s.iter().map(|&p99| window(p99, 10.0)).collect(),
        }
    }

    #[test]
    fn latency_that_keeps_growing_is_not_flat() {
        let (memory, latency) = soak(&[100.0, 120.0, 150.0, 180.0, 210.0, 240.0])
            .flatness()
            .unwrap();
        assert_eq!(memory, 1.0);
        assert!(latency > FLAT_LATENCY_FACTOR, "{latency}");
    }

    #[test]
    fn one_slow_window_at_the_end_does_not_decide_flatness() {
        let (_, latency) = soak(&[100.0, 110.0, 90.0, 100.0, 100.0, 100.0, 105.0, 95.0, 160.0])
            .flatness()
            .unwrap();
        assert!(latency <= FLAT_LATENCY_FACTOR, "{latency}");
    }

    #[test]
    fn the_results_section_is_replaced_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("BENCHMARKS.md");
        std::fs::write(
            &path,
            format!("# Title\n{MARKDOWN_BEGIN}\nold figures\n{MARKDOWN_END}\nafter\n"),
        )
        .unwrap();
        replace_results_section(&path, "new figures\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("# Title\n{MARKDOWN_BEGIN}\nnew figures\n{MARKDOWN_END}\nafter\n")
        );
    }
}
