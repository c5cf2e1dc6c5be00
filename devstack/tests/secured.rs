//! devstack locked down: `--kafka apache --kafka-sasl --auth` runs the saga
//! with every program logged in to Kafka as itself (TLS, SCRAM-SHA-512, the
//! topic table's ACLs) and every request carrying a token. The console reads
//! the saga with its own login, the dead-letter tools use the kept admin
//! login, and a second start on the same directory finds the same logins.
//!
//! Needs a JDK and Maven, so it runs in the real-broker pass only
//! (`TEST_KAFKA=apache`); elsewhere it says it was skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use common::wait_until;

mod common;

/// Start-up of a JVM broker and the stack, or an order's saga.
const DEADLINE: Duration = Duration::from_secs(180);

/// A running `devstack` on a state directory; SIGTERM on drop.
struct Devstack {
    child: Option<Child>,
    state: PathBuf,
}

impl Devstack {
    /// Starts the locked-down stack on `state` and waits for `stack.json`.
    fn start(state: &Path, offset: u16, pg_port: u16) -> (Devstack, Value) {
        let child = Command::new(exe())
            .args(["--dir", state.to_str().unwrap()])
            .args(["--kafka", "apache", "--kafka-sasl", "--auth"])
            .args(["--port-offset", &offset.to_string()])
            .args(["--pg-port", &pg_port.to_string()])
            .env_remove("CARGO")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let devstack = Devstack {
            child: Some(child),
            state: state.to_path_buf(),
        };
        let stack_file = state.join("stack.json");
        let stack = wait_until("stack.json", DEADLINE, || {
            serde_json::from_str(&std::fs::read_to_string(&stack_file).ok()?).ok()
        });
        (devstack, stack)
    }

    /// `devstack --dir STATE ARGS...`, which must succeed; its stdout.
    fn tool(&self, args: &[&str]) -> String {
        let output = Command::new(exe())
            .args(["--dir", self.state.to_str().unwrap()])
            .args(args)
            .env_remove("CARGO")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "devstack {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// SIGTERM, and the exit status must be success.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = child.wait().unwrap();
        assert!(status.success(), "devstack exited with {status}");
    }
}

impl Drop for Devstack {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_devstack"))
}

/// Places `order_id` for `user` with their token and waits until it is
/// CONFIRMED, reading it with the same token.
fn confirmed_order(http: &reqwest::blocking::Client, base: &str, token: &str, order_id: &str) {
    let created = http
        .post(format!("{base}/api/orders"))
        .bearer_auth(token)
        .json(&json!({"orderId": order_id, "items": [{"sku": "widget", "quantity": 1}]}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().unwrap());
    wait_until(&format!("order {order_id} confirmed"), DEADLINE, || {
        let order: Value = http
            .get(format!("{base}/api/orders/{order_id}"))
            .bearer_auth(token)
            .send()
            .ok()?
            .json()
            .ok()?;
        (order["status"] == "CONFIRMED").then_some(())
    });
}

#[test]
fn the_saga_runs_with_kafka_logins_and_acls_and_tokens_and_the_logins_survive_a_restart() {
    if std::env::var("TEST_KAFKA").as_deref() != Ok("apache") {
        eprintln!("skipped: runs with TEST_KAFKA=apache (it starts Apache Kafka in sasl_ssl mode)");
        return;
    }
    let dir = common::state_dir();
    let state = dir.path().join("state");
    // Ports away from a developer's devstack, the bench test's (10000 up) and
    // the kernel's ephemeral range (32768 up); this binary runs alone.
    let offset = 20_000 + (std::process::id() % 300) as u16 * 10;
    let pg_port = local_infra::free_port().unwrap();
    let http = reqwest::blocking::Client::new();

    let (devstack, stack) = Devstack::start(&state, offset, pg_port);
    assert_eq!(stack["kafkaMode"], "apache");
    assert_eq!(stack["kafkaSecured"], true);
    let order_base = stack["services"]["order-service"]
        .as_str()
        .unwrap()
        .to_owned();
    let console_base = stack["services"]["console"].as_str().unwrap().to_owned();
    let alice = devstack
        .tool(&["token", "--user", "alice"])
        .trim()
        .to_owned();
    let admin = devstack
        .tool(&["token", "--user", "ops", "--admin"])
        .trim()
        .to_owned();

    confirmed_order(&http, &order_base, &alice, "locked-down-1");

    // The console's own login reads every topic: it draws the whole saga.
    let saga: Value = wait_until("the console's saga of the order", DEADLINE, || {
        let saga: Value = http
            .get(format!("{console_base}/api/orders/locked-down-1/saga"))
            .bearer_auth(&admin)
            .send()
            .ok()?
            .json()
            .ok()?;
        (saga["steps"].as_array()?.len() == 3).then_some(saga)
    });
    assert_eq!(saga["status"], "CONFIRMED", "{saga}");

    // devstack's tools log in as the admin the cluster keeps.
    let listed = devstack.tool(&["dlq", "list", "--topic", "order-created"]);
    assert!(listed.contains("0 dead letter(s)"), "{listed}");
    devstack.stop();

    // The same directory again: the kept logins still open the broker.
    let (devstack, stack) = Devstack::start(&state, offset, pg_port);
    assert_eq!(stack["kafkaSecured"], true);
    let alice = devstack
        .tool(&["token", "--user", "alice"])
        .trim()
        .to_owned();
    confirmed_order(&http, &order_base, &alice, "locked-down-2");
    devstack.stop();
}
