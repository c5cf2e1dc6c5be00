//! Nothing devstack starts outlives it, and the embedded broker cannot take it
//! down: SIGKILL devstack and its services, broker and PostgreSQL are gone
//! within the services' shutdown bound; kill the broker's process instead and
//! devstack says so in one line, stops the rest and exits non-zero.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{children_named, wait_until, Process};

mod common;

/// How long the stack may take to come up.
const STARTUP_DEADLINE: Duration = Duration::from_secs(120);

/// The services' shutdown bound in these tests (`SHUTDOWN_TIMEOUT_MS`), short
/// so the tests are quick; the services honour it whatever the broker's state.
const SERVICE_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Room on top of [`SERVICE_SHUTDOWN_TIMEOUT`] for the PostgreSQL watchdog's
/// one-second poll, a clean PostgreSQL stop and a busy machine.
const MARGIN: Duration = Duration::from_secs(20);

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// devstack's children besides the broker: the services and the console.
const SERVICES: [&str; 5] = [
    "order-service",
    "inventory-service",
    "payment-service",
    "notification-service",
    "console",
];

/// What devstack's one line about a dead broker starts with.
const BROKER_DIED_LINE: &str = "devstack: the embedded Kafka broker";

/// A devstack on the embedded broker in a temporary directory, with its
/// stderr collected line by line.
struct Devstack {
    child: Child,
    /// Keeps the state directory until the test ends.
    _dir: tempfile::TempDir,
    state: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Devstack {
    /// Starts it and waits until `stack.json` says it is up; `slot` keeps
    /// the ports of the tests in this file apart.
    fn start(slot: u16) -> Self {
        let exe = Path::new(env!("CARGO_BIN_EXE_devstack"));
        let dir = common::state_dir();
        let state = dir.path().join("state");
        // Services on 9081-17084: away from a developer's devstack (8081-8084),
        // bench.rs (18081 up), stack.rs (28081 up) and the ephemeral range.
        let offset = 1_000 + (std::process::id() % 800) as u16 * 10 + slot * 5;
        let mut child = Command::new(exe)
            .args(["--dir", state.to_str().unwrap()])
            .args(["--kafka", "embedded"])
            .args(["--port-offset", &offset.to_string()])
            .args(["--pg-port", &local_infra::free_port().unwrap().to_string()])
            // Use the binaries cargo built for this test run; no nested build.
            .env_remove("CARGO")
            .env("RUST_LOG", "warn")
            .env(
                "SHUTDOWN_TIMEOUT_MS",
                SERVICE_SHUTDOWN_TIMEOUT.as_millis().to_string(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        let devstack = Self {
            child,
            _dir: dir,
            state,
            stderr,
        };
        let stack_file = devstack.state.join("stack.json");
        wait_until("stack.json", STARTUP_DEADLINE, || {
            stack_file.exists().then_some(())
        });
        devstack
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every process of the stack: the services, the console, the broker,
    /// PostgreSQL.
    fn processes(&self) -> Vec<Process> {
        let mut processes: Vec<Process> = SERVICES
            .iter()
            .flat_map(|service| children_named(self.pid(), service))
            .collect();
        processes.push(self.broker());
        processes.push(self.postgres());
        processes
    }

    /// The embedded broker's child process (devstack's own executable).
    fn broker(&self) -> Process {
        let mut brokers = children_named(self.pid(), "devstack");
        assert_eq!(brokers.len(), 1, "one broker child: {brokers:?}");
        brokers.remove(0)
    }

    /// The postmaster, from its pid file in the state directory.
    fn postgres(&self) -> Process {
        let pid_file = self.state.join("pgdata").join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).expect("PostgreSQL runs");
        let pid = text.lines().next().unwrap().trim().parse().unwrap();
        Process::of(pid).expect("the postmaster exists")
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Devstack {
    fn drop(&mut self) {
        // A failed test must not leave the stack behind either.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until none of `processes` runs; panics naming the ones left.
fn assert_all_gone(processes: &[Process], deadline: Duration) {
    let started = Instant::now();
    loop {
        let alive: Vec<&Process> = processes.iter().filter(|p| p.is_alive()).collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < deadline,
            "still running {deadline:?} later: {alive:?}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[test]
fn sigkill_of_devstack_leaves_no_service_broker_or_postgres_running() {
    let mut devstack = Devstack::start(0);
    let processes = devstack.processes();
    assert_eq!(processes.len(), SERVICES.len() + 2, "{processes:?}");

    devstack.child.kill().unwrap(); // SIGKILL: no cleanup code of ours runs.
    devstack.child.wait().unwrap(); // Reaped, or kill -0 would still see it.

    assert_all_gone(&processes, SERVICE_SHUTDOWN_TIMEOUT + MARGIN);
    // The watchdog stopped PostgreSQL cleanly: a crash would leave the file.
    assert!(!devstack
        .state
        .join("pgdata")
        .join("postmaster.pid")
        .exists());
}

#[test]
fn a_dying_broker_is_reported_in_one_line_and_the_stack_stops() {
    // An abort dumps core where cores are enabled; not into the checkout.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit only reads the struct; children inherit the limit.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let mut devstack = Devstack::start(1);
    let processes = devstack.processes();
    let broker = devstack.broker();

    // What the mock's failed assertion does: abort().
    // SAFETY: signalling our child's child, found (not recycled) just now.
    unsafe { libc::kill(broker.pid as libc::pid_t, libc::SIGABRT) };

    let status = wait_until(
        "devstack to exit",
        SERVICE_SHUTDOWN_TIMEOUT + MARGIN,
        || devstack.child.try_wait().unwrap(),
    );
    assert!(!status.success(), "devstack exited with {status}");
    assert_all_gone(&processes, MARGIN);
    // The stderr reader has the last lines once the pipe closed.
    let reports = wait_until("devstack's stderr to close", MARGIN, || {
        let stderr = devstack.stderr();
        let reports: Vec<String> = stderr
            .iter()
            .filter(|line| line.starts_with("devstack: "))
            .cloned()
            .collect();
        (!reports.is_empty()).then_some(reports)
    });
    assert_eq!(reports.len(), 1, "one line about the failure: {reports:?}");
    assert!(
        reports[0].starts_with(BROKER_DIED_LINE) && reports[0].contains("SIGABRT"),
        "{}",
        reports[0]
    );
    assert!(!devstack.state.join("stack.json").exists());
}
