//! A private PostgreSQL cluster built from the locally installed server binaries.
//!
//! Tests want a fresh database server per test run that costs nothing to throw
//! away; `devstack` wants one that keeps a developer's data between runs. Both
//! are the same thing with different settings: `initdb` a data directory, start
//! `postgres` on a loopback TCP port with `pg_ctl`, stop it again on drop.
//!
//! The server listens on 127.0.0.1 only and has Unix sockets disabled, so it
//! never collides with (or is mistaken for) a system-wide PostgreSQL, and
//! clients always go through the URL from [`PostgresCluster::url`].
//!
//! Lifetimes are tied to the owning value: dropping a [`PostgresCluster`] stops
//! its server. Every cluster also has a detached watchdog process for when the
//! owning process dies without running destructors (SIGKILL, a test harness
//! timeout, `abort`): for a temporary cluster it stops the server at once and
//! deletes the directory; for a persistent one it stops the server cleanly
//! (`pg_ctl stop -m fast`) and keeps the data.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

use crate::os_user::{command_from_argv, RunAs};
use crate::spawn;

/// The role `initdb -U` creates; the harness connects as it without a
/// password (loopback only), the services as their own roles with one.
const SUPERUSER: &str = "postgres";

/// Client authentication, written over the data directory's `pg_hba.conf` at
/// every start (so a reused directory gets this version's rules): TCP on
/// loopback only; the superuser, which devstack and the tests use to create
/// databases and roles and to check invariants, without a password; every
/// other role, i.e. the services' (see `service_roles`), by a scram-sha-256
/// password. Unix sockets are switched off (see `server_options`).
const PG_HBA: &str = "\
# Written by local-infra at every start; edits are overwritten.
# TYPE  DATABASE  USER      ADDRESS        METHOD
host    all       postgres  127.0.0.1/32   trust
host    all       all       127.0.0.1/32   scram-sha-256
";

/// The file [`PG_HBA`] goes to, in the data directory.
const PG_HBA_FILE: &str = "pg_hba.conf";

/// The database that always exists, used to create the others.
const MAINTENANCE_DATABASE: &str = "postgres";

/// Loopback only: a private cluster must not be reachable from the network.
const LISTEN_ADDRESS: &str = "127.0.0.1";

/// Room for several services with connection pools, some scaled out, plus the
/// tests' own connections; PostgreSQL's default of 100 runs out quickly.
const MAX_CONNECTIONS: u32 = 300;

/// How long `pg_ctl` may wait for the server to start or stop (its `-t`).
/// Crash recovery of a large persistent cluster is the slow case.
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// The byte-order "C" locale: identical behaviour on every machine, and always
/// installed (a developer's `LANG` may name a locale the system lacks).
const LOCALE: &str = "C";

/// Server log, kept inside the data directory so the server account can always
/// write it.
const LOG_FILE_NAME: &str = "postgres.log";

/// How much of the server log to quote when the server fails to start.
const LOG_TAIL_LINES: usize = 20;

/// The port of a cluster placed on a test host (which has the port to itself).
const PLACED_PORT: u16 = 5432;

/// How a cluster placed on a test host (and the Helm chart's CloudNativePG
/// cluster, which a test holds to these) notices a client whose host vanished,
/// and rolls back its transaction (freeing the rows it locked): an idle
/// connection by TCP keepalives (idle + interval × count seconds, instead of
/// the operating system's two hours), one with unacknowledged data in flight
/// by `tcp_user_timeout` (milliseconds, instead of some fifteen minutes of
/// retransmissions).
pub const DEAD_CLIENT_SETTINGS: [(&str, &str); 4] = [
    ("tcp_keepalives_idle", "5"),
    ("tcp_keepalives_interval", "2"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "10000"),
];

/// A data directory is initialised iff this file exists in it.
const VERSION_FILE: &str = "PG_VERSION";

/// Prefix of temporary cluster directories, so leftovers are recognisable.
const TEMP_DIR_PREFIX: &str = "local-infra-pg-";

/// The data directory inside a temporary cluster's directory. The outer
/// directory belongs to the server account, so `initdb` may create this one.
const TEMP_DATA_SUBDIR: &str = "data";

