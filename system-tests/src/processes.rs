//! The real service binaries as child processes, for tests that kill them
//! or signal them.
//!
//! The binaries are the ones cargo built next to the test executable
//! (`target/<profile>/`); every service package has an integration test, so
//! `cargo test` builds them before any test runs.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
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

/// What a process wrote to stdout and stderr, collected as it arrives.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<String>>);

impl Output {
    /// Everything written so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Appends what `pipe` yields until it closes, on a thread of its own.
    fn collect(&self, mut pipe: impl Read + Send + 'static) -> JoinHandle<()> {
        let output = self.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(read) = pipe.read(&mut chunk) {
                if read == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&chunk[..read]);
                output
                    .0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&text);
            }
        })
    }
}

/// How a process ended after a signal.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    /// From the signal to the exit, as seen by polling.
    pub after: Duration,
}

/// One service binary running as a child process.
pub struct ServiceProcess {
    pub name: &'static str,
    pub port: u16,
    env: BTreeMap<String, String>,
    child: Option<Child>,
    /// Captured stdout and stderr, for processes started with
    /// [`ServiceProcess::start_capturing`]; otherwise stdout is discarded
    /// and stderr goes to the test's.
    output: Option<Output>,
    /// The threads reading the captured pipes; they end when the process does.
    readers: Vec<JoinHandle<()>>,
    /// When the last signal was sent.
    signalled: Option<Instant>,
    /// The test host it runs on ([`ServiceProcess::start_on`]); `None`:
    /// loopback.
    host: Option<local_infra::netns::Host>,
}

impl ServiceProcess {
    /// Starts `name` with `env` plus `PORT` and `HOST`.
    pub fn start(name: &'static str, env: &BTreeMap<String, String>) -> ServiceProcess {
        Self::start_with(name, env, None)
    }

    /// [`ServiceProcess::start`], with its stdout and stderr (the logs)
    /// captured for [`ServiceProcess::output`]. `RUST_LOG` in `env` sets what
    /// is logged.
    pub fn start_capturing(name: &'static str, env: &BTreeMap<String, String>) -> ServiceProcess {
        Self::start_with(name, env, Some(Output::default()))
    }

    /// Starts `name` on `host` with `env`, which names its `PORT`; it
    /// listens on every address of the host.
    pub fn start_on(
        host: &local_infra::netns::Host,
        name: &'static str,
        env: &BTreeMap<String, String>,
    ) -> ServiceProcess {
        let port = env
            .get("PORT")
            .and_then(|port| port.parse().ok())
            .expect("a service on a test host is given its PORT");
        let mut process = ServiceProcess {
            name,
            port,
            env: env.clone(),
            child: None,
            output: None,
            readers: Vec::new(),
            signalled: None,
            host: Some(host.clone()),
        };
        process.spawn();
        process
    }

    fn start_with(
        name: &'static str,
        env: &BTreeMap<String, String>,
        output: Option<Output>,
    ) -> ServiceProcess {
        let mut process = ServiceProcess {
            name,
            port: local_infra::free_port().expect("a free port"),
            env: env.clone(),
            child: None,
            output,
            readers: Vec::new(),
            signalled: None,
            host: None,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let mut command = Command::new(binary(self.name));
        command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(&self.env)
            .env("PORT", self.port.to_string())
            .env("HOST", self.listen_address());
        if let Some(host) = &self.host {
            host.enter(&mut command);
        }
        match &self.output {
            Some(_) => command.stdout(Stdio::piped()).stderr(Stdio::piped()),
            None => command.stdout(Stdio::null()).stderr(Stdio::inherit()),
        };
        let mut child = local_infra::spawn::spawn(&mut command)
            .unwrap_or_else(|err| panic!("starting {}: {err}", self.name));
        if let Some(output) = &self.output {
            let stdout = child.stdout.take().expect("piped stdout");
            let stderr = child.stderr.take().expect("piped stderr");
            self.readers.push(output.collect(stdout));
            self.readers.push(output.collect(stderr));
        }
        self.child = Some(child);
    }

    /// What the process (and its earlier runs) wrote, if captured; complete
    /// once it has exited.
    pub fn output(&mut self) -> String {
        if self.child.is_none() {
            // The pipes closed with the process: read to their end.
            for reader in self.readers.drain(..) {
                let _ = reader.join();
            }
        }
        self.output.as_ref().map(Output::text).unwrap_or_default()
    }

    /// Sends SIGTERM (a second call sends another), without waiting.
    pub fn send_sigterm(&mut self) {
        let child = self.child.as_ref().expect("the process is running");
        // SAFETY: kill(2) on our own child's pid has no memory-safety concerns.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.signalled = Some(Instant::now());
    }

    /// Polls for the exit that the last signal asked for; `None` if the
    /// process is still running `bound` after that signal (it is then
    /// killed, so the test can go on to report it).
    pub fn wait_for_exit(&mut self, bound: Duration) -> Option<Exited> {
        let signalled = self.signalled.expect("a signal was sent");
        let mut child = self.child.take().expect("the process is running");
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the child") {
                return Some(Exited {
                    status,
                    after: signalled.elapsed(),
                });
            }
            if signalled.elapsed() > bound {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(EXIT_POLL);
        }
    }

    /// Whether the process has not exited (it is reaped if it has).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("checking on the child").is_none(),
            None => false,
        }
    }

    pub fn base_url(&self) -> String {
        let address = match &self.host {
            Some(host) => host.address().to_string(),
            None => "127.0.0.1".to_owned(),
        };
        format!("http://{address}:{}", self.port)
    }

    /// What it binds: loopback, or every address of its test host.
    fn listen_address(&self) -> &'static str {
        if self.host.is_some() {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        }
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
        self.send_sigterm();
        match self.wait_for_exit(DEADLINE) {
            Some(exited) => exited.status,
            None => panic!("{} did not exit after SIGTERM", self.name),
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
    /// What each service was started with ([`crate::StackConfigs::env`] for more instances).
    pub configs: crate::StackConfigs,
    /// Kept last so the broker outlives the processes using it.
    pub infra: crate::Infra,
}

impl ProcessStack {
    pub async fn start() -> ProcessStack {
        let infra = crate::Infra::start(false)
            .await
            .expect("test infrastructure");
        // The same configuration as an in-process stack's, as environment variables.
        let configs = crate::StackConfigs::new(&infra, &crate::StackOptions::default());
        let order = ServiceProcess::start("order-service", &configs.env("order-service"));
        let inventory =
            ServiceProcess::start("inventory-service", &configs.env("inventory-service"));
        let payment = ServiceProcess::start("payment-service", &configs.env("payment-service"));
        let notification =
            ServiceProcess::start("notification-service", &configs.env("notification-service"));
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
            configs,
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
