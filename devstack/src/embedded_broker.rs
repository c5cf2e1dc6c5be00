//! The embedded broker (librdkafka's mock cluster) in a child process of its
//! own, so that the mock failing (it can abort on a C assertion, e.g. when a
//! foreign client joins a group with another assignment protocol) takes down
//! only the broker, never devstack: devstack notices, says so in one line and
//! stops the rest of the stack cleanly.
//!
//! Both halves live here:
//! - [`serve`] is the child, `devstack embedded-broker` (a hidden command):
//!   it starts the cluster, creates the topics, prints
//!   [`BOOTSTRAP_LINE_PREFIX`] and the bootstrap address on stdout, and lives
//!   until its stdin closes;
//! - [`EmbeddedBroker`] is devstack's handle on it: spawns it from devstack's
//!   own executable, forwards its stderr behind `kafka | ` while keeping the
//!   last lines, and reports its death ([`BrokerDied`]).
//!
//! The child never outlives devstack: it gets SIGKILL from the kernel when
//! devstack's spawning thread dies (PR_SET_PDEATHSIG; devstack's runtime is
//! single-threaded, so that is the main thread), and it exits by itself when
//! its stdin, held only by devstack, reaches end of file.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use local_infra::EmbeddedKafka;
use shared_events::topics::{Topics, DEFAULT_PARTITIONS};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::cli::EmbeddedBrokerArgs;
use crate::supervisor::{self, Stream};

/// The hidden command that runs the child (see [`crate::cli::Command`]).
pub const SUBCOMMAND: &str = "embedded-broker";

/// Brokers in the embedded cluster: one is enough locally, and fault-injection
/// tests that need more build their own.
const EMBEDDED_BROKERS: i32 = 1;

/// With several instances of one service, their consumers must join their
/// group's first rebalance together: on the embedded broker a member joining a
/// formed group stalls it for the clients' session timeout (see
/// `EmbeddedKafka::set_group_initial_rebalance_delay`). Instances start
/// together but initialise at different speeds; this window, Kafka's own
/// default, covers the spread.
const SCALED_GROUP_INITIAL_REBALANCE_DELAY: Duration = Duration::from_secs(3);

/// Starts the child's one stdout line; the bootstrap address follows.
const BOOTSTRAP_LINE_PREFIX: &str = "bootstrap ";

/// How long the child may take to start the cluster and create the topics.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the child may take to exit after its stdin closed before it gets
/// SIGKILL (the mock has nothing to flush).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How many of the child's last stderr lines its death report quotes.
const LAST_WORDS_LINES: usize = 3;

/// How long to wait, after the child exited, for its last stderr lines.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Prefix of the child's forwarded stderr lines, like a service's name.
const OUTPUT_PREFIX: &str = "kafka | ";

/// The child: runs the mock cluster with the stack's topics until stdin
/// closes (devstack stopping or gone).
pub async fn serve(args: &EmbeddedBrokerArgs) -> anyhow::Result<()> {
    let kafka = EmbeddedKafka::start(EMBEDDED_BROKERS).context("starting the embedded Kafka")?;
    if args.scaled_out {
        kafka.set_group_initial_rebalance_delay(SCALED_GROUP_INITIAL_REBALANCE_DELAY)?;
    }
    for topic in Topics::default().all_with_dead_letters() {
        kafka.create_topic(&topic, DEFAULT_PARTITIONS)?;
    }
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "{BOOTSTRAP_LINE_PREFIX}{}",
            kafka.bootstrap_servers()
        )
        .and_then(|()| stdout.flush())
        .context("telling devstack the bootstrap address")?;
    }
    tokio::task::spawn_blocking(wait_for_end_of_stdin)
        .await
        .context("the stdin watcher panicked")?;
    drop(kafka);
    Ok(())
}

