//! What the simulator measures while it runs: failure detection, false
//! "down" verdicts, dissemination, load by message kind, and time series.
//!
//! Everything is fed by the event loop as it happens (membership events,
//! datagrams sent) and by periodic samples; nothing here touches a core.
//! Detection and dissemination are tracked per *episode*: one crash of one
//! node (who must see it down), or one start of one generation (who must
//! see it up), each with the set of observers still to be convinced.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::Serialize;

use shoal_membership::telemetry::Version;

use crate::network::NodeSet;

/// A crash being detected.
#[derive(Debug)]
pub(crate) struct Detection {
    pub(crate) subject: usize,
    pub(crate) generation: u64,
    pub(crate) crashed_at: Duration,
    pub(crate) first_suspect: Option<Duration>,
    pub(crate) first_down: Option<Duration>,
    pub(crate) all_down: Option<Duration>,
    pending: BTreeSet<usize>,
    /// The subject came back (or the run ended) before everyone saw it down.
    pub(crate) cut_short: bool,
}

/// A new generation being learned by everyone.
#[derive(Debug)]
pub(crate) struct Appearance {
    pub(crate) generation: u64,
    pub(crate) boot: bool,
    pub(crate) started_at: Duration,
    pub(crate) first_up: Option<Duration>,
    pub(crate) all_up: Option<Duration>,
    pending: BTreeSet<usize>,
    pub(crate) cut_short: bool,
}

/// Counts of one kind of datagram.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct KindCount {
    /// Datagrams sent.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
}

/// One row of the time series.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Simulated seconds since the start.
    pub t_s: f64,
    /// Nodes whose process exists (running or paused).
    pub nodes_up: usize,
    /// Smallest membership view (active members + self) among running nodes.
    pub view_min: usize,
    /// Largest membership view among running nodes.
    pub view_max: usize,
    /// Datagrams sent per second over the last sample period.
    pub messages_per_s: f64,
    /// False "down" verdicts so far.
    pub false_downs: u64,
    /// Highest Raft term among running seeds.
    pub raft_term: u64,
    /// Whether a seed connected to a majority leads.
    pub raft_leader: bool,
    /// Applied index of the leader's catalog (0 without a leader).
    pub catalog_index: u64,
    /// Telemetry freshness over the sampled pairs (agent, node) — the
    /// running ones of up to [`FRESHNESS_NODES`] nodes, each about the other
    /// sampled nodes: the percentage of pairs where the agent holds the node's
    /// newest version. `None` when no pair could be sampled, and between
    /// freshness samples (every [`FRESHNESS_PERIOD`]).
    pub telemetry_fresh_percent: Option<f64>,
    /// The 99th percentile, over the same pairs, of how stale the agent's
    /// copy is: zero when it holds the node's newest version, else the
    /// time since the first version it lacks was published, but not before
    /// both the agent and the node's current run were up (see
    /// [`stale_since`]). Seconds.
    pub telemetry_stale_p99_s: Option<f64>,
}

/// Nodes sampled for telemetry freshness, evenly spaced over the scenario's
/// nodes (those running at each sample): each one's copy of the others'
/// records is compared with their newest versions, so a sample costs at most
/// `FRESHNESS_NODES²` lookups whatever the cluster size, and only these
/// nodes' publications are followed.
pub const FRESHNESS_NODES: usize = 50;

/// How often a sample measures telemetry freshness (the first sample at or
/// after each period): often enough to follow anti-entropy's 10 s rounds, and
/// a negligible part of a 1,000-agent run.
pub const FRESHNESS_PERIOD: Duration = Duration::from_secs(5);

/// Telemetry versions remembered per sampled node, with when each was
/// published: a copy further behind counts as stale since the oldest one
/// kept. 256 heartbeats are more than eight hours at 1,000 nodes; the
/// history of 50 nodes is then 300 KB.
pub(crate) const PUBLISHED_KEPT: usize = 256;

/// Since when a copy holding version `held` (or none) of a node whose
/// publications were `history` (oldest first, versions increasing) lacks
/// data: the publication of the first version newer than `held`, but never
/// before `floor` (when both the copy's holder and the node's current run
/// were up). `None`: the copy holds the newest version.
pub(crate) fn stale_since(
    history: &VecDeque<(Version, Duration)>,
    held: Option<Version>,
    floor: Duration,
) -> Option<Duration> {
    let first_lacking = history.partition_point(|(version, _)| Some(*version) <= held);
    history
        .get(first_lacking)
        .map(|(_, published_at)| (*published_at).max(floor))
}

