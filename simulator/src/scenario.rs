//! Scenarios: the TOML a user writes, parsed and checked into plain types.
//!
//! A scenario names the cluster's shape (groups of nodes with roles, regions
//! and zones), the membership settings, the network's defaults, a timeline of
//! faults, and the checks with their bounds. `SCENARIOS.md` is the reference
//! for users; this file is the reference for the code. Everything here is
//! validated up front so that the event loop never meets a malformed entry.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};
use shoal_membership::MembershipConfig;

/// Most nodes a scenario may define; past it memory, not time, runs out.
pub const NODES_MAX: usize = 20_000;
/// Most timeline entries after `repeat` is expanded.
pub const TIMELINE_EXPANDED_MAX: usize = 100_000;
/// Longest simulated run.
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);

/// A whole scenario, as written in TOML.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports and file names.
    pub name: String,
    /// What the scenario shows, in a sentence or two.
    #[serde(default)]
    pub description: String,
    /// Simulated time to run for. The run is extended, if needed, so that
    /// the liveness bound after the last fault fits.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// The seed used when the command line gives none.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Who is in the cluster.
    pub cluster: Cluster,
    /// Membership settings on top of a preset.
    #[serde(default)]
    pub membership: MembershipSpec,
    /// The network's default behaviour.
    #[serde(default)]
    pub network: NetworkSpec,
    /// Faults and operations, in any order (they are sorted by time).
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// Client writes to the catalog.
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// Checks and their bounds.
    #[serde(default)]
    pub checks: ChecksSpec,
    /// Knobs of the simulator itself.
    #[serde(default)]
    pub sim: SimSpec,
    /// Deliberate breakage, for tests that prove a check can fail.
    #[serde(default)]
    pub test_only: TestOnly,
}

fn default_seed() -> u64 {
    1
}

/// The cluster's shape.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Cluster name carried in every packet. Default `sim`.
    #[serde(default = "default_cluster_name")]
    pub name: String,
    /// Groups of alike nodes, in order.
    pub groups: Vec<NodeGroup>,
    /// Seeds that form the first Raft group (default: every seed).
    #[serde(default)]
    pub bootstrap_expect: Option<usize>,
    /// Nodes started at time zero start spread uniformly over this window
    /// (default 1 s), as real agents never start at the same instant.
    #[serde(default = "default_boot_spread", with = "humantime_serde")]
    pub boot_spread: Duration,
}

fn default_cluster_name() -> String {
    "sim".into()
}

fn default_boot_spread() -> Duration {
    Duration::from_secs(1)
}

/// `count` nodes named `{prefix}-{i}` sharing a role and placement.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGroup {
    /// Name prefix: the nodes are `{prefix}-0`, `{prefix}-1`, ...
    pub prefix: String,
    /// How many nodes.
    pub count: usize,
    /// `seed` (Raft voter, announced to by everyone) or `member`.
    #[serde(default = "default_role")]
    pub role: String,
    /// Regions, assigned round-robin. Default `["r1"]`.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Zones, assigned round-robin. Default `["z1"]`.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Extra labels on every node of the group.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether the nodes boot at time zero (default) or wait for a `start`
    /// action on the timeline.
    #[serde(default = "default_true")]
    pub start: bool,
    /// Set by `--nodes`: this group absorbs the resize.
    #[serde(default)]
    pub scalable: bool,
}

fn default_role() -> String {
    "member".into()
}

fn default_true() -> bool {
    true
}

