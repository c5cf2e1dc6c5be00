//! What the figures were measured on, and how much memory the services use.
//! Linux only: read from `/proc`.

use serde::Serialize;

/// The machine a run measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu: String,
    /// Logical CPUs this process may use.
    pub cores: usize,
    pub memory_mb: u64,
    /// One-minute load average when the run started and ended: other work on
    /// the machine makes figures noisy, and this says how busy it was.
    pub load_at_start: f64,
    pub load_at_end: f64,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, name)| name.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mb: field_kb(&meminfo, "MemTotal:").unwrap_or_default() / 1024,
            load_at_start: load_average(),
            load_at_end: 0.0,
        }
    }
}

/// The one-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or_default()
}

/// Resident memory of process `pid` in kB (`VmRSS`), if it exists.
pub fn resident_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field_kb(&status, "VmRSS:")
}

/// `Name:   1234 kB` → 1234.
fn field_kb(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`): 100 in the ABI
/// of every Linux architecture.
const USER_HZ: f64 = 100.0;

/// What `/proc/<pid>/stat` says of a process's CPU.
struct Stat {
    parent: u32,
    /// User and system time of all its threads, in seconds.
    own: f64,
    /// The same of its children that ended and were waited for.
    reaped_children: f64,
}

fn stat(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": state is field 3, the parent 4; utime and stime
    // are 14 and 15, cutime and cstime 16 and 17.
    let (_, after_comm) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Some(Stat {
        parent: fields.get(1)?.parse().ok()?,
        own: (ticks(11)? + ticks(12)?) / USER_HZ,
        reaped_children: (ticks(13)? + ticks(14)?) / USER_HZ,
    })
}

/// CPU time, in seconds, used so far by process `pid` (all its threads,
/// `/proc/<pid>/stat`); `None` if there is no such process.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    stat(pid).map(|stat| stat.own)
}

/// CPU time, in seconds, used so far by `pid` and every process below it,
/// including those that ended and were waited for: for Postgres' postmaster,
/// every backend, also the ones whose connection closed. `None` if there is
/// no such process.
pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    let root = stat(pid)?;
    let mut children: std::collections::HashMap<u32, Vec<(u32, f64)>> = Default::default();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(stat) = stat(child) {
            children
                .entry(stat.parent)
                .or_default()
                .push((child, stat.own + stat.reaped_children));
        }
    }
    let mut total = root.own + root.reaped_children;
    let mut below = vec![pid];
    while let Some(parent) = below.pop() {
        for &(child, seconds) in children.get(&parent).map_or(&[][..], Vec::as_slice) {
            total += seconds;
            below.push(child);
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_resident_memory_is_readable() {
        assert!(resident_kb(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn a_process_s_cpu_time_is_read_and_a_missing_one_is_none() {
        // Burn CPU until the kernel has charged this process a tick; on a busy
        // machine that may take longer than the CPU used.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let seconds = loop {
            let seconds = process_cpu_seconds(std::process::id()).expect("we exist");
            if seconds > 0.0 || std::time::Instant::now() > deadline {
                break seconds;
            }
            for i in 0..1_000_000u64 {
                std::hint::black_box(i);
            }
        };
        assert!(seconds > 0.0, "{seconds}");
        // Above the kernel's pid_max, so never a live process.
        assert_eq!(process_cpu_seconds(u32::MAX), None);
    }

    #[test]
    fn a_process_tree_counts_the_cpu_of_its_children() {
        // A child that burns CPU and is waited for: its time joins ours.
        let before = tree_cpu_seconds(std::process::id()).expect("we exist");
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh runs");
        assert!(status.success());
        let after = tree_cpu_seconds(std::process::id()).expect("we exist");
        let own = process_cpu_seconds(std::process::id()).expect("we exist");
        assert!(after > before, "{before} → {after}");
        assert!(after > own, "the child's time is counted: {after} vs {own}");
        assert_eq!(tree_cpu_seconds(u32::MAX), None);
    }

    #[test]
    fn fields_are_read_in_kilobytes() {
        let text = "Name:\tx\nVmRSS:\t   20480 kB\n";
        assert_eq!(field_kb(text, "VmRSS:"), Some(20480));
    }
}
