//! Alert rules evaluated on the merged telemetry map.
//!
//! Every agent runs an [`AlertEvaluator`] over its own copy of the
//! [`TelemetryMap`]; since the maps converge and the evaluation is a pure
//! function of the sequence of maps and times it is fed, every agent raises
//! the same alerts (up to dissemination delay). A rule fires only after its
//! condition has held for `for_at_least` without interruption, so a single
//! spike does not page anyone, and clears as soon as the condition stops
//! holding.
//!
//! The rules and their defaults (the `[alerts]` table of the agent's TOML):
//! * `cpu_high`: host CPU above 80 % for 1 min;
//! * `disk_full`: data-dir file system above 90 % for 1 min;
//! * `replication_lag`: the database's replication lag above 5 s for 30 s;
//! * `latency_p99_baseline`: p99 latency above 3 × the node's own baseline
//!   (an exponentially weighted moving average of its earlier p99 samples,
//!   kept here) for 1 min.
//!
//! No clock: `now` is the driver's monotonic time, and `since` in an
//! [`ActiveAlert`] is on that same clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::telemetry::{NodeRecord, TelemetryError, TelemetryMap, Version};
use crate::{Generation, NodeId};

/// Longest `for_at_least` accepted: one day. Longer is a unit mistake.
pub const FOR_AT_LEAST_MAX: Duration = Duration::from_secs(24 * 3600);

/// Host CPU above a percentage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuRule {
    /// Whether the rule is evaluated. Default true.
    pub enabled: bool,
    /// Fires above this CPU use, percent of all cores. Default 80; in
    /// (0, 100]. Raise it for nodes that are meant to run hot (batch work).
    pub cpu_percent_max: f64,
    /// How long the CPU must stay above the limit before the alert fires.
    /// Default 1 min; at most [`FOR_AT_LEAST_MAX`]. Shorter catches brief
    /// saturation, longer ignores compactions and other bursts.
    #[serde(with = "humantime_serde")]
    pub for_at_least: Duration,
}

impl Default for CpuRule {
    fn default() -> Self {
        Self {
            enabled: true,
            cpu_percent_max: 80.0,
            for_at_least: Duration::from_secs(60),
        }
    }
}

/// Data-dir file system above a percentage of its capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskRule {
    /// Whether the rule is evaluated. Default true.
    pub enabled: bool,
    /// Fires above this disk use, percent of capacity. Default 90; in
    /// (0, 100]. Lower it on small disks where 10 % is little headroom.
    pub disk_used_percent_max: f64,
    /// How long disk use must stay above the limit before the alert fires.
    /// Default 1 min; at most [`FOR_AT_LEAST_MAX`].
    #[serde(with = "humantime_serde")]
    pub for_at_least: Duration,
}

impl Default for DiskRule {
    fn default() -> Self {
        Self {
            enabled: true,
            disk_used_percent_max: 90.0,
            for_at_least: Duration::from_secs(60),
        }
    }
}

/// The database's replication lag above a bound.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationLagRule {
    /// Whether the rule is evaluated. Default true.
    pub enabled: bool,
    /// Fires above this lag, milliseconds. Default 5000; at least 1. Raise
    /// it for asynchronous cross-region replicas.
    pub lag_ms_max: u64,
    /// How long the lag must stay above the bound before the alert fires.
    /// Default 30 s; at most [`FOR_AT_LEAST_MAX`].
    #[serde(with = "humantime_serde")]
    pub for_at_least: Duration,
}

impl Default for ReplicationLagRule {
    fn default() -> Self {
        Self {
            enabled: true,
            lag_ms_max: 5000,
            for_at_least: Duration::from_secs(30),
        }
    }
}