/// Membership configuration: a preset plus overrides. Durations in
/// humantime (`"500ms"`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipSpec {
    /// `default` (Shoal's, Lifeguard on) or `foca_lan_baseline`.
    #[serde(default)]
    pub preset: Option<String>,
    /// See [`MembershipConfig::probe_period`].
    #[serde(default, with = "humantime_serde")]
    pub probe_period: Option<Duration>,
    /// See [`MembershipConfig::probe_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub probe_timeout: Option<Duration>,
    /// See [`MembershipConfig::suspect_timeout_min`].
    #[serde(default, with = "humantime_serde")]
    pub suspect_timeout_min: Option<Duration>,
    /// See [`MembershipConfig::suspect_timeout_max`].
    #[serde(default, with = "humantime_serde")]
    pub suspect_timeout_max: Option<Duration>,
    /// See [`MembershipConfig::confirmations_expected`].
    #[serde(default)]
    pub confirmations_expected: Option<u32>,
    /// See [`MembershipConfig::gossip_period`].
    #[serde(default, with = "humantime_serde")]
    pub gossip_period: Option<Duration>,
    /// See [`MembershipConfig::gossip_fanout`].
    #[serde(default)]
    pub gossip_fanout: Option<usize>,
    /// See [`MembershipConfig::max_transmissions`].
    #[serde(default)]
    pub max_transmissions: Option<u8>,
    /// See [`MembershipConfig::relay_transmissions`].
    #[serde(default)]
    pub relay_transmissions: Option<u8>,
    /// See [`MembershipConfig::indirect_probes`].
    #[serde(default)]
    pub indirect_probes: Option<usize>,
    /// See [`MembershipConfig::lifeguard`].
    #[serde(default)]
    pub lifeguard: Option<bool>,
    /// See [`MembershipConfig::probe_rings`].
    #[serde(default)]
    pub probe_rings: Option<bool>,
    /// See [`MembershipConfig::announce_down_period`].
    #[serde(default, with = "humantime_serde")]
    pub announce_down_period: Option<Duration>,
}

impl MembershipSpec {
    /// The configuration for a cluster of `cluster_size` named `name`.
    pub fn build(&self, name: &str, cluster_size: usize) -> anyhow::Result<MembershipConfig> {
        let mut config = match self.preset.as_deref().unwrap_or("default") {
            "default" => MembershipConfig::new(name),
            "foca_lan_baseline" => MembershipConfig::foca_lan_baseline(
                name,
                cluster_size.min(u32::MAX as usize) as u32,
            ),
            other => bail!("membership.preset {other:?}: expected default or foca_lan_baseline"),
        };
        macro_rules! set {
            ($($field:ident),*) => {$(if let Some(value) = self.$field { config.$field = value; })*};
        }
        set!(
            probe_period,
            probe_timeout,
            suspect_timeout_min,
            suspect_timeout_max,
            confirmations_expected,
            gossip_period,
            gossip_fanout,
            indirect_probes,
            lifeguard,
            probe_rings,
            announce_down_period
        );
        if self.max_transmissions.is_some() {
            config.max_transmissions = self.max_transmissions;
        }
        if self.relay_transmissions.is_some() {
            config.relay_transmissions = self.relay_transmissions;
        }
        config.validate()?;
        Ok(config)
    }
}

/// How long a datagram takes on one link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum LatencySpec {
    /// Always the same.
    Constant {
        /// The one-way delay.
        #[serde(with = "humantime_serde")]
        value: Duration,
    },
    /// Uniform in `[min, max]`.
    Uniform {
        /// Least one-way delay.
        #[serde(with = "humantime_serde")]
        min: Duration,
        /// Greatest one-way delay.
        #[serde(with = "humantime_serde")]
        max: Duration,
    },
    /// `min` plus an exponential tail with mean `mean`.
    Exponential {
        /// Floor of the delay.
        #[serde(default, with = "humantime_serde")]
        min: Duration,
        /// Mean of the tail above `min`.
        #[serde(with = "humantime_serde")]
        mean: Duration,
    },
}

impl Default for LatencySpec {
    fn default() -> Self {
        LatencySpec::Uniform {
            min: Duration::from_micros(500),
            max: Duration::from_millis(2),
        }
    }
}

