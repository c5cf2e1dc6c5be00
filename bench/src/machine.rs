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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_resident_memory_is_readable() {
        assert!(resident_kb(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn fields_are_read_in_kilobytes() {
        let text = "Name:\tx\nVmRSS:\t   20480 kB\n";
        assert_eq!(field_kb(text, "VmRSS:"), Some(20480));
    }
}