/// p99 latency above a multiple of the node's own moving baseline.
///
/// The baseline is an exponentially weighted moving average of the node's
/// p99 samples, one sample per new record version. Samples that breach the
/// rule are not learned, so a sustained regression keeps firing instead of
/// becoming the new normal; a restart (new generation) starts a new
/// baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyBaselineRule {
    /// Whether the rule is evaluated. Default true.
    pub enabled: bool,
    /// Fires when p99 exceeds `factor` × baseline. Default 3; finite, > 1.
    pub factor: f64,
    /// Weight of each new sample in the moving average. Default 0.1 (the
    /// baseline follows roughly the last 10 samples); in (0, 1]. Lower it for
    /// a steadier baseline on noisy nodes.
    pub baseline_weight: f64,
    /// Samples learned before the rule may fire for a node (or a new
    /// generation of it). Default 10; at least 1.
    pub warmup_samples: u32,
    /// Never fires while p99 is at or below this, microseconds, however it
    /// compares with the baseline: 3 × 200 µs is not worth a page. Default
    /// 1000 (1 ms).
    pub latency_p99_us_min: u64,
    /// How long p99 must stay above the limit before the alert fires.
    /// Default 1 min; at most [`FOR_AT_LEAST_MAX`].
    #[serde(with = "humantime_serde")]
    pub for_at_least: Duration,
}

impl Default for LatencyBaselineRule {
    fn default() -> Self {
        Self {
            enabled: true,
            factor: 3.0,
            baseline_weight: 0.1,
            warmup_samples: 10,
            latency_p99_us_min: 1000,
            for_at_least: Duration::from_secs(60),
        }
    }
}

/// Every alert rule (the `[alerts]` table). Missing rules and fields take
/// their defaults; unknown ones are refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// Host CPU.
    pub cpu_high: CpuRule,
    /// Data-dir disk use.
    pub disk_full: DiskRule,
    /// Database replication lag.
    pub replication_lag: ReplicationLagRule,
    /// p99 latency against its own baseline.
    pub latency_p99_baseline: LatencyBaselineRule,
}

impl AlertConfig {
    /// How long `rule`'s condition must hold before it fires.
    fn for_at_least(&self, rule: AlertRule) -> Duration {
        match rule {
            AlertRule::CpuHigh => self.cpu_high.for_at_least,
            AlertRule::DiskFull => self.disk_full.for_at_least,
            AlertRule::ReplicationLag => self.replication_lag.for_at_least,
            AlertRule::LatencyP99Baseline => self.latency_p99_baseline.for_at_least,
        }
    }

    /// Checks every threshold; the error names the first bad field
    /// (`cpu_high.cpu_percent_max`).
    pub fn validate(&self) -> Result<(), TelemetryError> {
        let invalid = |field: &'static str, reason: &str| {
            Err(TelemetryError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        let is_percent = |value: f64| value.is_finite() && value > 0.0 && value <= 100.0;
        if !is_percent(self.cpu_high.cpu_percent_max) {
            return invalid("cpu_high.cpu_percent_max", "must be in (0, 100]");
        }
        if self.cpu_high.for_at_least > FOR_AT_LEAST_MAX {
            return invalid("cpu_high.for_at_least", "must be at most 1 day");
        }
        if !is_percent(self.disk_full.disk_used_percent_max) {
            return invalid("disk_full.disk_used_percent_max", "must be in (0, 100]");
        }
        if self.disk_full.for_at_least > FOR_AT_LEAST_MAX {
            return invalid("disk_full.for_at_least", "must be at most 1 day");
        }
        if self.replication_lag.lag_ms_max == 0 {
            return invalid("replication_lag.lag_ms_max", "must be at least 1");
        }
        if self.replication_lag.for_at_least > FOR_AT_LEAST_MAX {
            return invalid("replication_lag.for_at_least", "must be at most 1 day");
        }
        let latency = &self.latency_p99_baseline;
        if !(latency.factor.is_finite() && latency.factor > 1.0) {
            return invalid("latency_p99_baseline.factor", "must be a finite number > 1");
        }
        if !(latency.baseline_weight.is_finite()
            && latency.baseline_weight > 0.0
            && latency.baseline_weight <= 1.0)
        {
            return invalid("latency_p99_baseline.baseline_weight", "must be in (0, 1]");
        }
        if latency.warmup_samples == 0 {
            return invalid("latency_p99_baseline.warmup_samples", "must be at least 1");
        }
        if latency.for_at_least > FOR_AT_LEAST_MAX {
            return invalid("latency_p99_baseline.for_at_least", "must be at most 1 day");
        }
        Ok(())
    }
}

/// Which rule an alert comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertRule {
    /// Host CPU above `cpu_high.cpu_percent_max`; value in percent.
    CpuHigh,
    /// Disk use above `disk_full.disk_used_percent_max`; value in percent.
    DiskFull,
    /// Replication lag above `replication_lag.lag_ms_max`; value in ms.
    ReplicationLag,
    /// p99 above `factor` × baseline; value in µs.
    LatencyP99Baseline,
}

