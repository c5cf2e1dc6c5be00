//! The real service binaries as child processes, for tests that kill them.
//!
//! The binaries are the ones cargo built next to the test executable
//! (`target/<profile>/`); every service package has an integration test, so
//! `cargo test` builds them before any test runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::DEADLINE;

/// How often a stopping process is checked on.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// Where cargo put the workspace's binaries for this build.
pub fn binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// One service binary running as a child process.
pub struct ServiceProcess {
    pub name: &'static str,
    pub port: u16,
    env: BTreeMap<String, String>,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Starts `name` with `env` plus `PORT` and `HOST`.
    pub fn start(name: &'static str, env: &BTreeMap<String, String>) -> ServiceProcess {
        let mut process = ServiceProcess {
            name,
            port: local_infra::free_port().expect("a free port"),
            env: env.clone(),
            child: None,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let child = Command::new(binary(self.name))
            .envs(&self.env)
            .env("PORT", self.port.to_string())
            .env("HOST", "127.0.0.1")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", self.name));
        self.child = Some(child);
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same binary again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGTERM, then waits for the exit (failing the test after the deadline).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the process is running");
        // SAFETY: kill(2) on our own child's pid has no memory-safety concerns.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the child") {
                return status;
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("{} did not exit after SIGTERM", self.name);
            }
            std::thread::sleep(EXIT_POLL);
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The four service binaries against a fresh database and broker.
pub struct ProcessStack {
    pub order: ServiceProcess,
    pub inventory: ServiceProcess,
    pub payment: ServiceProcess,
    pub notification: ServiceProcess,
    pub api: crate::Api,
    pub db: sqlx::PgPool,
    /// Kept last so the broker outlives the processes using it.
    pub infra: crate::Infra,
}

impl ProcessStack {
    pub async fn start() -> ProcessStack {
        let infra = crate::Infra::start(false)
            .await
            .expect("test infrastructure");
        let order = ServiceProcess::start("order-service", &infra.env("order-service"));
        let inventory = ServiceProcess::start("inventory-service", &infra.env("inventory-service"));
        let payment = ServiceProcess::start("payment-service", &infra.env("payment-service"));
        let notification =
            ServiceProcess::start("notification-service", &infra.env("notification-service"));
        let api = crate::Api {
            http: reqwest::Client::new(),
            order_base: order.base_url(),
            inventory_base: inventory.base_url(),
            payment_base: payment.base_url(),
            notification_base: notification.base_url(),
        };
        let stack = ProcessStack {
            db: sqlx::PgPool::connect(&infra.database_url)
                .await
                .expect("connecting to the test database"),
            order,
            inventory,
            payment,
            notification,
            api,
            infra,
        };
        for process in stack.all() {
            stack
                .api
                .wait_for_health(&process.base_url(), reqwest::StatusCode::OK)
                .await;
        }
        stack
    }

    pub fn all(&self) -> [&ServiceProcess; 4] {
        [
            &self.order,
            &self.inventory,
            &self.payment,
            &self.notification,
        ]
    }

    pub fn all_mut(&mut self) -> [&mut ServiceProcess; 4] {
        [
            &mut self.order,
            &mut self.inventory,
            &mut self.payment,
            &mut self.notification,
        ]
    }
}

impl std::ops::Deref for ProcessStack {
    type Target = crate::Api;
    fn deref(&self) -> &crate::Api {
        &self.api
    }
}
