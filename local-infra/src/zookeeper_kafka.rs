//! The seed's topology without containers: one ZooKeeper and one Kafka broker
//! in ZooKeeper mode (Kafka 3.9, the last line that has it), as JVM processes
//! on loopback, from the jars `kafka-infra/runtime-zookeeper/pom.xml`
//! resolves.
//!
//! The broker's listeners are named by the caller (the Compose file's
//! `INTERNAL` and `EXTERNAL`, say) and each gets a free loopback port, so a
//! test can map the Compose file's host names onto them. Other broker settings
//! come from the caller too, as `server.properties` keys. Everything lives in
//! a temporary directory, deleted on drop; a watchdog kills both JVMs if this
//! process dies first. Each process logs to `<dir>/node-*/broker.log`.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use rdkafka::consumer::Consumer;
use tempfile::TempDir;

use crate::apache_kafka::{log_tail, metadata_client, spawn_watchdog, stop_child};
use crate::free_port;
use crate::kafka_runtime::KafkaRuntime;

/// How long ZooKeeper, then the broker, may take to serve.
const START_TIMEOUT: Duration = Duration::from_secs(90);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// JVM heap of each process, in MiB.
const HEAP_MB: u32 = 256;

/// Logs to standard output (reload4j, the binding Kafka 3.9's tree brings),
/// which the launcher sends to `broker.log`.
const LOG4J_PROPERTIES: &str = "\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.state.change.logger=WARN
";

/// What to start.
#[derive(Debug, Clone)]
pub struct ZooKeeperKafkaOptions {
    /// Listener names, each a PLAINTEXT listener on a free loopback port.
    pub listeners: Vec<String>,
    /// The listener brokers talk to each other on (one of `listeners`).
    pub inter_broker_listener: String,
    /// Further `server.properties` entries (e.g. `broker.id`,
    /// `auto.create.topics.enable`); listeners, `zookeeper.connect` and
    /// `log.dirs` belong to the launcher.
    pub properties: Vec<(String, String)>,
}

/// A running ZooKeeper and Kafka broker in ZooKeeper mode.
pub struct ZooKeeperKafka {
    runtime: KafkaRuntime,
    /// `127.0.0.1:port` of ZooKeeper.
    zookeeper_address: String,
    /// Listener name and its `127.0.0.1:port`.
    listeners: Vec<(String, String)>,
    /// Both JVMs, ZooKeeper first; stopped in reverse order.
    processes: Vec<(PathBuf, Child)>,
    /// Kills the JVMs if this process dies without dropping the value.
    watchdog: Option<Child>,
    /// Deleted after the processes stopped (declared last).
    _root: TempDir,
}

