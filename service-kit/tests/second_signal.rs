//! A second SIGTERM ends a service at once, even while its graceful shutdown
//! hangs (as one blocked in librdkafka would).
//!
//! Signals go to a whole process, so the service side runs in a child: this
//! test binary again, running only this test with [`CHILD`] set.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use service_kit::shutdown::{shutdown_signals, Signal};
use service_kit::CommonConfig;

/// Set in the child's environment: it plays the service.
const CHILD: &str = "SECOND_SIGNAL_TEST_CHILD";
/// Printed by the child once it listens for signals.
const LISTENING: &str = "child: listening for signals";
/// Printed by the child when the first signal started its shutdown.
const STOPPING: &str = "child: shutdown started";
/// How long the test waits for anything the child should do promptly.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

#[test]
fn a_second_sigterm_exits_at_once_while_shutdown_hangs() {
    if std::env::var_os(CHILD).is_some() {
        return run_child();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_second_sigterm_exits_at_once_while_shutdown_hangs",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut output = Vec::new();
    let wait_for_line = |wanted: &str, output: &mut Vec<String>| {
        let started = Instant::now();
        while !output.iter().any(|line| line.contains(wanted)) {
            let left = DEADLINE.saturating_sub(started.elapsed());
            match received.recv_timeout(left) {
                Ok(line) => output.push(line),
                Err(_) => panic!("the child never printed {wanted:?}; it printed {output:#?}"),
            }
        }
    };
    let sigterm = || {
        // SAFETY: kill(2) on our own child's pid has no memory-safety concerns.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    };

    wait_for_line(LISTENING, &mut output);
    sigterm();
    wait_for_line(STOPPING, &mut output);
    sigterm();
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("the second SIGTERM did not end the child; it printed {output:#?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    output.extend(received.try_iter());

    assert_eq!(
        status.code(),
        Some(Signal::Terminate.exit_code()),
        "{output:#?}"
    );
    let said = |text: &str| output.iter().filter(|l| l.contains(text)).count();
    assert_eq!(said("a second signal exits at once"), 1, "{output:#?}");
    assert_eq!(said("second signal during shutdown"), 1, "{output:#?}");
}

/// The service side: listens as `service_kit::run` does, then hangs in its
/// shutdown for ever.
fn run_child() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        service_kit::telemetry::init(&CommonConfig::defaults("signal-test", 0, "unused")).unwrap();
        let shutdown = shutdown_signals().unwrap();
        println!("{LISTENING}");
        shutdown.await;
        println!("{STOPPING}");
        std::future::pending::<()>().await;
    });
}