/// Everything measured during one run.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) detections: Vec<Detection>,
    open_detections: BTreeMap<usize, usize>,
    pub(crate) appearances: Vec<Appearance>,
    open_appearances: BTreeMap<usize, usize>,
    /// Which subjects each observer currently holds active, from its events.
    sees_up: Vec<NodeSet>,
    /// Distinct identities (subject, generation, rejoin) falsely declared down.
    pub(crate) false_down_episodes: BTreeSet<(usize, u64, u32)>,
    /// False verdicts per observer.
    pub(crate) false_downs_by_observer: BTreeMap<usize, u64>,
    pub(crate) false_downs: u64,
    /// Down verdicts explained by a partition.
    pub(crate) partition_downs: u64,
    /// Down verdicts on a node stalled longer than the config tolerates.
    pub(crate) stall_downs: u64,
    pub(crate) by_kind: BTreeMap<&'static str, KindCount>,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) delivered: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) dropped_at_dead: u64,
    /// Peer messages (streams) by kind.
    pub(crate) stream_by_kind: BTreeMap<&'static str, KindCount>,
    /// Stream messages lost to a partition or a dead receiver.
    pub(crate) streams_broken: u64,
    /// Workload writes: submitted, applied (with latency), failed.
    pub(crate) writes_submitted: u64,
    pub(crate) writes_failed: u64,
    pub(crate) commit_latencies: Vec<Duration>,
    /// Running-node seconds, for per-node rates.
    pub(crate) node_seconds: f64,
    pub(crate) samples: Vec<Sample>,
    messages_at_last_sample: u64,
    /// Telemetry staleness of every sampled pair, every freshness sample.
    /// Like `samples`, it grows with the run: at most 50 × 49 pairs every
    /// 5 s, about 28 MB per simulated hour.
    pub(crate) staleness: Vec<Duration>,
    /// How many of those copies held the newest version.
    pub(crate) fresh_copies: usize,
    /// The same from the samples at or after the last fault's end, each
    /// counted from that end at the earliest.
    pub(crate) staleness_after_faults: Vec<Duration>,
    /// Last seen `Stats::suspicions` per node, to notice new suspicions.
    pub(crate) suspicions_seen: Vec<u64>,
}

impl Metrics {
    pub(crate) fn new(n_nodes: usize) -> Self {
        Self {
            sees_up: vec![NodeSet::default(); n_nodes],
            suspicions_seen: vec![0; n_nodes],
            ..Self::default()
        }
    }

    /// Whether some open detection still waits for its first suspicion.
    pub(crate) fn wants_suspects(&self) -> bool {
        self.open_detections
            .values()
            .any(|i| self.detections[*i].first_suspect.is_none())
    }

    /// Subjects of open detections still without a first suspicion.
    pub(crate) fn unsuspected(&self) -> Vec<(usize, u64)> {
        self.open_detections
            .values()
            .map(|i| &self.detections[*i])
            .filter(|d| d.first_suspect.is_none())
            .map(|d| (d.subject, d.generation))
            .collect()
    }

    pub(crate) fn suspected(&mut self, subject: usize, now: Duration) {
        if let Some(i) = self.open_detections.get(&subject) {
            let detection = &mut self.detections[*i];
            detection.first_suspect.get_or_insert(now);
        }
    }

    /// `subject` crashed at `now`; `up` are the running observers.
    pub(crate) fn crashed(&mut self, subject: usize, generation: u64, now: Duration, up: &[usize]) {
        self.close_appearance(subject);
        self.close_detection(subject);
        let pending: BTreeSet<usize> = up
            .iter()
            .copied()
            .filter(|o| *o != subject && self.sees_up[*o].contains(subject))
            .collect();
        self.open_detections.insert(subject, self.detections.len());
        self.detections.push(Detection {
            subject,
            generation,
            crashed_at: now,
            first_suspect: None,
            first_down: None,
            all_down: None,
            pending,
            cut_short: false,
        });
        self.check_detection_done(subject, now);
    }

    /// `subject` started generation `generation` at `now`.
    pub(crate) fn started(
        &mut self,
        subject: usize,
        generation: u64,
        boot: bool,
        now: Duration,
        up: &[usize],
    ) {
        self.close_detection(subject);
        self.close_appearance(subject);
        self.sees_up[subject] = NodeSet::default();
        let pending = up.iter().copied().filter(|o| *o != subject).collect();
        self.open_appearances
            .insert(subject, self.appearances.len());
        self.appearances.push(Appearance {
            generation,
            boot,
            started_at: now,
            first_up: None,
            all_up: None,
            pending,
            cut_short: false,
        });
    }