/// Link behaviour. Probabilities are in `[0, 1]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// One-way latency within a region.
    #[serde(default)]
    pub latency: LatencySpec,
    /// Probability a datagram is lost.
    #[serde(default)]
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    #[serde(default)]
    pub duplicate: f64,
    /// Probability a datagram is held back by up to `reorder_delay`, so
    /// later ones overtake it.
    #[serde(default)]
    pub reorder: f64,
    /// Longest extra delay of a reordered datagram. Default 20 ms.
    #[serde(default = "default_reorder_delay", with = "humantime_serde")]
    pub reorder_delay: Duration,
    /// Round-trip times between regions, keyed `"a:b"` (symmetric); half
    /// of it is added to each one-way delay between those regions.
    #[serde(default)]
    pub rtt: BTreeMap<String, HumanDuration>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            latency: LatencySpec::default(),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: default_reorder_delay(),
            rtt: BTreeMap::new(),
        }
    }
}

fn default_reorder_delay() -> Duration {
    Duration::from_millis(20)
}

/// A humantime duration as a map value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HumanDuration(#[serde(with = "humantime_serde")] pub Duration);

/// What a timeline entry does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Stop the targets abruptly; unsynced storage writes are lost. With
    /// `for`, they restart afterwards.
    Crash,
    /// Crash and start again at once with a new generation.
    Restart,
    /// Start targets that are not running (added nodes, crashed nodes).
    Start,
    /// Leave gracefully and stop for good (removing the node).
    Leave,
    /// Stall the targets' processes: inputs queue, timers wait. With `for`,
    /// they resume afterwards.
    Pause,
    /// Resume paused targets.
    Resume,
    /// Jump the targets' clocks by `offset` (`"+2s"`, `"-500ms"`).
    Skew,
    /// Make the targets' clocks run fast or slow by `ppm` parts per million.
    Drift,
    /// Split the cluster into `groups`; no datagram crosses between groups.
    Partition,
    /// Drop every datagram from `from` to `to` (not the reverse).
    OneWay,
    /// Partition `groups` except for the `bridge` nodes, which reach all.
    Bridge,
    /// Cut the targets off from everyone, both ways.
    Isolate,
    /// Remove a partition (by `id`), or every partition without `id`.
    Heal,
    /// Worsen the links touching the targets (`loss`, `latency`, ...).
    Degrade,
    /// Undo a degradation (by `id`), or all of them without `id`.
    Restore,
}

impl Action {
    /// The snake_case name, as in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Crash => "crash",
            Action::Restart => "restart",
            Action::Start => "start",
            Action::Leave => "leave",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Skew => "skew",
            Action::Drift => "drift",
            Action::Partition => "partition",
            Action::OneWay => "one_way",
            Action::Bridge => "bridge",
            Action::Isolate => "isolate",
            Action::Heal => "heal",
            Action::Degrade => "degrade",
            Action::Restore => "restore",
        }
    }

    /// Whether the action starts a fault (as opposed to ending one).
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            Action::Crash
                | Action::Pause
                | Action::Partition
                | Action::OneWay
                | Action::Bridge
                | Action::Isolate
                | Action::Degrade
                | Action::Leave
                | Action::Skew
                | Action::Drift
                | Action::Restart
        )
    }
}

/// Repeat an entry `times` times, `every` apart (the first at `at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// Time between repetitions.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// How many times in all, the first included.
    pub times: u32,
}

/// One fault or operation at a point in simulated time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    /// When, from the start of the run.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// What happens.
    pub action: Action,
    /// Node selectors (see SCENARIOS.md): names, `all`, `seeds`, `members`,
    /// `key=value` labels, `prefix*`, `random:K[:selector]`, `random:P%[:selector]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Partition and bridge sides, each a list of selectors; `rest` means
    /// every node in no other group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Vec<String>>,
    /// Bridge nodes that reach every group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bridge: Vec<String>,
    /// One-way partition senders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    /// One-way partition receivers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Undo the fault after this long (crash → start, pause → resume,
    /// partitions → heal, degrade → restore).
    #[serde(
        default,
        rename = "for",
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration: Option<Duration>,
    /// Repeat the entry (with its `for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<Repeat>,
    /// Names a partition or degradation for a later `heal`/`restore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Clock jump for `skew`: `"+2s"` or `"-500ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<String>,
    /// Clock rate error for `drift`, in parts per million.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppm: Option<f64>,
    /// Loss for `degrade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Duplication for `degrade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<f64>,
    /// Reordering for `degrade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<f64>,
    /// Latency for `degrade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySpec>,
    /// For `pause` with `random:` targets: each target stalls for a time
    /// uniform in `[for, for_max]`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub for_max: Option<Duration>,
}

