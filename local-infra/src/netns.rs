//! Several hosts on one machine: each a Linux network namespace with its own
//! address on a private bridge, for tests of what crosses a network: a host
//! cut off from some peers, a slow and lossy link, a host that vanishes.
//!
//! A [`Network`] is a bridge in this process's namespace holding the gateway
//! address (`10.N.0.1/24`, where the harness itself talks from); each
//! [`Host`] is a namespace `os<N>-<name>` joined to it by a veth pair, with
//! `10.N.0.x` and its own loopback. A process is placed on a host by
//! [`Host::enter`], which moves the child into the namespace between fork
//! and exec (`setns`), so any launcher's `Command` can be placed, not only
//! a shell's. Traffic stays on the bridge and in the namespaces: nothing
//! routes anywhere else.
//!
//! Faults are the kernel's:
//! - [`Host::block`]: nftables drops everything between the host and some
//!   addresses, silently, as a partition does (no RST, no ICMP);
//! - [`Host::impair`]: packets of one TCP port are held back by a delay and
//!   a share of them dropped, through an NFQUEUE this process serves (this
//!   kernel has no `netem` qdisc, but it has the netfilter queue);
//! - [`Host::disconnect`]: the host's link goes down, as a pulled cable;
//! - [`Host::destroy`]: every process on it is killed and the namespace torn
//!   down, as a host lost.
//!
//! Needs root (`CAP_NET_ADMIN`, `CAP_SYS_ADMIN`), `ip` (iproute2), `nft`
//! (nftables) and `iptables`; [`Network::unavailable`] says which is missing.
//! Dropping the [`Network`] deletes its hosts (killing what still runs on
//! them) and the bridge; a network left by a killed process is removed by
//! the next [`Network::create`].

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

/// Prefix of every namespace, bridge and link made here.
const PREFIX: &str = "os";

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Second octets tried for a network's `10.N.0.0/24`.
const SUBNETS: std::ops::RangeInclusive<u8> = 200..=249;

/// The first host's last octet; the gateway is `.1`.
const FIRST_HOST_OCTET: u8 = 10;

/// The nftables table faults live in, on each host.
const FAULT_TABLE: &str = "fault";

/// Packets an impairment holds at once before the kernel lets them pass
/// unqueued (`--queue-bypass`): far more than a test's traffic.
const QUEUE_MAX_LEN: u32 = 4_096;

/// How often the impairment thread looks for due packets.
const IMPAIR_TICK: Duration = Duration::from_millis(1);

/// The tools a [`Network`] runs, each with the flag that prints its version.
const TOOLS: [(&str, &str); 3] = [
    ("ip", "-V"),
    ("nft", "--version"),
    ("iptables-legacy", "--version"),
];

/// A private bridge and the hosts on it.
pub struct Network {
    /// The `N` of `10.N.0.0/24`, also in every name.
    subnet: u8,
    /// The bridge, in this process's namespace.
    bridge: String,
    hosts: Mutex<Vec<Host>>,
}

