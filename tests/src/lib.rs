//! The harness of Shoal's black-box tests: real `shoal` processes on
//! loopback, driven only through what an operator has (the `shoal` command,
//! config files, signals, the HTTP API) plus a QUIC client with a valid
//! certificate for the tests that play a misbehaving peer.
//!
//! A [`Cluster`] owns a temporary directory holding a CA and certificates
//! made with the real `shoal tls` verbs, one config file, data dir and log
//! file per node, and the agents' child processes. Dropping it kills every
//! agent it started; dropping it while a test panics first prints the tail
//! of every agent's log and keeps the directory for a post-mortem.
//!
//! [`Cluster::call`] sends any request (method, JSON or raw body, bearer
//! token, request id) and returns the [`Reply`] whatever its status, so a
//! test can check refusals as closely as successes; the builder's
//! [`ClusterBuilder::acl`] and [`ClusterBuilder::config`] set config knobs
//! (`[acl]`, `[telemetry]`, `[alerts.*]`) in every node's file.
//!
//! Nothing here sleeps in place of a condition: [`wait_until`] polls a
//! condition with a deadline and, on timeout, says what it waited for and
//! what it saw last. Deadlines are generous ([`TIMEOUT`]) because the tests
//! run in parallel on small shared machines; speed is measured elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;