/// Client writes: configuration entries set through random running agents
/// (forwarded to the leader as the agent does), at a fixed rate.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Writes per simulated second (0: none).
    #[serde(default)]
    pub writes_per_s: f64,
    /// When writes begin. Default 5 s.
    #[serde(default, with = "humantime_serde")]
    pub start: Option<Duration>,
    /// When writes end. Default: the end of the run minus the liveness bound.
    #[serde(default, with = "humantime_serde")]
    pub stop: Option<Duration>,
    /// Distinct configuration keys written round-robin. Default 16.
    #[serde(default)]
    pub keys: Option<u32>,
}

/// Checks and bounds. Every bound is optional; a missing one disables the
/// check it bounds (the metric is still reported).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksSpec {
    /// After the last fault ends, every running agent must hold the same
    /// membership view (the running nodes alive at their current
    /// generation, the others down or forgotten) within this bound.
    /// Default 30 s.
    #[serde(default = "default_converge_within", with = "humantime_serde")]
    pub converge_within: Duration,
    /// Most false "down" verdicts (observer, subject) pairs allowed.
    #[serde(default)]
    pub false_down_max: Option<u64>,
    /// Bound on the p99 of "every running agent sees the crashed node down".
    #[serde(default, with = "humantime_serde")]
    pub detection_p99_max: Option<Duration>,
    /// After the last fault, within `converge_within`: a seed leads with a
    /// majority, and every running agent holds the same catalog (index and
    /// hash chain). Default true when the cluster has seeds.
    #[serde(default = "default_true")]
    pub consensus: bool,
    /// Bound on the p99 of dissemination (first to last observer).
    #[serde(default, with = "humantime_serde")]
    pub dissemination_p99_max: Option<Duration>,
}

fn default_converge_within() -> Duration {
    Duration::from_secs(30)
}

impl Default for ChecksSpec {
    fn default() -> Self {
        Self {
            converge_within: default_converge_within(),
            false_down_max: None,
            consensus: true,
            detection_p99_max: None,
            dissemination_p99_max: None,
        }
    }
}

/// Simulator knobs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSpec {
    /// How often time series are sampled and liveness is checked.
    /// Default 1 s.
    #[serde(default = "default_sample_period", with = "humantime_serde")]
    pub sample_period: Duration,
    /// Classify every datagram by SWIM message kind (decodes its header).
    /// Default true; turn off for the largest runs.
    #[serde(default = "default_true")]
    pub message_kinds: bool,
    /// Run each agent's node core without consensus: SWIM, Lifeguard,
    /// telemetry and alerts only — no Raft group, no catalog copies, no
    /// registration. For membership measurements at the largest sizes;
    /// consensus checks are off and a workload is refused. Default false.
    #[serde(default)]
    pub membership_only: bool,
}

fn default_sample_period() -> Duration {
    Duration::from_secs(1)
}

impl Default for SimSpec {
    fn default() -> Self {
        Self {
            sample_period: default_sample_period(),
            message_kinds: true,
            membership_only: false,
        }
    }
}

/// Deliberate breakage. Never set in shipped scenarios; tests set these to
/// prove that the checks catch a broken system.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestOnly {
    /// A "crashed" node keeps running and answering: the network keeps
    /// delivering to it. Detection and convergence checks must fail.
    #[serde(default)]
    pub zombie_crash: bool,
    /// Peer messages (Raft, catalog) cross partitions although the checks
    /// believe the sides are cut: a minority then appears to commit, and
    /// `raft.minority_never_commits` must fail.
    #[serde(default)]
    pub leaky_streams: bool,
}

/// Changes from the command line, applied after parsing.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Resize the cluster to this many nodes: the `scalable` group (or the
    /// largest member group) absorbs the difference.
    pub nodes: Option<usize>,
    /// Run for this long instead.
    pub duration: Option<Duration>,
}

