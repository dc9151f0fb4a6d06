//! The agent's TOML configuration: parsing, defaults and validation.
//!
//! Every error names the key and the problem (`cluster.advertise: ...`), and
//! the agent exits non-zero before touching anything. Relative paths are
//! relative to the directory of the config file.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use shoal_membership::alerts::AlertConfig;
use shoal_membership::telemetry::TelemetryConfig;
use shoal_membership::{MembershipConfig, NodeId, Role};

/// Default address of the HTTP API, and of the CLI's `--http`.
pub const HTTP_LISTEN_DEFAULT: &str = "127.0.0.1:7480";
/// Labels the placement uses for locality; any other label is allowed too.
pub const LOCALITY_LABELS: [&str; 3] = ["region", "zone", "rack"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: String,
    role: RawRole,
    data_dir: PathBuf,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    cluster: RawCluster,
    tls: RawTls,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    membership: RawMembership,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    acl: RawAcl,
    #[serde(default)]
    telemetry: TelemetryConfig,
    #[serde(default)]
    alerts: AlertConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcl {
    enabled: bool,
}

impl Default for RawAcl {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawRole {
    Seed,
    Member,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    seeds: Vec<String>,
    bootstrap_expect: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: SocketAddr,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: HTTP_LISTEN_DEFAULT.parse().expect("valid default"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMembership {
    #[serde(default, with = "humantime_serde")]
    probe_period: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    probe_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    suspect_timeout_min: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    suspect_timeout_max: Option<Duration>,
    confirmations_expected: Option<u32>,
    lifeguard: Option<bool>,
    probe_rings: Option<bool>,
    health_max: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    gossip_period: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    announce_down_period: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    seed_announce_period: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    remove_down_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    push_pull_period: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// A validated agent configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The node's stable name.
    pub node_id: NodeId,
    /// Seed (Raft voter) or member.
    pub role: Role,
    /// Where the agent keeps its state (generation, later the catalog).
    pub data_dir: PathBuf,
    /// Locality and other labels.
    pub labels: BTreeMap<String, String>,
    /// Cluster name; packets of another cluster are dropped.
    pub cluster_name: String,
    /// UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// Address other agents reach this one at.
    pub advertise: SocketAddr,
    /// Seed addresses, resolved.
    pub seeds: Vec<SocketAddr>,
    /// How many seeds form the first Raft group.
    pub bootstrap_expect: u32,
    /// Cluster CA certificate (PEM).
    pub tls_ca: PathBuf,
    /// This node's certificate (PEM).
    pub tls_cert: PathBuf,
    /// This node's private key (PEM).
    pub tls_key: PathBuf,
    /// Address of the HTTP API.
    pub http_listen: SocketAddr,
    /// SWIM and Lifeguard settings.
    pub membership: MembershipConfig,
    /// Log filter (`info`, `debug`, `shoal_agent=debug`, ...).
    pub log_level: String,
    /// Whether writes need a bearer token (default true; `shoal demo` turns
    /// it off).
    pub acl_enabled: bool,
    /// Alert rules.
    pub alerts: AlertConfig,
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).with_context(|| format!("config file {}", path.display()))
    }

    /// Parses and validates config text; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| anyhow!("{error}"))?;
        let node_id = NodeId::new(raw.node_id).map_err(|error| anyhow!("node_id: {error}"))?;
        let role = match raw.role {
            RawRole::Seed => Role::Seed,
            RawRole::Member => Role::Member,
        };
        for (key, value) in &raw.labels {
            if LOCALITY_LABELS.contains(&key.as_str()) && value.is_empty() {
                bail!("labels.{key}: must not be empty");
            }
        }
        let cluster = raw.cluster;
        let advertise = match cluster.advertise {
            Some(addr) if addr.ip().is_unspecified() || addr.port() == 0 => {
                bail!("cluster.advertise: {addr} is not an address other agents can reach")
            }
            Some(addr) => addr,
            None if cluster.listen.ip().is_unspecified() || cluster.listen.port() == 0 => bail!(
                "cluster.advertise: required when cluster.listen ({}) is a wildcard address or port",
                cluster.listen
            ),
            None => cluster.listen,
        };
        if cluster.seeds.is_empty() {
            bail!("cluster.seeds: list at least one seed address (host:port)");
        }
        let mut seeds = Vec::new();
        for seed in &cluster.seeds {
            let addr = seed
                .to_socket_addrs()
                .map_err(|error| anyhow!("cluster.seeds: {seed:?}: {error}"))?
                .next()
                .ok_or_else(|| anyhow!("cluster.seeds: {seed:?} resolves to no address"))?;
            seeds.push(addr);
        }
        let bootstrap_expect = cluster.bootstrap_expect.unwrap_or(3);
        if ![1, 3, 5, 7].contains(&bootstrap_expect) {
            bail!(
                "cluster.bootstrap_expect: must be 1, 3, 5 or 7 (an odd Raft group), got {bootstrap_expect}"
            );
        }
        if raw.data_dir.as_os_str().is_empty() {
            bail!("data_dir: must not be empty");
        }
        raw.telemetry
            .validate()
            .map_err(|error| anyhow!("telemetry: {error}"))?;
        raw.alerts
            .validate()
            .map_err(|error| anyhow!("alerts: {error}"))?;
        let mut membership = membership_config(&cluster.name, raw.membership)?;
        membership.telemetry = raw.telemetry;
        let resolve = |path: PathBuf| {
            if path.is_absolute() {
                path
            } else {
                base.join(path)
            }
        };
        Ok(Self {
            node_id,
            role,
            data_dir: resolve(raw.data_dir),
            labels: raw.labels,
            cluster_name: cluster.name,
            listen: cluster.listen,
            advertise,
            seeds,
            bootstrap_expect,
            tls_ca: resolve(raw.tls.ca),
            tls_cert: resolve(raw.tls.cert),
            tls_key: resolve(raw.tls.key),
            http_listen: raw.http.listen,
            membership,
            log_level: raw.log.level,
            acl_enabled: raw.acl.enabled,
            alerts: raw.alerts,
        })
    }
}

fn membership_config(cluster_name: &str, raw: RawMembership) -> Result<MembershipConfig> {
    let mut config = MembershipConfig::new(cluster_name);
    let set = |target: &mut Duration, value: Option<Duration>| {
        if let Some(value) = value {
            *target = value;
        }
    };
    set(&mut config.probe_period, raw.probe_period);
    set(&mut config.probe_timeout, raw.probe_timeout);
    set(&mut config.suspect_timeout_min, raw.suspect_timeout_min);
    set(&mut config.suspect_timeout_max, raw.suspect_timeout_max);
    set(&mut config.gossip_period, raw.gossip_period);
    set(&mut config.announce_down_period, raw.announce_down_period);
    set(&mut config.seed_announce_period, raw.seed_announce_period);
    set(&mut config.remove_down_after, raw.remove_down_after);
    set(&mut config.push_pull_period, raw.push_pull_period);
    if let Some(value) = raw.confirmations_expected {
        config.confirmations_expected = value;
    }
    if let Some(value) = raw.lifeguard {
        config.lifeguard = value;
    }
    if let Some(value) = raw.probe_rings {
        config.probe_rings = value;
    }
    if let Some(value) = raw.health_max {
        config.health_max = value;
    }
    config.validate().map_err(|error| {
        if error.field == "cluster_name" {
            anyhow!("cluster.name: {}", error.problem)
        } else {
            anyhow!("{error}")
        }
    })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = "db-07"
role = "member"
data_dir = "data"
[labels]
region = "us-east"
zone = "us-east-1a"
[cluster]
name = "prod-a"
listen = "127.0.0.1:7400"
seeds = ["127.0.0.1:7401"]
[tls]
ca = "ca.pem"
cert = "db-07.pem"
key = "db-07-key.pem"
"#;

    fn error_of(text: &str) -> String {
        format!(
            "{:#}",
            Config::parse(text, Path::new("/etc/shoal")).unwrap_err()
        )
    }

    #[test]
    fn a_good_config_parses_with_defaults() {
        let config = Config::parse(GOOD, Path::new("/etc/shoal")).unwrap();
        assert_eq!(config.node_id.as_str(), "db-07");
        assert_eq!(config.advertise, config.listen);
        assert_eq!(config.data_dir, Path::new("/etc/shoal/data"));
        assert_eq!(config.http_listen.to_string(), HTTP_LISTEN_DEFAULT);
        assert_eq!(config.bootstrap_expect, 3);
        assert!(config.membership.lifeguard);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (GOOD.replace("node_id = \"db-07\"\n", ""), "node_id"),
            (GOOD.replace("\"db-07\"", "\"bad id\""), "node_id"),
            (GOOD.replace("role = \"member\"", "role = \"king\""), "role"),
            (
                GOOD.replace("127.0.0.1:7400", "0.0.0.0:7400"),
                "cluster.advertise",
            ),
            (GOOD.replace("127.0.0.1:7400", "not-an-address"), "listen"),
            (GOOD.replace("[\"127.0.0.1:7401\"]", "[]"), "cluster.seeds"),
            (
                GOOD.replace("name = \"prod-a\"", "name = \"\""),
                "cluster.name",
            ),
            (
                GOOD.replace("[tls]", "bootstrap_expect = 2\n[tls]"),
                "cluster.bootstrap_expect",
            ),
            (GOOD.replace("[tls]", "colour = \"red\"\n[tls]"), "colour"),
            (
                format!("{GOOD}[membership]\nprobe_period = \"soon\"\n"),
                "probe_period",
            ),
            (
                format!("{GOOD}[membership]\nprobe_timeout = \"5s\"\n"),
                "membership.probe_timeout",
            ),
        ];
        for (text, key) in cases {
            let error = error_of(&text);
            assert!(error.contains(key), "{key} not named in: {error}");
        }
    }
}