/// Seconds between the watchdog's checks that the owning process is alive:
/// the worst-case lifetime of a leaked server.
const WATCHDOG_POLL_SECONDS: u32 = 1;

/// Temporary clusters pick a free port and then start on it; another process
/// may grab the port in between, in which case we pick again, this many times.
const TEMP_START_ATTEMPTS: u32 = 3;

/// What the server log says when the port was taken between picking and binding.
const PORT_CLASH_LOG_MARKER: &str = "Address already in use";

/// `pg_ctl status` exit code for "no server running" (0 means running).
const PG_CTL_STATUS_NOT_RUNNING: i32 = 3;

/// The binaries we need from one PostgreSQL installation.
const SERVER_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Where Debian and Ubuntu install server versions side by side (`15/bin`, ...).
const DEBIAN_INSTALL_ROOT: &str = "/usr/lib/postgresql";

/// Appended to every "binaries not found" error.
const INSTALL_HINT: &str =
    "install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql)";

/// Whether the data must survive a machine crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Test data: skip every fsync, it is deleted afterwards anyway.
    Throwaway,
    /// A developer's data: PostgreSQL's normal, crash-safe settings.
    Durable,
}

impl Durability {
    /// Server settings (`-c name=value`) on top of the common ones.
    fn settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Durability::Throwaway => &[
                ("fsync", "off"),
                ("synchronous_commit", "off"),
                ("full_page_writes", "off"),
            ],
            Durability::Durable => &[],
        }
    }
}

/// `pg_ctl stop -m` modes we use.
#[derive(Debug, Clone, Copy)]
enum StopMode {
    /// Disconnect clients, flush, shut down cleanly: no committed data is lost.
    Fast,
    /// Kill everything at once; for throwaway data that is about to be deleted.
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// Paths of the PostgreSQL binaries, all from the same installation so that
/// `initdb` and the server agree on the data directory format.
#[derive(Debug, Clone)]
struct PgBinaries {
    /// Creates data directories.
    initdb: PathBuf,
    /// Starts, stops and inspects the server (and finds `postgres` next to itself).
    pg_ctl: PathBuf,
}

impl PgBinaries {
    /// Whether the server has the `pg_stat_statements` module (Debian ships
    /// it with the server, in the `lib` directory beside `bin`).
    fn has_statement_statistics(&self) -> bool {
        self.pg_ctl
            .parent()
            .and_then(Path::parent)
            .is_some_and(|root| root.join("lib/pg_stat_statements.so").is_file())
    }