impl Scenario {
    /// Parses and validates a scenario.
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads, parses and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// The scenario as TOML (for minimized failing scenarios).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a scenario always serializes")
    }

    /// Applies command-line overrides and validates again.
    pub fn apply(&mut self, overrides: &Overrides) -> anyhow::Result<()> {
        if let Some(nodes) = overrides.nodes {
            let total = self.node_count();
            let index = self
                .cluster
                .groups
                .iter()
                .position(|group| group.scalable)
                .or_else(|| {
                    (0..self.cluster.groups.len())
                        .filter(|i| self.cluster.groups[*i].role == "member")
                        .max_by_key(|i| self.cluster.groups[*i].count)
                })
                .context("--nodes needs a member group to resize")?;
            let group = &mut self.cluster.groups[index];
            let others = total - group.count;
            ensure!(
                nodes > others,
                "--nodes {nodes}: the other groups already hold {others}"
            );
            group.count = nodes - others;
        }
        if let Some(duration) = overrides.duration {
            self.duration = duration;
        }
        self.validate()
    }

    /// Total nodes defined.
    pub fn node_count(&self) -> usize {
        self.cluster.groups.iter().map(|group| group.count).sum()
    }

    /// Checks every constraint not expressed in the types.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.name.is_empty(), "name must not be empty");
        ensure!(
            !self.duration.is_zero() && self.duration <= DURATION_MAX,
            "duration must be positive and at most {}",
            humantime::format_duration(DURATION_MAX)
        );
        let n = self.node_count();
        ensure!(
            (1..=NODES_MAX).contains(&n),
            "cluster must have 1 to {NODES_MAX} nodes, has {n}"
        );
        for group in &self.cluster.groups {
            ensure!(
                group.role == "seed" || group.role == "member",
                "group {}: role must be seed or member",
                group.prefix
            );
            shoal_membership::NodeId::new(format!("{}-0", group.prefix))
                .with_context(|| format!("group prefix {:?}", group.prefix))?;
        }
        let mut prefixes: Vec<&str> = self
            .cluster
            .groups
            .iter()
            .map(|g| g.prefix.as_str())
            .collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        ensure!(
            prefixes.len() == self.cluster.groups.len(),
            "group prefixes must be distinct"
        );
        self.membership.build(&self.cluster.name, n)?;
        let net = &self.network;
        for (what, p) in [
            ("loss", net.loss),
            ("duplicate", net.duplicate),
            ("reorder", net.reorder),
        ] {
            ensure!((0.0..=1.0).contains(&p), "network.{what} must be in [0, 1]");
        }
        validate_latency(&net.latency)?;
        for key in net.rtt.keys() {
            ensure!(
                key.split(':').count() == 2,
                "network.rtt key {key:?} must be \"region:region\""
            );
        }
        ensure!(
            !self.sim.sample_period.is_zero(),
            "sim.sample_period must be positive"
        );
        ensure!(
            self.workload.writes_per_s.is_finite()
                && (0.0..=10_000.0).contains(&self.workload.writes_per_s),
            "workload.writes_per_s must be in [0, 10000]"
        );
        anyhow::ensure!(
            !(self.sim.membership_only && self.workload.writes_per_s > 0.0),
            "sim.membership_only runs no consensus: workload.writes_per_s must be 0"
        );
        let mut expanded = 0usize;
        for (i, entry) in self.timeline.iter().enumerate() {
            validate_entry(entry).with_context(|| {
                format!(
                    "timeline entry {i} ({} at {:?})",
                    entry.action.as_str(),
                    entry.at
                )
            })?;
            expanded += entry.repeat.map_or(1, |r| r.times as usize);
        }
        ensure!(
            expanded <= TIMELINE_EXPANDED_MAX,
            "timeline expands to {expanded} entries, at most {TIMELINE_EXPANDED_MAX}"
        );
        Ok(())
    }
}

