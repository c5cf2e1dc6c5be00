//! What the devstack tests share: a state directory PostgreSQL can use, the
//! stack's processes as `/proc` shows them, and waiting with a deadline.

#![allow(dead_code)] // Each test binary uses its own part of this.

use std::time::{Duration, Instant};

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A temporary directory for devstack's state that the `postgres` user can
/// enter: PostgreSQL runs as that user when the tests run as root.
pub fn state_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

/// A process as seen in /proc: its pid and start time, so that a recycled
/// pid is not mistaken for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// What it runs (the 15 characters the kernel keeps), for messages.
    pub name: String,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`, in clock ticks since boot.
    start_time: u64,
}

/// `/proc/<pid>/stat` fields after "pid (comm) ": state first.
fn stat_fields(pid: u32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: split after the last ')'.
    let (head, rest) = stat.rsplit_once(") ")?;
    let comm = head.split_once('(')?.1.to_owned();
    Some((comm, rest.split_whitespace().map(str::to_owned).collect()))
}

impl Process {
    pub fn of(pid: u32) -> Option<Self> {
        let (name, fields) = stat_fields(pid)?;
        Some(Self {
            name,
            pid,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }

    /// Still running: same process, not a zombie waiting to be reaped.
    pub fn is_alive(&self) -> bool {
        match stat_fields(self.pid) {
            Some((_, fields)) => {
                fields.first().map(String::as_str) != Some("Z")
                    && fields.get(19).and_then(|t| t.parse().ok()) == Some(self.start_time)
            }
            None => false,
        }
    }
}

/// `parent`'s children whose executable name starts with (the 15 characters
/// the kernel keeps of) `name`.
pub fn children_named(parent: u32, name: &str) -> Vec<Process> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some((comm, fields)) = stat_fields(pid) else {
            continue;
        };
        let ppid = fields.get(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && name.starts_with(&comm) {
            found.extend(Process::of(pid));
        }
    }
    found
}

/// Polls `check` until it gives a value, failing after `deadline`.
pub fn wait_until<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}