impl AlertRule {
    /// Every rule, for exporting zeroed gauges.
    pub const ALL: [AlertRule; 4] = [
        AlertRule::CpuHigh,
        AlertRule::DiskFull,
        AlertRule::ReplicationLag,
        AlertRule::LatencyP99Baseline,
    ];

    /// The rule's name, as in the config table and the API.
    pub fn name(self) -> &'static str {
        match self {
            AlertRule::CpuHigh => "cpu_high",
            AlertRule::DiskFull => "disk_full",
            AlertRule::ReplicationLag => "replication_lag",
            AlertRule::LatencyP99Baseline => "latency_p99_baseline",
        }
    }

    /// The unit of the rule's `value` and `threshold`.
    pub fn unit(self) -> &'static str {
        match self {
            AlertRule::CpuHigh | AlertRule::DiskFull => "percent",
            AlertRule::ReplicationLag => "ms",
            AlertRule::LatencyP99Baseline => "us",
        }
    }
}

impl fmt::Display for AlertRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An alert that is firing.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveAlert {
    /// The rule that fires.
    pub rule: AlertRule,
    /// The node it fires for.
    pub node_id: NodeId,
    /// The latest observed value, in the rule's [`AlertRule::unit`].
    pub value: f64,
    /// The limit it is above, same unit (for the baseline rule: factor ×
    /// baseline at the latest sample).
    pub threshold: f64,
    /// Since when the condition has held without interruption (the
    /// evaluator's clock); it fired at `since + for_at_least`.
    pub since: Duration,
}

/// An observed value above its threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Exceeded {
    value: f64,
    threshold: f64,
}

/// One rule's verdict on one record.
struct Observation {
    rule: AlertRule,
    /// `None`: the condition does not hold (or there is no data).
    exceeded: Option<Exceeded>,
    for_at_least: Duration,
}

/// A condition currently holding, maybe not yet for long enough.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Breach {
    since: Duration,
    value: f64,
    threshold: f64,
}

/// The moving p99 baseline of one generation of a node.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Baseline {
    generation: Generation,
    latency_p99_us: f64,
    samples: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct NodeState {
    /// The record version last observed; the baseline learns once per version.
    last_version: Option<Version>,
    baseline: Option<Baseline>,
    /// Whether the last observed version breached the baseline rule, and by what.
    latency_breach: Option<Exceeded>,
    breaches: BTreeMap<AlertRule, Breach>,
}

/// Evaluates the alert rules over a sequence of maps. Holds, per node, the
/// p99 baseline and since when each condition has held; nodes that leave the
/// map are forgotten.
///
/// Incremental: a record that did not change since the last evaluation
/// gives the same verdicts as then, so only the records the map's journal
/// lists as changed are looked at, and a condition that has held long
/// enough turns into an alert through a queue of deadlines. An evaluation
/// costs O(changes · log n + alerts), not O(n): every agent evaluates the
/// whole cluster's map every second. Feed it one map (the agent's); given
/// another map, or one whose journal no longer reaches back far enough, it
/// walks every record, which gives the same answer.
#[derive(Clone, Debug)]
pub struct AlertEvaluator {
    config: AlertConfig,
    nodes: BTreeMap<NodeId, NodeState>,
    /// The map's change number at the last evaluation.
    seen_change: u64,
    /// Conditions holding but not yet for long enough, by the time they
    /// fire: `(since + for_at_least, node, rule)`.
    pending: BTreeSet<(Duration, NodeId, AlertRule)>,
    /// Alerts firing, ordered by node then rule.
    active: BTreeMap<(NodeId, AlertRule), ActiveAlert>,
}

impl AlertEvaluator {
    /// An evaluator for `config` (validated here).
    pub fn new(config: AlertConfig) -> Result<Self, TelemetryError> {
        config.validate()?;
        Ok(Self {
            config,
            nodes: BTreeMap::new(),
            seen_change: 0,
            pending: BTreeSet::new(),
            active: BTreeMap::new(),
        })
    }

