//! devstack's state directory: the lock that keeps two devstacks apart, and
//! `stack.json`, which tells tools and tests where the running stack is.
//!
//! `stack.json` exists exactly while the stack is up and healthy, so its
//! presence is a usable readiness signal for scripts.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Held (flock) while devstack runs.
const LOCK_FILE: &str = "devstack.lock";

/// Where the running stack is described.
const STACK_FILE: &str = "stack.json";

/// The private PostgreSQL cluster's data directory.
const PGDATA_DIR: &str = "pgdata";

/// Apache Kafka's data and logs (`--kafka apache`).
const KAFKA_DIR: &str = "kafka";

/// The contents of `stack.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackDescription {
    /// `bootstrap.servers` of the stack's Kafka.
    pub kafka_bootstrap: String,
    /// `embedded`, `apache` or `external`.
    pub kafka_mode: String,
    /// Every broker's `host:port`.
    pub kafka_brokers: Vec<String>,
    /// Whether Kafka takes logins over TLS (`--kafka-sasl`); the logins are
    /// kept in the state directory's `kafka/security/`, not here.
    #[serde(default)]
    pub kafka_secured: bool,
    /// The services' `DATABASE_URL`.
    pub database_url: String,
    /// Instance name to base URL.
    pub services: BTreeMap<String, String>,
}

impl StackDescription {
    /// Reads the `stack.json` of a running devstack using `dir`.
    pub fn read(dir: &Path) -> anyhow::Result<StackDescription> {
        let path = dir.join(STACK_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no running stack ({} is missing); start one, or pass --kafka-bootstrap",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }
}

/// Apache Kafka's directory in the state directory `dir`.
pub fn kafka_dir(dir: &Path) -> PathBuf {
    dir.join(KAFKA_DIR)
}

/// The state directory, locked for this devstack.
#[derive(Debug)]
pub struct StateDir {
    /// Absolute path (relative paths would break once children change
    /// directory).
    dir: PathBuf,
    /// Keeps the flock; released when devstack exits, however it exits.
    _lock: File,
}

impl StateDir {
    /// Creates `dir` if needed and locks it, failing with one line if another
    /// devstack holds it. Removes a stale `stack.json`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let dir =
            std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "another devstack is already running with --dir {}; stop it first (or pass a \
                 different --dir)",
                dir.display()
            );
        }
        let state = Self { dir, _lock: lock };
        // Holding the lock proves no devstack runs here: a stack.json is a
        // leftover of one that was killed, and describes nothing.
        state.remove_stack_file();
        Ok(state)
    }

    /// The directory itself (absolute).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The private PostgreSQL data directory.
    pub fn pgdata(&self) -> PathBuf {
        self.dir.join(PGDATA_DIR)
    }

    /// Apache Kafka's directory: its nodes' data and logs.
    pub fn kafka_dir(&self) -> PathBuf {
        kafka_dir(&self.dir)
    }

    /// Path of `stack.json`.
    pub fn stack_file(&self) -> PathBuf {
        self.dir.join(STACK_FILE)
    }

    /// Writes `stack.json` atomically (readers never see half a file).
    pub fn write_stack_file(&self, description: &StackDescription) -> anyhow::Result<()> {
        let path = self.stack_file();
        let temporary = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(description).context("serialising stack.json")?;
        std::fs::write(&temporary, json)
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, &path)
            .with_context(|| format!("moving {} into place", path.display()))?;
        Ok(())
    }

    /// Removes `stack.json` if it exists.
    pub fn remove_stack_file(&self) {
        let path = self.stack_file();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(%error, "could not remove {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_file_uses_the_documented_keys() {
        let description = StackDescription {
            kafka_bootstrap: "127.0.0.1:9092".into(),
            kafka_mode: "apache".into(),
            kafka_brokers: vec!["127.0.0.1:9092".into()],
            kafka_secured: false,
            database_url: "postgres://postgres@127.0.0.1:54329/ordersystem".into(),
            services: BTreeMap::from([("order-service".into(), "http://127.0.0.1:8081".into())]),
        };
        let json = serde_json::to_value(&description).unwrap();
        assert_eq!(json["kafkaBootstrap"], "127.0.0.1:9092");
        assert_eq!(
            json["databaseUrl"],
            "postgres://postgres@127.0.0.1:54329/ordersystem"
        );
        assert_eq!(json["services"]["order-service"], "http://127.0.0.1:8081");
    }

    #[test]
    fn a_second_devstack_on_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateDir::open(dir.path()).unwrap();
        let error = StateDir::open(dir.path()).unwrap_err();
        assert!(error.to_string().contains("already running"));
    }
}
