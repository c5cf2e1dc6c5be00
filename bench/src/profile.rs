//! A flame graph of one service under load: `perf record` samples the
//! process's stacks on the CPU clock (DWARF unwinding, so release binaries
//! built without frame pointers unwind), `perf script` writes them out, and
//! inferno folds them into one line per stack and draws the SVG.
//!
//! `perf` comes from the system (Debian: `linux-perf`); without it, or when
//! the kernel refuses (`perf_event_paranoid`), the run says why and goes on
//! without the picture.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use inferno::collapse::perf::Folder;
use inferno::collapse::Collapse;
use inferno::flamegraph;
use serde::Serialize;

/// Samples per second: enough for a picture, little enough that the
/// sampling and the DWARF stack copies do not change what is measured much.
const FREQUENCY_HZ: u32 = 199;

/// Bytes of stack copied per sample for unwinding.
const STACK_BYTES: u32 = 16_384;

/// What a flame graph shows, for the report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlameGraph {
    /// The service profiled (the one with the most CPU per order).
    pub service: String,
    pub pid: u32,
    /// The open-loop rate it was under.
    pub offered_per_second: f64,
    pub seconds: f64,
    /// CPU time the samples stand for (each weighs its `cpu-clock` period).
    pub cpu_seconds: f64,
    /// The SVG's file name, beside the Markdown it is shown in.
    pub file: String,
}

/// Samples `pid` for `during` and returns `perf script`'s text.
pub async fn record(pid: u32, during: Duration) -> anyhow::Result<String> {
    let data = std::env::temp_dir().join(format!("bench-perf-{pid}-{}.data", std::process::id()));
    let recorded = tokio::process::Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F"])
        .arg(FREQUENCY_HZ.to_string())
        .arg("--call-graph")
        .arg(format!("dwarf,{STACK_BYTES}"))
        .arg("-p")
        .arg(pid.to_string())
        .arg("-o")
        .arg(&data)
        .arg("--")
        .arg("sleep")
        .arg(format!("{:.0}", during.as_secs_f64().max(1.0)))
        .stdin(Stdio::null())
        .output()
        .await
        .context("running perf (Debian: apt install linux-perf)")?;
    if !recorded.status.success() {
        let _ = std::fs::remove_file(&data);
        bail!(
            "perf record failed: {}",
            String::from_utf8_lossy(&recorded.stderr).trim()
        );
    }
    let script = tokio::process::Command::new("perf")
        .arg("script")
        .arg("-i")
        .arg(&data)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .context("running perf script");
    let _ = std::fs::remove_file(&data);
    let script = script?;
    if !script.status.success() {
        bail!("perf script failed ({})", script.status);
    }
    String::from_utf8(script.stdout).context("perf script wrote something other than text")
}

/// Folds `perf script` text into stacks and draws them as an SVG titled
/// `title`; returns the SVG and the CPU seconds sampled (the folded counts
/// are the samples' `cpu-clock` periods, in nanoseconds).
pub fn draw(perf_script: &str, title: &str) -> anyhow::Result<(Vec<u8>, f64)> {
    let mut folded = Vec::new();
    Folder::default()
        .collapse(perf_script.as_bytes(), &mut folded)
        .context("folding the stacks")?;
    let folded = String::from_utf8(folded).context("folded stacks")?;
    let nanoseconds: u64 = folded
        .lines()
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    if nanoseconds == 0 {
        bail!("perf sampled no stacks");
    }
    let mut options = flamegraph::Options::default();
    options.title = title.to_owned();
    options.count_name = "ns of CPU".to_owned();
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, folded.lines(), &mut svg)
        .context("drawing the flame graph")?;
    Ok((svg, nanoseconds as f64 / 1e9))
}

/// Writes the flame graph of `perf_script` to `path`; returns the CPU
/// seconds it shows.
pub fn write(path: &Path, perf_script: &str, title: &str) -> anyhow::Result<f64> {
    let (svg, cpu_seconds) = draw(perf_script, title)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    Ok(cpu_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two samples as `perf script` prints them: the busier function is
    /// on both stacks.
    const SCRIPT: &str = "order-service 4242 [000] 100.000001: 5025125 cpu-clock:\n\
\t    55d0c0a01000 order_service::commands::place+0x10 (/usr/bin/order-service)\n\
\t    55d0c0a02000 tokio::runtime::task::harness::poll+0x20 (/usr/bin/order-service)\n\
\n\
order-service 4242 [001] 100.005026: 5025125 cpu-clock:\n\
\t    55d0c0a03000 serde_json::ser::to_vec+0x30 (/usr/bin/order-service)\n\
\t    55d0c0a01000 order_service::commands::place+0x10 (/usr/bin/order-service)\n\
\t    55d0c0a02000 tokio::runtime::task::harness::poll+0x20 (/usr/bin/order-service)\n\
\n";

    #[test]
    fn the_picture_weighs_every_sample_and_names_the_functions() {
        let (svg, cpu_seconds) = draw(SCRIPT, "order-service under load").unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(
            (cpu_seconds - 2.0 * 0.005025125).abs() < 1e-9,
            "two samples of 5.03 ms: {cpu_seconds}"
        );
        assert!(svg.starts_with("<?xml"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("order-service under load"));
        assert!(svg.contains("order_service::commands::place"));
        assert!(svg.contains("serde_json::ser::to_vec"));
    }

    #[test]
    fn no_stacks_is_an_error_not_an_empty_picture() {
        assert!(draw("", "nothing").is_err());
    }
}
