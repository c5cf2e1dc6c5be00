//! Finding the service executables, and building them first when devstack
//! itself was started by `cargo run`.
//!
//! The services are separate binaries of this workspace. They are looked up
//! next to devstack's own executable, i.e. in the same target directory and
//! profile, so `cargo run --release -p devstack` runs release services and a
//! debug devstack runs debug ones.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::services;

/// Set by cargo for the programs it runs: the cargo to build the services with.
const CARGO_ENV: &str = "CARGO";

/// Set by `cargo run` at run time; the compile-time value is the fallback.
const MANIFEST_DIR_ENV: &str = "CARGO_MANIFEST_DIR";

/// Profile directory names cargo uses for `dev` and `release`.
const DEBUG_PROFILE_DIR: &str = "debug";
const RELEASE_PROFILE_DIR: &str = "release";

/// Service name to executable path.
pub type Programs = BTreeMap<&'static str, PathBuf>;

/// Returns the path of every service binary and the console's. Under `cargo
/// run`, first builds them with the same cargo, profile and target directory, so they are never
/// stale; otherwise they must already exist.
pub fn prepare() -> anyhow::Result<Programs> {
    let exe = std::env::current_exe().context("locating devstack's own executable")?;
    let exe_dir = exe
        .parent()
        .context("devstack's executable has no parent directory")?;
    let cargo = std::env::var_os(CARGO_ENV);
    if let Some(cargo) = &cargo {
        build(cargo, exe_dir)?;
    }
    let mut programs = Programs::new();
    for service in services::programs() {
        let path = exe_dir.join(service.name);
        if !path.is_file() {
            bail!(
                "{} not found next to devstack; build the services first (cargo build{} {}) or \
                 start devstack with `cargo run{} -p devstack`",
                path.display(),
                release_flag(exe_dir),
                package_args(),
                release_flag(exe_dir),
            );
        }
        programs.insert(service.name, path);
    }
    Ok(programs)
}

/// `cargo build -p ...` into the directory devstack runs from.
///
/// `cargo run` has released the build lock by the time devstack runs, so the
/// nested build does not deadlock; it just waits if another build holds it.
fn build(cargo: &OsString, exe_dir: &Path) -> anyhow::Result<()> {
    let manifest_dir = std::env::var_os(MANIFEST_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    // exe_dir is <target-dir>/<profile> (or <target-dir>/<triple>/<profile>,
    // where this parent makes the nested build land in exe_dir too).
    let target_dir = exe_dir
        .parent()
        .context("devstack's executable is not inside a cargo target directory")?;
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile_dir_name(exe_dir) {
        Some(DEBUG_PROFILE_DIR) | None => {}
        Some(RELEASE_PROFILE_DIR) => {
            command.arg("--release");
        }
        Some(custom) => {
            command.args(["--profile", custom]);
        }
    }
    for service in services::programs() {
        command.args(["-p", service.name]);
    }
    tracing::info!("building the services: {command:?}");
    let status = command
        .status()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!("building the services failed ({status}); see cargo's output above");
    }
    Ok(())
}

fn profile_dir_name(exe_dir: &Path) -> Option<&str> {
    exe_dir.file_name().and_then(|name| name.to_str())
}

fn release_flag(exe_dir: &Path) -> &'static str {
    if profile_dir_name(exe_dir) == Some(RELEASE_PROFILE_DIR) {
        " --release"
    } else {
        ""
    }
}

fn package_args() -> String {
    services::programs()
        .map(|service| format!("-p {}", service.name))
        .collect::<Vec<_>>()
        .join(" ")
}