/// Blocks until stdin reaches end of file (or fails): devstack closed it or
/// died.
fn wait_for_end_of_stdin() {
    let mut stdin = std::io::stdin().lock();
    let mut buffer = [0u8; 64];
    while matches!(stdin.read(&mut buffer), Ok(n) if n > 0) {}
}

/// The embedded broker died without being asked to stop.
#[derive(Debug, Clone)]
pub struct BrokerDied {
    /// The child's pid, to find it in logs.
    pid: u32,
    /// Its exit status ("signal: 6 (SIGABRT) (core dumped)", ...).
    status: String,
    /// Its last stderr lines, oldest first: an assertion message, say.
    last_words: Vec<String>,
}

impl std::fmt::Display for BrokerDied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the embedded Kafka broker (pid {}) died ({}); ",
            self.pid, self.status
        )?;
        if self.last_words.is_empty() {
            write!(f, "it printed nothing")?;
        } else {
            write!(f, "its last words: {}", self.last_words.join(" / "))?;
        }
        write!(f, "; stopping the stack")
    }
}

impl std::error::Error for BrokerDied {}

/// The child's last stderr lines, shared by the forwarder and the watcher.
type LastWords = Arc<Mutex<VecDeque<String>>>;

/// devstack's handle on the broker child. Dropping it kills the child;
/// [`shut_down`](Self::shut_down) lets it exit by itself first.
pub struct EmbeddedBroker {
    /// What services put in `bootstrap.servers`.
    bootstrap: String,
    /// The child's pid, for the benchmark's CPU figures.
    pid: u32,
    /// Held only to be closed: end of file tells the child to exit.
    stdin: Option<ChildStdin>,
    /// Filled in by the watcher once the child has exited.
    exit: watch::Receiver<Option<BrokerDied>>,
    /// Asks the watcher to SIGKILL the child; dropped (which does the same)
    /// with this handle.
    kill: Option<oneshot::Sender<()>>,
    /// Waits for the child, and reaps it.
    watcher: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Spawns `devstack embedded-broker` and waits until it has created the
    /// topics and told us its bootstrap address.
    pub async fn start(scaled_out: bool) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding devstack's own executable")?;
        let mut command = Command::new(exe);
        command.arg(SUBCOMMAND);
        if scaled_out {
            command.arg("--scaled-out");
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Not in devstack's group: a Ctrl-C in the terminal must not stop
            // the broker before the services that use it.
            .process_group(0)
            .kill_on_drop(true);
        crate::supervisor::die_with_devstack(&mut command, libc::SIGKILL);
        let mut child = command
            .spawn()
            .context("spawning the embedded Kafka broker")?;
        let pid = child.id().context("the broker child has no pid")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let last_words = LastWords::default();
        let forwarder = tokio::spawn(forward(stderr, last_words.clone()));

        let mut lines = BufReader::new(stdout).lines();
        let announced = tokio::select! {
            line = tokio::time::timeout(START_TIMEOUT, lines.next_line()) => line,
            status = child.wait() => {
                drain(forwarder).await;
                bail!("{}", died(pid, status, &last_words));
            }
        };
        let bootstrap = match announced {
            Ok(Ok(Some(line))) => line
                .strip_prefix(BOOTSTRAP_LINE_PREFIX)
                .map(str::to_owned)
                .with_context(|| format!("the broker child said `{line}`, not its address"))?,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child.wait().await;
                drain(forwarder).await;
                bail!("{}", died(pid, status, &last_words));
            }
            Err(_) => bail!(
                "the embedded Kafka broker did not start within {}s",
                START_TIMEOUT.as_secs()
            ),
        };
        let (exit_tx, exit) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel();
        let watcher = tokio::spawn(watch_child(
            child,
            pid,
            lines.into_inner().into_inner(),
            forwarder,
            last_words,
            kill_rx,
            exit_tx,
        ));
        tracing::info!(pid, bootstrap, "embedded Kafka runs in a child process");
        Ok(Self {
            bootstrap,
            pid,
            stdin,
            exit,
            kill: Some(kill),
            watcher,
        })
    }

    /// The value for clients' `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resolves when the child has exited (never, if it has not by the time
    /// this handle is shut down).
    pub fn died(&self) -> impl std::future::Future<Output = BrokerDied> + 'static {
        let mut exit = self.exit.clone();
        async move {
            match exit.wait_for(Option::is_some).await {
                Ok(died) => died.clone().expect("waited for Some"),
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Closes the child's stdin, waits for it to exit, kills it if it does not.
    pub async fn shut_down(mut self) {
        drop(self.stdin.take());
        let exited = tokio::time::timeout(STOP_TIMEOUT, self.exit.wait_for(Option::is_some))
            .await
            .is_ok();
        if !exited {
            tracing::warn!(
                "the embedded Kafka broker did not exit within {}s; killing it",
                STOP_TIMEOUT.as_secs()
            );
            if let Some(kill) = self.kill.take() {
                let _ = kill.send(());
            }
        }
        if (&mut self.watcher).await.is_err() {
            tracing::warn!("the broker watcher panicked");
        }
    }
}

/// Owns the child until it exits (or `kill` says to kill it), then reports
/// how it ended.
async fn watch_child(
    mut child: Child,
    pid: u32,
    // Kept open so the child never writes into a closed pipe.
    _stdout: ChildStdout,
    forwarder: JoinHandle<()>,
    last_words: LastWords,
    kill: oneshot::Receiver<()>,
    exit: watch::Sender<Option<BrokerDied>>,
) {
    let status = tokio::select! {
        status = child.wait() => status,
        _ = kill => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    drain(forwarder).await;
    exit.send_replace(Some(died(pid, status, &last_words)));
}

/// The report of the child's end, with its last words.
fn died(pid: u32, status: std::io::Result<ExitStatus>, last_words: &LastWords) -> BrokerDied {
    BrokerDied {
        pid,
        status: match status {
            Ok(status) => status.to_string(),
            Err(error) => format!("could not be waited for: {error}"),
        },
        last_words: last_words
            .lock()
            .expect("the last words are never poisoned")
            .iter()
            .cloned()
            .collect(),
    }
}

/// Copies the child's stderr to ours behind [`OUTPUT_PREFIX`], keeping the
/// last [`LAST_WORDS_LINES`] non-empty lines.
async fn forward(source: impl AsyncRead + Unpin, last_words: LastWords) {
    let keep = move |text: &str| {
        if text.trim().is_empty() {
            return;
        }
        let mut kept = last_words
            .lock()
            .expect("the last words are never poisoned");
        if kept.len() == LAST_WORDS_LINES {
            kept.pop_front();
        }
        kept.push_back(text.to_owned());
    };
    supervisor::forward(source, OUTPUT_PREFIX.to_owned(), Stream::Stderr, keep).await;
}

/// Waits briefly for the forwarder to take the child's last lines (a
/// grandchild holding the pipe could otherwise keep us waiting forever).
async fn drain(forwarder: JoinHandle<()>) {
    let _ = tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, forwarder).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(last_words: &[&str]) -> String {
        BrokerDied {
            pid: 42,
            status: "signal: 6 (SIGABRT) (core dumped)".to_owned(),
            last_words: last_words.iter().map(|line| (*line).to_owned()).collect(),
        }
        .to_string()
    }

    #[test]
    fn a_death_is_one_line_with_the_status_and_last_words() {
        let line = report(&["rdkafka_mock_cgrp.c:123: Assertion `x' failed.", "Aborted"]);
        assert_eq!(
            line,
            "the embedded Kafka broker (pid 42) died (signal: 6 (SIGABRT) (core dumped)); its \
             last words: rdkafka_mock_cgrp.c:123: Assertion `x' failed. / Aborted; stopping the \
             stack"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_silent_death_says_so() {
        assert!(report(&[]).contains("it printed nothing"));
    }
}
