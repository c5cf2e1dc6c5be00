//! Runs the service instances as child processes, the way Compose would.
//!
//! One task per instance spawns the process, forwards its output line by line
//! behind its name, and waits for it to exit. What an exit means depends on
//! the stack's [`Phase`]:
//! - while starting, any exit is fatal: it is reported and devstack stops
//!   everything (a service that cannot start will not start on retry either);
//! - once running, the instance is restarted after a capped, growing backoff
//!   (Compose's `restart: unless-stopped`);
//! - when shutting down, the instance gets SIGTERM and a grace period, then
//!   SIGKILL.
//!
//! Children run in their own process groups, so a Ctrl-C in the terminal
//! reaches devstack only and devstack decides the order of shutdown; and they
//! get SIGTERM from the kernel if devstack dies without cleaning up.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::services::Instance;

/// Delay before the first restart of a crashed instance.
const RESTART_BACKOFF_INITIAL: Duration = Duration::from_secs(1);

/// The backoff doubles per consecutive crash up to this cap, so a service that
/// keeps crashing (say, its database is down) neither spins nor goes silent.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A run at least this long counts as healthy: the next crash restarts after
/// [`RESTART_BACKOFF_INITIAL`] again.
const RESTART_BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

/// How long an instance may take to exit after SIGTERM (draining consumers,
/// committing offsets) before it gets SIGKILL: longer than the services' own
/// bound (`SHUTDOWN_TIMEOUT_MS`, 15 s by default), so they always get to say
/// what they abandoned.
const STOP_GRACE_PERIOD: Duration = Duration::from_secs(20);

/// How long to wait, after an instance exited, for its last output lines (a
/// grandchild holding the pipe could otherwise keep us waiting forever).
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Separates the padded instance name from the instance's own output.
const PREFIX_SEPARATOR: &str = " | ";

/// Where the stack is in its life; decides what an instance exit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for every instance to become healthy: exits are fatal.
    Starting,
    /// Up: exits are restarted.
    Running,
    /// Stopping: instances are terminated and not restarted.
    ShuttingDown,
}

/// Why the stack could not start.
#[derive(Debug)]
pub struct StartupFailure {
    /// The instance that failed.
    pub instance: String,
    /// What happened: its exit status or the spawn error.
    pub reason: String,
}

impl std::fmt::Display for StartupFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} during start-up; see its output above",
            self.instance, self.reason
        )
    }
}

impl std::error::Error for StartupFailure {}

/// What one instance needs to be (re)started.
#[derive(Debug, Clone)]
struct Launch {
    /// Instance name, for log prefixes and messages.
    name: String,
    /// The service executable.
    program: PathBuf,
    /// Its environment on top of ours: `PORT`, `DATABASE_URL`, ...
    env: BTreeMap<String, String>,
    /// Width the name is padded to, so every instance's output lines up.
    prefix_width: usize,
    /// Where its current pid is recorded.
    pids: Pids,
}

/// Instance name → pid of its current process.
type Pids = Arc<Mutex<BTreeMap<String, u32>>>;

/// Owns the instance tasks.
pub struct Supervisor {
    /// Broadcasts the phase to every instance task.
    phase: watch::Sender<Phase>,
    /// Start-up failures reported by instance tasks.
    failures: mpsc::UnboundedReceiver<StartupFailure>,
    /// One per instance; they finish once their process is gone for good.
    tasks: Vec<JoinHandle<()>>,
    /// The instances' current pids (for the benchmark's memory figures).
    pids: Pids,
}

impl Supervisor {
    /// Spawns every instance of `instances`: `programs[instance.service]` with
    /// `common_env` plus its own environment and `PORT`.
    pub fn start(
        instances: &[Instance],
        programs: &BTreeMap<&'static str, PathBuf>,
        common_env: &BTreeMap<String, String>,
    ) -> Self {
        let (phase, phase_rx) = watch::channel(Phase::Starting);
        let (failure_tx, failures) = mpsc::unbounded_channel();
        let pids = Pids::default();
        let prefix_width = instances
            .iter()
            .map(|instance| instance.name.len())
            .max()
            .unwrap_or_default();
        let tasks = instances
            .iter()
            .map(|instance| {
                let mut env = common_env.clone();
                env.extend(instance.env.clone());
                env.insert("PORT".to_owned(), instance.port.to_string());
                let launch = Launch {
                    name: instance.name.clone(),
                    program: programs[instance.service].clone(),
                    env,
                    prefix_width,
                    pids: pids.clone(),
                };
                tokio::spawn(supervise(launch, phase_rx.clone(), failure_tx.clone()))
            })
            .collect();
        Self {
            phase,
            failures,
            tasks,
            pids,
        }
    }

    /// Instance name → pid of its running process.
    pub fn pids(&self) -> BTreeMap<String, u32> {
        self.pids
            .lock()
            .expect("the pid map is never poisoned")
            .clone()
    }

    /// Resolves when an instance fails during start-up; never otherwise.
    pub async fn startup_failure(&mut self) -> StartupFailure {
        match self.failures.recv().await {
            Some(failure) => failure,
            None => std::future::pending().await,
        }
    }

    /// From now on, crashed instances are restarted.
    pub fn mark_running(&self) {
        self.phase.send_replace(Phase::Running);
    }

    /// Terminates every instance (SIGTERM, then SIGKILL after the grace
    /// period) and waits until all are gone.
    pub async fn shut_down(self) {
        self.phase.send_replace(Phase::ShuttingDown);
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::warn!(%error, "an instance task failed");
            }
        }
    }
}