    /// `observer` stopped (crash or leave): nobody waits on it any more.
    pub(crate) fn observer_gone(&mut self, observer: usize, now: Duration) {
        self.sees_up[observer] = NodeSet::default();
        let subjects: Vec<usize> = self.open_detections.keys().copied().collect();
        for subject in subjects {
            let i = self.open_detections[&subject];
            self.detections[i].pending.remove(&observer);
            self.check_detection_done(subject, now);
        }
        let subjects: Vec<usize> = self.open_appearances.keys().copied().collect();
        for subject in subjects {
            let i = self.open_appearances[&subject];
            self.appearances[i].pending.remove(&observer);
            self.check_appearance_done(subject, now);
        }
    }

    /// `observer` reports `subject` (generation) active.
    pub(crate) fn member_up(
        &mut self,
        observer: usize,
        subject: usize,
        generation: u64,
        now: Duration,
    ) {
        self.sees_up[observer].insert(subject);
        if let Some(i) = self.open_appearances.get(&subject).copied() {
            let appearance = &mut self.appearances[i];
            if appearance.generation == generation {
                appearance.first_up.get_or_insert(now);
                appearance.pending.remove(&observer);
                self.check_appearance_done(subject, now);
            }
        }
    }

    /// `observer` learned `subject`'s newer identity (liveness unchanged).
    pub(crate) fn renamed(
        &mut self,
        observer: usize,
        subject: usize,
        generation: u64,
        now: Duration,
    ) {
        if let Some(i) = self.open_appearances.get(&subject).copied() {
            let appearance = &mut self.appearances[i];
            if appearance.generation == generation {
                appearance.first_up.get_or_insert(now);
                appearance.pending.remove(&observer);
                self.check_appearance_done(subject, now);
            }
        }
    }

    /// `observer` reports `subject` (generation) down.
    pub(crate) fn member_down(
        &mut self,
        observer: usize,
        subject: usize,
        generation: u64,
        now: Duration,
    ) {
        self.sees_up[observer].remove(subject);
        if let Some(i) = self.open_detections.get(&subject).copied() {
            let detection = &mut self.detections[i];
            if generation <= detection.generation {
                detection.first_down.get_or_insert(now);
                detection.pending.remove(&observer);
                self.check_detection_done(subject, now);
            }
        }
    }

    pub(crate) fn false_down(
        &mut self,
        observer: usize,
        subject: usize,
        generation: u64,
        rejoin: u32,
    ) {
        self.false_downs += 1;
        self.false_down_episodes
            .insert((subject, generation, rejoin));
        *self.false_downs_by_observer.entry(observer).or_default() += 1;
    }

    fn check_detection_done(&mut self, subject: usize, now: Duration) {
        if let Some(i) = self.open_detections.get(&subject).copied()
            && self.detections[i].pending.is_empty()
        {
            self.detections[i].all_down = Some(now);
            self.open_detections.remove(&subject);
        }
    }

    fn check_appearance_done(&mut self, subject: usize, now: Duration) {
        if let Some(i) = self.open_appearances.get(&subject).copied()
            && self.appearances[i].pending.is_empty()
        {
            self.appearances[i].all_up = Some(now);
            self.open_appearances.remove(&subject);
        }
    }

    fn close_detection(&mut self, subject: usize) {
        if let Some(i) = self.open_detections.remove(&subject) {
            self.detections[i].cut_short = true;
        }
    }

    fn close_appearance(&mut self, subject: usize) {
        if let Some(i) = self.open_appearances.remove(&subject) {
            self.appearances[i].cut_short = true;
        }
    }

    /// The run ended: whatever is still open stays incomplete (neither
    /// done nor cut short by the subject's return).
    pub(crate) fn finish(&mut self) {
        self.open_detections.clear();
        self.open_appearances.clear();
    }

    pub(crate) fn sent(&mut self, kind: &'static str, bytes: usize) {
        self.messages += 1;
        self.bytes += bytes as u64;
        let count = self.by_kind.entry(kind).or_default();
        count.messages += 1;
        count.bytes += bytes as u64;
    }

    /// A peer message sent on a stream.
    pub(crate) fn sent_stream(&mut self, kind: &'static str, bytes: usize) {
        let count = self.stream_by_kind.entry(kind).or_default();
        count.messages += 1;
        count.bytes += bytes as u64;
    }