impl ZooKeeperKafka {
    /// Starts ZooKeeper, then the broker, and returns once the broker answers
    /// metadata on every listener. Blocks for the JVMs' start-up.
    pub fn start(options: ZooKeeperKafkaOptions) -> anyhow::Result<Self> {
        ensure!(
            options.listeners.contains(&options.inter_broker_listener),
            "the inter-broker listener {} is not among {:?}",
            options.inter_broker_listener,
            options.listeners
        );
        let runtime = KafkaRuntime::resolve_zookeeper_mode()?;
        let root = tempfile::Builder::new()
            .prefix("local-infra-zk-kafka-")
            .tempdir()
            .context("creating a temporary directory for ZooKeeper and Kafka")?;
        let zookeeper_address = format!("127.0.0.1:{}", free_port()?);
        let mut listeners = Vec::new();
        for name in &options.listeners {
            listeners.push((name.clone(), format!("127.0.0.1:{}", free_port()?)));
        }
        let mut launched = Self {
            runtime,
            zookeeper_address,
            listeners,
            processes: Vec::new(),
            watchdog: Some(spawn_watchdog(root.path(), true)?),
            _root: root,
        };
        let root = launched._root.path().to_path_buf();

        let zookeeper_dir = root.join("node-zookeeper");
        let zookeeper_port = launched
            .zookeeper_address
            .rsplit_once(':')
            .map(|(_, port)| port.to_owned())
            .expect("host:port");
        let zookeeper_config = format!(
            "dataDir={}\nclientPort={zookeeper_port}\nclientPortAddress=127.0.0.1\n\
             tickTime=2000\nmaxClientCnxns=0\nadmin.enableServer=false\n",
            zookeeper_dir.join("data").display()
        );
        launched.launch(
            &zookeeper_dir,
            "zoo.cfg",
            &zookeeper_config,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
        )?;
        launched.wait_until_listening(&launched.zookeeper_address.clone())?;

        let broker_dir = root.join("node-1");
        let mut properties = String::new();
        let listener_list = |with_scheme: bool| {
            launched
                .listeners
                .iter()
                .map(|(name, address)| {
                    if with_scheme {
                        format!("{name}://{address}")
                    } else {
                        format!("{name}:PLAINTEXT")
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        for (key, value) in [
            ("zookeeper.connect", launched.zookeeper_address.clone()),
            ("listeners", listener_list(true)),
            ("advertised.listeners", listener_list(true)),
            ("listener.security.protocol.map", listener_list(false)),
            (
                "inter.broker.listener.name",
                options.inter_broker_listener.clone(),
            ),
            ("log.dirs", broker_dir.join("data").display().to_string()),
        ] {
            writeln!(properties, "{key}={value}").expect("writing to a String");
        }
        for (key, value) in &options.properties {
            writeln!(properties, "{key}={value}").expect("writing to a String");
        }
        launched.launch(&broker_dir, "server.properties", &properties, "kafka.Kafka")?;
        for (_, address) in launched.listeners.clone() {
            launched.wait_until_serving(&address)?;
        }
        tracing::info!(
            zookeeper = %launched.zookeeper_address,
            listeners = ?launched.listeners,
            version = launched.runtime.version(),
            "Kafka in ZooKeeper mode started"
        );
        Ok(launched)
    }

    /// `127.0.0.1:port` of the listener named `name`.
    pub fn address(&self, name: &str) -> Option<&str> {
        self.listeners
            .iter()
            .find(|(listener, _)| listener == name)
            .map(|(_, address)| address.as_str())
    }

    /// `127.0.0.1:port` of ZooKeeper.
    pub fn zookeeper_address(&self) -> &str {
        &self.zookeeper_address
    }

    /// Kafka's version, e.g. `3.9.1`.
    pub fn version(&self) -> &str {
        self.runtime.version()
    }

    /// The jars, for running Kafka's command-line classes (`TopicCommand`).
    pub fn runtime(&self) -> &KafkaRuntime {
        &self.runtime
    }

    fn launch(
        &mut self,
        dir: &Path,
        config_name: &str,
        config: &str,
        main_class: &str,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config_file = dir.join(config_name);
        std::fs::write(&config_file, config)?;
        let log4j = dir.join("log4j.properties");
        std::fs::write(&log4j, LOG4J_PROPERTIES)?;
        let log_file = dir.join("broker.log");
        let log = std::fs::File::create(&log_file)
            .with_context(|| format!("creating {}", log_file.display()))?;
        let jvm = [
            format!("-Xms{HEAP_MB}m").into(),
            format!("-Xmx{HEAP_MB}m").into(),
            "-Djava.awt.headless=true".into(),
            format!("-Dlog4j.configuration=file:{}", log4j.display()).into(),
        ];
        let child = self
            .runtime
            .java(&jvm, main_class)
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {main_class} (java)"))?;
        std::fs::write(dir.join("broker.pid"), child.id().to_string())?;
        self.processes.push((log_file, child));
        Ok(())
    }

    /// Fails with the newest process's log if it exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some((log, child)) = self.processes.last_mut() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "a JVM exited during start-up ({status}); its log {} ends:\n{}",
                    log.display(),
                    log_tail(log)
                );
            }
        }
        Ok(())
    }

    fn wait_until_listening(&mut self, address: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        while TcpStream::connect(address).is_err() {
            self.check_alive()?;
            ensure!(
                started.elapsed() < START_TIMEOUT,
                "nothing listened on {address} within {START_TIMEOUT:?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
        Ok(())
    }

    fn wait_until_serving(&mut self, address: &str) -> anyhow::Result<()> {
        let client = metadata_client(address)?;
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if let Ok(metadata) = client.fetch_metadata(None, METADATA_TIMEOUT) {
                if !metadata.brokers().is_empty() {
                    return Ok(());
                }
            }
            ensure!(
                started.elapsed() < START_TIMEOUT,
                "the broker did not answer on {address} within {START_TIMEOUT:?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for ZooKeeperKafka {
    fn drop(&mut self) {
        // Throwaway data: no controlled shutdown needed. Broker first.
        while let Some((_, mut child)) = self.processes.pop() {
            stop_child(&mut child, libc::SIGKILL, Duration::ZERO);
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl std::fmt::Debug for ZooKeeperKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZooKeeperKafka")
            .field("zookeeper", &self.zookeeper_address)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}