/// Deadline for anything a cluster should do on its own (boot, detect a
/// failure, take back a restarted node). Far above what a healthy run
/// needs: it only bounds how long a broken run hangs.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// How often [`wait_until`] re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(150);
/// Timeout of one HTTP request to an agent (a stopped agent never answers).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of a [`Cluster::call`]: above the agent's own deadline for a
/// write or a read barrier (15 s), so that the agent's answer (often a 503)
/// is what the test sees, not the client giving up.
pub const SLOW_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of each agent's log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 40;

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Ok`, and returns
/// that value. `Err` means "not yet" and describes what was observed; if
/// `timeout` passes first, panics naming `what` and the last observation.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Result<T>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(error) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last observed: {error:#}")
            }
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// The `shoal` binary under test: `$SHOAL_BIN` if set, else `shoal` in the
/// cargo target profile directory this test executable was built into.
///
/// Cargo does not build a dependency's binaries for this crate's tests, so
/// build it first: `cargo build -p shoal-agent` (with the same
/// `CARGO_TARGET_DIR` and profile), or run `cargo test --workspace`, which
/// builds it for the agent's own CLI tests.
pub fn shoal_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOAL_BIN") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "SHOAL_BIN={} is not a file", path.display());
        return path;
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    // target/debug/deps/membership-HASH -> target/debug/shoal
    let found = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("shoal"))
        .find(|candidate| candidate.is_file());
    match found {
        Some(path) => path,
        None => panic!(
            "the shoal binary is not next to {}: build it with `cargo build -p shoal-agent` \
             (same CARGO_TARGET_DIR and profile), or set SHOAL_BIN",
            exe.display()
        ),
    }
}

/// Runs `shoal ARGS...` to completion and returns its output, whatever its
/// exit status.
pub fn shoal<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = shoal_bin();
    Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("run {}: {error}", bin.display()))
}

/// Runs `shoal ARGS...` and fails, with its output, unless it exits 0.
pub fn shoal_ok<I, S>(args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let shown = args
        .iter()
        .map(|arg| arg.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let output = shoal(args);
    ensure!(
        output.status.success(),
        "`shoal {shown}` failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

/// The command that runs an agent. Where util-linux `setpriv` exists, the
/// agent is started through it with a parent-death signal, so that agents
/// die with the test even when the test process cannot run its destructors
/// (an abort, a SIGKILL, a Ctrl-C): no orphaned agents holding ports.
fn agent_command() -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if Path::new(SETPRIV).is_file() {
        let mut command = Command::new(SETPRIV);
        command.args(["--pdeathsig", "KILL", "--"]).arg(shoal_bin());
        command
    } else {
        Command::new(shoal_bin())
    }
}

/// Ports already handed out by this process, so two clusters of tests
/// running in parallel threads never get the same one.
static PORTS_TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
/// Ports are picked below Linux's ephemeral range (32768 and up by
/// default), so an outgoing connection of any process cannot be sitting on
/// a port when an agent (re)binds it.
const PORT_FIRST: u16 = 20_000;
const PORT_LAST: u16 = 32_000;

/// A UDP port and a TCP port on 127.0.0.1, both free now, held (bound)
/// until the agent that will use them starts.
#[derive(Debug)]
struct Reserved {
    udp: UdpSocket,
    tcp: TcpListener,
}

fn reserve_ports() -> Result<Reserved> {
    let mut taken = PORTS_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    // Different test executables (and runs) start at different places.
    let span = PORT_LAST - PORT_FIRST;
    let offset = (std::process::id().wrapping_mul(7_919) % u32::from(span)) as u16;
    let mut udp = None;
    for step in 0..span {
        let port = PORT_FIRST + (offset + step) % span;
        if taken.contains(&port) {
            continue;
        }
        match udp.take() {
            None => match UdpSocket::bind((Ipv4Addr::LOCALHOST, port)) {
                Ok(socket) => {
                    taken.insert(port);
                    udp = Some(socket);
                }
                Err(_) => continue,
            },
            Some(socket) => match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                Ok(tcp) => {
                    taken.insert(port);
                    return Ok(Reserved { udp: socket, tcp });
                }
                Err(_) => udp = Some(socket),
            },
        }
    }
    bail!("no free port pair in {PORT_FIRST}..{PORT_LAST}")
}

/// One member row of `GET /v1/members`, as the API documents it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Member {
    /// The node's stable name.
    pub node_id: String,
    /// Its SWIM/QUIC address.
    pub addr: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
    /// Which start of its agent this is.
    pub generation: u64,
    /// `seed` or `member`.
    pub role: String,
    /// Locality and other labels.
    pub labels: BTreeMap<String, String>,
    /// Its agent's version.
    pub version: String,
    /// Milliseconds since the answering agent last heard from it.
    pub last_heard_ms_ago: Option<u64>,
    /// Whether this row is the answering agent itself.
    pub local: bool,
}

/// A member table in one line: `node-1:alive/g1* node-2:down/g1 ...`
/// (`*` marks the answering agent).
pub fn summary(rows: &[Member]) -> String {
    let mut line = String::new();
    for row in rows {
        let _ = write!(
            line,
            "{}:{}/g{}{} ",
            row.node_id,
            row.state,
            row.generation,
            if row.local { "*" } else { "" }
        );
    }
    line.trim_end().to_string()
}

/// The one row for `node_id`; an error if it is missing or listed twice.
pub fn row<'a>(rows: &'a [Member], node_id: &str) -> Result<&'a Member> {
    let mut matching = rows.iter().filter(|row| row.node_id == node_id);
    let first = matching
        .next()
        .ok_or_else(|| anyhow!("{node_id} not listed"))?;
    ensure!(matching.next().is_none(), "{node_id} listed more than once");
    Ok(first)
}

/// A scrape of `/metrics`: series (name with labels, as printed) to value.
#[derive(Clone, Debug, Default)]
pub struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    /// Parses the Prometheus text format (comments skipped).
    pub fn parse(text: &str) -> Result<Self> {
        let mut series = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| anyhow!("bad metrics line {line:?}"))?;
            let value: f64 = value
                .parse()
                .with_context(|| format!("bad value in metrics line {line:?}"))?;
            series.insert(name.to_string(), value);
        }
        Ok(Self(series))
    }

    /// The value of one series, e.g. `shoal_swim_drops_total{reason="decode"}`.
    pub fn get(&self, series: &str) -> Result<f64> {
        self.0
            .get(series)
            .copied()
            .ok_or_else(|| anyhow!("metric {series} not exported"))
    }
}

/// The series of the SWIM drop counter for `reason`.
pub fn drops(reason: &str) -> String {
    format!("shoal_swim_drops_total{{reason=\"{reason}\"}}")
}

/// Which CA signs a node's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ca {
    /// The cluster's own CA.
    Cluster,
    /// Another CA, which the cluster does not trust.
    Foreign,
}

/// What to create for one node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Node id.
    pub node_id: String,
    /// Seed (a Raft voter, listed in every config's seeds) or member.
    pub seed: bool,
    /// Which CA signs its certificate.
    pub ca: Ca,
    /// Whether [`Cluster::start_all`] leaves it stopped.
    pub manual: bool,
}

impl NodeSpec {
    /// A member signed by the cluster CA, started with the others.
    pub fn member(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_string(),
            seed: false,
            ca: Ca::Cluster,
            manual: false,
        }
    }

    /// Signs its certificate with a CA the cluster does not trust.
    pub fn foreign_ca(mut self) -> Self {
        self.ca = Ca::Foreign;
        self
    }

    /// Leaves it stopped until [`Cluster::start`] is called for it.
    pub fn manual(mut self) -> Self {
        self.manual = true;
        self
    }
}

/// Builds a [`Cluster`]: `node-1` .. `node-S` are seeds, the next ones
/// members, then any extra nodes.
#[derive(Debug)]
pub struct ClusterBuilder {
    name: String,
    seeds: usize,
    members: usize,
    extra: Vec<NodeSpec>,
    acl_enabled: Option<bool>,
    config_tail: String,
}

impl ClusterBuilder {
    /// How many seeds (1, 3, 5 or 7; default 3).
    pub fn seeds(mut self, seeds: usize) -> Self {
        self.seeds = seeds;
        self
    }

    /// How many plain members besides the seeds (default 0).
    pub fn members(mut self, members: usize) -> Self {
        self.members = members;
        self
    }

    /// One more node, after the seeds and members.
    pub fn node(mut self, spec: NodeSpec) -> Self {
        self.extra.push(spec);
        self
    }

    /// Sets `[acl] enabled` in every config (unset: the agent's default,
    /// which is on).
    pub fn acl(mut self, enabled: bool) -> Self {
        self.acl_enabled = Some(enabled);
        self
    }

    /// Appends TOML to every node's config, after the tables the harness
    /// writes, e.g. `"[telemetry]\nrefresh_interval = \"500ms\""`. It must
    /// not repeat a table the harness writes (`[labels]`, `[cluster]`,
    /// `[tls]`, `[http]`, `[log]`, and `[acl]` when [`Self::acl`] is used).
    pub fn config(mut self, toml: &str) -> Self {
        self.config_tail.push_str(toml.trim());
        self.config_tail.push('\n');
        self
    }

    /// Writes certificates and configs; starts nothing.
    pub fn build(self) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-test-{}-", self.name))
            .tempdir()
            .context("create the cluster's temporary directory")?;
        let mut specs: Vec<NodeSpec> = (0..self.seeds + self.members)
            .map(|index| NodeSpec {
                seed: index < self.seeds,
                ..NodeSpec::member(&format!("node-{}", index + 1))
            })
            .collect();
        specs.extend(self.extra);
        let tls_dir = dir.path().join("tls");
        shoal_ok([
            OsStr::new("tls"),
            "ca".as_ref(),
            "create".as_ref(),
            "--out".as_ref(),
            tls_dir.as_os_str(),
        ])?;
        let foreign_dir = dir.path().join("tls-foreign");
        if specs.iter().any(|spec| spec.ca == Ca::Foreign) {
            shoal_ok([
                OsStr::new("tls"),
                "ca".as_ref(),
                "create".as_ref(),
                "--out".as_ref(),
                foreign_dir.as_os_str(),
            ])?;
        }
        let mut reserved = Vec::new();
        for _ in &specs {
            reserved.push(reserve_ports()?);
        }
        let quic_addr = |reserved: &Reserved| reserved.udp.local_addr().expect("bound");
        let seed_addrs: Vec<String> = specs
            .iter()
            .zip(&reserved)
            .filter(|(spec, _)| spec.seed)
            .map(|(_, reserved)| format!("\"{}\"", quic_addr(reserved)))
            .collect();
        let mut nodes = Vec::new();
        for (index, (spec, reserved)) in specs.into_iter().zip(reserved).enumerate() {
            let node_dir = dir.path().join(&spec.node_id);
            fs::create_dir_all(&node_dir)?;
            let ca_dir = match spec.ca {
                Ca::Cluster => &tls_dir,
                Ca::Foreign => &foreign_dir,
            };
            shoal_ok([
                OsStr::new("tls"),
                "cert".as_ref(),
                "create".as_ref(),
                "--ca".as_ref(),
                ca_dir.as_os_str(),
                "--node-id".as_ref(),
                spec.node_id.as_ref(),
                "--ip".as_ref(),
                "127.0.0.1".as_ref(),
                "--out".as_ref(),
                node_dir.as_os_str(),
            ])?;
            let labels = BTreeMap::from([
                ("region".to_string(), "local".to_string()),
                ("zone".to_string(), format!("zone-{}", index % 3 + 1)),
                ("rack".to_string(), format!("rack-{}", index + 1)),
            ]);
            let quic = quic_addr(&reserved);
            let http = reserved.tcp.local_addr()?;
            let mut text = String::new();
            writeln!(text, "node_id = \"{}\"", spec.node_id)?;
            writeln!(
                text,
                "role = \"{}\"",
                if spec.seed { "seed" } else { "member" }
            )?;
            writeln!(text, "data_dir = \"data\"")?;
            writeln!(text, "[labels]")?;
            for (key, value) in &labels {
                writeln!(text, "{key} = \"{value}\"")?;
            }
            writeln!(text, "[cluster]")?;
            writeln!(text, "name = \"{}\"", self.name)?;
            writeln!(text, "listen = \"{quic}\"")?;
            writeln!(text, "seeds = [{}]", seed_addrs.join(", "))?;
            writeln!(text, "bootstrap_expect = {}", seed_addrs.len())?;
            writeln!(text, "[tls]")?;
            writeln!(text, "ca = \"{}\"", ca_dir.join("ca.pem").display())?;
            writeln!(text, "cert = \"{}.pem\"", spec.node_id)?;
            writeln!(text, "key = \"{}-key.pem\"", spec.node_id)?;
            writeln!(text, "[http]")?;
            writeln!(text, "listen = \"{http}\"")?;
            writeln!(text, "[log]")?;
            writeln!(text, "level = \"info\"")?;
            if let Some(enabled) = self.acl_enabled {
                writeln!(text, "[acl]")?;
                writeln!(text, "enabled = {enabled}")?;
            }
            text.push_str(&self.config_tail);
            let config = node_dir.join("shoal.toml");
            fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
            nodes.push(Node {
                node_id: spec.node_id.clone(),
                seed: spec.seed,
                foreign: spec.ca == Ca::Foreign,
                manual: spec.manual,
                quic,
                http,
                labels,
                log: node_dir.join("agent.log"),
                config,
                dir: node_dir,
                process: Mutex::new(Process {
                    reserved: Some(reserved),
                    child: None,
                    starts: 0,
                    exited: None,
                }),
            });
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .context("build the HTTP client")?;
        Ok(Cluster {
            name: self.name,
            dir: Some(dir),
            nodes,
            http,
        })
    }

    /// Builds, starts every node not marked manual, and waits until they all
    /// see each other alive.
    pub fn start(self) -> Result<Cluster> {
        let cluster = self.build()?;
        cluster.start_all()?;
        cluster.wait_converged();
        Ok(cluster)
    }
}

#[derive(Debug)]
struct Process {
    /// The node's ports, held until its first start.
    reserved: Option<Reserved>,
    child: Option<Child>,
    /// How many times it was started: the generation it should have.
    starts: u64,
    /// How its agent last exited, if it did.
    exited: Option<ExitStatus>,
}

/// One node of a [`Cluster`]: its files, addresses and process.
#[derive(Debug)]
pub struct Node {
    /// Node id.
    pub node_id: String,
    /// Seed or member.
    pub seed: bool,
    /// Whether its certificate comes from a CA the cluster does not trust.
    pub foreign: bool,
    /// Whether [`Cluster::start_all`] leaves it stopped.
    pub manual: bool,
    /// QUIC (SWIM) address.
    pub quic: SocketAddr,
    /// HTTP API address.
    pub http: SocketAddr,
    /// The labels in its config.
    pub labels: BTreeMap<String, String>,
    /// Its directory (certificate, key, config, data, log).
    pub dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// Its agent's stdout and stderr, over every start.
    pub log: PathBuf,
    process: Mutex<Process>,
}

impl Node {
    fn process(&self) -> MutexGuard<'_, Process> {
        self.process.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pid of its running agent, if any.
    pub fn pid(&self) -> Option<u32> {
        self.process().child.as_ref().map(Child::id)
    }

    /// How many times it was started (so the generation it should have).
    pub fn starts(&self) -> u64 {
        self.process().starts
    }

    /// `seed` or `member`.
    pub fn role(&self) -> &'static str {
        if self.seed { "seed" } else { "member" }
    }

    /// Empty while its agent runs, else why it does not answer: a
    /// "connection refused" alone hides that it crashed or was signalled
    /// by someone else.
    fn whereabouts(&self) -> String {
        match (self.is_running(), self.process().exited) {
            (true, _) => String::new(),
            (false, Some(status)) => format!("; its agent has exited: {status}"),
            (false, None) => "; its agent is not started".to_string(),
        }
    }

    /// Whether its agent was started and has not exited (reaping it if it
    /// has: an exited agent's status is then in its log note).
    pub fn is_running(&self) -> bool {
        let mut process = self.process();
        let Some(child) = process.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                note(&self.log, &format!("agent exited by itself: {status}"));
                process.child = None;
                process.exited = Some(status);
                false
            }
            Err(_) => false,
        }
    }
}

/// Appends a harness line to a node's log, so the log tells the story.
fn note(log: &Path, line: &str) {
    if let Ok(mut file) = fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(file, "=== harness: {line}");
    }
}

/// A cluster of agents on loopback; see the module docs.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster name in every config.
    pub name: String,
    dir: Option<tempfile::TempDir>,
    nodes: Vec<Node>,
    http: reqwest::blocking::Client,
}

impl Cluster {
    /// A builder for a cluster named `name` (also part of its directory's
    /// name): 3 seeds and no members unless told otherwise.
    pub fn builder(name: &str) -> ClusterBuilder {
        ClusterBuilder {
            name: name.to_string(),
            seeds: 3,
            members: 0,
            extra: Vec::new(),
            acl_enabled: None,
            config_tail: String::new(),
        }
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }

    /// Every node, in order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node named `node_id`.
    pub fn node(&self, node_id: &str) -> &Node {
        self.nodes
            .iter()
            .find(|node| node.node_id == node_id)
            .unwrap_or_else(|| panic!("no node {node_id} in cluster {}", self.name))
    }

    /// The cluster's CA directory (`ca.pem`, `ca-key.pem`).
    pub fn ca_dir(&self) -> PathBuf {
        self.dir().join("tls")
    }

    /// Nodes with the cluster's certificates whose agents are running: the
    /// ones that should all see each other.
    pub fn running(&self) -> Vec<&Node> {
        self.nodes
            .iter()
            .filter(|node| !node.foreign && node.is_running())
            .collect()
    }

    /// Starts every node not marked manual, and waits until each answers.
    pub fn start_all(&self) -> Result<()> {
        let mut started = Vec::new();
        for node in self.nodes.iter().filter(|node| !node.manual) {
            self.spawn(node)?;
            started.push(node);
        }
        for node in started {
            self.wait_healthy(&node.node_id);
        }
        Ok(())
    }

    /// Starts (or restarts) `node_id`'s agent and waits until its API
    /// answers with the new generation.
    pub fn start(&self, node_id: &str) {
        let node = self.node(node_id);
        self.spawn(node)
            .unwrap_or_else(|error| panic!("start {node_id}: {error:#}"));
        self.wait_healthy(node_id);
    }

    fn spawn(&self, node: &Node) -> Result<()> {
        let mut process = node.process();
        ensure!(
            process.child.is_none(),
            "{} is already running",
            node.node_id
        );
        // Free the ports just before the agent binds them.
        drop(process.reserved.take());
        process.starts += 1;
        note(
            &node.log,
            &format!("start #{} of {}", process.starts, node.node_id),
        );
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("open {}", node.log.display()))?;
        let child = agent_command()
            .arg("agent")
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start the agent of {}", node.node_id))?;
        note(&node.log, &format!("pid {}", child.id()));
        process.child = Some(child);
        Ok(())
    }

    /// Waits until `node_id`'s API answers `/v1/health` with the generation
    /// of its latest start.
    pub fn wait_healthy(&self, node_id: &str) {
        let node = self.node(node_id);
        let generation = node.starts();
        wait_until(
            TIMEOUT,
            &format!("{node_id} to answer /v1/health with generation {generation}"),
            || {
                ensure!(node.is_running(), "{node_id} is not running");
                let health = self.health(node_id)?;
                ensure!(
                    health["status"] == "ok" && health["generation"] == generation,
                    "health answer {health}"
                );
                Ok(())
            },
        );
    }

    /// Sends `signal` to `node_id`'s running agent.
    pub fn signal(&self, node_id: &str, signal: Signal) {
        let node = self.node(node_id);
        let pid = node
            .pid()
            .unwrap_or_else(|| panic!("{node_id} is not running"));
        note(&node.log, &format!("sending {signal}"));
        kill(Pid::from_raw(pid as i32), signal)
            .unwrap_or_else(|error| panic!("{signal} to {node_id} (pid {pid}): {error}"));
    }

    /// `kill -9`: the agent dies at once, without leaving; it is reaped.
    pub fn kill(&self, node_id: &str) {
        self.signal(node_id, Signal::SIGKILL);
        let status = self.wait_exit(node_id);
        assert!(
            !status.success(),
            "{node_id} exited successfully after SIGKILL"
        );
    }

    /// SIGTERM, then waits for the agent to exit and returns its status.
    pub fn terminate(&self, node_id: &str) -> ExitStatus {
        self.signal(node_id, Signal::SIGTERM);
        self.wait_exit(node_id)
    }

    /// SIGSTOP: the agent freezes (it neither answers nor sends).
    pub fn pause(&self, node_id: &str) {
        self.signal(node_id, Signal::SIGSTOP);
    }

    /// SIGCONT: a paused agent goes on.
    pub fn resume(&self, node_id: &str) {
        self.signal(node_id, Signal::SIGCONT);
    }

    /// Waits (up to [`TIMEOUT`]) for `node_id`'s agent to exit; reaps it.
    pub fn wait_exit(&self, node_id: &str) -> ExitStatus {
        let node = self.node(node_id);
        let status = wait_until(TIMEOUT, &format!("{node_id} to exit"), || {
            let mut process = node.process();
            let child = process
                .child
                .as_mut()
                .ok_or_else(|| anyhow!("{node_id} is not running"))?;
            match child.try_wait()? {
                Some(status) => {
                    process.child = None;
                    process.exited = Some(status);
                    Ok(status)
                }
                None => bail!("still running"),
            }
        });
        note(&node.log, &format!("exited: {status}"));
        status
    }

    /// `GET path` from `node_id`'s API: the status code and body.
    pub fn get(&self, node_id: &str, path: &str) -> Result<(u16, String)> {
        let node = self.node(node_id);
        let url = format!("http://{}{path}", node.http);
        let response = self
            .http
            .get(&url)
            .send()
            .with_context(|| format!("GET {url} ({node_id}){}", node.whereabouts()))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .with_context(|| format!("read {url} ({node_id})"))?;
        Ok((status, body))
    }

    /// A request to `node_id`'s API: `method` (`"GET"`, `"PUT"`, ...) on
    /// `path` (with its query). Its timeout is [`SLOW_HTTP_TIMEOUT`], as a
    /// write or a `?consistent` read may take the agent's own deadline.
    pub fn call(&self, node_id: &str, method: &str, path: &str) -> Call<'_> {
        Call {
            cluster: self,
            node_id: node_id.to_string(),
            method: reqwest::Method::from_bytes(method.as_bytes())
                .unwrap_or_else(|_| panic!("bad HTTP method {method:?}")),
            path: path.to_string(),
            token: None,
            request_id: None,
            body: None,
            timeout: SLOW_HTTP_TIMEOUT,
        }
    }

    fn get_ok(&self, node_id: &str, path: &str) -> Result<String> {
        let (status, body) = self.get(node_id, path)?;
        ensure!(status == 200, "GET {path} at {node_id}: {status}: {body}");
        Ok(body)
    }

    /// `node_id`'s `/v1/health` answer.
    pub fn health(&self, node_id: &str) -> Result<serde_json::Value> {
        let body = self.get_ok(node_id, "/v1/health")?;
        serde_json::from_str(&body).with_context(|| format!("/v1/health at {node_id}: {body}"))
    }

    /// `node_id`'s member table (`/v1/members`).
    pub fn members(&self, node_id: &str) -> Result<Vec<Member>> {
        let body = self.get_ok(node_id, "/v1/members")?;
        serde_json::from_str(&body).with_context(|| format!("/v1/members at {node_id}: {body}"))
    }

    /// A scrape of `node_id`'s `/metrics`.
    pub fn metrics(&self, node_id: &str) -> Result<Metrics> {
        let body = self.get_ok(node_id, "/metrics")?;
        Metrics::parse(&body).with_context(|| format!("/metrics at {node_id}"))
    }

    /// One series of `node_id`'s `/metrics`.
    pub fn metric(&self, node_id: &str, series: &str) -> Result<f64> {
        self.metrics(node_id)?.get(series)
    }

    /// Waits until `check` accepts the member table of every observer.
    /// The timeout message names the first observer that disagreed, why,
    /// and its whole table.
    pub fn wait_views(
        &self,
        observers: &[&Node],
        what: &str,
        check: impl Fn(&Node, &[Member]) -> Result<()>,
    ) {
        wait_until(TIMEOUT, what, || {
            for observer in observers {
                let rows = self.members(&observer.node_id)?;
                check(observer, &rows)
                    .with_context(|| format!("at {}: [{}]", observer.node_id, summary(&rows)))?;
            }
            Ok(())
        });
    }

    /// Waits until every running node (with the cluster's certificates)
    /// lists exactly the running nodes, each once, alive, with the
    /// generation of its latest start; itself as the local row.
    pub fn wait_converged(&self) {
        let running = self.running();
        let expected: BTreeMap<&str, u64> = running
            .iter()
            .map(|node| (node.node_id.as_str(), node.starts()))
            .collect();
        self.wait_views(
            &running,
            &format!("every running agent to see {expected:?} alive"),
            |observer, rows| {
                for (node_id, generation) in &expected {
                    let member = row(rows, node_id)?;
                    ensure!(member.state == "alive", "{node_id} is {}", member.state);
                    ensure!(
                        member.generation == *generation,
                        "{node_id} has generation {}, expected {generation}",
                        member.generation
                    );
                    ensure!(
                        member.local == (*node_id == observer.node_id),
                        "{node_id} local flag is {}",
                        member.local
                    );
                }
                let alive = rows.iter().filter(|row| row.state == "alive").count();
                ensure!(
                    alive == expected.len(),
                    "{alive} alive rows, expected {}",
                    expected.len()
                );
                Ok(())
            },
        );
    }

    /// Waits until every running node other than `node_id` lists it (once)
    /// as `state`, with `generation` if given.
    pub fn wait_seen_as(&self, node_id: &str, state: &str, generation: Option<u64>) {
        let observers: Vec<&Node> = self
            .running()
            .into_iter()
            .filter(|node| node.node_id != node_id)
            .collect();
        let want = match generation {
            Some(generation) => format!("{state} with generation {generation}"),
            None => state.to_string(),
        };
        self.wait_views(
            &observers,
            &format!("every other agent to list {node_id} as {want}"),
            |_, rows| {
                let member = row(rows, node_id)?;
                ensure!(member.state == state, "{node_id} is {}", member.state);
                if let Some(generation) = generation {
                    ensure!(
                        member.generation == generation,
                        "{node_id} has generation {}",
                        member.generation
                    );
                }
                Ok(())
            },
        );
    }

    fn print_logs(&self) {
        for node in &self.nodes {
            let text = fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "----- {} ({}), last {} lines of {} -----",
                node.node_id,
                node.role(),
                tail.len(),
                node.log.display()
            );
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// A request being built by [`Cluster::call`].
#[derive(Debug)]
pub struct Call<'a> {
    cluster: &'a Cluster,
    node_id: String,
    method: reqwest::Method,
    path: String,
    token: Option<String>,
    request_id: Option<String>,
    body: Option<(&'static str, Vec<u8>)>,
    timeout: Duration,
}

impl Call<'_> {
    /// Sends `Authorization: Bearer SECRET`.
    pub fn token(mut self, secret: &str) -> Self {
        self.token = Some(secret.to_string());
        self
    }

    /// Sends `X-Shoal-Request-Id: ID`, so a retry applies nothing twice.
    pub fn request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_string());
        self
    }

    /// A JSON body.
    pub fn json(self, body: &serde_json::Value) -> Self {
        self.raw_json(&body.to_string())
    }

    /// A body sent as `application/json` whatever it holds (for bad input).
    pub fn raw_json(mut self, text: &str) -> Self {
        self.body = Some(("application/json", text.as_bytes().to_vec()));
        self
    }

    /// An `application/octet-stream` body (a catalog backup).
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.body = Some(("application/octet-stream", bytes.to_vec()));
        self
    }

    /// Another timeout than [`SLOW_HTTP_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends it; any answer (whatever its status) is `Ok`.
    pub fn send(self) -> Result<Reply> {
        let node = self.cluster.node(&self.node_id);
        let url = format!("http://{}{}", node.http, self.path);
        let what = format!("{} {url} ({})", self.method, self.node_id);
        let mut request = self
            .cluster
            .http
            .request(self.method, &url)
            .timeout(self.timeout);
        if let Some(secret) = &self.token {
            request = request.bearer_auth(secret);
        }
        if let Some(id) = &self.request_id {
            request = request.header("x-shoal-request-id", id);
        }
        if let Some((content_type, body)) = self.body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body);
        }
        let response = request
            .send()
            .with_context(|| format!("{what}{}", node.whereabouts()))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .with_context(|| format!("read the answer to {what}"))?
            .to_vec();
        Ok(Reply {
            what,
            status,
            headers,
            body,
        })
    }
}

