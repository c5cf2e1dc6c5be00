//! Bounded shutdown: the signals that start it, the work it may wait for, and
//! the account of what it left undone.
//!
//! librdkafka's teardown (`rd_kafka_consumer_close`, `rd_kafka_destroy`) and
//! its synchronous calls (a final offset commit, a producer flush) can block
//! for as long as the broker is unreachable (confluentinc/librdkafka#4519). So
//! none of them runs on a task that shutdown waits for directly:
//!
//! - [`Closing::spawn`] runs such a call on a thread of its own and remembers
//!   it, by description, until it returns. [`crate::host::ServiceHost`] waits
//!   for all of it until `SHUTDOWN_TIMEOUT_MS` has passed, and names whatever
//!   is still running as [`Abandoned`];
//! - [`OffThreadDrop`] holds a client whose owner may be dropped anywhere (a
//!   worker abandoned at the deadline is aborted): dropping the holder
//!   destroys the client on a detached thread, never in the dropping task.
//!
//! What is abandoned is not lost: offsets that were not committed are
//! delivered again to the group, outbox rows that were not acknowledged stay
//! unsent and are published after the restart, and the inboxes make the
//! repeats harmless.
//!
//! [`shutdown_signals`] is how a service binary is stopped: the first Ctrl-C
//! or SIGTERM starts the graceful shutdown, a second one ends the process at
//! once.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Name of the threads that run blocking shutdown work (15 bytes at most, the
/// limit Linux keeps).
const THREAD_NAME: &str = "kafka-shutdown";

/// Blocking shutdown work running on threads of its own, each named by what
/// it does until it returns. Clones share the record.
#[derive(Clone, Debug)]
pub struct Closing {
    /// Descriptions of the work still running, by an id of its own (two
    /// pieces of work may have the same description). A watch channel, so
    /// that [`Closing::finished`] wakes when the last one returns.
    pending: Arc<watch::Sender<BTreeMap<u64, String>>>,
    /// The next id.
    next: Arc<AtomicU64>,
}

impl Default for Closing {
    fn default() -> Self {
        Closing {
            pending: Arc::new(watch::Sender::new(BTreeMap::new())),
            next: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Closing {
    /// Runs `work` on a thread of its own, recorded as `what` (e.g.
    /// "consumer close of order-service") until it returns. Never blocks the
    /// caller, and nothing waits for the thread: if `work` never returns, the
    /// thread ends with the process.
    pub fn spawn(&self, what: impl Into<String>, work: impl FnOnce() + Send + 'static) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let what = what.into();
        self.pending.send_modify(|pending| {
            pending.insert(id, what.clone());
        });
        let pending = self.pending.clone();
        let started = detached(move || {
            work();
            pending.send_modify(|pending| {
                pending.remove(&id);
            });
        });
        if let Err(err) = started {
            // The work stays recorded, so shutdown names it as abandoned.
            tracing::error!(error = %err, what, "could not start a thread for shutdown work");
        }
    }

    /// Descriptions of the work still running, oldest first.
    pub fn unfinished(&self) -> Vec<String> {
        self.pending.borrow().values().cloned().collect()
    }

    /// Resolves once no work is running (at once if none is).
    pub async fn finished(&self) {
        let mut pending = self.pending.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = pending.wait_for(BTreeMap::is_empty).await;
    }
}

/// Holds `T` (a Kafka client) so that dropping the holder never blocks:
/// `T` is dropped on a detached thread instead. For owners that may be
/// dropped anywhere, e.g. inside a task aborted at the shutdown deadline.
pub struct OffThreadDrop<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> OffThreadDrop<T> {
    pub fn new(inner: T) -> Self {
        OffThreadDrop(Some(inner))
    }

    /// Takes the value back, to release it some other way (e.g. through [`Closing::spawn`]).
    pub fn into_inner(mut self) -> T {
        self.0.take().expect("present until dropped or taken")
    }
}

impl<T: Send + 'static> std::ops::Deref for OffThreadDrop<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped or taken")
    }
}

impl<T: Send + 'static> std::ops::DerefMut for OffThreadDrop<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("present until dropped or taken")
    }
}

impl<T: Send + 'static> Drop for OffThreadDrop<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            if let Err(err) = detached(move || drop(inner)) {
                tracing::error!(error = %err, "could not start a thread to release a Kafka client");
            }
        }
    }
}

/// Runs `work` on a new detached thread. If no thread can be started, `work`
/// (and whatever it owns) is leaked rather than dropped here, since dropping
/// it may be exactly what blocks.
fn detached(work: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let slot = Arc::new(Mutex::new(Some(work)));
    let for_thread = slot.clone();
    let started = std::thread::Builder::new()
        .name(THREAD_NAME.to_owned())
        .spawn(move || {
            let work = for_thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(work) = work {
                work();
            }
        });
    match started {
        Ok(_) => Ok(()),
        Err(err) => {
            if let Some(work) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                std::mem::forget(work);
            }
            Err(err)
        }
    }
}