    /// The rules in force.
    pub fn config(&self) -> &AlertConfig {
        &self.config
    }

    /// The p99 baseline of `node_id`, microseconds, once it has any sample.
    pub fn baseline_p99_us(&self, node_id: &NodeId) -> Option<f64> {
        let baseline = self.nodes.get(node_id)?.baseline?;
        (baseline.samples > 0).then_some(baseline.latency_p99_us)
    }

    /// Evaluates every rule on every record of `map` at `now` and returns
    /// the alerts firing, ordered by node then rule. Call it whenever the
    /// map may have changed or time passed (e.g. every refresh interval);
    /// `now` must not go backwards.
    pub fn evaluate(&mut self, map: &TelemetryMap, now: Duration) -> Vec<ActiveAlert> {
        self.evaluate_from(map, now, self.seen_change)
    }

    /// [`AlertEvaluator::evaluate`] looking at every record, changed or not:
    /// the same answer, at O(n) cost. The model the incremental path is
    /// tested against.
    pub fn evaluate_all(&mut self, map: &TelemetryMap, now: Duration) -> Vec<ActiveAlert> {
        // No map can list its changes since a change it has not made yet.
        self.evaluate_from(map, now, u64::MAX)
    }

    fn evaluate_from(
        &mut self,
        map: &TelemetryMap,
        now: Duration,
        seen_change: u64,
    ) -> Vec<ActiveAlert> {
        let changed: Vec<NodeId> = match map.changed_since(seen_change) {
            Some(changed) => changed.cloned().collect(),
            None => self
                .nodes
                .keys()
                .chain(map.records().map(|record| &record.node_id))
                .cloned()
                .collect::<BTreeSet<NodeId>>()
                .into_iter()
                .collect(),
        };
        self.seen_change = map.last_change();
        for node_id in changed {
            match map.record(&node_id) {
                Some(record) => self.observe(record, now),
                None => self.forget(&node_id),
            }
        }
        while let Some(first) = self.pending.first()
            && first.0 <= now
        {
            let (_, node_id, rule) = self.pending.pop_first().expect("checked above");
            let breach = self.nodes[&node_id].breaches[&rule];
            self.active.insert(
                (node_id.clone(), rule),
                ActiveAlert {
                    rule,
                    node_id,
                    value: breach.value,
                    threshold: breach.threshold,
                    since: breach.since,
                },
            );
        }
        debug_assert!(self.nodes.len() == map.len());
        self.active.values().cloned().collect()
    }

    /// Takes the verdicts of every rule on a new or changed record.
    fn observe(&mut self, record: &NodeRecord, now: Duration) {
        let state = self.nodes.entry(record.node_id.clone()).or_default();
        if state.last_version != Some(record.version) {
            observe_latency(&self.config.latency_p99_baseline, state, record);
            state.last_version = Some(record.version);
        }
        for observation in observations(&self.config, state, record) {
            let key = (record.node_id.clone(), observation.rule);
            let Some(Exceeded { value, threshold }) = observation.exceeded else {
                if let Some(breach) = state.breaches.remove(&observation.rule) {
                    self.active.remove(&key);
                    self.pending.remove(&(
                        breach.since.saturating_add(observation.for_at_least),
                        key.0,
                        key.1,
                    ));
                }
                continue;
            };
            let breach = state.breaches.entry(observation.rule).or_insert(Breach {
                since: now,
                value,
                threshold,
            });
            debug_assert!(breach.since <= now, "now went backwards");
            breach.value = value;
            breach.threshold = threshold;
            let fires_at = breach.since.saturating_add(observation.for_at_least);
            if fires_at <= now {
                self.pending.remove(&(fires_at, key.0.clone(), key.1));
                self.active.insert(
                    key,
                    ActiveAlert {
                        rule: observation.rule,
                        node_id: record.node_id.clone(),
                        value,
                        threshold,
                        since: breach.since,
                    },
                );
            } else {
                self.pending.insert((fires_at, key.0, key.1));
            }
        }
    }

    /// Forgets a node whose record left the map, with its alerts.
    fn forget(&mut self, node_id: &NodeId) {
        let Some(state) = self.nodes.remove(node_id) else {
            return;
        };
        for (rule, breach) in state.breaches {
            self.active.remove(&(node_id.clone(), rule));
            let for_at_least = self.config.for_at_least(rule);
            self.pending.remove(&(
                breach.since.saturating_add(for_at_least),
                node_id.clone(),
                rule,
            ));
        }
    }
}

