//! The report of one run: `report.json`, the text summary with the command
//! that replays the run, and (through `svg.rs`) `timeline.svg`.
//!
//! Everything in a report except `wall_time_s` and `events_per_s` is a
//! function of the scenario and the seed; the digest covers every event
//! processed and every datagram's bytes, so two runs with equal digests
//! took the same path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::checks::{CheckKind, CheckResult};
use crate::metrics::{KindCount, Metrics, Percentiles, Sample};
use crate::sim::World;

/// One timeline action as it was applied.
#[derive(Clone, Debug, Serialize)]
pub struct AppliedAction {
    /// Simulated seconds.
    pub at_s: f64,
    /// What was done.
    pub action: String,
    /// The first targets, by name.
    pub targets: Vec<String>,
    /// How many targets in all.
    pub target_count: usize,
    /// Extra detail (partition sides, ids).
    pub note: String,
}

/// A fault window, drawn as a band on the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Band {
    /// crash, pause, partition, degrade, restart.
    pub kind: String,
    /// What closes it (`partition:<id>`, ...).
    #[serde(skip)]
    pub key: String,
    /// Human label.
    pub label: String,
    /// Start, simulated seconds.
    pub start_s: f64,
    /// End, simulated seconds (`None`: until the end of the run).
    pub end_s: Option<f64>,
}

/// Failure detection of crashed nodes, measured from the crash.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DetectionReport {
    /// Crashes observed.
    pub crashes: usize,
    /// Crash → first agent suspects it.
    pub first_suspect: Percentiles,
    /// Crash → first agent declares it down.
    pub first_down: Percentiles,
    /// Crash → every running agent that knew it holds it down.
    pub all_down: Percentiles,
    /// Crashes not seen down by everyone before the node came back or the
    /// run ended.
    pub incomplete: usize,
}

/// False "down" verdicts: a running node, not cut off by a partition and
/// not stalled, declared down — or a stalled node declared down before its
/// stall outlasted `suspect_timeout_min`, the shortest stall the config may
/// treat as a failure.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FalseDownReport {
    /// (observer, subject) verdicts.
    pub verdicts: u64,
    /// Distinct identities falsely declared down.
    pub episodes: usize,
    /// Observers that issued at least one.
    pub observers: usize,
    /// Most from one observer.
    pub max_per_observer: u64,
    /// Down verdicts explained by a partition (not counted above).
    pub partition_explained: u64,
    /// Down verdicts on a node stalled longer than `suspect_timeout_min`
    /// (not counted above): the detector did its job on a node that was,
    /// for that long, indistinguishable from a dead one.
    pub stall_explained: u64,
}

/// How fast news spreads.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DisseminationReport {
    /// Nodes in the scenario.
    pub cluster_size: usize,
    /// A down verdict: first agent → every agent.
    pub down: Percentiles,
    /// A new generation (boot, restart, added node): first agent → every agent.
    pub up: Percentiles,
    /// Restarted or added node: start → alive at every agent.
    pub restart_visible: Percentiles,
    /// Boot: node start → alive at every agent.
    pub boot_visible: Percentiles,
}

/// Datagram load per running node.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// Datagrams sent per running node per second.
    pub messages_per_node_s: f64,
    /// Bytes sent per running node per second.
    pub bytes_per_node_s: f64,
    /// The same, by SWIM message kind.
    pub by_kind: BTreeMap<String, KindRate>,
    /// Peer messages on streams (Raft, catalog replication, forwarded
    /// writes), by kind, per running node per second.
    pub streams_by_kind: BTreeMap<String, KindRate>,
    /// Totals.
    pub totals: BTreeMap<String, u64>,
}

/// Rates of one message kind.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct KindRate {
    /// Datagrams per running node per second.
    pub messages_per_node_s: f64,
    /// Bytes per running node per second.
    pub bytes_per_node_s: f64,
}

/// The seed group's Raft and the catalog.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConsensusReport {
    /// Terms that had a leader.
    pub elections: usize,
    /// Simulated seconds (sampled) without a seed leading with a majority.
    pub leaderless_s: f64,
    /// Highest commit index any seed reached.
    pub committed_max: u64,
    /// Workload writes submitted.
    pub writes_submitted: u64,
    /// Workload writes applied (committed and applied at the submitting agent).
    pub writes_applied: u64,
    /// Workload writes that failed (timeout, no quorum).
    pub writes_failed: u64,
    /// Submit → applied at the submitting agent.
    pub commit_latency: Percentiles,
}