/// What a shutdown gave up on when its deadline passed, each item naming the
/// work and the service (e.g. "consumer close of order-service"). Empty
/// after a complete shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Abandoned(Vec<String>);

impl Abandoned {
    pub fn push(&mut self, what: impl Into<String>) {
        self.0.push(what.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn items(&self) -> &[String] {
        &self.0
    }

    /// The one log line a shutdown that gave up on something writes.
    pub fn log(&self) {
        if !self.is_empty() {
            tracing::warn!("abandoned at shutdown: {self}");
        }
    }
}

impl fmt::Display for Abandoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// A signal that stops the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT, i.e. Ctrl-C.
    Interrupt,
    /// SIGTERM, what container runtimes and supervisors send.
    Terminate,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// The shell's convention for a process ended by this signal: 128 plus
    /// its number (130, 143).
    pub fn exit_code(self) -> i32 {
        match self {
            Signal::Interrupt => 128 + 2,
            Signal::Terminate => 128 + 15,
        }
    }
}

/// Ctrl-C and SIGTERM, listened for from creation on: a signal arriving
/// between two waits is not missed, and none is ever left to a handler that
/// nobody reads (which would swallow it).
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must be called within a Tokio runtime.
    fn listen() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Signal::Interrupt,
                _ = self.terminate.recv() => Signal::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Interrupt
        }
    }
}

/// Starts listening for Ctrl-C and SIGTERM (call within the Tokio runtime).
/// The returned future resolves at the first one, which should start the
/// graceful shutdown; a second one, while that runs, ends the process at
/// once with [`Signal::exit_code`] after one log line.
pub fn shutdown_signals() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut signals = Signals::listen()?;
    let (first, first_received) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let signal = signals.next().await;
        tracing::info!(
            signal = signal.name(),
            "stop requested; a second signal exits at once"
        );
        let _ = first.send(());
        let signal = signals.next().await;
        tracing::warn!(
            signal = signal.name(),
            "second signal during shutdown: exiting at once, leaving the shutdown unfinished"
        );
        exit_now(signal.exit_code());
    });
    Ok(async move {
        // If the listening task is gone (the runtime is shutting down), so is
        // the service: stop.
        let _ = first_received.await;
    })
}

/// Resolves on Ctrl-C or SIGTERM (for code that does its own forcing).
pub async fn shutdown_signal() {
    match Signals::listen() {
        Ok(mut signals) => {
            signals.next().await;
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for signals");
            std::future::pending::<()>().await
        }
    }
}

/// Ends the process with `code`, after handing on the log lines written so far.
pub fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn closing_tracks_work_until_it_returns() {
        let closing = Closing::default();
        let (release, released) = std::sync::mpsc::channel::<()>();
        closing.spawn("consumer close of test-service", move || {
            let _ = released.recv();
        });
        closing.spawn("quick", || {});
        assert!(closing
            .unfinished()
            .contains(&"consumer close of test-service".to_owned()));

        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), closing.finished())
            .await
            .expect("all work returned");
        assert!(closing.unfinished().is_empty());
    }

    #[tokio::test]
    async fn work_that_never_returns_stays_unfinished_without_blocking_anyone() {
        let closing = Closing::default();
        closing.spawn("producer flush of test-service", || loop {
            std::thread::park();
        });
        let waited = tokio::time::timeout(Duration::from_millis(100), closing.finished()).await;
        assert!(waited.is_err(), "work that never returns is never finished");
        assert_eq!(closing.unfinished(), ["producer flush of test-service"]);
    }

    /// Blocks its dropping thread until `release` is sent.
    struct SlowToDrop(std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>);

    impl Drop for SlowToDrop {
        fn drop(&mut self) {
            let _ = self.0.recv();
            let _ = self.1.send(());
        }
    }

    #[test]
    fn dropping_the_holder_releases_the_value_on_another_thread() {
        let (release, released) = std::sync::mpsc::channel();
        let (dropped, was_dropped) = std::sync::mpsc::channel();
        let holder = OffThreadDrop::new(SlowToDrop(released, dropped));
        // Returns although the value's own drop is still blocked.
        drop(holder);
        assert!(was_dropped.try_recv().is_err(), "not dropped yet");
        release.send(()).unwrap();
        was_dropped
            .recv_timeout(Duration::from_secs(10))
            .expect("dropped once released");
    }

    #[test]
    fn abandoned_work_is_listed_in_one_line() {
        let mut abandoned = Abandoned::default();
        assert!(abandoned.is_empty());
        abandoned.push("consumer close of order-service");
        abandoned.push("producer flush of order-service with 3 messages");
        assert_eq!(
            abandoned.to_string(),
            "consumer close of order-service, producer flush of order-service with 3 messages"
        );
    }
}