    pub(crate) fn sample(
        &mut self,
        now: Duration,
        period: Duration,
        running: usize,
        nodes_up: usize,
        views: (usize, usize),
        raft: (u64, bool, u64),
    ) {
        self.node_seconds += running as f64 * period.as_secs_f64();
        let sent = self.messages - self.messages_at_last_sample;
        self.messages_at_last_sample = self.messages;
        self.samples.push(Sample {
            t_s: now.as_secs_f64(),
            nodes_up,
            view_min: views.0,
            view_max: views.1,
            messages_per_s: sent as f64 / period.as_secs_f64(),
            false_downs: self.false_downs,
            raft_term: raft.0,
            raft_leader: raft.1,
            catalog_index: raft.2,
            telemetry_fresh_percent: None,
            telemetry_stale_p99_s: None,
        });
    }

    /// Adds the telemetry freshness of the pairs sampled at `now` with the
    /// last [`Metrics::sample`]: since when each copy lacks a version
    /// (`None`: fresh; see [`stale_since`]). `faults_ended`, once the last
    /// fault has ended: when; the copies then also count, as stale since
    /// that moment at the earliest, towards the staleness after faults.
    pub(crate) fn sample_staleness(
        &mut self,
        now: Duration,
        stale_since: &[Option<Duration>],
        faults_ended: Option<Duration>,
    ) {
        let Some(sample) = self.samples.last_mut() else {
            return;
        };
        let staleness = |floor: Duration| {
            stale_since
                .iter()
                .map(move |since| since.map_or(Duration::ZERO, |since| now - since.max(floor)))
        };
        let start = self.staleness.len();
        self.staleness.extend(staleness(Duration::ZERO));
        if !stale_since.is_empty() {
            let sampled = &self.staleness[start..];
            let fresh = stale_since.iter().filter(|since| since.is_none()).count();
            self.fresh_copies += fresh;
            sample.telemetry_fresh_percent = Some(100.0 * fresh as f64 / sampled.len() as f64);
            sample.telemetry_stale_p99_s = Some(Percentiles::of(sampled).p99_ms / 1e3);
        }
        if let Some(ended) = faults_ended {
            self.staleness_after_faults.extend(staleness(ended));
        }
    }
}

/// p50, p99 and max of a set of durations, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many values.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values`.
    pub fn of(values: &[Duration]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| {
            let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[index].as_secs_f64() * 1e3
        };
        Self {
            count: sorted.len(),
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: sorted[sorted.len() - 1].as_secs_f64() * 1e3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&values);
        assert_eq!(
            (p.count, p.p50_ms, p.p99_ms, p.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::of(&[]).count, 0);
    }

    #[test]
    fn a_copy_is_stale_since_the_first_version_it_lacks_and_never_before_the_floor() {
        let s = Duration::from_secs;
        let v = |sequence| Version {
            generation: shoal_membership::Generation(1),
            sequence: shoal_membership::telemetry::Sequence(sequence),
        };
        let history: VecDeque<(Version, Duration)> =
            [(v(1), s(10)), (v(2), s(20)), (v(3), s(30))].into();
        let cases = [
            // (held, floor, stale since)
            (Some(v(3)), s(0), None),
            (Some(v(2)), s(0), Some(s(30))),
            (Some(v(1)), s(0), Some(s(20))),
            (None, s(0), Some(s(10))),
            // Further behind than the history: since the oldest kept.
            (Some(v(0)), s(0), Some(s(10))),
            // The holder, or the node's current run, started later.
            (Some(v(1)), s(25), Some(s(25))),
            (None, s(40), Some(s(40))),
            (Some(v(3)), s(40), None),
        ];
        for (held, floor, expected) in cases {
            assert_eq!(
                stale_since(&history, held, floor),
                expected,
                "{held:?} {floor:?}"
            );
        }
        assert_eq!(stale_since(&VecDeque::new(), None, s(0)), None);
    }

    #[test]
    fn a_detection_completes_when_every_observer_saw_down() {
        let s = Duration::from_secs;
        let mut m = Metrics::new(3);
        m.member_up(1, 0, 1, s(1));
        m.member_up(2, 0, 1, s(1));
        m.crashed(0, 1, s(2), &[1, 2]);
        m.member_down(1, 0, 1, s(3));
        assert!(m.detections[0].all_down.is_none());
        m.member_down(2, 0, 1, s(4));
        assert_eq!(m.detections[0].first_down, Some(s(3)));
        assert_eq!(m.detections[0].all_down, Some(s(4)));
    }
}
