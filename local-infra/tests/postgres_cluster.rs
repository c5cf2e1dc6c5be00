//! Proves the private PostgreSQL clusters come up, serve connections, survive a
//! simulated outage, keep (or discard) their data as promised and never outlive
//! their owner, even one killed with SIGKILL.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use local_infra::PostgresCluster;
use sqlx::{Connection, PgConnection};

/// A database name that is not created by initdb.
const APP_DATABASE: &str = "ordersystem";

/// How long the watchdog may take to clean up after its owner died: its poll
/// interval plus an immediate shutdown, with generous slack for a busy CI box.
const WATCHDOG_CLEANUP_DEADLINE: Duration = Duration::from_secs(20);

/// How often to look whether the watchdog has cleaned up.
const CLEANUP_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Tells the helper test below it was started by the watchdog test, not by a
/// developer running ignored tests.
const HELPER_ENV: &str = "LOCAL_INFRA_WATCHDOG_HELPER";

/// Starts the helper's "PORT DATA_DIR" line among the harness's output.
const CLUSTER_MARKER: &str = "cluster: ";

async fn connect(url: &str) -> sqlx::Result<PgConnection> {
    PgConnection::connect(url).await
}

async fn select_one(url: &str) -> i32 {
    let mut connection = connect(url).await.expect("connects");
    sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut connection)
        .await
        .expect("SELECT 1")
}

fn nothing_listens_on(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[tokio::test]
async fn temporary_cluster_serves_connections_and_vanishes_on_drop() {
    // HELPER_ENV names a data directory for a persistent cluster, or is
    // empty for a temporary one.
    let persistent_dir = std::env::var_os(HELPER_ENV).filter(|dir| !dir.is_empty());
    let cluster = match persistent_dir {
        Some(dir) => PostgresCluster::start_persistent(Path::new(&dir), free_port()),
        None => PostgresCluster::start_temporary(),
    }
    .expect("cluster starts");
    let port = cluster.port();
    let data_dir = cluster.data_dir().to_path_buf();

    assert_eq!(select_one(&cluster.url("postgres")).await, 1);
    cluster
        .ensure_database(APP_DATABASE)
        .await
        .expect("creates");
    cluster
        .ensure_database(APP_DATABASE)
        .await
        .expect("idempotent");
    assert_eq!(select_one(&cluster.url(APP_DATABASE)).await, 1);

    drop(cluster);

    assert!(nothing_listens_on(port), "server still listening on {port}");
    assert!(!data_dir.exists(), "{} not deleted", data_dir.display());
}

#[tokio::test]
async fn temporary_cluster_keeps_data_and_port_through_stop_and_start() {
    let mut cluster = PostgresCluster::start_temporary().expect("cluster starts");
    let port = cluster.port();
    let url = cluster.url("postgres");
    {
        let mut connection = connect(&url).await.expect("connects");
        sqlx::query("CREATE TABLE outage (id int)")
            .execute(&mut connection)
            .await
            .unwrap();
        sqlx::query("INSERT INTO outage VALUES (42)")
            .execute(&mut connection)
            .await
            .unwrap();
    }

    cluster.stop().expect("stops");
    assert!(!cluster.is_running());
    assert!(connect(&url).await.is_err(), "connected during the outage");

    cluster.start().expect("starts again");
    assert_eq!(cluster.port(), port);
    let mut connection = connect(&url).await.expect("reconnects");
    let kept: i32 = sqlx::query_scalar("SELECT id FROM outage")
        .fetch_one(&mut connection)
        .await
        .expect("row survived the outage");
    assert_eq!(kept, 42);
}

/// A scratch directory the `postgres` account can enter when we run as root
/// (tempfile makes it 0700, like a home directory).
fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test]
async fn persistent_cluster_keeps_data_and_takes_over_a_leftover_server() {
    let scratch = scratch_dir();
    let data_dir = scratch.path().join("pgdata");
    let port = local_infra::free_port().unwrap();

    let cluster = PostgresCluster::start_persistent(&data_dir, port).expect("first start");
    cluster.ensure_database(APP_DATABASE).await.unwrap();
    {
        let mut connection = connect(&cluster.url(APP_DATABASE)).await.unwrap();
        sqlx::raw_sql("CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)")
            .execute(&mut connection)
            .await
            .unwrap();
    }
    // A crashed run: the server keeps running, nobody stops it.
    std::mem::forget(cluster);
    assert!(!nothing_listens_on(port));

    let mut cluster = PostgresCluster::start_persistent(&data_dir, port).expect("takes over");
    let mut connection = connect(&cluster.url(APP_DATABASE)).await.unwrap();
    let kept: i32 = sqlx::query_scalar("SELECT id FROM kept")
        .fetch_one(&mut connection)
        .await
        .expect("data survived");
    assert_eq!(kept, 7);
    connection.close().await.unwrap();

    cluster.stop().unwrap();
    assert!(nothing_listens_on(port));
    drop(cluster);
    assert!(
        data_dir.join("PG_VERSION").exists(),
        "persistent data deleted"
    );
}

