//! A real Apache Kafka cluster in KRaft mode, run as plain JVM processes on
//! loopback: one combined broker+controller, or three of them.
//!
//! Lifecycle: [`ApacheKafka::start`] formats each node's storage with one
//! cluster id (`kafka.tools.StorageTool format`), starts `kafka.Kafka` with a
//! generated `server.properties`, and returns once every node answers a
//! metadata request listing the whole cluster. Each node logs to
//! `<dir>/node-<id>/broker.log`. Dropping the value stops the nodes (SIGTERM,
//! then SIGKILL after [`STOP_TIMEOUT`]); a detached watchdog kills them within
//! a second or two if this process dies without dropping it.
//!
//! Faults for tests are the real ones: SIGKILL a node and start it again on
//! its data ([`ApacheKafka::kill_node`], [`ApacheKafka::start_node`]), SIGSTOP
//! and SIGCONT it ([`ApacheKafka::pause_node`], [`ApacheKafka::resume_node`]).
//!
//! A three-node cluster replicates every topic three times with
//! `min.insync.replicas=2` and no unclean leader election: an acknowledged
//! write (`acks=all`) survives the loss of any one node.
//!
//! With [`KafkaSecurity::SaslSsl`] clients connect over TLS and log in with
//! SCRAM-SHA-512, and ACLs allow each service only its part of the saga (see
//! [`crate::apache_kafka_security`]); [`ApacheKafka::credentials`] hands out
//! each user's login. The cluster's own clients here log in as the admin.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tempfile::TempDir;

use crate::apache_kafka_security::{KafkaCredentials, SaslSsl};
use crate::free_port;
use crate::kafka_runtime::KafkaRuntime;

/// How long a node may take from `java` to answering metadata: a JVM on a
/// busy two-core machine needs seconds, a three-node quorum a few more.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a node may take to stop after SIGTERM (a controlled shutdown
/// hands its partition leadership over first) before it is SIGKILLed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause between two readiness or exit checks.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a created topic may take until each partition has a leader.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one metadata request may take during the readiness check.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// Default JVM heap per node: the broker idles in well under this, and three
/// nodes plus the stack fit a small machine.
pub const DEFAULT_HEAP_MB: u32 = 320;

/// Partitions of `__consumer_offsets`: Kafka's 50 take seconds to create and
/// elect on a small machine, and a local cluster has few groups.
const OFFSETS_TOPIC_PARTITIONS: u32 = 10;

/// Seconds between the watchdog's checks that this process is alive.
const WATCHDOG_POLL_SECONDS: u32 = 1;

/// Lines of a node's log quoted in an error.
const LOG_TAIL_LINES: usize = 30;
/// Most ERROR or FATAL lines quoted from before the tail.
const LOG_ERROR_LINES: usize = 5;

/// The client port of a node on a test host (its quorum port is the next):
/// each host has its ports to itself.
const PLACED_CLIENT_PORT: u16 = 9092;

/// The file naming the cluster id in a persistent directory.
const CLUSTER_ID_FILE: &str = "cluster.id";

/// What to start.
#[derive(Debug, Clone)]
pub struct ApacheKafkaOptions {
    /// 1 (one combined broker+controller) or 3 (a replicated cluster).
    pub nodes: usize,
    /// Keep data here across runs; `None`: a temporary directory deleted on drop.
    pub data_dir: Option<PathBuf>,
    /// Client port of the first node, the others following in steps of two
    /// (each node's controller port is its client port + 1); `None`: free ports.
    pub first_port: Option<u16>,
    /// JVM heap of each node, in MiB.
    pub heap_mb: u32,
    /// How clients connect and what they may do.
    pub security: KafkaSecurity,
    /// One test host per node ([`crate::netns`]), each node running and
    /// listening there (clients on 9092, the quorum on 9093); empty: every
    /// node on loopback. Plaintext only (the `sasl_ssl` certificate names
    /// loopback).
    pub hosts: Vec<crate::netns::Host>,
}

