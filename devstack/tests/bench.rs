//! A short smoke run of `devstack bench`: a few seconds of tiny load against a
//! stack it starts itself. Proves the tool works end to end — every accepted
//! order reaches a terminal status, and the table, JSON, SVG and Markdown are
//! produced, with auth off and on. No timing is asserted: the figures depend on the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

/// Generous: start-up, a couple of one-second steps, draining, the limit.
const DEADLINE: Duration = Duration::from_secs(300);
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What one `devstack bench` run left behind.
struct Run {
    /// Holds the reports and the state directory.
    dir: tempfile::TempDir,
    /// The Markdown file the run filled.
    markdown: PathBuf,
    /// What it printed.
    table: String,
}

/// Runs `devstack [global] bench <tiny load> [bench_args]` on ports of its
/// own, with its files in a temporary directory, and checks that it exited 0.
fn run_bench(global: &[&str], bench_args: &[&str]) -> Run {
    // One run at a time: they share the ports below, and each would slow
    // the other's stack down.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let exe = Path::new(env!("CARGO_BIN_EXE_devstack"));
    let dir = common::state_dir();
    let markdown = dir.path().join("BENCHMARKS.md");
    std::fs::write(
        &markdown,
        "# Figures\n<!-- bench:results:begin -->\nPLACEHOLDER\n<!-- bench:results:end -->\nafter\n",
    )
    .unwrap();
    let (json, svg) = (dir.path().join("bench.json"), dir.path().join("bench.svg"));
    // Ports away from a developer's devstack, the other devstack test (20000 up)
    // and the ephemeral range (32768 up).
    let offset = 10_000 + (std::process::id() % 1_000) as u16 * 10;

    let mut child = Command::new(exe)
        .args(["--dir", dir.path().join("state").to_str().unwrap()])
        .args(["--port-offset", &offset.to_string()])
        .args(["--pg-port", &local_infra::free_port().unwrap().to_string()])
        .args(global)
        .arg("bench")
        .args(["--warm-up-secs", "0", "--step-secs", "1"])
        .args(["--clients", "2", "--rates", "0.5"])
        .args(["--limit-secs", "1", "--limit-placers", "2"])
        .args(["--products", "3", "--customers", "2"])
        .args(["--json", json.to_str().unwrap()])
        .args(["--svg", svg.to_str().unwrap()])
        .args(["--markdown", markdown.to_str().unwrap()])
        .args(bench_args)
        // Use the binaries cargo built for this test run; no nested build.
        .env_remove("CARGO")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Read concurrently, so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut table = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut table).unwrap();
        table
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            child.kill().unwrap();
            panic!("devstack bench did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let table = reader.join().unwrap();
    assert!(
        status.success(),
        "devstack bench failed ({status}):\n{table}"
    );
    Run {
        dir,
        markdown,
        table,
    }
}

/// Every accepted order of every step confirmed, and every part measured.
fn assert_complete(report: &Path) {
    let report: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "one closed and one open step");
    for step in steps {
        let orders = step["orders"].as_u64().unwrap();
        assert!(orders > 0, "{step}");
        assert_eq!(
            step["statuses"]["CONFIRMED"].as_u64(),
            Some(orders),
            "every order confirmed: {step}"
        );
        assert_eq!(step["confirmedMs"]["count"].as_u64(), Some(orders));
        // What each order cost, for every process of the stack.
        let cpu = step["cpuMsPerOrder"].as_object().unwrap();
        for process in [
            "order-service",
            "inventory-service",
            "payment-service",
            "notification-service",
            "Postgres",
            "broker",
            "load generator",
        ] {
            assert!(cpu[process].as_f64().unwrap() >= 0.0, "{process}: {step}");
        }
        let total: f64 = cpu.values().map(|ms| ms.as_f64().unwrap()).sum();
        assert!(total > 0.0, "{step}");
    }
    assert!(report["dbLimit"]["orders"].as_u64().unwrap() > 0);
    assert!(report["commitFloor"]["commitMs"]["count"].as_u64().unwrap() > 0);
    assert!(report["commitFloor"]["commitsPerSecond"].as_f64().unwrap() > 0.0);
    assert!(report["broker"]["roundTripMs"]["count"].as_u64().unwrap() > 0);
    let memory = report["memory"].as_array().unwrap();
    assert_eq!(memory.len(), 4, "every service's memory: {memory:?}");
    assert!(memory.iter().all(|m| m["idleMb"].as_f64().unwrap() > 0.0));
}

/// The section between the markers was replaced, and the rest kept.
fn filled_markdown(run: &Run) -> String {
    let markdown = std::fs::read_to_string(&run.markdown).unwrap();
    assert!(!markdown.contains("PLACEHOLDER"), "{markdown}");
    assert!(
        markdown.contains("| step |") && markdown.ends_with("<!-- bench:results:end -->\nafter\n"),
        "{markdown}"
    );
    markdown
}

#[test]
fn a_tiny_bench_run_terminates_every_order_and_writes_its_reports() {
    let run = run_bench(&[], &[]);
    assert!(run.table.contains("AUTH_MODE=off"), "{}", run.table);
    assert!(run.table.contains("DB-bound limit"), "{}", run.table);
    assert!(run.table.contains("→CONFIRMED p50"), "{}", run.table);
    assert_complete(&run.dir.path().join("bench.json"));
    assert!(std::fs::read_to_string(run.dir.path().join("bench.svg"))
        .unwrap()
        .contains("<svg"));
    filled_markdown(&run);
}

/// With `--auth` every service checks tokens; the load generator sends each
/// customer's own on their orders and the administrator's for the set-up, and
/// every order still ends CONFIRMED. The report says auth was on.
#[test]
fn a_bench_run_with_auth_on_sends_each_customer_their_own_token() {
    let run = run_bench(&["--auth"], &[]);
    let report = run.dir.path().join("bench.json");
    assert_complete(&report);
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let target = report["target"].as_str().unwrap();
    assert!(target.contains("AUTH_MODE=jwt"), "{target}");
}

/// Needs Java and Maven, so it runs in the real-broker pass only.
#[test]
fn one_invocation_benchmarks_both_brokers_side_by_side() {
    if local_infra::TestKafkaMode::from_env().unwrap() != local_infra::TestKafkaMode::Apache {
        eprintln!("skipped: runs with TEST_KAFKA=apache (it starts Apache Kafka)");
        return;
    }
    let run = run_bench(&[], &["--brokers", "embedded,apache"]);
    for broker in ["embedded", "apache"] {
        assert_complete(&run.dir.path().join(format!("bench-{broker}.json")));
        assert!(
            std::fs::read_to_string(run.dir.path().join(format!("bench-{broker}.svg")))
                .unwrap()
                .contains("<svg"),
            "{broker}'s plot"
        );
    }
    let markdown = filled_markdown(&run);
    let side_by_side = markdown
        .lines()
        .find(|line| line.starts_with("| measure | embedded"))
        .unwrap_or_else(|| panic!("no side-by-side table:\n{markdown}"));
    assert!(side_by_side.contains("Apache Kafka 4."), "{side_by_side}");
    assert!(markdown.contains("(bench-embedded.svg)") && markdown.contains("(bench-apache.svg)"));
}