/// An agent's answer to a [`Call`].
#[derive(Clone, Debug)]
pub struct Reply {
    /// The request, for messages (`PUT http://... (node-4)`).
    pub what: String,
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("{}: not JSON: {}", self.what, self.text()))
    }

    /// The JSON body if the status is `status`, else an error showing both.
    pub fn expect(&self, status: u16) -> Result<serde_json::Value> {
        ensure!(
            self.status == status,
            "{}: status {}, expected {status}: {}",
            self.what,
            self.status,
            self.text()
        );
        self.json()
    }

    /// The JSON body of a 200 answer.
    pub fn ok(&self) -> Result<serde_json::Value> {
        self.expect(200)
    }

    /// Checks that this is a JSON error `{"error": {"code", "message"}}`
    /// with `status` and `code`; returns the message.
    pub fn expect_error(&self, status: u16, code: &str) -> Result<String> {
        let body = self.expect(status)?;
        let message = body["error"]["message"]
            .as_str()
            .ok_or_else(|| anyhow!("{}: not a JSON error: {body}", self.what))?;
        ensure!(
            body["error"]["code"] == code,
            "{}: error code {}, expected {code:?}: {body}",
            self.what,
            body["error"]["code"]
        );
        Ok(message.to_string())
    }

    /// The numeric value of a header (`x-shoal-index`).
    pub fn header_u64(&self, name: &str) -> Result<u64> {
        let value = self
            .headers
            .get(name)
            .ok_or_else(|| anyhow!("{}: no {name} header", self.what))?;
        value
            .to_str()
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| anyhow!("{}: {name} is not a number: {value:?}", self.what))
    }
}