/// How clients connect to an [`ApacheKafka`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaSecurity {
    /// No TLS, no login, no ACLs (the default).
    #[default]
    Plaintext,
    /// TLS with a CA made for the cluster, SCRAM-SHA-512 logins (one user
    /// per service, the console and an admin, passwords made for the cluster)
    /// and ACLs from the topic table. The users are created when the storage
    /// is formatted; a persistent cluster keeps its CA and passwords in
    /// `<data_dir>/security/` for its next start
    /// ([`ApacheKafka::kept_credentials`] reads them without starting it).
    SaslSsl,
}

impl Default for ApacheKafkaOptions {
    fn default() -> Self {
        Self {
            nodes: 1,
            data_dir: None,
            first_port: None,
            heap_mb: DEFAULT_HEAP_MB,
            security: KafkaSecurity::Plaintext,
            hosts: Vec::new(),
        }
    }
}

/// One KRaft node: broker and controller in one JVM.
#[derive(Debug)]
struct Node {
    /// `node.id`, 1-based.
    id: i32,
    /// Where clients connect.
    port: u16,
    /// Where the controllers talk to each other.
    controller_port: u16,
    /// `server.properties`, the data and the log live here.
    dir: PathBuf,
    /// The JVM while it runs (also while it is paused).
    process: Option<Child>,
    /// The test host it runs on; `None`: loopback.
    host: Option<crate::netns::Host>,
}

impl Node {
    /// The IP address it listens on.
    fn ip(&self) -> String {
        match &self.host {
            Some(host) => host.address().to_string(),
            None => "127.0.0.1".to_owned(),
        }
    }

    fn address(&self) -> String {
        format!("{}:{}", self.ip(), self.port)
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    /// Read by the watchdog, so it can kill what runs now.
    fn pid_file(&self) -> PathBuf {
        self.dir.join("broker.pid")
    }
}

/// A running Apache Kafka cluster. `Send + Sync`: faults are injected through
/// `&self`, so tests can share it in an `Arc` or a static.
pub struct ApacheKafka {
    runtime: KafkaRuntime,
    /// The nodes, behind a lock because faults change their processes.
    nodes: Mutex<Vec<Node>>,
    /// `host:port,...` of every node.
    bootstrap_servers: String,
    /// Heap of each node, for restarts.
    heap_mb: u32,
    /// The certificates, users and their passwords in `sasl_ssl` mode.
    security: Option<Box<SaslSsl>>,
    /// Kills the nodes if this process dies without dropping the value.
    watchdog: Option<Child>,
    /// Temporary clusters only: deleted after the nodes stopped (declared last).
    temp_root: Option<TempDir>,
}

impl ApacheKafka {
    /// Formats (unless a persistent directory already holds this cluster) and
    /// starts the nodes; returns once the whole cluster answers. Blocks for
    /// the JVMs' start-up: a few seconds per node on a small machine.
    pub fn start(options: ApacheKafkaOptions) -> anyhow::Result<Self> {
        ensure!(
            options.nodes == 1 || options.nodes == 3,
            "an Apache Kafka cluster here has 1 or 3 nodes, not {}",
            options.nodes
        );
        let runtime = KafkaRuntime::resolve()?;
        let (root, temp_root) = match &options.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                (std::path::absolute(dir)?, None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("local-infra-kafka-")
                    .tempdir()
                    .context("creating a temporary directory for Kafka")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let nodes = plan_nodes(&root, &options)?;
        let security = match options.security {
            KafkaSecurity::Plaintext => None,
            KafkaSecurity::SaslSsl => {
                let dir = security_dir(&root);
                // The logins are made when the storage is formatted: storage
                // formatted without them can never let a client in.
                ensure!(
                    SaslSsl::is_kept_in(&dir) || !is_formatted(&root),
                    "{} holds a Kafka cluster formatted without logins (plaintext); \
                     delete the directory to start it in sasl_ssl mode",
                    root.display()
                );
                Some(Box::new(SaslSsl::load_or_generate(&dir)?))
            }
        };
        let bootstrap_servers = nodes
            .iter()
            .map(Node::address)
            .collect::<Vec<_>>()
            .join(",");
        let mut kafka = Self {
            runtime,
            nodes: Mutex::new(nodes),
            bootstrap_servers,
            heap_mb: options.heap_mb,
            security,
            watchdog: None,
            temp_root,
        };
        kafka.write_configs()?;
        kafka.format(&root)?;
        // Before any broker exists: from here on a SIGKILL leaks nothing.
        kafka.watchdog = Some(spawn_watchdog(&root, kafka.temp_root.is_some())?);
        let ids = kafka.node_ids();
        for &id in &ids {
            kafka.launch(id)?;
        }
        for &id in &ids {
            kafka.wait_until_serving(id)?;
        }
        if let Some(security) = &kafka.security {
            let created = security
                .create_acls(&kafka.runtime, &kafka.bootstrap_servers)
                .context("creating the ACLs")?;
            tracing::info!(acls = created, "Kafka ACLs created");
        }
        tracing::info!(
            bootstrap_servers = %kafka.bootstrap_servers,
            nodes = ids.len(),
            version = kafka.runtime.version(),
            logs = %root.display(),
            "Apache Kafka started"
        );
        Ok(kafka)
    }

    /// The value for clients' `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap_servers.clone()
    }