impl Network {
    /// Why no network can be made here, if so: not root, or a tool missing.
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("network namespaces need root".to_owned());
        }
        for (tool, version) in TOOLS {
            let found = Command::new(tool)
                .arg(version)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if !found {
                return Some(format!(
                    "`{tool}` is missing (Debian: iproute2, nftables, iptables)"
                ));
            }
        }
        None
    }

    /// A new bridge with the gateway address, on a subnet no other live
    /// network uses; first removes what killed processes left behind.
    pub fn create() -> anyhow::Result<Network> {
        if let Some(reason) = Self::unavailable() {
            bail!("{reason}");
        }
        std::fs::create_dir_all(NETNS_DIR).with_context(|| format!("creating {NETNS_DIR}"))?;
        remove_leftovers();
        for subnet in SUBNETS {
            let bridge = format!("{PREFIX}{subnet}br");
            // Fails if another live network holds this subnet's bridge.
            if ip(&["link", "add", &bridge, "type", "bridge"]).is_err() {
                continue;
            }
            let network = Network {
                subnet,
                bridge: bridge.clone(),
                hosts: Mutex::new(Vec::new()),
            };
            std::fs::write(owner_file(subnet), std::process::id().to_string())
                .context("recording the network's owner")?;
            ip(&[
                "addr",
                "add",
                &format!("{}/24", network.gateway()),
                "dev",
                &bridge,
            ])?;
            ip(&["link", "set", &bridge, "up"])?;
            return Ok(network);
        }
        bail!("every subnet 10.{SUBNETS:?}.0.0/24 is taken by another network")
    }

    /// The address this process talks from to the hosts.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 0, 1)
    }

    /// `10.N.0.0/24`.
    pub fn cidr(&self) -> String {
        format!("10.{}.0.0/24", self.subnet)
    }

    /// A new host called `name` (letters, digits and `-`, at most 8
    /// characters), with the next free address.
    pub fn host(&self, name: &str) -> anyhow::Result<Host> {
        ensure!(
            !name.is_empty()
                && name.len() <= 8
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "a host name is 1-8 letters, digits or dashes: {name:?}"
        );
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let index = u8::try_from(hosts.len()).context("too many hosts")?;
        let octet = FIRST_HOST_OCTET
            .checked_add(index)
            .context("too many hosts")?;
        let namespace = format!("{PREFIX}{}-{name}", self.subnet);
        let link = format!("{PREFIX}{}h{index}", self.subnet);
        let peer = format!("{PREFIX}{}p{index}", self.subnet);
        let address = Ipv4Addr::new(10, self.subnet, 0, octet);
        ip(&["netns", "add", &namespace])?;
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &namespace])?;
        ip(&["link", "set", &link, "master", &self.bridge, "up"])?;
        ip(&["-n", &namespace, "link", "set", &peer, "name", "eth0"])?;
        ip(&[
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
        ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        let file = File::open(format!("{NETNS_DIR}/{namespace}"))
            .with_context(|| format!("opening namespace {namespace}"))?;
        let host = Host(Arc::new(HostInner {
            name: name.to_owned(),
            namespace,
            link,
            address,
            file,
            destroyed: AtomicBool::new(false),
        }));
        hosts.push(host.clone());
        Ok(host)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let hosts = std::mem::take(self.hosts.get_mut().unwrap_or_else(|e| e.into_inner()));
        for host in hosts {
            if let Err(error) = host.destroy() {
                tracing::warn!(host = host.name(), "removing a test host: {error:#}");
            }
        }
        let _ = ip(&["link", "del", &self.bridge]);
        let _ = std::fs::remove_file(owner_file(self.subnet));
    }
}

/// One host: a network namespace with an address on the bridge. Cheap to
/// clone; every clone is the same host.
#[derive(Clone)]
pub struct Host(Arc<HostInner>);

struct HostInner {
    name: String,
    namespace: String,
    /// The veth end on the bridge, in this process's namespace.
    link: String,
    address: Ipv4Addr,
    /// The namespace, entered by children between fork and exec.
    file: File,
    destroyed: AtomicBool,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Host({} {})", self.0.name, self.0.address)
    }
}

impl Host {
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn address(&self) -> Ipv4Addr {
        self.0.address
    }