/// An access token as `POST /v1/acl/bootstrap` or `/v1/acl/tokens` returns it.
#[derive(Clone, Debug, Deserialize)]
pub struct Token {
    /// Its public id (the audit's actor is `token:ID`).
    pub token_id: String,
    /// The secret, for `Authorization: Bearer`.
    pub token: String,
    /// `read`, `operator` or `admin`.
    pub role: String,
}

/// Several agents at once, and the catalog and seed group as the API shows
/// them.
impl Cluster {
    /// Starts the agents of `node_ids` together (so seeds find each other
    /// at once), then waits until each answers with its new generation.
    pub fn start_nodes(&self, node_ids: &[&str]) {
        for node_id in node_ids {
            self.spawn(self.node(node_id))
                .unwrap_or_else(|error| panic!("start {node_id}: {error:#}"));
        }
        for node_id in node_ids {
            self.wait_healthy(node_id);
        }
    }

    /// SIGTERM to every agent of `node_ids` first, then waits for each to
    /// exit: they stop together, as in a whole-cluster shutdown.
    pub fn terminate_nodes(&self, node_ids: &[&str]) -> Vec<ExitStatus> {
        for node_id in node_ids {
            self.signal(node_id, Signal::SIGTERM);
        }
        node_ids
            .iter()
            .map(|node_id| self.wait_exit(node_id))
            .collect()
    }