fn validate_latency(latency: &LatencySpec) -> anyhow::Result<()> {
    match latency {
        LatencySpec::Uniform { min, max } => ensure!(min <= max, "latency min above max"),
        LatencySpec::Exponential { mean, .. } => ensure!(!mean.is_zero(), "latency mean is zero"),
        LatencySpec::Constant { .. } => {}
    }
    Ok(())
}

fn validate_entry(entry: &TimelineEntry) -> anyhow::Result<()> {
    let needs_targets = matches!(
        entry.action,
        Action::Crash
            | Action::Restart
            | Action::Start
            | Action::Leave
            | Action::Pause
            | Action::Resume
            | Action::Skew
            | Action::Drift
            | Action::Isolate
            | Action::Degrade
    );
    if needs_targets {
        ensure!(!entry.targets.is_empty(), "needs targets");
    }
    match entry.action {
        Action::Partition | Action::Bridge => {
            ensure!(entry.groups.len() >= 2, "needs at least two groups")
        }
        Action::OneWay => ensure!(
            !entry.from.is_empty() && !entry.to.is_empty(),
            "needs from and to"
        ),
        Action::Skew => {
            parse_offset(entry.offset.as_deref().context("needs offset")?)?;
        }
        Action::Drift => {
            let ppm = entry.ppm.context("needs ppm")?;
            ensure!(ppm.abs() < 500_000.0, "ppm must be within ±500000");
        }
        Action::Degrade => {
            for p in [entry.loss, entry.duplicate, entry.reorder]
                .into_iter()
                .flatten()
            {
                ensure!((0.0..=1.0).contains(&p), "probabilities must be in [0, 1]");
            }
            if let Some(latency) = &entry.latency {
                validate_latency(latency)?;
            }
        }
        _ => {}
    }
    if entry.duration.is_some() {
        ensure!(
            matches!(
                entry.action,
                Action::Crash
                    | Action::Pause
                    | Action::Partition
                    | Action::OneWay
                    | Action::Bridge
                    | Action::Isolate
                    | Action::Degrade
            ),
            "`for` only applies to crash, pause, partitions and degrade"
        );
    }
    if let Some(max) = entry.for_max {
        let min = entry.duration.context("for_max needs for")?;
        ensure!(min <= max, "for_max below for");
    }
    if let Some(repeat) = entry.repeat {
        ensure!(repeat.times >= 1, "repeat.times must be at least 1");
        ensure!(!repeat.every.is_zero(), "repeat.every must be positive");
    }
    Ok(())
}

/// Parses a signed clock offset: `"+2s"`, `"-500ms"`, `"1s"`.
pub fn parse_offset(text: &str) -> anyhow::Result<(bool, Duration)> {
    let text = text.trim();
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let duration =
        humantime::parse_duration(rest.trim()).with_context(|| format!("offset {text:?}"))?;
    Ok((negative, duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_with_sign() {
        assert_eq!(
            parse_offset("+2s").unwrap(),
            (false, Duration::from_secs(2))
        );
        assert_eq!(
            parse_offset("-500ms").unwrap(),
            (true, Duration::from_millis(500))
        );
        assert!(parse_offset("soon").is_err());
    }

    #[test]
    fn membership_overrides_reach_the_config() {
        let spec: MembershipSpec = toml::from_str(
            "confirmations_expected = 2\nmax_transmissions = 7\nrelay_transmissions = 5\n",
        )
        .unwrap();
        let config = spec.build("x", 50).unwrap();
        assert_eq!(config.confirmations_expected, 2);
        assert_eq!(config.max_transmissions, Some(7));
        assert_eq!(config.relay_transmissions, Some(5));
        let config = MembershipSpec::default().build("x", 50).unwrap();
        assert_eq!(config.confirmations_expected, 3);
        assert_eq!(config.max_transmissions, None);
        assert_eq!(config.relay_transmissions, None);
        let zero: MembershipSpec = toml::from_str("max_transmissions = 0\n").unwrap();
        assert!(zero.build("x", 50).is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = "name='x'\nduration='1s'\nbogus=1\n[cluster]\ngroups=[]\n";
        assert!(Scenario::parse(text).is_err());
    }
}