#[test]
fn persistent_cluster_refuses_a_port_in_use() {
    let scratch = scratch_dir();
    let taken = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port();

    let error = PostgresCluster::start_persistent(&scratch.path().join("pgdata"), port)
        .expect_err("port is taken");

    assert!(
        format!("{error:#}").contains("already in use"),
        "unhelpful error: {error:#}"
    );
}

/// Not a test on its own: the body of the child process that
/// `watchdog_cleans_up_after_a_killed_owner` starts and SIGKILLs.
#[test]
#[ignore = "helper process for watchdog_cleans_up_after_a_killed_owner"]
fn watchdog_helper_starts_a_cluster_and_waits_to_be_killed() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    // HELPER_ENV names a data directory for a persistent cluster, or is
    // empty for a temporary one.
    let persistent_dir = std::env::var_os(HELPER_ENV).filter(|dir| !dir.is_empty());
    let cluster = match persistent_dir {
        Some(dir) => PostgresCluster::start_persistent(Path::new(&dir), free_port()),
        None => PostgresCluster::start_temporary(),
    }
    .expect("cluster starts");
    // On a line of its own: libtest has already printed "test NAME ... ".
    println!(
        "\n{CLUSTER_MARKER}{} {}",
        cluster.port(),
        cluster.data_dir().display()
    );
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(CLEANUP_POLL_INTERVAL);
    }
    done()
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts the helper (a persistent cluster in `persistent_dir`, else a
/// temporary one), waits for its cluster to be up, SIGKILLs it and reaps it.
/// Returns the cluster's port and data directory.
fn start_and_kill_a_helper(persistent_dir: Option<&Path>) -> (u16, PathBuf) {
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "watchdog_helper_starts_a_cluster_and_waits_to_be_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            HELPER_ENV,
            persistent_dir.map_or(std::ffi::OsStr::new(""), Path::as_os_str),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
    let (port, data_dir) = loop {
        let line = lines
            .next()
            .expect("helper printed its cluster")
            .expect("readable");
        // Skip the test harness's own chatter ("running 1 test", ...).
        if let Some((port, dir)) = line
            .strip_prefix(CLUSTER_MARKER)
            .and_then(|rest| rest.split_once(' '))
        {
            break (port.parse::<u16>().expect("a port"), PathBuf::from(dir));
        }
    };
    assert!(!nothing_listens_on(port));

    helper.kill().unwrap(); // SIGKILL: no destructors run.
    helper.wait().unwrap(); // Reap it, or it lingers as a zombie kill -0 still sees.
    (port, data_dir)
}

#[test]
fn watchdog_cleans_up_after_a_killed_owner() {
    let (port, data_dir) = start_and_kill_a_helper(None);

    let cleaned = wait_until(WATCHDOG_CLEANUP_DEADLINE, || {
        nothing_listens_on(port) && !Path::new(&data_dir).exists()
    });
    assert!(
        cleaned,
        "server on {port} / {} left behind",
        data_dir.display()
    );
}

#[test]
fn watchdog_stops_a_persistent_cluster_of_a_killed_owner_and_keeps_its_data() {
    let scratch = scratch_dir();
    let data_dir = scratch.path().join("pgdata");

    let (port, reported_dir) = start_and_kill_a_helper(Some(&data_dir));

    assert_eq!(reported_dir, data_dir);
    // A clean stop removes postmaster.pid; an immediate or absent one would not.
    let stopped = wait_until(WATCHDOG_CLEANUP_DEADLINE, || {
        nothing_listens_on(port) && !data_dir.join("postmaster.pid").exists()
    });
    assert!(stopped, "server on {port} left running");
    assert!(
        data_dir.join("PG_VERSION").is_file(),
        "the watchdog deleted persistent data"
    );
}