    /// Makes `command` run on this host: its child enters the namespace
    /// before exec, so the program and everything it starts live there.
    pub fn enter<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        let fd = self.0.file.as_raw_fd();
        // SAFETY: setns(2) is async-signal-safe and the descriptor stays open
        // for as long as the host (and so this command) exists.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        }
    }

    /// Drops every packet between this host and `peers` from now on, both
    /// ways, silently (until [`Host::heal`]).
    pub fn block(&self, peers: &[Ipv4Addr]) -> anyhow::Result<()> {
        let set = peers
            .iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        self.nft(&format!(
            "table inet {FAULT_TABLE} {{\n\
             chain input {{ type filter hook input priority -10; ip saddr {{ {set} }} drop; }}\n\
             chain output {{ type filter hook output priority -10; ip daddr {{ {set} }} drop; }}\n\
             }}\n"
        ))
    }

    /// Removes what [`Host::block`] set up.
    pub fn heal(&self) -> anyhow::Result<()> {
        self.nft(&format!("delete table inet {FAULT_TABLE}\n"))
    }

    /// Holds each TCP packet leaving this host from `port` (the replies of
    /// the server listening there) for `delay`, and drops `loss_percent` %
    /// of the packets of that port in each direction, until the returned
    /// guard is dropped.
    pub fn impair(
        &self,
        port: u16,
        delay: Duration,
        loss_percent: u8,
    ) -> anyhow::Result<Impairment> {
        ensure!(loss_percent < 100, "a link losing everything is a block");
        let queue = self.0.address.octets()[3].into();
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(ImpairmentCounts::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let host = self.clone();
        let stopping = Arc::clone(&stop);
        let counting = Arc::clone(&counts);
        let thread = std::thread::Builder::new()
            .name(format!("impair-{}", self.name()))
            .spawn(move || {
                serve_queue(
                    &host,
                    queue,
                    delay,
                    loss_percent,
                    &stopping,
                    &counting,
                    ready_tx,
                )
            })
            .context("starting the impairment thread")?;
        ready_rx
            .recv()
            .context("the impairment thread ended before serving its queue")??;
        let impairment = Impairment {
            host: self.clone(),
            rules: vec![
                format!("INPUT -p tcp --dport {port}"),
                format!("OUTPUT -p tcp --sport {port}"),
            ],
            queue,
            stop,
            counts,
            thread: Some(thread),
        };
        for rule in &impairment.rules {
            impairment.iptables("-A", rule)?;
        }
        Ok(impairment)
    }

    /// Takes the host's link down: nothing reaches it or leaves it, and its
    /// peers are told nothing (until [`Host::reconnect`]).
    pub fn disconnect(&self) -> anyhow::Result<()> {
        ip(&["link", "set", &self.0.link, "down"])
    }

    /// Brings the link back up after [`Host::disconnect`].
    pub fn reconnect(&self) -> anyhow::Result<()> {
        ip(&["link", "set", &self.0.link, "up"])
    }

    /// The host is lost: its link goes down first (so its peers see no
    /// goodbye), every process on it is SIGKILLed, and the namespace is
    /// deleted. Idempotent.
    pub fn destroy(&self) -> anyhow::Result<()> {
        if self.0.destroyed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let _ = self.disconnect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) on a pid `ip netns pids` listed.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            ensure!(
                Instant::now() < deadline,
                "processes on {} outlived SIGKILL",
                self.0.namespace
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = ip(&["link", "del", &self.0.link]);
        ip(&["netns", "del", &self.0.namespace])
    }

    /// The processes in the namespace.
    fn pids(&self) -> anyhow::Result<Vec<i32>> {
        let output = Command::new("ip")
            .args(["netns", "pids", &self.0.namespace])
            .output()
            .context("running ip netns pids")?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect())
    }

    /// Runs `nft -f -` in the host's namespace with `script` on stdin.
    fn nft(&self, script: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut child = self
            .enter(Command::new("nft").args(["-f", "-"]))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft")?;
        child
            .stdin
            .take()
            .context("nft's stdin")?
            .write_all(script.as_bytes())?;
        let output = child.wait_with_output()?;
        ensure!(
            output.status.success(),
            "nft on {}: {}",
            self.0.namespace,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    }
}

/// A link held back and lossy; back to normal when dropped.
pub struct Impairment {
    host: Host,
    /// The iptables rules (chain and match) that queue the packets.
    rules: Vec<String>,
    queue: u16,
    stop: Arc<AtomicBool>,
    counts: Arc<ImpairmentCounts>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

/// What an impairment did to the packets.
#[derive(Debug, Default)]
struct ImpairmentCounts {
    delayed: AtomicU64,
    dropped: AtomicU64,
}

impl Impairment {
    /// Packets held back so far.
    pub fn delayed(&self) -> u64 {
        self.counts.delayed.load(Ordering::Relaxed)
    }