    /// SIGSTOP to every agent of `node_ids`.
    pub fn pause_nodes(&self, node_ids: &[&str]) {
        for node_id in node_ids {
            self.pause(node_id);
        }
    }

    /// SIGCONT to every agent of `node_ids`.
    pub fn resume_nodes(&self, node_ids: &[&str]) {
        for node_id in node_ids {
            self.resume(node_id);
        }
    }

    /// Ids of every node (with the cluster's certificates) whose agent runs.
    pub fn running_ids(&self) -> Vec<String> {
        self.running()
            .iter()
            .map(|node| node.node_id.clone())
            .collect()
    }

    /// `node_id`'s `/v1/seeds` answer.
    pub fn seeds_status(&self, node_id: &str) -> Result<serde_json::Value> {
        self.call(node_id, "GET", "/v1/seeds")
            .timeout(HTTP_TIMEOUT)
            .send()?
            .ok()
    }

    /// Waits until every agent of `observers` names the same Raft leader,
    /// one of the seeds, and, if `not` is given, not that one; returns it.
    pub fn wait_leader(&self, observers: &[&str], not: Option<&str>) -> String {
        let what = match not {
            Some(old) => format!("{observers:?} to agree on a leader other than {old}"),
            None => format!("{observers:?} to agree on a leader"),
        };
        wait_until(TIMEOUT, &what, || {
            let mut leaders = BTreeSet::new();
            for observer in observers {
                let status = self.seeds_status(observer)?;
                let leader = status["leader"]
                    .as_str()
                    .ok_or_else(|| anyhow!("{observer} knows no leader: {status}"))?;
                leaders.insert(leader.to_string());
            }
            ensure!(leaders.len() == 1, "leaders named: {leaders:?}");
            let leader = leaders.pop_first().expect("one leader");
            ensure!(self.node(&leader).seed, "{leader} is not a seed");
            ensure!(Some(leader.as_str()) != not, "still {leader}");
            Ok(leader)
        })
    }