/// How fresh each sampled agent's copy of the other sampled nodes'
/// telemetry was, over every sample (see [`Sample::telemetry_stale_p99_s`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TelemetryReport {
    /// Pairs (agent, node) sampled, summed over the samples.
    pub pairs: usize,
    /// Of those, the percentage where the agent held the node's newest
    /// version (100 without pairs).
    pub fresh_percent: f64,
    /// How stale the copies were (zero for the fresh ones).
    pub staleness: Percentiles,
    /// The same over the samples from `liveness_from_s` on, each copy
    /// counted as stale from that moment at the earliest: how long copies
    /// stayed behind after the last fault, not how far behind it left them.
    pub staleness_after_faults: Percentiles,
}

impl Default for TelemetryReport {
    /// No pairs: nothing stale.
    fn default() -> Self {
        Self {
            pairs: 0,
            fresh_percent: 100.0,
            staleness: Percentiles::default(),
            staleness_after_faults: Percentiles::default(),
        }
    }
}

impl TelemetryReport {
    pub(crate) fn of(metrics: &Metrics) -> Self {
        Self {
            pairs: metrics.staleness.len(),
            fresh_percent: if metrics.staleness.is_empty() {
                100.0
            } else {
                100.0 * metrics.fresh_copies as f64 / metrics.staleness.len() as f64
            },
            staleness: Percentiles::of(&metrics.staleness),
            staleness_after_faults: Percentiles::of(&metrics.staleness_after_faults),
        }
    }
}

/// Every metric of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MetricsReport {
    /// Failure detection.
    pub detection: DetectionReport,
    /// False down verdicts.
    pub false_down: FalseDownReport,
    /// Dissemination.
    pub dissemination: DisseminationReport,
    /// Load.
    pub load: LoadReport,
    /// Raft and catalog.
    pub consensus: ConsensusReport,
    /// Telemetry freshness over the samples.
    pub telemetry: TelemetryReport,
    /// Membership counters summed over the nodes running at the end.
    pub membership: BTreeMap<String, u64>,
}

/// The report of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Hash of the scenario as run (after overrides).
    pub scenario_hash: String,
    /// The master seed.
    pub seed: u64,
    /// The command that replays this run.
    pub command: String,
    /// Nodes defined.
    pub nodes: usize,
    /// Simulated seconds run.
    pub simulated_s: f64,
    /// Simulated second from which liveness is checked (the last fault's end).
    pub liveness_from_s: f64,
    /// Whether every check passed.
    pub pass: bool,
    /// Every check.
    pub checks: Vec<CheckResult>,
    /// Measurements.
    pub metrics: MetricsReport,
    /// The timeline as applied.
    pub events: Vec<AppliedAction>,
    /// Fault windows.
    pub bands: Vec<Band>,
    /// Time series, one row per sample period.
    pub samples: Vec<Sample>,
    /// Events the loop processed.
    pub events_processed: u64,
    /// Wall-clock seconds the run took (not deterministic).
    pub wall_time_s: f64,
    /// Events processed per wall-clock second (not deterministic).
    pub events_per_s: f64,
    /// Digest of the whole run: equal digests, equal runs.
    pub digest: String,
}