    /// Packets dropped so far.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    fn iptables(&self, action: &str, rule: &str) -> anyhow::Result<()> {
        let mut args = vec![action];
        args.extend(rule.split_whitespace());
        let queue = self.queue.to_string();
        args.extend(["-j", "NFQUEUE", "--queue-num", &queue, "--queue-bypass"]);
        let output = self
            .host
            .enter(Command::new("iptables-legacy").args(&args))
            .output()
            .context("running iptables")?;
        ensure!(
            output.status.success(),
            "iptables {action} {rule}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    }
}

impl Drop for Impairment {
    fn drop(&mut self) {
        // Rules first: from then on no packet is queued, and the thread
        // releases the held ones before it ends.
        for rule in self.rules.clone() {
            if let Err(error) = self.iptables("-D", &rule) {
                tracing::warn!("removing an impairment rule: {error:#}");
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Err(error)) => tracing::warn!("the impairment failed: {error:#}"),
                Err(_) => tracing::warn!("the impairment thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// The impairment thread: enters `host`'s namespace (this thread only),
/// serves NFQUEUE `queue`, holds each outgoing packet for `delay` and drops
/// `loss_percent` % of all; releases what it holds once `stop` is set.
fn serve_queue(
    host: &Host,
    queue: u16,
    delay: Duration,
    loss_percent: u8,
    stop: &AtomicBool,
    counts: &ImpairmentCounts,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let opened = (|| -> anyhow::Result<nfq::Queue> {
        // SAFETY: setns(2) on this thread only; it never returns to a pool.
        if unsafe { libc::setns(host.0.file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("entering the host");
        }
        let mut nfq = nfq::Queue::open().context("opening a netfilter queue")?;
        nfq.bind(queue).context("binding the netfilter queue")?;
        nfq.set_queue_max_len(queue, QUEUE_MAX_LEN)?;
        nfq.set_nonblocking(true);
        Ok(nfq)
    })();
    let mut nfq = match opened {
        Ok(nfq) => {
            let _ = ready.send(Ok(()));
            nfq
        }
        Err(error) => {
            let _ = ready.send(Err(error));
            return Ok(());
        }
    };
    let mut held: std::collections::VecDeque<(Instant, nfq::Message)> = Default::default();
    let mut dice = Dice::seeded();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        loop {
            match nfq.recv() {
                Ok(mut message) => {
                    if dice.percent() < u32::from(loss_percent) {
                        counts.dropped.fetch_add(1, Ordering::Relaxed);
                        message.set_verdict(nfq::Verdict::Drop);
                        nfq.verdict(message)?;
                    } else if message.get_hook() == NF_INET_LOCAL_OUT {
                        counts.delayed.fetch_add(1, Ordering::Relaxed);
                        held.push_back((Instant::now() + delay, message));
                    } else {
                        message.set_verdict(nfq::Verdict::Accept);
                        nfq.verdict(message)?;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error).context("reading the netfilter queue"),
            }
        }
        while held
            .front()
            .is_some_and(|(due, _)| stopping || *due <= Instant::now())
        {
            let (_, mut message) = held.pop_front().expect("a held packet");
            message.set_verdict(nfq::Verdict::Accept);
            nfq.verdict(message)?;
        }
        if stopping && held.is_empty() {
            return Ok(());
        }
        std::thread::sleep(IMPAIR_TICK);
    }
}

/// Netfilter's hook number of locally generated packets.
const NF_INET_LOCAL_OUT: u8 = 3;

/// A small, fast pseudo-random source for the loss decisions (xorshift).
struct Dice(u64);

impl Dice {
    fn seeded() -> Dice {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Dice(u64::from_le_bytes(seed) | 1)
    }

    /// 0..100.
    fn percent(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 100) as u32
    }
}

/// Runs `ip args`; an error carries its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    ensure!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Names the process owning the network on `subnet`.
fn owner_file(subnet: u8) -> String {
    format!("{NETNS_DIR}/.{PREFIX}{subnet}.owner")
}

/// Deletes the namespaces and bridges of networks whose owner is gone.
fn remove_leftovers() {
    for subnet in SUBNETS {
        let Ok(owner) = std::fs::read_to_string(owner_file(subnet)) else {
            continue;
        };
        let alive = owner
            .trim()
            .parse::<i32>()
            // SAFETY: kill(pid, 0) only checks that the process exists.
            .is_ok_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if alive {
            continue;
        }
        let prefix = format!("{PREFIX}{subnet}-");
        if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) {
                    let _ = Command::new("ip")
                        .args(["netns", "pids", &name])
                        .output()
                        .map(|output| {
                            for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                                if let Ok(pid) = pid.parse::<i32>() {
                                    // SAFETY: kill(2) on a leftover host's process.
                                    unsafe {
                                        libc::kill(pid, libc::SIGKILL);
                                    }
                                }
                            }
                        });
                    let _ = ip(&["netns", "del", &name]);
                }
            }
        }
        let _ = ip(&["link", "del", &format!("{PREFIX}{subnet}br")]);
        let _ = std::fs::remove_file(owner_file(subnet));
    }
}