    /// Looks in `pg_config --bindir`, then next to `initdb` on `PATH`, then in
    /// the Debian layout (newest version first); a directory counts only if it
    /// has all of [`SERVER_BINARIES`] (`pg_config` may come from a client-only
    /// package).
    fn locate() -> anyhow::Result<Self> {
        let candidates = pg_config_bindir()
            .into_iter()
            .chain(bindirs_on_path())
            .chain(debian_bindirs());
        for dir in candidates {
            if SERVER_BINARIES.iter().all(|name| dir.join(name).is_file()) {
                tracing::debug!(bindir = %dir.display(), "using PostgreSQL binaries");
                return Ok(Self {
                    initdb: dir.join("initdb"),
                    pg_ctl: dir.join("pg_ctl"),
                });
            }
        }
        bail!(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found via `pg_config \
             --bindir`, PATH or {DEBIAN_INSTALL_ROOT}/*/bin; {INSTALL_HINT}"
        )
    }
}

fn pg_config_bindir() -> Option<PathBuf> {
    let output = spawn::output(Command::new("pg_config").arg("--bindir")).ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    Some(PathBuf::from(dir.trim()))
}

/// Directories holding the real `initdb` of every `initdb` on `PATH` (often a
/// symlink into the installation, e.g. `/usr/local/bin/initdb`).
fn bindirs_on_path() -> Vec<PathBuf> {
    let Some(path) = std::env::var_os("PATH") else {
        return Vec::new();
    };
    std::env::split_paths(&path)
        .filter_map(|dir| std::fs::canonicalize(dir.join("initdb")).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .collect()
}

/// `/usr/lib/postgresql/<version>/bin`, newest version first.
fn debian_bindirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(DEBIAN_INSTALL_ROOT) else {
        return Vec::new();
    };
    let mut versions: Vec<(f64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<f64>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.total_cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// A PostgreSQL server of our own, running until dropped.
///
/// Connect with [`url`](Self::url) as the `postgres` superuser (no password,
/// loopback only), or with [`url_for`](Self::url_for) as a service's own role
/// (scram-sha-256) once [`apply_service_roles`](Self::apply_service_roles)
/// has made the roles.
#[derive(Debug)]
pub struct PostgresCluster {
    /// The installation whose binaries manage this cluster.
    binaries: PgBinaries,
    /// Set when we are root: the server must run as the `postgres` account.
    run_as: Option<RunAs>,
    /// Absolute path of the data directory.
    data_dir: PathBuf,
    /// Loopback TCP port; kept across [`stop`](Self::stop)/[`start`](Self::start)
    /// so clients' URLs stay valid through a simulated outage.
    port: u16,
    /// Decides fsync and friends, and how hard we stop on drop.
    durability: Durability,
    /// Whether we started the server and have not stopped it, so that drop and
    /// [`stop`](Self::stop) only stop what is running.
    running: bool,
    /// The process that stops the server (and, for a temporary cluster,
    /// deletes its directory) if we die without running `Drop`; killed by a
    /// normal drop.
    watchdog: Option<Child>,
    /// Set for a cluster on a test host: it runs and listens there.
    placement: Option<Placement>,
    /// Temporary clusters only: the directory deleted on drop. Declared last so
    /// it is removed after [`Drop::drop`] has stopped the server.
    temp_root: Option<TempDir>,
}

/// Where a cluster on a test host runs, and whom it lets in.
#[derive(Debug, Clone)]
struct Placement {
    host: crate::netns::Host,
    /// The harness's address: the superuser connects from there.
    gateway: std::net::Ipv4Addr,
    /// The network's `a.b.c.d/n`: the services' roles connect from there.
    clients: String,
}

impl PostgresCluster {
    /// Starts a throwaway cluster in a fresh temporary directory on a free port.
    ///
    /// Tuned for speed over safety (`fsync`, `synchronous_commit` and
    /// `full_page_writes` off). The server is stopped and the directory deleted
    /// on drop, or by a watchdog within a second or two if this process is
    /// killed. Blocks for the `initdb` and start-up (about a second or two).
    pub fn start_temporary() -> anyhow::Result<Self> {
        Self::start_temporary_placed(None)
    }

    /// [`start_temporary`](Self::start_temporary) on `host` of `network`:
    /// the server runs there and listens on the host's address, port 5432;
    /// the superuser may connect from the network's gateway (the harness),
    /// the services' roles by password from any host of the network.
    pub fn start_temporary_on(
        network: &crate::netns::Network,
        host: &crate::netns::Host,
    ) -> anyhow::Result<Self> {
        Self::start_temporary_placed(Some(Placement {
            host: host.clone(),
            gateway: network.gateway(),
            clients: network.cidr(),
        }))
    }

    fn start_temporary_placed(placement: Option<Placement>) -> anyhow::Result<Self> {
        let binaries = PgBinaries::locate()?;
        let run_as = RunAs::detect()?;
        let root = tempfile::Builder::new()
            .prefix(TEMP_DIR_PREFIX)
            .tempdir()
            .context("creating a temporary directory for PostgreSQL")?;
        if let Some(account) = &run_as {
            account.chown(root.path())?;
            account.check_access(root.path())?;
        }
        let mut cluster = Self {
            binaries,
            run_as,
            data_dir: root.path().join(TEMP_DATA_SUBDIR),
            port: 0,
            durability: Durability::Throwaway,
            running: false,
            watchdog: None,
            placement,
            temp_root: Some(root),
        };
        cluster.initdb()?;
        // Before the server exists: from here on a SIGKILL must not leak anything.
        cluster.spawn_watchdog()?;
        if cluster.placement.is_some() {
            cluster.port = PLACED_PORT;
            cluster.launch()?;
        } else {
            cluster.launch_on_free_port()?;
        }
        Ok(cluster)
    }

    /// Starts a durable cluster whose data lives in `dir`, on `port`.
    ///
    /// `dir` is initialised if it holds no cluster yet and reused otherwise. If
    /// a server from an earlier run that did not shut down (a crash, SIGKILL)
    /// still runs on `dir`, it is stopped cleanly and restarted with this run's
    /// settings. Dropping the value stops the server and keeps the data; so
    /// does a watchdog, within a second or two, if this process is killed.
    pub fn start_persistent(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let binaries = PgBinaries::locate()?;
        let run_as = RunAs::detect()?;
        let data_dir = std::path::absolute(dir)
            .with_context(|| format!("resolving data directory {}", dir.display()))?;
        let mut cluster = Self {
            binaries,
            run_as,
            data_dir,
            port,
            durability: Durability::Durable,
            running: false,
            watchdog: None,
            placement: None,
            temp_root: None,
        };
        if cluster.data_dir.join(VERSION_FILE).is_file() {
            // Our own leftover may be what holds the port, so this comes first.
            cluster.stop_leftover_server()?;
            ensure_port_is_free(port)?;
        } else {
            // Before initdb: fail in milliseconds, not after seconds of work.
            ensure_port_is_free(port)?;
            cluster.prepare_new_data_dir()?;
            cluster.initdb()?;
        }
        // Before the server exists, as for temporary clusters.
        cluster.spawn_watchdog()?;
        cluster.launch()?;
        Ok(cluster)
    }

    /// Connection URL for `database` on this cluster, e.g.
    /// `postgres://postgres@127.0.0.1:54329/ordersystem`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@{}:{}/{database}",
            self.listen_address(),
            self.port
        )
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory, e.g. to point a developer at the server log.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The running server's postmaster (the first line of its
    /// `postmaster.pid`), if it is running.
    pub fn server_pid(&self) -> Option<u32> {
        let lock = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        lock.lines().next()?.trim().parse().ok()
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE_NAME)
    }

    /// Whether the server is up (false between [`stop`](Self::stop) and
    /// [`start`](Self::start)).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Creates database `name` unless it exists. Safe to call concurrently.
    pub async fn ensure_database(&self, name: &str) -> anyhow::Result<()> {
        let mut connection = PgConnection::connect(&self.url(MAINTENANCE_DATABASE))
            .await
            .with_context(|| format!("connecting to PostgreSQL on port {}", self.port))?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut connection)
                .await
                .with_context(|| format!("checking whether database {name} exists"))?;
        if !exists {
            // CREATE DATABASE takes no bind parameters, hence the quoted identifier.
            let create = format!("CREATE DATABASE {}", quote_identifier(name));
            match sqlx::query(&create).execute(&mut connection).await {
                Ok(_) => tracing::info!(database = name, "created database"),
                // Another caller created it between our check and our CREATE.
                Err(sqlx::Error::Database(error))
                    if matches!(
                        error.code().as_deref(),
                        Some(DUPLICATE_DATABASE | UNIQUE_VIOLATION)
                    ) => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("creating database {name}"))
                }
            }
        }
        connection
            .close()
            .await
            .context("closing the maintenance connection")?;
        Ok(())
    }

    /// Shuts the server down cleanly (simulating an outage): clients are
    /// disconnected and the port is closed; data and port are kept for
    /// [`start`](Self::start). A no-op if it is not running.
    ///
    /// Uses PostgreSQL's "fast" mode rather than "immediate": with
    /// `synchronous_commit=off` an immediate stop could lose the last commits,
    /// which would make an outage test flaky in a way production never is.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.running {
            self.shutdown(StopMode::Fast)?;
        }
        Ok(())
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port.
    /// A no-op if it is running.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if !self.running {
            self.launch()?;
        }
        Ok(())
    }

    /// Runs `initdb` on [`data_dir`](Self::data_dir).
    fn initdb(&self) -> anyhow::Result<()> {
        let mut args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir.clone().into(),
            "--auth=trust".into(),
            format!("--username={SUPERUSER}").into(),
            "--encoding=UTF8".into(),
            format!("--locale={LOCALE}").into(),
            "--no-instructions".into(),
        ];
        if self.durability == Durability::Throwaway {
            // Skips initdb's own fsyncs, which dominate its run time.
            args.push("--no-sync".into());
        }
        self.run(&self.binaries.initdb, &args)
            .with_context(|| format!("initdb {}", self.data_dir.display()))?;
        tracing::debug!(data_dir = %self.data_dir.display(), "initialised PostgreSQL data directory");
        Ok(())
    }

    /// Makes a not-yet-initialised persistent data directory usable by `initdb`.
    fn prepare_new_data_dir(&self) -> anyhow::Result<()> {
        match &self.run_as {
            Some(account) => {
                // initdb runs as the server account, which may not create
                // directories here; so we do, and hand the directory over.
                std::fs::create_dir_all(&self.data_dir)
                    .with_context(|| format!("creating {}", self.data_dir.display()))?;
                account.chown(&self.data_dir)?;
                // PostgreSQL refuses data directories readable by others.
                std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("restricting {}", self.data_dir.display()))?;
                account.check_access(&self.data_dir)?;
            }
            None => {
                // initdb creates the directory itself, with the right mode.
                if let Some(parent) = self.data_dir.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
            }
        }
        Ok(())
    }

    /// Stops a server left running on our data directory by an earlier run.
    fn stop_leftover_server(&mut self) -> anyhow::Result<()> {
        let args: [OsString; 3] = ["status".into(), "-D".into(), self.data_dir.clone().into()];
        let output = spawn::output(&mut self.command(&self.binaries.pg_ctl, &args))
            .context("running pg_ctl status")?;
        match output.status.code() {
            Some(0) => {
                tracing::warn!(
                    data_dir = %self.data_dir.display(),
                    "a PostgreSQL server from an earlier run is still running on this data \
                     directory; stopping it to restart with this run's settings"
                );
                self.shutdown(StopMode::Fast)
                    .context("stopping the leftover PostgreSQL server")
            }
            Some(PG_CTL_STATUS_NOT_RUNNING) => Ok(()),
            _ => bail!(
                "pg_ctl status -D {} failed: {}",
                self.data_dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }
    }

    /// Picks a free port and starts there, picking again if someone else took
    /// the port in the meantime.
    fn launch_on_free_port(&mut self) -> anyhow::Result<()> {
        let mut attempt = 1;
        loop {
            self.port = free_port()?;
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(error)
                    if attempt < TEMP_START_ATTEMPTS
                        && self.log_tail().contains(PORT_CLASH_LOG_MARKER) =>
                {
                    tracing::debug!(port = self.port, %error, "port taken meanwhile; retrying");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// `pg_ctl start`, waiting until the server accepts connections.
    fn launch(&mut self) -> anyhow::Result<()> {
        self.write_pg_hba()?;
        let args: Vec<OsString> = vec![
            "start".into(),
            "--wait".into(),
            format!("--timeout={}", PG_CTL_TIMEOUT.as_secs()).into(),
            "--silent".into(),
            "-D".into(),
            self.data_dir.clone().into(),
            "-l".into(),
            self.log_file().into(),
            "-o".into(),
            self.server_options().into(),
        ];
        let output = spawn::output(
            self.command(&self.binaries.pg_ctl, &args)
                // The postmaster inherits our process group unless pg_ctl gets
                // its own: a Ctrl-C in the terminal would then reach the server
                // directly and stop it before its clients, instead of us
                // stopping it last.
                .process_group(0),
        )
        .context("running pg_ctl start")?;
        if !output.status.success() {
            bail!(
                "PostgreSQL failed to start on port {} ({}); last lines of {}:\n{}",
                self.port,
                String::from_utf8_lossy(&output.stderr).trim(),
                self.log_file().display(),
                self.log_tail()
            );
        }
        self.running = true;
        tracing::info!(
            port = self.port,
            data_dir = %self.data_dir.display(),
            "PostgreSQL started"
        );
        Ok(())
    }

    /// Where the server listens: loopback, or its test host's address.
    fn listen_address(&self) -> String {
        match &self.placement {
            Some(placement) => placement.host.address().to_string(),
            None => LISTEN_ADDRESS.to_owned(),
        }
    }

    /// Writes [`PG_HBA`] over the data directory's `pg_hba.conf` (on a test
    /// host: the same rules for the gateway and the network's hosts).
    fn write_pg_hba(&self) -> anyhow::Result<()> {
        let path = self.data_dir.join(PG_HBA_FILE);
        let rules = match &self.placement {
            Some(placement) => format!(
                "# Written by local-infra at every start; edits are overwritten.\n\
                 host    all  postgres  {}/32  trust\n\
                 host    all  all       {}     scram-sha-256\n",
                placement.gateway, placement.clients
            ),
            None => PG_HBA.to_owned(),
        };
        std::fs::write(&path, rules).with_context(|| format!("writing {}", path.display()))?;
        if let Some(account) = &self.run_as {
            account.chown(&path)?;
        }
        Ok(())
    }

    /// `pg_ctl stop` in the given mode, waiting until the server is gone.
    fn shutdown(&mut self, mode: StopMode) -> anyhow::Result<()> {
        let args: Vec<OsString> = vec![
            "stop".into(),
            "--wait".into(),
            format!("--timeout={}", PG_CTL_TIMEOUT.as_secs()).into(),
            "--silent".into(),
            "-D".into(),
            self.data_dir.clone().into(),
            "-m".into(),
            mode.as_arg().into(),
        ];
        self.run(&self.binaries.pg_ctl, &args)
            .with_context(|| format!("stopping PostgreSQL on port {}", self.port))?;
        self.running = false;
        tracing::info!(port = self.port, "PostgreSQL stopped");
        Ok(())
    }

    /// The server's command line (`pg_ctl -o`). Passed on every start rather
    /// than written into `postgresql.conf`, so a reused data directory always
    /// gets this version's settings.
    fn server_options(&self) -> String {
        let mut options = format!(
            "-p {} -c listen_addresses={} -c unix_socket_directories='' \
             -c max_connections={MAX_CONNECTIONS}",
            self.port,
            self.listen_address()
        );
        for (name, value) in self.durability.settings() {
            options.push_str(&format!(" -c {name}={value}"));
        }
        if self.durability == Durability::Durable && self.binaries.has_statement_statistics() {
            // Per-statement counters for `devstack bench`'s Postgres profile;
            // they cost little and need loading at start.
            options.push_str(" -c shared_preload_libraries=pg_stat_statements");
        }
        if self.placement.is_some() {
            for (name, value) in DEAD_CLIENT_SETTINGS {
                options.push_str(&format!(" -c {name}={value}"));
            }
        }
        options
    }

    /// Starts a detached shell that waits for this process to disappear, then
    /// stops the server: a temporary cluster at once (and its directory is
    /// deleted), a persistent one cleanly, keeping its data.
    fn spawn_watchdog(&mut self) -> anyhow::Result<()> {
        // `kill -0` only checks existence. The stop command comes last as "$@",
        // so no path needs shell quoting; an empty root means "delete nothing".
        const SCRIPT: &str = r#"owner=$1 interval=$2 root=$3
shift 3
while kill -0 "$owner" 2>/dev/null; do sleep "$interval"; done
"$@" >/dev/null 2>&1
if [ -n "$root" ]; then rm -rf "$root"; fi"#;
        let (mode, root) = match (&self.temp_root, self.durability) {
            (Some(root), _) => (StopMode::Immediate, root.path().as_os_str().to_owned()),
            (None, Durability::Throwaway) => (StopMode::Immediate, OsString::new()),
            // Never delete a developer's data, and let the server flush.
            (None, Durability::Durable) => (StopMode::Fast, OsString::new()),
        };
        let stop: Vec<OsString> = vec![
            "stop".into(),
            "--wait".into(),
            format!("--timeout={}", PG_CTL_TIMEOUT.as_secs()).into(),
            "-D".into(),
            self.data_dir.clone().into(),
            "-m".into(),
            mode.as_arg().into(),
        ];
        let child = spawn::spawn(
            Command::new("/bin/sh")
                .arg("-c")
                .arg(SCRIPT)
                .arg("local-infra-pg-watchdog")
                .arg(std::process::id().to_string())
                .arg(WATCHDOG_POLL_SECONDS.to_string())
                .arg(root)
                .args(self.argv(&self.binaries.pg_ctl, &stop))
                // From `/`, like every pg_ctl we run: the server account may
                // not be allowed into our working directory.
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group: the Ctrl-C that kills a test run must
                // not kill the process that cleans up after it.
                .process_group(0),
        )
        .context("spawning the PostgreSQL watchdog")?;
        self.watchdog = Some(child);
        Ok(())
    }

    /// The argument vector running `program args`, as the server account when
    /// we are root.
    fn argv(&self, program: &Path, args: &[OsString]) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::with_capacity(args.len() + 1);
        argv.push(program.into());
        argv.extend(args.iter().cloned());
        match &self.run_as {
            Some(account) => account.wrap(&argv),
            None => argv,
        }
    }

    /// A [`Command`] for `program args`, run from `/` (the server account may
    /// not be allowed into our working directory) with no stdin.
    fn command(&self, program: &Path, args: &[OsString]) -> Command {
        let mut command = command_from_argv(&self.argv(program, args));
        command.current_dir("/").stdin(Stdio::null());
        if let Some(placement) = &self.placement {
            placement.host.enter(&mut command);
        }
        command
    }

    /// Runs `program args` to completion; an error carries its stderr.
    fn run(&self, program: &Path, args: &[OsString]) -> anyhow::Result<Output> {
        let output = spawn::output(&mut self.command(program, args))
            .with_context(|| format!("running {}", program.display()))?;
        if !output.status.success() {
            let account = self
                .run_as
                .as_ref()
                .map(|account| format!(" as `{}`", account.name()))
                .unwrap_or_default();
            bail!(
                "{}{account} exited with {}: {}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(output)
    }

    /// The last lines of the server log, for error messages.
    fn log_tail(&self) -> String {
        match std::fs::read(self.log_file()) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            }
            Err(error) => format!("(log unavailable: {error})"),
        }
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        if self.running {
            // Throwaway data is deleted next, so there is nothing to flush.
            let mode = match self.durability {
                Durability::Throwaway => StopMode::Immediate,
                Durability::Durable => StopMode::Fast,
            };
            if let Err(error) = self.shutdown(mode) {
                tracing::warn!(error = format!("{error:#}"), "could not stop PostgreSQL");
            }
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            // Errors mean it already exited; either way it must not run the
            // cleanup later against a directory name that may be reused.
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        // `temp_root` is deleted when the fields drop, right after this.
    }
}

/// Tests keep a cluster in an `Arc` shared across tasks; keep it possible.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PostgresCluster>();
};

/// SQLSTATE `duplicate_database`.
const DUPLICATE_DATABASE: &str = "42P04";
/// SQLSTATE `unique_violation`: what a concurrent CREATE DATABASE of the same
/// name can also fail with (on the `pg_database` catalog index).
const UNIQUE_VIOLATION: &str = "23505";

/// Quotes an SQL identifier: double quotes, embedded ones doubled.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Fails with advice if something already listens on `port` (pg_ctl would
/// only say "could not start server" and leave the reason in the log).
fn ensure_port_is_free(port: u16) -> anyhow::Result<()> {
    if TcpListener::bind((LISTEN_ADDRESS, port)).is_err() {
        bail!(
            "port {port} on {LISTEN_ADDRESS} is already in use, so PostgreSQL cannot listen \
             there; stop whatever holds it or choose another port"
        );
    }
    Ok(())
}

/// A loopback port that was free a moment ago: bind port 0, read what the
/// kernel chose, close. Never one this process handed out before: a server
/// of ours stopped for a moment (a restart, a killed node) keeps its port,
/// and a cluster started meanwhile must not be given it. A race with other
/// processes remains for the caller to cope with.
pub fn free_port() -> anyhow::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    const ATTEMPTS: usize = 100;
    for _ in 0..ATTEMPTS {
        let listener = TcpListener::bind((LISTEN_ADDRESS, 0)).context("finding a free port")?;
        let port = listener
            .local_addr()
            .context("reading the free port's number")?
            .port();
        if HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port)
        {
            return Ok(port);
        }
    }
    bail!("{ATTEMPTS} free ports in a row had been handed out before")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier(r#"odd"name"#), r#""odd""name""#);
    }

    #[test]
    fn throwaway_clusters_skip_fsync_and_durable_ones_do_not() {
        assert!(Durability::Throwaway.settings().contains(&("fsync", "off")));
        assert!(Durability::Durable.settings().is_empty());
    }
}