impl Report {
    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|check| !check.pass)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports always serialize")
    }

    /// A short human summary, ending with the replay command.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        let _ = writeln!(
            text,
            "{verdict} {} seed {} — {} nodes, {:.0} s simulated, {} events in {:.2} s ({:.0} events/s)",
            self.scenario,
            self.seed,
            self.nodes,
            self.simulated_s,
            self.events_processed,
            self.wall_time_s,
            self.events_per_s
        );
        let _ = writeln!(text, "digest {}", self.digest);
        for check in &self.checks {
            let mark = if check.pass { "ok  " } else { "FAIL" };
            let kind = match check.kind {
                CheckKind::Safety => "safety",
                CheckKind::Liveness => "liveness",
                CheckKind::Bound => "bound",
            };
            let _ = write!(text, "  {mark} {:<34} {kind:<8}", check.name);
            if let Some(at) = check.held_at_s {
                let _ = write!(text, " held at {at:.1} s");
            }
            if let (Some(at), Some(detail)) = (check.violation_at_s, &check.detail) {
                let _ = write!(text, " at {at:.3} s: {detail}");
            }
            text.push('\n');
        }
        let m = &self.metrics;
        let d = &m.detection;
        let _ = writeln!(
            text,
            "  detection ({} crashes): first suspect p50 {:.0} ms; first down p50 {:.0} / p99 {:.0} ms; all down p50 {:.0} / p99 {:.0} / max {:.0} ms; {} incomplete",
            d.crashes,
            d.first_suspect.p50_ms,
            d.first_down.p50_ms,
            d.first_down.p99_ms,
            d.all_down.p50_ms,
            d.all_down.p99_ms,
            d.all_down.max_ms,
            d.incomplete
        );
        let f = &m.false_down;
        let _ = writeln!(
            text,
            "  false down: {} verdicts, {} episodes, {} observers (max {} per observer); {} explained by partitions, {} by stalls over suspect_timeout_min",
            f.verdicts,
            f.episodes,
            f.observers,
            f.max_per_observer,
            f.partition_explained,
            f.stall_explained
        );
        let s = &m.dissemination;
        let _ = writeln!(
            text,
            "  dissemination (n = {}): down p99 {:.0} ms, up p99 {:.0} ms, restart visible p99 {:.0} ms",
            s.cluster_size, s.down.p99_ms, s.up.p99_ms, s.restart_visible.p99_ms
        );
        let _ = writeln!(
            text,
            "  load per node: {:.1} msg/s, {:.0} B/s",
            m.load.messages_per_node_s, m.load.bytes_per_node_s
        );
        let c = &m.consensus;
        let _ = writeln!(
            text,
            "  raft: {} elections, {:.0} s without a leader, commit index {}; writes {} submitted, {} applied, {} failed; commit latency p50 {:.0} / p99 {:.0} ms",
            c.elections,
            c.leaderless_s,
            c.committed_max,
            c.writes_submitted,
            c.writes_applied,
            c.writes_failed,
            c.commit_latency.p50_ms,
            c.commit_latency.p99_ms
        );
        let t = &m.telemetry;
        let _ = writeln!(
            text,
            "  telemetry: {:.1} % of {} sampled copies fresh; staleness p50 {:.0} / p99 {:.0} / max {:.0} ms, after the last fault p99 {:.0} / max {:.0} ms",
            t.fresh_percent,
            t.pairs,
            t.staleness.p50_ms,
            t.staleness.p99_ms,
            t.staleness.max_ms,
            t.staleness_after_faults.p99_ms,
            t.staleness_after_faults.max_ms
        );
        let _ = writeln!(text, "replay: {}", self.command);
        text
    }

    /// Writes `report.json`, `summary.txt` and `timeline.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, contents: String| {
            let path = dir.join(name);
            std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
        };
        write("report.json", self.to_json())?;
        write("summary.txt", self.summary())?;
        write("timeline.svg", crate::svg::timeline(self))?;
        Ok(())
    }
}

/// First → last observer times of every completed down and up episode.
pub(crate) fn dissemination_times(metrics: &Metrics) -> Vec<Duration> {
    let down = metrics
        .detections
        .iter()
        .filter_map(|d| Some(d.all_down? - d.first_down?));
    let up = metrics
        .appearances
        .iter()
        .filter_map(|a| Some(a.all_up? - a.first_up?));
    down.chain(up).collect()
}