/// The verdict of each enabled rule on `record`.
fn observations(config: &AlertConfig, state: &NodeState, record: &NodeRecord) -> Vec<Observation> {
    let above =
        |value: f64, threshold: f64| (value > threshold).then_some(Exceeded { value, threshold });
    let mut out = Vec::with_capacity(4);
    if config.cpu_high.enabled {
        out.push(Observation {
            rule: AlertRule::CpuHigh,
            exceeded: record
                .host
                .as_ref()
                .and_then(|host| above(host.cpu_percent, config.cpu_high.cpu_percent_max)),
            for_at_least: config.cpu_high.for_at_least,
        });
    }
    if config.disk_full.enabled {
        out.push(Observation {
            rule: AlertRule::DiskFull,
            exceeded: record.host.as_ref().and_then(|host| {
                above(
                    host.disk_used_percent(),
                    config.disk_full.disk_used_percent_max,
                )
            }),
            for_at_least: config.disk_full.for_at_least,
        });
    }
    if config.replication_lag.enabled {
        out.push(Observation {
            rule: AlertRule::ReplicationLag,
            exceeded: record.database.as_ref().and_then(|database| {
                above(
                    database.report.replication_lag_ms as f64,
                    config.replication_lag.lag_ms_max as f64,
                )
            }),
            for_at_least: config.replication_lag.for_at_least,
        });
    }
    if config.latency_p99_baseline.enabled {
        out.push(Observation {
            rule: AlertRule::LatencyP99Baseline,
            exceeded: state.latency_breach,
            for_at_least: config.latency_p99_baseline.for_at_least,
        });
    }
    out
}

/// Takes one p99 sample from a new record version: decides whether it
/// breaches the baseline rule, and learns it into the baseline if not.
fn observe_latency(rule: &LatencyBaselineRule, state: &mut NodeState, record: &NodeRecord) {
    let Some(database) = &record.database else {
        state.latency_breach = None;
        return;
    };
    let sample_us = database.report.latency_p99_us as f64;
    let generation = record.version.generation;
    let baseline = match &mut state.baseline {
        Some(baseline) if baseline.generation == generation => baseline,
        slot => slot.insert(Baseline {
            generation,
            latency_p99_us: 0.0,
            samples: 0,
        }),
    };
    let threshold_us = rule.factor * baseline.latency_p99_us;
    let breaching = baseline.samples >= rule.warmup_samples
        && database.report.latency_p99_us > rule.latency_p99_us_min
        && sample_us > threshold_us;
    if breaching {
        state.latency_breach = Some(Exceeded {
            value: sample_us,
            threshold: threshold_us,
        });
        return;
    }
    state.latency_breach = None;
    baseline.latency_p99_us = if baseline.samples == 0 {
        sample_us
    } else {
        baseline.latency_p99_us + rule.baseline_weight * (sample_us - baseline.latency_p99_us)
    };
    baseline.samples = baseline.samples.saturating_add(1);
    debug_assert!(baseline.latency_p99_us.is_finite() && baseline.latency_p99_us >= 0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_defaults_are_valid_and_match_the_issue() {
        let config = AlertConfig::default();
        config.validate().unwrap();
        assert_eq!(config.cpu_high.cpu_percent_max, 80.0);
        assert_eq!(config.disk_full.disk_used_percent_max, 90.0);
        assert_eq!(config.replication_lag.lag_ms_max, 5000);
        assert_eq!(config.latency_p99_baseline.factor, 3.0);
    }

    #[test]
    fn alerts_rule_names_match_the_config_keys() {
        let config = serde_json::to_value(AlertConfig::default()).unwrap();
        for rule in [
            AlertRule::CpuHigh,
            AlertRule::DiskFull,
            AlertRule::ReplicationLag,
            AlertRule::LatencyP99Baseline,
        ] {
            assert!(config.get(rule.name()).is_some(), "{rule}");
            assert_eq!(
                serde_json::to_value(rule).unwrap(),
                serde_json::Value::String(rule.name().to_owned())
            );
        }
    }
}