    /// `node_id`'s local catalog (`GET /v1/catalog`).
    pub fn catalog(&self, node_id: &str) -> Result<serde_json::Value> {
        self.call(node_id, "GET", "/v1/catalog")
            .timeout(HTTP_TIMEOUT)
            .send()?
            .ok()
    }

    /// Waits until the local catalog of every running agent lists every
    /// running node `active` with the generation of its latest start: the
    /// seed group formed, every agent registered, and every catalog copy
    /// caught up. Returns the highest catalog index seen.
    pub fn wait_catalog_ready(&self) -> u64 {
        let running = self.running();
        let expected: BTreeMap<&str, u64> = running
            .iter()
            .map(|node| (node.node_id.as_str(), node.starts()))
            .collect();
        wait_until(
            TIMEOUT,
            &format!("every agent's catalog to list {expected:?} active"),
            || {
                let mut index_max = 0;
                for observer in &running {
                    let catalog = self.catalog(&observer.node_id)?;
                    for (node_id, generation) in &expected {
                        let record = &catalog["state"]["nodes"][node_id];
                        ensure!(
                            record["status"] == "active" && record["generation"] == *generation,
                            "at {}: {node_id} is {record}",
                            observer.node_id
                        );
                    }
                    index_max = index_max.max(catalog["index"].as_u64().unwrap_or(0));
                }
                Ok(index_max)
            },
        )
    }