    /// Whether clients must log in over TLS (`sasl_ssl`).
    pub fn is_secured(&self) -> bool {
        self.security.is_some()
    }

    /// The login of `username` (a service's name, `console` or `admin`) in
    /// `sasl_ssl` mode; `None` for a plaintext cluster or an unknown user.
    pub fn credentials(&self, username: &str) -> Option<KafkaCredentials> {
        self.security
            .as_ref()
            .and_then(|security| security.credentials(username))
            .cloned()
    }

    /// The login of `username` kept in the persistent `sasl_ssl` cluster
    /// in `data_dir`, for tools reaching a cluster another process runs;
    /// `None` if `data_dir` holds a plaintext cluster or no such user.
    pub fn kept_credentials(
        data_dir: &Path,
        username: &str,
    ) -> anyhow::Result<Option<KafkaCredentials>> {
        let dir = security_dir(&std::path::absolute(data_dir)?);
        if !SaslSsl::is_kept_in(&dir) {
            return Ok(None);
        }
        Ok(SaslSsl::load(&dir)?.credentials(username).cloned())
    }

    /// The super user's login in `sasl_ssl` mode.
    pub fn admin_credentials(&self) -> Option<KafkaCredentials> {
        self.security
            .as_ref()
            .map(|security| security.admin().clone())
    }

    /// The CA file clients check the brokers' certificate against (`sasl_ssl`).
    pub fn ca_location(&self) -> Option<PathBuf> {
        self.security
            .as_ref()
            .map(|security| security.ca_file().to_path_buf())
    }

    /// A client configuration for this cluster with full rights: the
    /// address, and in `sasl_ssl` mode the admin's login.
    pub fn client_config(&self) -> ClientConfig {
        self.client_config_for(&self.bootstrap_servers)
    }

    fn client_config_for(&self, bootstrap: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        if let Some(security) = &self.security {
            security.admin().apply(&mut config);
        }
        config
    }

    fn metadata_client(&self, bootstrap: &str) -> anyhow::Result<BaseConsumer> {
        quiet_metadata_client(self.client_config_for(bootstrap))
    }

    /// Kafka's version, e.g. `4.1.2`.
    pub fn version(&self) -> &str {
        self.runtime.version()
    }

    /// Node ids, `1..=nodes`.
    pub fn node_ids(&self) -> Vec<i32> {
        self.lock().iter().map(|node| node.id).collect()
    }

    /// Every node's `host:port`, by id.
    pub fn addresses(&self) -> Vec<(i32, String)> {
        self.lock()
            .iter()
            .map(|node| (node.id, node.address()))
            .collect()
    }

    /// The process ids of the nodes' JVMs that run now (paused ones too).
    pub fn pids(&self) -> Vec<u32> {
        self.lock()
            .iter()
            .filter_map(|node| node.process.as_ref().map(Child::id))
            .collect()
    }

    /// The replication factor topics should get: every node, up to three.
    pub fn replication_factor(&self) -> i32 {
        i32::try_from(self.lock().len().min(3)).expect("at most three nodes")
    }

    /// Each node's log file, by id.
    pub fn log_files(&self) -> Vec<(i32, PathBuf)> {
        self.lock()
            .iter()
            .map(|node| (node.id, node.log_file()))
            .collect()
    }