/// The life of one instance: spawn, watch, restart or stop.
async fn supervise(
    launch: Launch,
    mut phase: watch::Receiver<Phase>,
    failures: mpsc::UnboundedSender<StartupFailure>,
) {
    let mut backoff = RESTART_BACKOFF_INITIAL;
    loop {
        let started_at = Instant::now();
        let reason = match spawn(&launch) {
            Ok((mut child, output)) => {
                tokio::select! {
                    status = child.wait() => {
                        drain(output).await;
                        describe_exit(status)
                    }
                    _ = shutting_down(&mut phase) => {
                        terminate(&launch.name, &mut child).await;
                        drain(output).await;
                        return;
                    }
                }
            }
            Err(error) => format!("could not be started ({error})"),
        };

        let current = *phase.borrow();
        match current {
            Phase::Starting => {
                let _ = failures.send(StartupFailure {
                    instance: launch.name.clone(),
                    reason,
                });
                return;
            }
            Phase::ShuttingDown => return,
            Phase::Running => {}
        }
        if started_at.elapsed() >= RESTART_BACKOFF_RESET_AFTER {
            backoff = RESTART_BACKOFF_INITIAL;
        }
        tracing::warn!(
            "{} {reason}; restarting in {}s",
            launch.name,
            backoff.as_secs_f32()
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutting_down(&mut phase) => return,
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        tracing::info!("restarting {}", launch.name);
    }
}

/// Resolves once the stack is shutting down. (The guard `wait_for` returns
/// must not live across an `.await`, hence this wrapper.)
async fn shutting_down(phase: &mut watch::Receiver<Phase>) {
    // An error means the supervisor is gone, which also means stop.
    let _ = phase.wait_for(|phase| *phase == Phase::ShuttingDown).await;
}

/// "exited with exit status: 1", "exited with signal: 9 (SIGKILL)", ...
fn describe_exit(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => format!("exited ({status})"),
        Err(error) => format!("could not be waited for ({error})"),
    }
}

/// Output forwarders of one process.
type OutputTasks = [JoinHandle<()>; 2];

/// Makes the kernel send `signal` to the child `command` starts when devstack
/// dies. The signal follows the spawning *thread*; devstack's runtime is
/// single-threaded, so that is the main thread, which lives as long as
/// devstack. Spawning fails if devstack died between fork and prctl.
pub fn die_with_devstack(command: &mut Command, signal: libc::c_int) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (prctl, getppid), allocating nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Starts the process with piped output, in its own process group, set to
/// receive SIGTERM if devstack dies.
fn spawn(launch: &Launch) -> std::io::Result<(Child, OutputTasks)> {
    let mut command = Command::new(&launch.program);
    command
        .envs(&launch.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Not in devstack's group: the terminal's Ctrl-C must not reach the
        // services directly (devstack stops them, then the database).
        .process_group(0)
        // If this future is dropped without terminate(), do not leak it.
        .kill_on_drop(true);
    // Being in our own process group, nothing else would stop the service if
    // devstack were SIGKILLed.
    die_with_devstack(&mut command, libc::SIGTERM);
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let prefix = format!(
        "{:width$}{PREFIX_SEPARATOR}",
        launch.name,
        width = launch.prefix_width
    );
    let output = [
        tokio::spawn(forward(stdout, prefix.clone(), Stream::Stdout, |_| {})),
        tokio::spawn(forward(stderr, prefix, Stream::Stderr, |_| {})),
    ];
    tracing::debug!(instance = launch.name, pid = child.id(), "spawned");
    if let Some(pid) = child.id() {
        launch
            .pids
            .lock()
            .expect("the pid map is never poisoned")
            .insert(launch.name.clone(), pid);
    }
    Ok((child, output))
}

/// Which of our streams a child stream goes to.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Copies `source` to our stdout or stderr line by line, each line behind
/// `prefix`, and hands each line (without its newline) to `seen`. Bytes that
/// are not UTF-8 are shown lossily rather than dropped.
pub async fn forward(
    source: impl AsyncRead + Unpin,
    prefix: String,
    stream: Stream,
    mut seen: impl FnMut(&str),
) {
    let mut reader = BufReader::new(source);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                // A closed terminal or pipe is not worth crashing over.
                let _ = match stream {
                    Stream::Stdout => writeln!(std::io::stdout().lock(), "{prefix}{text}"),
                    Stream::Stderr => writeln!(std::io::stderr().lock(), "{prefix}{text}"),
                };
                seen(text);
            }
        }
    }
}

/// Waits briefly for the forwarders to print the process's last lines.
async fn drain(output: OutputTasks) {
    for task in output {
        let _ = tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, task).await;
    }
}

/// SIGTERM to the instance's process group, SIGKILL after the grace period.
async fn terminate(name: &str, child: &mut Child) {
    let Some(pid) = child.id() else {
        return; // Already reaped.
    };
    // Negative pid: the whole group, in case the service runs helpers.
    let group = -(pid as libc::pid_t);
    // SAFETY: kill has no memory-safety preconditions. The group id is our
    // unreaped child's pid, so it cannot have been recycled.
    unsafe { libc::kill(group, libc::SIGTERM) };
    match tokio::time::timeout(STOP_GRACE_PERIOD, child.wait()).await {
        Ok(status) => tracing::info!("{name} {}", describe_exit(status)),
        Err(_) => {
            tracing::warn!(
                "{name} did not stop within {}s of SIGTERM; killing it",
                STOP_GRACE_PERIOD.as_secs()
            );
            // SAFETY: as above; the child is still not reaped.
            unsafe { libc::kill(group, libc::SIGKILL) };
            let _ = child.wait().await;
        }
    }
}