    /// `POST /v1/acl/bootstrap` at `node_id`: the first admin token.
    pub fn bootstrap_acl(&self, node_id: &str) -> Result<Token> {
        let body = self
            .call(node_id, "POST", "/v1/acl/bootstrap")
            .send()?
            .ok()?;
        serde_json::from_value(body.clone()).with_context(|| format!("bootstrap answer {body}"))
    }

    /// `POST /v1/acl/tokens` at `node_id` with `admin`'s secret: a new
    /// token with `role`.
    pub fn create_token(&self, node_id: &str, admin: &str, role: &str) -> Result<Token> {
        let body = self
            .call(node_id, "POST", "/v1/acl/tokens")
            .token(admin)
            .json(&serde_json::json!({"role": role, "description": format!("test {role}")}))
            .send()?
            .ok()?;
        serde_json::from_value(body.clone()).with_context(|| format!("token answer {body}"))
    }

    /// `PUT /v1/config/KEY {"value"}` at `node_id` with `token`.
    pub fn set_config(
        &self,
        node_id: &str,
        token: Option<&str>,
        key: &str,
        value: &str,
    ) -> Result<Reply> {
        let mut call = self
            .call(node_id, "PUT", &format!("/v1/config/{key}"))
            .json(&serde_json::json!({"value": value}));
        if let Some(secret) = token {
            call = call.token(secret);
        }
        call.send()
    }