/// Assembles the report of a finished world.
pub(crate) fn build(
    world: &World,
    command: String,
    scenario_hash: String,
    wall: Duration,
) -> Report {
    let metrics = &world.metrics;
    let since =
        |d: &crate::metrics::Detection, at: Option<Duration>| at.map(|at| at - d.crashed_at);
    let collect = |f: &dyn Fn(&crate::metrics::Detection) -> Option<Duration>| {
        let values: Vec<Duration> = metrics.detections.iter().filter_map(f).collect();
        Percentiles::of(&values)
    };
    let detection = DetectionReport {
        crashes: metrics.detections.len(),
        first_suspect: collect(&|d| since(d, d.first_suspect)),
        first_down: collect(&|d| since(d, d.first_down)),
        all_down: collect(&|d| since(d, d.all_down)),
        incomplete: metrics
            .detections
            .iter()
            .filter(|d| d.all_down.is_none())
            .count(),
    };
    let false_down = FalseDownReport {
        verdicts: metrics.false_downs,
        episodes: metrics.false_down_episodes.len(),
        observers: metrics.false_downs_by_observer.len(),
        max_per_observer: metrics
            .false_downs_by_observer
            .values()
            .copied()
            .max()
            .unwrap_or(0),
        partition_explained: metrics.partition_downs,
        stall_explained: metrics.stall_downs,
    };
    let down: Vec<Duration> = metrics
        .detections
        .iter()
        .filter_map(|d| Some(d.all_down? - d.first_down?))
        .collect();
    let up: Vec<Duration> = metrics
        .appearances
        .iter()
        .filter_map(|a| Some(a.all_up? - a.first_up?))
        .collect();
    let visible = |boot: bool| {
        let values: Vec<Duration> = metrics
            .appearances
            .iter()
            .filter(|a| a.boot == boot)
            .filter_map(|a| Some(a.all_up? - a.started_at))
            .collect();
        Percentiles::of(&values)
    };
    let dissemination = DisseminationReport {
        cluster_size: world.nodes.len(),
        down: Percentiles::of(&down),
        up: Percentiles::of(&up),
        restart_visible: visible(false),
        boot_visible: visible(true),
    };
    let node_seconds = metrics.node_seconds.max(1e-9);
    let rate = |count: &KindCount| KindRate {
        messages_per_node_s: count.messages as f64 / node_seconds,
        bytes_per_node_s: count.bytes as f64 / node_seconds,
    };
    let mut totals = BTreeMap::new();
    totals.insert("messages".into(), metrics.messages);
    totals.insert("bytes".into(), metrics.bytes);
    totals.insert("delivered".into(), metrics.delivered);
    totals.insert("lost".into(), metrics.lost);
    totals.insert("duplicated".into(), metrics.duplicated);
    totals.insert("dropped_at_dead_node".into(), metrics.dropped_at_dead);
    totals.insert("stream_messages_cut".into(), metrics.streams_broken);
    let load = LoadReport {
        messages_per_node_s: metrics.messages as f64 / node_seconds,
        bytes_per_node_s: metrics.bytes as f64 / node_seconds,
        by_kind: metrics
            .by_kind
            .iter()
            .map(|(kind, count)| ((*kind).to_string(), rate(count)))
            .collect(),
        streams_by_kind: metrics
            .stream_by_kind
            .iter()
            .map(|(kind, count)| ((*kind).to_string(), rate(count)))
            .collect(),
        totals,
    };
    let consensus = ConsensusReport {
        elections: world.raft.elections(),
        leaderless_s: world.raft.leaderless.as_secs_f64(),
        committed_max: world.raft.committed_max,
        writes_submitted: metrics.writes_submitted,
        writes_applied: metrics.commit_latencies.len() as u64,
        writes_failed: metrics.writes_failed,
        commit_latency: Percentiles::of(&metrics.commit_latencies),
    };
    let membership = world
        .membership_totals()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut report = Report {
        scenario: world.scenario.name.clone(),
        scenario_hash,
        seed: world.seed,
        command,
        nodes: world.nodes.len(),
        simulated_s: world.end.as_secs_f64(),
        liveness_from_s: world.liveness_from.as_secs_f64(),
        pass: true,
        checks: Vec::new(),
        metrics: MetricsReport {
            detection,
            false_down,
            dissemination,
            load,
            consensus,
            telemetry: TelemetryReport::of(metrics),
            membership,
        },
        events: world.applied.clone(),
        bands: world.bands.clone(),
        samples: metrics.samples.clone(),
        events_processed: world.events_processed,
        wall_time_s: 0.0,
        events_per_s: 0.0,
        digest: String::new(),
    };
    report.wall_time_s = wall.as_secs_f64();
    report.events_per_s = world.events_processed as f64 / wall.as_secs_f64().max(1e-9);
    report
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn telemetry_staleness_is_summed_over_every_sampled_pair() {
        let s = Duration::from_secs;
        let mut metrics = Metrics::new(0);
        let sample = |metrics: &mut Metrics,
                      at: u64,
                      since: &[Option<Duration>],
                      ended: Option<Duration>| {
            metrics.sample(s(at), s(1), 0, 0, (0, 0), (0, false, 0));
            metrics.sample_staleness(s(at), since, ended);
        };
        sample(&mut metrics, 1, &[], None);
        sample(&mut metrics, 6, &[None, None, Some(s(2)), None], None);
        // The last fault ended at 10 s: a copy stale since 4 s counts from 10 s.
        sample(&mut metrics, 11, &[None, Some(s(4))], Some(s(10)));
        let fresh: Vec<Option<f64>> = metrics
            .samples
            .iter()
            .map(|s| s.telemetry_fresh_percent)
            .collect();
        assert_eq!(fresh, [None, Some(75.0), Some(50.0)]);
        assert_eq!(metrics.samples[1].telemetry_stale_p99_s, Some(4.0));
        let report = TelemetryReport::of(&metrics);
        assert_eq!(report.pairs, 6);
        assert!((report.fresh_percent - 400.0 / 6.0).abs() < 1e-9);
        assert_eq!(
            (report.staleness.p50_ms, report.staleness.max_ms),
            (0.0, 7000.0)
        );
        assert_eq!(report.staleness_after_faults.count, 2);
        assert_eq!(report.staleness_after_faults.max_ms, 1000.0);
        assert_eq!(
            TelemetryReport::of(&Metrics::new(0)),
            TelemetryReport::default()
        );
        assert_eq!(TelemetryReport::default().fresh_percent, 100.0);
    }
}
