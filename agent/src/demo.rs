//! `shoal demo`: a whole cluster on loopback, for trying Shoal on one
//! machine. Generates a CA and certificates, writes one config per node,
//! starts the agents as child processes, prints where to look, and stops
//! them all (gracefully) on Ctrl-C.

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_membership::NodeId;

use crate::http::MemberJson;

/// Zones the demo spreads its nodes over.
pub const DEMO_ZONES: usize = 3;
/// Largest demo cluster.
pub const DEMO_NODES_MAX: usize = 64;
/// How long the demo waits for every agent to see every other.
pub const DEMO_CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The files of one demo node.
#[derive(Debug, Clone)]
pub struct DemoNode {
    /// Its node id (`node-1`, ...).
    pub node_id: NodeId,
    /// Its config file.
    pub config: PathBuf,
    /// Its HTTP API address.
    pub http: String,
}

/// Writes the CA, certificates and configs of an `nodes`-agent cluster
/// with `seeds` seeds into `dir`, with QUIC ports from `base_port` and HTTP
/// ports from `base_port + 100`.
pub fn write_cluster(
    dir: &Path,
    nodes: usize,
    seeds: usize,
    base_port: u16,
) -> Result<Vec<DemoNode>> {
    if nodes == 0 || nodes > DEMO_NODES_MAX {
        bail!("--nodes: must be 1 to {DEMO_NODES_MAX}");
    }
    if ![1, 3, 5, 7].contains(&seeds) || seeds > nodes {
        bail!("--seeds: must be 1, 3, 5 or 7 and at most --nodes");
    }
    if usize::from(base_port) + 100 + nodes > usize::from(u16::MAX) {
        bail!("--base-port: too high for {nodes} nodes");
    }
    let tls_dir = dir.join("tls");
    crate::tls::create_ca(&tls_dir, "demo")?;
    let quic_port = |index: usize| base_port + index as u16;
    let seed_list = (0..seeds)
        .map(|index| format!("\"127.0.0.1:{}\"", quic_port(index)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut written = Vec::new();
    for index in 0..nodes {
        let node_id = NodeId::new(format!("node-{}", index + 1))?;
        let node_dir = dir.join(node_id.as_str());
        fs::create_dir_all(&node_dir).with_context(|| format!("create {}", node_dir.display()))?;
        crate::tls::create_cert(
            &tls_dir,
            &node_id,
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            &["localhost".to_string()],
            &node_dir,
        )?;
        let role = if index < seeds { "seed" } else { "member" };
        let http = format!("127.0.0.1:{}", base_port + 100 + index as u16);
        let mut text = String::new();
        writeln!(
            text,
            "# shoal demo node {} (written by `shoal demo`)",
            index + 1
        )?;
        writeln!(
            text,
            "node_id = \"{node_id}\"\nrole = \"{role}\"\ndata_dir = \"data\""
        )?;
        writeln!(
            text,
            "[labels]\nregion = \"local\"\nzone = \"zone-{}\"",
            index % DEMO_ZONES + 1
        )?;
        writeln!(
            text,
            "[cluster]\nname = \"demo\"\nlisten = \"127.0.0.1:{}\"",
            quic_port(index)
        )?;
        writeln!(text, "seeds = [{seed_list}]\nbootstrap_expect = {seeds}")?;
        writeln!(
            text,
            "[tls]\nca = \"../tls/ca.pem\"\ncert = \"{node_id}.pem\"\nkey = \"{node_id}-key.pem\""
        )?;
        writeln!(text, "[http]\nlisten = \"{http}\"")?;
        writeln!(
            text,
            "[acl]\n# The demo is for trying things out; production keeps tokens on.\nenabled = false"
        )?;
        let config = node_dir.join("shoal.toml");
        fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
        written.push(DemoNode {
            node_id,
            config,
            http,
        });
    }
    Ok(written)
}

/// Runs the demo until Ctrl-C.
pub fn run(nodes: usize, seeds: usize, dir: Option<PathBuf>, base_port: u16) -> Result<()> {
    let dir = match dir {
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("shoal-demo-")
            .tempdir()?
            .keep(),
    };
    if dir.join("tls").join("ca.pem").exists() {
        bail!(
            "--dir: {} already holds a demo; pick an empty directory",
            dir.display()
        );
    }
    let cluster = write_cluster(&dir, nodes, seeds, base_port)?;
    let exe = std::env::current_exe().context("find the shoal executable")?;
    let mut children: Vec<(DemoNode, Child)> = Vec::new();
    for node in &cluster {
        let log_path = node.config.with_file_name("agent.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let child = Command::new(&exe)
            .arg("agent")
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start agent {}", node.node_id))?;
        children.push((node.clone(), child));
    }
    println!(
        "shoal demo: {nodes} agents ({seeds} seeds) in {}",
        dir.display()
    );
    for (node, child) in &children {
        println!(
            "  {:<8} http://{}  (pid {}, log {})",
            node.node_id,
            node.http,
            child.id(),
            node.config.with_file_name("agent.log").display()
        );
    }
    let first = &cluster[0].http;
    match wait_converged(first, nodes) {
        Ok(elapsed) => println!(
            "all {nodes} agents see each other alive after {:.1}s",
            elapsed.as_secs_f64()
        ),
        Err(error) => println!("warning: {error:#}"),
    }
    println!("\ntry:\n  SHOAL_HTTP_ADDR={first} cargo run -q -p shoal-agent -- members");
    println!("  curl -s http://{first}/v1/members\n  curl -s http://{first}/metrics");
    println!("\nCtrl-C stops every agent.");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    println!("\nstopping {} agents", children.len());
    for (_, child) in &children {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    }
    for (node, mut child) in children {
        let status = child
            .wait()
            .with_context(|| format!("wait for {}", node.node_id))?;
        println!("  {} exited: {status}", node.node_id);
    }
    Ok(())
}

fn wait_converged(http: &str, nodes: usize) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if let Ok(members) = crate::cli::get_json::<Vec<MemberJson>>(http, "/v1/members")
            && members
                .iter()
                .filter(|member| member.state == "alive")
                .count()
                == nodes
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > DEMO_CONVERGE_TIMEOUT {
            bail!(
                "the cluster did not converge within {DEMO_CONVERGE_TIMEOUT:?}; see the agent logs"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
