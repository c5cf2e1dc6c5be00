//! A mock broker goes down and up while other threads start child
//! processes, and the process survives: started with plain `Command`, a child
//! between fork and the end of its exec holds the broker's listening socket,
//! the re-bind fails and librdkafka aborts the process (three runs in four
//! did, on a two-core machine).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use local_infra::EmbeddedKafka;

/// Enough outages for a child to land in the window most of the time when
/// children start unguarded.
const OUTAGES: usize = 300;
const SPAWNING_THREADS: usize = 2;

#[test]
fn a_broker_goes_down_and_up_while_children_start() {
    let kafka = EmbeddedKafka::start(1).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let spawners: Vec<_> = (0..SPAWNING_THREADS)
        .map(|_| {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut started = 0_u64;
                while !done.load(Ordering::Relaxed) {
                    let status = local_infra::spawn::status(
                        Command::new("true")
                            .stdin(Stdio::null())
                            .stdout(Stdio::null()),
                    )
                    .expect("running true");
                    assert!(status.success());
                    started += 1;
                }
                started
            })
        })
        .collect();
    for _ in 0..OUTAGES {
        kafka.broker_down(-1).unwrap();
        kafka.broker_up(-1).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let started: u64 = spawners.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(started > 0, "no child started during the outages");
}