    /// Runs `shoal ARGS...` as a client of `node_id`'s API
    /// (`SHOAL_HTTP_ADDR`, and `SHOAL_TOKEN` when `token` is given).
    pub fn cli<I, S>(&self, node_id: &str, token: Option<&str>, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let bin = shoal_bin();
        let mut command = Command::new(&bin);
        command
            .args(args)
            .env("SHOAL_HTTP_ADDR", self.node(node_id).http.to_string())
            .env_remove("SHOAL_TOKEN")
            .stdin(Stdio::null());
        if let Some(secret) = token {
            command.env("SHOAL_TOKEN", secret);
        }
        command
            .output()
            .unwrap_or_else(|error| panic!("run {}: {error}", bin.display()))
    }

    /// Like [`Self::cli`], but fails (with its output) unless it exits 0;
    /// returns its stdout.
    pub fn cli_ok<I, S>(&self, node_id: &str, token: Option<&str>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let shown = args
            .iter()
            .map(|arg| arg.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let output = self.cli(node_id, token, args);
        ensure!(
            output.status.success(),
            "`shoal {shown}` against {node_id} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for node in &self.nodes {
            let mut process = node.process();
            if let Some(mut child) = process.child.take() {
                // SIGKILL works on a stopped process too.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if panicking {
            self.print_logs();
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "cluster {} kept in {} for inspection",
                    self.name,
                    dir.keep().display()
                );
            }
        }
    }
}

/// A QUIC peer with a certificate from the cluster's CA, for tests that
/// play a misbehaving (but authenticated) member. It builds its TLS from
/// the agent's own [`shoal_agent::tls::TlsIdentity`], so it passes the same
/// mutual-TLS checks an agent does, but is a plain quinn client endpoint:
/// it only dials and sends.
pub struct Prober {
    /// The node id its certificate names.
    pub node_id: String,
    // Dropped before the runtime its driver runs on.
    endpoint: quinn::Endpoint,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ProberConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProberConnection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// A connection from a [`Prober`] to one agent.
pub struct ProberConnection {
    /// The node id the agent's certificate names.
    pub peer: String,
    /// The QUIC connection.
    pub connection: quinn::Connection,
}

impl Prober {
    /// A prober named `node_id`, with a certificate from `cluster`'s CA,
    /// bound to an ephemeral port on 127.0.0.1.
    pub fn new(cluster: &Cluster, node_id: &str) -> Result<Self> {
        let dir = cluster.dir().join(format!("prober-{node_id}"));
        let ca_dir = cluster.ca_dir();
        shoal_ok([
            OsStr::new("tls"),
            "cert".as_ref(),
            "create".as_ref(),
            "--ca".as_ref(),
            ca_dir.as_os_str(),
            "--node-id".as_ref(),
            node_id.as_ref(),
            "--ip".as_ref(),
            "127.0.0.1".as_ref(),
            "--out".as_ref(),
            dir.as_os_str(),
        ])?;
        let tls = shoal_agent::tls::TlsIdentity::load(
            &ca_dir.join("ca.pem"),
            &dir.join(format!("{node_id}.pem")),
            &dir.join(format!("{node_id}-key.pem")),
        )?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.client_config()?)
            .context("QUIC client config")?;
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(5)));
        let mut client = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
        client.transport_config(std::sync::Arc::new(transport));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("start the prober's tokio runtime")?;
        let mut endpoint = {
            let _entered = runtime.enter();
            quinn::Endpoint::client((Ipv4Addr::LOCALHOST, 0).into())
                .context("bind the prober's endpoint")?
        };
        endpoint.set_default_client_config(client);
        Ok(Self {
            node_id: node_id.to_string(),
            endpoint,
            runtime,
        })
    }

    /// The prober's UDP address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Dials `addr` (mutual TLS) and returns the connection, with the node
    /// id the agent's certificate names.
    pub fn connect(&self, addr: SocketAddr) -> Result<ProberConnection> {
        let connecting = {
            // quinn spawns the connection's driver on the current runtime.
            let _entered = self.runtime.enter();
            self.endpoint
                .connect(addr, "shoal")
                .with_context(|| format!("dial {addr}"))?
        };
        let connection = self
            .runtime
            .block_on(async { tokio::time::timeout(TIMEOUT, connecting).await })
            .map_err(|_| anyhow!("dial {addr}: handshake timed out"))?
            .with_context(|| format!("dial {addr}"))?;
        let chain = connection
            .peer_identity()
            .ok_or_else(|| anyhow!("{addr} presented no certificate"))?
            .downcast::<Vec<quinn::rustls::pki_types::CertificateDer<'static>>>()
            .map_err(|_| anyhow!("unexpected peer identity type"))?;
        let leaf = chain
            .first()
            .ok_or_else(|| anyhow!("{addr}: empty certificate chain"))?;
        let peer = shoal_agent::tls::node_id_of(leaf)?;
        Ok(ProberConnection {
            peer: peer.to_string(),
            connection,
        })
    }
}

impl ProberConnection {
    /// Sends one QUIC datagram.
    pub fn send(&self, payload: &[u8]) -> Result<()> {
        self.connection
            .send_datagram(bytes::Bytes::copy_from_slice(payload))
            .with_context(|| format!("send a {}-byte datagram to {}", payload.len(), self.peer))
    }

    /// The largest datagram the connection can carry now (it grows as
    /// path MTU discovery proceeds).
    pub fn max_datagram_bytes(&self) -> usize {
        self.connection.max_datagram_size().unwrap_or(0)
    }
}