    /// SIGKILLs node `id` (a crash: nothing flushed, no leadership handed over).
    pub fn kill_node(&self, id: i32) -> anyhow::Result<()> {
        self.signal_and_reap(id, libc::SIGKILL, Duration::ZERO)
    }

    /// Stops node `id` cleanly: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    pub fn stop_node(&self, id: i32) -> anyhow::Result<()> {
        self.signal_and_reap(id, libc::SIGTERM, STOP_TIMEOUT)
    }

    /// Starts node `id` again on its data and ports, and waits until it serves.
    pub fn start_node(&self, id: i32) -> anyhow::Result<()> {
        self.launch(id)?;
        self.wait_until_serving(id)
    }

    /// Starts every stopped node again on its data (after a whole-cluster
    /// stop), and waits until the cluster serves.
    pub fn start_all(&self) -> anyhow::Result<()> {
        let stopped: Vec<i32> = self
            .lock()
            .iter()
            .filter(|node| node.process.is_none())
            .map(|node| node.id)
            .collect();
        for &id in &stopped {
            self.launch(id)?;
        }
        for &id in &stopped {
            self.wait_until_serving(id)?;
        }
        Ok(())
    }

    /// Creates `name` with `partitions` partitions, replicated on every node
    /// (up to three). An existing topic with that partition count is fine.
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .context("creating a Kafka admin client")?;
        let topic = NewTopic::new(
            name,
            partitions,
            TopicReplication::Fixed(self.replication_factor()),
        );
        let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT * 5));
        let results = futures::executor::block_on(admin.create_topics(&[topic], &options))
            .with_context(|| format!("creating topic {name}"))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    let existing = self.partition_count(name)?;
                    ensure!(
                        existing == partitions,
                        "topic {name} already exists with {existing} partitions, not {partitions}"
                    );
                }
                Err((topic, code)) => bail!("creating topic {topic}: {code}"),
            }
        }
        self.wait_until_led(name, partitions)
    }

    /// Polls until every partition of `topic` has a leader. A created topic
    /// is not served at once; a consumer that subscribes before it is may
    /// not see it until its next metadata refresh.
    fn wait_until_led(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let client = self.metadata_client(&self.bootstrap_servers)?;
        let started = Instant::now();
        loop {
            let metadata = client
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .with_context(|| format!("fetching metadata of {topic}"))?;
            let led = metadata
                .topics()
                .iter()
                .find(|candidate| candidate.name() == topic)
                .map_or(0, |found| {
                    found
                        .partitions()
                        .iter()
                        .filter(|p| p.leader() >= 0)
                        .count()
                });
            if i32::try_from(led)? >= partitions {
                return Ok(());
            }
            ensure!(
                started.elapsed() < TOPIC_READY_TIMEOUT,
                "topic {topic} has partitions without a leader {TOPIC_READY_TIMEOUT:?} after \
                 it was created"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn partition_count(&self, topic: &str) -> anyhow::Result<i32> {
        let client = self.metadata_client(&self.bootstrap_servers)?;
        let metadata = client
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .with_context(|| format!("fetching metadata of {topic}"))?;
        let found = metadata
            .topics()
            .iter()
            .find(|candidate| candidate.name() == topic)
            .with_context(|| format!("topic {topic} missing from its own metadata"))?;
        Ok(i32::try_from(found.partitions().len())?)
    }

    /// SIGSTOPs node `id`: it keeps its sockets but answers nothing, like a
    /// hung or partitioned machine.
    pub fn pause_node(&self, id: i32) -> anyhow::Result<()> {
        self.signal(id, libc::SIGSTOP)
    }

    /// SIGCONTs a paused node.
    pub fn resume_node(&self, id: i32) -> anyhow::Result<()> {
        self.signal(id, libc::SIGCONT)
    }

    /// The leader of `topic`'s `partition` as the cluster reports it now
    /// (`None` while there is none).
    pub fn leader_of(&self, topic: &str, partition: i32) -> anyhow::Result<Option<i32>> {
        let client = self.metadata_client(&self.bootstrap_servers)?;
        let metadata = client
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .with_context(|| format!("fetching metadata of {topic}"))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|candidate| candidate.name() == topic)
            .and_then(|found| found.partitions().iter().find(|p| p.id() == partition))
            .map(|found| found.leader())
            .filter(|&leader| leader >= 0))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Node>> {
        self.nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_configs(&self) -> anyhow::Result<()> {
        let nodes = self.lock();
        let voters = nodes
            .iter()
            .map(|node| format!("{}@{}:{}", node.id, node.ip(), node.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let replication = nodes.len().min(3);
        let min_insync = if replication >= 3 { 2 } else { 1 };
        for node in nodes.iter() {
            std::fs::create_dir_all(&node.dir)
                .with_context(|| format!("creating {}", node.dir.display()))?;
            let listeners = match &self.security {
                Some(security) => security.broker_properties(node.port, node.controller_port),
                None => plaintext_listeners(node),
            };
            let mut properties = String::new();
            for (key, value) in listeners {
                writeln!(properties, "{key}={value}").expect("writing to a String");
            }
            for (key, value) in [
                ("process.roles", "broker,controller".to_owned()),
                ("node.id", node.id.to_string()),
                ("controller.quorum.voters", voters.clone()),
                ("controller.listener.names", "CONTROLLER".to_owned()),
                ("log.dirs", node.dir.join("data").display().to_string()),
                ("num.partitions", "6".to_owned()),
                ("default.replication.factor", replication.to_string()),
                ("min.insync.replicas", min_insync.to_string()),
                ("offsets.topic.replication.factor", replication.to_string()),
                (
                    "offsets.topic.num.partitions",
                    OFFSETS_TOPIC_PARTITIONS.to_string(),
                ),
                (
                    "transaction.state.log.replication.factor",
                    replication.to_string(),
                ),
                ("transaction.state.log.min.isr", min_insync.to_string()),
                ("unclean.leader.election.enable", "false".to_owned()),
                // Topics are created explicitly with their partition counts; a
                // topic a client created by accident would get the wrong one.
                ("auto.create.topics.enable", "false".to_owned()),
                // Groups here start on demand (tests, restarts); a rolling
                // start of many members is not the common case.
                ("group.initial.rebalance.delay.ms", "0".to_owned()),
            ] {
                writeln!(properties, "{key}={value}").expect("writing to a String");
            }
            let config = node.dir.join("server.properties");
            std::fs::write(&config, properties)
                .with_context(|| format!("writing {}", config.display()))?;
            let log4j = node.dir.join("log4j2.properties");
            std::fs::write(&log4j, LOG4J2_PROPERTIES)
                .with_context(|| format!("writing {}", log4j.display()))?;
        }
        Ok(())
    }

    /// Formats every node not formatted yet, all with one cluster id (kept in
    /// `root` so a persistent cluster keeps it).
    fn format(&self, root: &Path) -> anyhow::Result<()> {
        let id_file = root.join(CLUSTER_ID_FILE);
        let cluster_id = match std::fs::read_to_string(&id_file) {
            Ok(id) => id.trim().to_owned(),
            Err(_) => {
                let id = random_cluster_id()?;
                std::fs::write(&id_file, &id)
                    .with_context(|| format!("writing {}", id_file.display()))?;
                id
            }
        };
        let scram_users = self
            .security
            .as_ref()
            .map(|security| security.format_arguments())
            .unwrap_or_default();
        let nodes = self.lock();
        let mut formatting = Vec::new();
        for node in nodes.iter() {
            if node.dir.join("data/meta.properties").is_file() {
                continue;
            }
            let child = self
                .runtime
                .java(&[], "kafka.tools.StorageTool")
                .args(["format", "-t", &cluster_id, "-c"])
                .arg(node.dir.join("server.properties"))
                .args(&scram_users)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("running Kafka's StorageTool")?;
            formatting.push((node.id, child));
        }
        for (id, child) in formatting {
            let output = child.wait_with_output()?;
            if !output.status.success() {
                bail!(
                    "formatting Kafka node {id}'s storage failed: {}{}",
                    String::from_utf8_lossy(&output.stdout).trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
        }
        Ok(())
    }

    fn launch(&self, id: i32) -> anyhow::Result<()> {
        let mut nodes = self.lock();
        let node = find(&mut nodes, id)?;
        ensure!(node.process.is_none(), "Kafka node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_file())
            .with_context(|| format!("opening {}", node.log_file().display()))?;
        let heap = format!("{}m", self.heap_mb);
        let mut log4j = OsString::from("-Dlog4j2.configurationFile=");
        log4j.push(node.dir.join("log4j2.properties"));
        let jvm: Vec<OsString> = vec![
            format!("-Xms{heap}").into(),
            format!("-Xmx{heap}").into(),
            "-XX:+UseG1GC".into(),
            "-XX:MaxGCPauseMillis=20".into(),
            "-Djava.awt.headless=true".into(),
            log4j,
        ];
        let mut command = self.runtime.java(&jvm, "kafka.Kafka");
        if let Some(host) = &node.host {
            host.enter(&mut command);
        }
        let child = command
            .arg(node.dir.join("server.properties"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C meant for the owner (which stops
            // its services first) must not take the broker down under them.
            .process_group(0)
            .spawn()
            .context("starting the Kafka broker (java)")?;
        std::fs::write(node.pid_file(), child.id().to_string())?;
        node.process = Some(child);
        Ok(())
    }

    /// Waits until node `id` answers metadata that lists every node.
    fn wait_until_serving(&self, id: i32) -> anyhow::Result<()> {
        let (address, expected, log_file) = {
            let mut nodes = self.lock();
            let expected = nodes.len();
            let node = find(&mut nodes, id)?;
            (node.address(), expected, node.log_file())
        };
        let client = self.metadata_client(&address)?;
        let started = Instant::now();
        loop {
            if let Some(status) = self.exit_status(id)? {
                bail!(
                    "Kafka node {id} exited during start-up ({status}); its log {} ends:\n{}",
                    log_file.display(),
                    log_tail(&log_file)
                );
            }
            if let Ok(metadata) = client.fetch_metadata(None, METADATA_TIMEOUT) {
                let listed = metadata.brokers().iter().any(|broker| broker.id() == id);
                if listed && metadata.brokers().len() == expected {
                    return Ok(());
                }
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "Kafka node {id} did not serve within {START_TIMEOUT:?}; its log {} ends:\n{}",
                    log_file.display(),
                    log_tail(&log_file)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn exit_status(&self, id: i32) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let mut nodes = self.lock();
        let node = find(&mut nodes, id)?;
        match node.process.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("Kafka node {id} is not running"),
        }
    }

    fn signal(&self, id: i32, signal: libc::c_int) -> anyhow::Result<()> {
        let mut nodes = self.lock();
        let node = find(&mut nodes, id)?;
        let child = node
            .process
            .as_ref()
            .with_context(|| format!("Kafka node {id} is not running"))?;
        send(child, signal)
    }

    /// Sends `signal` (after a SIGCONT, in case the node is paused), waits up
    /// to `grace` for the exit, then SIGKILLs.
    fn signal_and_reap(&self, id: i32, signal: libc::c_int, grace: Duration) -> anyhow::Result<()> {
        let mut nodes = self.lock();
        let node = find(&mut nodes, id)?;
        let Some(mut child) = node.process.take() else {
            return Ok(());
        };
        stop_child(&mut child, signal, grace);
        let _ = std::fs::remove_file(node.pid_file());
        Ok(())
    }
}

impl Drop for ApacheKafka {
    fn drop(&mut self) {
        // Throwaway data is deleted next: no need for a controlled shutdown.
        let (signal, grace) = if self.temp_root.is_some() {
            (libc::SIGKILL, Duration::ZERO)
        } else {
            (libc::SIGTERM, STOP_TIMEOUT)
        };
        let mut nodes = self.lock();
        // Signal all first, so a three-node cluster stops together.
        let mut stopping: Vec<(PathBuf, Child)> = Vec::new();
        for node in nodes.iter_mut() {
            if let Some(child) = node.process.take() {
                let _ = send(&child, libc::SIGCONT);
                let _ = send(&child, signal);
                stopping.push((node.pid_file(), child));
            }
        }
        drop(nodes);
        for (pid_file, mut child) in stopping {
            stop_child(&mut child, signal, grace);
            let _ = std::fs::remove_file(pid_file);
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl std::fmt::Debug for ApacheKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApacheKafka")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("version", &self.runtime.version())
            .finish_non_exhaustive()
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ApacheKafka>();
};

/// The listeners of a cluster without security: PLAINTEXT for clients and
/// brokers, and for the quorum.
fn plaintext_listeners(node: &Node) -> Vec<(String, String)> {
    vec![
        (
            "listeners".to_owned(),
            format!(
                "PLAINTEXT://{ip}:{},CONTROLLER://{ip}:{}",
                node.port,
                node.controller_port,
                ip = node.ip()
            ),
        ),
        (
            "advertised.listeners".to_owned(),
            format!("PLAINTEXT://{}", node.address()),
        ),
        (
            "listener.security.protocol.map".to_owned(),
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_owned(),
        ),
        (
            "inter.broker.listener.name".to_owned(),
            "PLAINTEXT".to_owned(),
        ),
    ]
}

/// Logs to standard output, which the launcher sends to `broker.log`.
const LOG4J2_PROPERTIES: &str = "\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
";

/// Where a cluster in `root` keeps its `sasl_ssl` material.
fn security_dir(root: &Path) -> PathBuf {
    root.join("security")
}

/// Whether a node's storage in `root` has been formatted.
fn is_formatted(root: &Path) -> bool {
    root.join("node-1/data/meta.properties").is_file()
}

fn plan_nodes(root: &Path, options: &ApacheKafkaOptions) -> anyhow::Result<Vec<Node>> {
    ensure!(
        options.hosts.is_empty() || options.hosts.len() == options.nodes,
        "{} test host(s) for {} Kafka node(s)",
        options.hosts.len(),
        options.nodes
    );
    ensure!(
        options.hosts.is_empty() || options.security == KafkaSecurity::Plaintext,
        "Kafka nodes on test hosts run in plaintext only"
    );
    let mut nodes = Vec::with_capacity(options.nodes);
    for index in 0..options.nodes {
        let id = i32::try_from(index + 1)?;
        let host = options.hosts.get(index).cloned();
        let (port, controller_port) = match options.first_port {
            _ if host.is_some() => (PLACED_CLIENT_PORT, PLACED_CLIENT_PORT + 1),
            Some(first) => {
                let offset = u16::try_from(index * 2)?;
                let port = first
                    .checked_add(offset)
                    .context("Kafka port out of range")?;
                (
                    port,
                    port.checked_add(1).context("Kafka port out of range")?,
                )
            }
            None => (free_port()?, free_port()?),
        };
        nodes.push(Node {
            id,
            port,
            controller_port,
            dir: root.join(format!("node-{id}")),
            process: None,
            host,
        });
    }
    if let Some(existing) = count_existing_nodes(root)? {
        ensure!(
            existing == options.nodes,
            "{} holds a {existing}-node Kafka cluster, not {} nodes; choose that node count \
             or delete the directory",
            root.display(),
            options.nodes
        );
    }
    Ok(nodes)
}

/// How many formatted nodes a directory holds (`None`: none yet).
fn count_existing_nodes(root: &Path) -> anyhow::Result<Option<usize>> {
    let mut count = 0;
    for index in 1.. {
        if !root
            .join(format!("node-{index}/data/meta.properties"))
            .is_file()
        {
            break;
        }
        count += 1;
    }
    Ok((count > 0).then_some(count))
}

fn find(nodes: &mut [Node], id: i32) -> anyhow::Result<&mut Node> {
    nodes
        .iter_mut()
        .find(|node| node.id == id)
        .with_context(|| format!("no Kafka node {id}"))
}

pub(crate) fn send(child: &Child, signal: libc::c_int) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: kill(2) on a child we have not reaped yet, so the pid is ours.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let error = std::io::Error::last_os_error();
        bail!("signalling the Kafka broker {pid}: {error}");
    }
    Ok(())
}

/// Sends `signal`, waits up to `grace` for the exit, then SIGKILLs and reaps.
pub(crate) fn stop_child(child: &mut Child, signal: libc::c_int, grace: Duration) {
    let _ = send(child, libc::SIGCONT);
    let _ = send(child, signal);
    let started = Instant::now();
    while started.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn metadata_client(bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    quiet_metadata_client(config)
}

fn quiet_metadata_client(mut config: ClientConfig) -> anyhow::Result<BaseConsumer> {
    config
        // Refused connections during start-up are expected, not news.
        .set_log_level(RDKafkaLogLevel::Emerg)
        .set("log.connection.close", "false")
        .create()
        .context("creating a Kafka metadata client")
}

/// A detached shell that waits for this process to disappear, then SIGKILLs
/// whatever broker runs (per the pid files) and, for a temporary cluster,
/// deletes its directory.
pub(crate) fn spawn_watchdog(root: &Path, remove: bool) -> anyhow::Result<Child> {
    const SCRIPT: &str = r#"owner=$1 interval=$2 root=$3 remove=$4
while kill -0 "$owner" 2>/dev/null; do sleep "$interval"; done
for pid_file in "$root"/node-*/broker.pid; do
    [ -f "$pid_file" ] && kill -KILL "$(cat "$pid_file")" 2>/dev/null
done
[ "$remove" = yes ] && rm -rf "$root"
exit 0"#;
    Command::new("/bin/sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("local-infra-kafka-watchdog")
        .arg(std::process::id().to_string())
        .arg(WATCHDOG_POLL_SECONDS.to_string())
        .arg(root)
        .arg(if remove { "yes" } else { "no" })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("spawning the Kafka watchdog")
}

/// A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, the
/// form `StorageTool random-uuid` prints. Never one that starts with `-`
/// (one in 64 would): the tool's command line would read it as an option, as
/// Kafka's own generator also avoids.
fn random_cluster_id() -> anyhow::Result<String> {
    let mut random = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    loop {
        let mut bytes = [0u8; 16];
        std::io::Read::read_exact(&mut random, &mut bytes).context("reading /dev/urandom")?;
        let id = base64_url(&bytes);
        if !id.starts_with('-') {
            return Ok(id);
        }
    }
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let n = (u32::from(group[0]) << 16) | (u32::from(group[1]) << 8) | u32::from(group[2]);
        for index in 0..=chunk.len() {
            out.push(char::from(
                ALPHABET[((n >> (18 - 6 * index)) & 63) as usize],
            ));
        }
    }
    out
}

pub(crate) fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => excerpt(&String::from_utf8_lossy(&bytes)),
        Err(error) => format!("(log unavailable: {error})"),
    }
}

/// The log's first ERROR and FATAL lines (the cause is usually there, long
/// before the shutdown lines that end the log), then its last lines.
fn excerpt(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let tail_start = lines.len().saturating_sub(LOG_TAIL_LINES);
    let errors: Vec<&str> = lines[..tail_start]
        .iter()
        .filter(|line| line.contains(" ERROR ") || line.contains(" FATAL "))
        .take(LOG_ERROR_LINES)
        .copied()
        .collect();
    let tail = lines[tail_start..].join("\n");
    if errors.is_empty() {
        tail
    } else {
        format!("{}\n...\n{tail}", errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_excerpt_quotes_the_first_errors_before_the_tail() {
        let mut log = vec![
            "[t] INFO starting".to_owned(),
            "[t] ERROR [KafkaServer] bind failed".to_owned(),
        ];
        log.extend((0..LOG_TAIL_LINES).map(|n| format!("[t] INFO shutting down {n}")));
        let excerpt = excerpt(&log.join("\n"));
        assert!(
            excerpt.starts_with("[t] ERROR [KafkaServer] bind failed\n...\n"),
            "{excerpt}"
        );
        assert!(excerpt.ends_with(&format!("shutting down {}", LOG_TAIL_LINES - 1)));
        assert!(!excerpt.contains("starting"));
    }

    #[test]
    fn cluster_ids_are_sixteen_bytes_of_url_safe_base64() {
        assert_eq!(base64_url(&[0xfb, 0xff, 0x00]), "-_8A");
        assert_eq!(base64_url(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        let id = random_cluster_id().unwrap();
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn no_cluster_id_reads_as_a_command_line_option() {
        // One id in 64 would start with '-'; a few hundred draws meet several.
        for _ in 0..500 {
            assert!(!random_cluster_id().unwrap().starts_with('-'));
        }
    }
}
