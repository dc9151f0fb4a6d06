//! The event loop: one thread, virtual time, one queue of events ordered by
//! (time, sequence number), and the world it acts on — the nodes, the
//! network, the timeline, the checks and the metrics.
//!
//! Every input to a node goes through `SimNode` (see `node.rs`); what comes
//! out (datagrams, membership events) is routed through the network and
//! observed by the checks and metrics here. Ties in time are broken by the
//! sequence number, i.e. by the order events were scheduled, so a run is a
//! pure function of the scenario and the seed. Every processed event is
//! folded into a running digest.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use foca::Codec as _;
use shoal_membership::codec::MsgpackCodec;
use shoal_membership::telemetry::Version;
use shoal_membership::{Event, Identity, MemberState, MembershipConfig, NodeId, Role};

use crate::checks::{CheckKind, Checks};
use crate::metrics::{FRESHNESS_NODES, FRESHNESS_PERIOD, Metrics, PUBLISHED_KEPT, stale_since};
use crate::network::{Cut, LinkQuality, Network, NodeSet};
use crate::node::{NodeSpec, Output, SimNode, Status, addr_of, index_of};
use crate::raft::{RaftViolation, RaftWatch, component_size};
use crate::report::{AppliedAction, Band};
use crate::rng::{SimRng, mix64, stream_seed};
use crate::scenario::{Action, Scenario, TimelineEntry, parse_offset};

/// Most events one run may process; a guard against a core that schedules
/// work without end. Past it the run stops with a failed check.
pub(crate) const EVENTS_MAX: u64 = 2_000_000_000;
/// Extra delay of a stream message per lost transmission (QUIC's
/// retransmission after a probe timeout, roughly).
const STREAM_RETRANSMIT: Duration = Duration::from_millis(200);
/// Most targets listed by name in an applied action of the report.
const TARGETS_LISTED_MAX: usize = 16;

#[derive(Debug)]
enum Ev {
    /// The first start of a node.
    Boot(u32),
    Deliver {
        from: u32,
        to: u32,
        payload: Vec<u8>,
    },
    /// A peer message on a reliable stream.
    Stream {
        from: u32,
        to: u32,
        bytes: bytes::Bytes,
        snapshot: bool,
    },
    Wake {
        node: u32,
        token: u64,
    },
    /// Index into the expanded timeline.
    Action(usize),
    Undo(Undo),
    Sample,
    /// The next workload write.
    Write(u64),
}

#[derive(Debug)]
enum Undo {
    Start(Vec<usize>),
    Resume(Vec<usize>),
    Heal(String),
    Restore(String),
}

#[derive(Debug)]
struct Queued {
    at: Duration,
    seq: u64,
    event: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse for earliest first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One timeline entry at one repetition.
#[derive(Clone, Debug)]
struct Planned {
    at: Duration,
    entry: usize,
    /// Stream name for this entry's random choices.
    stream: String,
    /// Which repetition (for `round_robin:`).
    repetition: u32,
}

/// A liveness condition over the whole world; the error says what is missing.
type LivenessCheck = fn(&World) -> Result<(), String>;

/// Check handles.
#[derive(Debug)]
struct CheckIds {
    invented: usize,
    converged: usize,
    false_down: Option<usize>,
    detection: Option<usize>,
    dissemination: Option<usize>,
    events_max: usize,
    one_leader: usize,
    committed_stable: usize,
    prefix: usize,
    minority: usize,
    raft_leader: Option<usize>,
    catalog_converged: Option<usize>,
    telemetry_converged: usize,
}

/// The whole simulated world of one run.
pub(crate) struct World {
    pub(crate) scenario: Scenario,
    pub(crate) seed: u64,
    config: MembershipConfig,
    pub(crate) nodes: Vec<SimNode>,
    names: Vec<NodeId>,
    seeds: Vec<(NodeId, SocketAddr)>,
    net: Network,
    queue: BinaryHeap<Queued>,
    seq: u64,
    pub(crate) now: Duration,
    pub(crate) end: Duration,
    plan: Vec<Planned>,
    pub(crate) liveness_from: Duration,
    zombies: NodeSet,
    pub(crate) metrics: Metrics,
    pub(crate) checks: Checks,
    ids: CheckIds,
    pub(crate) applied: Vec<AppliedAction>,
    pub(crate) bands: Vec<Band>,
    pub(crate) events_processed: u64,
    digest: [u64; 2],
    envelope_len: usize,
    partition_grace: Duration,
    /// Each node's latest stall: (start, end once resumed).
    stalls: Vec<Option<(Duration, Option<Duration>)>>,
    /// For the nodes sampled for telemetry freshness (up to
    /// [`FRESHNESS_NODES`], evenly spaced over all nodes; `None` for the
    /// others), their telemetry versions as they were published (seen after
    /// the input that published them), oldest first, the last
    /// [`PUBLISHED_KEPT`]: when each version a copy lacks came out.
    published: Vec<Option<VecDeque<(Version, Duration)>>>,
    /// When the next sample measures telemetry freshness.
    next_freshness_at: Duration,
    /// When each node's current run started: a copy is not stale for the
    /// time its agent was not running.
    started_at: Vec<Duration>,
    /// The longest stall the membership config promises to ride out: a
    /// stalled node is only ever declared down after this long
    /// (`suspect_timeout_min`, the shortest suspicion).
    stall_tolerated: Duration,
    out: Vec<Output>,
    arrivals: Vec<Duration>,
    auto_id: u64,
    /// Arrival time of the last message on each stream, to keep order.
    stream_last: BTreeMap<(u32, u32), Duration>,
    bootstrap_expect: usize,
    /// Repetition of the timeline entry being applied.
    repetition: u32,
    pub(crate) raft: RaftWatch,
    node_names: Vec<String>,
    index_by_name: BTreeMap<String, usize>,
    /// Workload writes in flight: request id → (submitted at, node).
    writes_pending: BTreeMap<String, Duration>,
    workload_rng: SimRng,
}

impl World {
    /// Builds the world for `scenario` under `seed`; nothing runs yet.
    pub(crate) fn new(scenario: Scenario, seed: u64) -> anyhow::Result<Self> {
        let n = scenario.node_count();
        let config = scenario.membership.build(&scenario.cluster.name, n)?;
        let mut nodes = Vec::with_capacity(n);
        let mut regions = Vec::with_capacity(n);
        for group in &scenario.cluster.groups {
            for i in 0..group.count {
                let name = format!("{}-{i}", group.prefix);
                let mut labels = group.labels.clone();
                let region = pick(&group.regions, i, "r1");
                labels.insert("region".into(), region.clone());
                labels.insert("zone".into(), pick(&group.zones, i, "z1"));
                regions.push(region);
                nodes.push(SimNode::new(NodeSpec {
                    node_id: NodeId::new(name.clone())
                        .with_context(|| format!("node name {name:?}"))?,
                    name,
                    role: if group.role == "seed" {
                        Role::Seed
                    } else {
                        Role::Member
                    },
                    labels,
                    start_at_boot: group.start,
                }));
            }
        }
        let names: Vec<NodeId> = nodes.iter().map(|node| node.spec.node_id.clone()).collect();
        let seeds = nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.spec.role == Role::Seed)
            .map(|(i, node)| (node.spec.node_id.clone(), addr_of(i)))
            .collect();
        let n_seeds = nodes
            .iter()
            .filter(|node| node.spec.role == Role::Seed)
            .count();
        let bootstrap_expect = scenario.cluster.bootstrap_expect.unwrap_or(n_seeds);
        let name_list: Vec<String> = nodes.iter().map(|node| node.spec.name.clone()).collect();
        let net = Network::new(&scenario.network, seed, &name_list, &regions)?;
        let plan = expand_timeline(&scenario.timeline);
        let last_fault_end = plan
            .iter()
            .map(|planned| {
                let entry = &scenario.timeline[planned.entry];
                planned.at + entry.for_max.or(entry.duration).unwrap_or_default()
            })
            .max()
            .unwrap_or_default();
        let liveness_from = last_fault_end.max(scenario.cluster.boot_spread);
        let end = scenario
            .duration
            .max(liveness_from + scenario.checks.converge_within + scenario.sim.sample_period);
        let mut checks = Checks::default();
        let ids = CheckIds {
            invented: checks.add(
                "membership.no_invented_members",
                CheckKind::Safety,
                "every member an agent reports up is a node of the scenario at a generation that was started",
            ),
            converged: checks.add(
                "membership.converged",
                CheckKind::Liveness,
                "after the last fault, every running agent holds one view: the running nodes alive at their current generation, the others down or forgotten, within checks.converge_within",
            ),
            false_down: scenario.checks.false_down_max.map(|max| {
                checks.add(
                    "membership.false_down",
                    CheckKind::Safety,
                    &format!("at most {max} false down verdicts (a running node, not cut off by a partition, declared down; or a stalled one before its stall outlasted suspect_timeout_min)"),
                )
            }),
            detection: scenario.checks.detection_p99_max.map(|max| {
                checks.add(
                    "membership.detection_p99",
                    CheckKind::Bound,
                    &format!("p99 of crash → every running agent sees it down ≤ {}", humantime::format_duration(max)),
                )
            }),
            dissemination: scenario.checks.dissemination_p99_max.map(|max| {
                checks.add(
                    "membership.dissemination_p99",
                    CheckKind::Bound,
                    &format!("p99 of first → last agent learning a change ≤ {}", humantime::format_duration(max)),
                )
            }),
            events_max: checks.add(
                "sim.events_bounded",
                CheckKind::Safety,
                "the run stays under the simulator's event limit",
            ),
            one_leader: checks.add(
                "raft.one_leader_per_term",
                CheckKind::Safety,
                "at most one Raft leader per term",
            ),
            committed_stable: checks.add(
                "raft.committed_never_changes",
                CheckKind::Safety,
                "every catalog seen at an index has the same hash chain there, across nodes, crashes and restarts",
            ),
            prefix: checks.add(
                "catalog.prefix_of_committed",
                CheckKind::Safety,
                "no agent's catalog is ahead of the highest index any seed committed",
            ),
            minority: checks.add(
                "raft.minority_never_commits",
                CheckKind::Safety,
                "a seed's commit index grows only while it reaches a majority of its voters",
            ),
            raft_leader: (scenario.checks.consensus && !scenario.sim.membership_only && n_seeds > 0).then(|| {
                checks.add(
                    "raft.leader",
                    CheckKind::Liveness,
                    "after the last fault, a seed reaching a majority leads and every running seed follows it, within checks.converge_within",
                )
            }),
            telemetry_converged: checks.add(
                "telemetry.converged",
                CheckKind::Liveness,
                "after the last fault, every running agent holds a telemetry record of every running node at that node's current generation, within checks.converge_within",
            ),
            catalog_converged: (scenario.checks.consensus && !scenario.sim.membership_only && n_seeds > 0).then(|| {
                checks.add(
                    "catalog.converged",
                    CheckKind::Liveness,
                    "after the last fault, every running agent holds the leader's catalog (index and hash chain), within checks.converge_within",
                )
            }),
        };
        let partition_grace = config.suspect_timeout_max * 2 + config.probe_period;
        let stall_tolerated = config.suspect_timeout_min;
        let world = Self {
            envelope_len: shoal_membership::codec::Envelope::new(&config.cluster_name).len(),
            config,
            metrics: Metrics::new(n),
            next_freshness_at: Duration::ZERO,
            started_at: vec![Duration::ZERO; n],
            published: {
                let mut published = vec![None; n];
                let count = n.min(FRESHNESS_NODES);
                for k in 0..count {
                    published[k * n / count] = Some(VecDeque::new());
                }
                published
            },
            nodes,
            names,
            seeds,
            net,
            queue: BinaryHeap::new(),
            seq: 0,
            now: Duration::ZERO,
            end,
            plan,
            liveness_from,
            zombies: NodeSet::default(),
            checks,
            ids,
            applied: Vec::new(),
            bands: Vec::new(),
            events_processed: 0,
            digest: [seed, mix64(seed)],
            partition_grace,
            stalls: vec![None; n],
            stall_tolerated,
            out: Vec::new(),
            arrivals: Vec::new(),
            auto_id: 0,
            stream_last: BTreeMap::new(),
            bootstrap_expect,
            repetition: 0,
            raft: RaftWatch::default(),
            index_by_name: name_list
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, name)| (name, i))
                .collect(),
            node_names: name_list,
            writes_pending: BTreeMap::new(),
            workload_rng: SimRng::stream(seed, "workload"),
            seed,
            scenario,
        };
        world.validate_selectors()?;
        Ok(world)
    }

    fn validate_selectors(&self) -> anyhow::Result<()> {
        let mut rng = SimRng::new(0);
        for (i, entry) in self.scenario.timeline.iter().enumerate() {
            let lists = std::iter::once(&entry.targets)
                .chain(entry.groups.iter())
                .chain([&entry.bridge, &entry.from, &entry.to]);
            for list in lists {
                for selector in list {
                    if selector == "rest"
                        || selector == "leader"
                        || selector.starts_with("random:")
                        || selector.starts_with("round_robin:")
                    {
                        continue;
                    }
                    if self.select_one(selector, &mut rng, &|_| true)?.is_empty() {
                        bail!(
                            "timeline entry {i} ({}): selector {selector:?} matches no node",
                            entry.action.as_str()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, at: Duration, event: Ev) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            event,
        });
    }

    fn fold(&mut self, words: &[u64]) {
        for word in words {
            self.digest[0] = mix64(self.digest[0] ^ word);
            self.digest[1] = mix64(self.digest[1].wrapping_add(*word).rotate_left(17));
        }
    }

    /// The digest of everything processed so far, as 32 hex digits.
    pub(crate) fn digest_hex(&self) -> String {
        format!("{:016x}{:016x}", self.digest[0], self.digest[1])
    }

    /// Runs to the end.
    pub(crate) fn run(&mut self) {
        let mut boot_rng = SimRng::stream(self.seed, "boot");
        let spread = self.scenario.cluster.boot_spread;
        for i in 0..self.nodes.len() {
            if self.nodes[i].spec.start_at_boot {
                let at = boot_rng.duration_between(Duration::ZERO, spread);
                self.push(at, Ev::Boot(i as u32));
            }
        }
        for i in 0..self.plan.len() {
            self.push(self.plan[i].at, Ev::Action(i));
        }
        self.push(self.scenario.sim.sample_period, Ev::Sample);
        if self.scenario.workload.writes_per_s > 0.0 {
            let start = self
                .scenario
                .workload
                .start
                .unwrap_or(Duration::from_secs(5));
            self.push(start, Ev::Write(0));
        }
        while let Some(Queued { at, event, .. }) = self.queue.pop() {
            if at > self.end {
                break;
            }
            self.now = at;
            self.events_processed += 1;
            if self.events_processed > EVENTS_MAX {
                let now = self.now;
                self.checks.violate(self.ids.events_max, now, || {
                    format!("more than {EVENTS_MAX} events")
                });
                break;
            }
            self.handle(event);
        }
        self.now = self.end;
        self.metrics.finish();
        self.final_checks();
    }

    fn handle(&mut self, event: Ev) {
        let now_ns = self.now.as_nanos() as u64;
        match event {
            Ev::Boot(node) => {
                self.fold(&[now_ns, 1, u64::from(node)]);
                self.start_node(node as usize, true);
            }
            Ev::Deliver { from, to, payload } => {
                self.fold(&[
                    now_ns,
                    2,
                    u64::from(from),
                    u64::from(to),
                    hash_bytes(&payload),
                ]);
                let (from, to) = (from as usize, to as usize);
                if !self.nodes[to].status.is_up() || self.net.blocked(from, to) {
                    self.metrics.dropped_at_dead += u64::from(!self.nodes[to].status.is_up());
                    return;
                }
                self.metrics.delivered += 1;
                let mut out = std::mem::take(&mut self.out);
                let from_id = &self.names[from];
                self.nodes[to].handle_datagram(self.now, from, from_id, &payload, &mut out);
                self.after_input(to, out);
            }
            Ev::Stream {
                from,
                to,
                bytes,
                snapshot,
            } => {
                self.fold(&[
                    now_ns,
                    13,
                    u64::from(from),
                    u64::from(to),
                    hash_bytes(&bytes),
                ]);
                let (from, to) = (from as usize, to as usize);
                let leaky = self.scenario.test_only.leaky_streams;
                let delivered =
                    self.nodes[to].status.is_up() && (leaky || !self.net.blocked(from, to));
                if snapshot {
                    let mut out = std::mem::take(&mut self.out);
                    let to_id = self.names[to].clone();
                    self.nodes[from].report_snapshot(self.now, &to_id, delivered, &mut out);
                    self.after_input(from, out);
                }
                if !delivered {
                    self.metrics.streams_broken += 1;
                    return;
                }
                let mut out = std::mem::take(&mut self.out);
                let from_id = &self.names[from];
                self.nodes[to].handle_message(self.now, from, from_id, &bytes, &mut out);
                self.after_input(to, out);
            }
            Ev::Wake { node, token } => {
                let node = node as usize;
                if self.nodes[node].wake.map(|(_, t)| t) != Some(token) {
                    return; // stale
                }
                self.fold(&[now_ns, 3, node as u64]);
                self.nodes[node].wake = None;
                let mut out = std::mem::take(&mut self.out);
                self.nodes[node].handle_timeout(self.now, &mut out);
                self.after_input(node, out);
            }
            Ev::Action(index) => {
                self.fold(&[now_ns, 4, index as u64]);
                self.apply(index);
            }
            Ev::Undo(undo) => {
                self.fold(&[now_ns, 5]);
                self.undo(undo);
            }
            Ev::Write(n) => {
                self.fold(&[now_ns, 14, n]);
                self.write(n);
            }
            Ev::Sample => {
                self.sample();
                let next = self.now + self.scenario.sim.sample_period;
                self.push(next, Ev::Sample);
            }
        }
    }

    /// Routes what node `index` produced, and reschedules its wake-up.
    fn after_input(&mut self, index: usize, mut out: Vec<Output>) {
        self.note_published(index);
        for output in out.drain(..) {
            match output {
                Output::Datagram { to, payload } => self.send(index, to, payload),
                Output::Message {
                    to,
                    bytes,
                    kind,
                    carries_snapshot,
                } => self.stream(index, to, bytes, kind, carries_snapshot),
                Output::Event(event) => self.observe(index, *event),
            }
        }
        self.out = out;
        self.watch_consensus(index);
        if self.metrics.wants_suspects()
            && let Some(core) = self.nodes[index].core()
        {
            let raised = core.membership().stats().suspicions;
            if raised > self.metrics.suspicions_seen[index] {
                self.metrics.suspicions_seen[index] = raised;
                self.scan_suspects(index);
            }
        }
        self.reschedule(index);
    }

    /// Consensus safety checks and workload completions after an input.
    fn watch_consensus(&mut self, index: usize) {
        for completion in std::mem::take(&mut self.nodes[index].completions) {
            if let shoal_agent::core::Completion::Submitted {
                request_id,
                outcome,
            } = completion
                && let Some(submitted) = self.writes_pending.remove(request_id.as_str())
            {
                match outcome {
                    shoal_agent::core::messages::SubmitOutcome::Applied { .. } => {
                        self.metrics.commit_latencies.push(self.now - submitted)
                    }
                    _ => self.metrics.writes_failed += 1,
                }
            }
        }
        let Some(core) = self.nodes[index].core() else {
            return;
        };
        let index_by_name = &self.index_by_name;
        let lookup = |name: &str| index_by_name.get(name).copied();
        let violations =
            self.raft
                .observe(index, self.now, core, &self.net, &self.node_names, &lookup);
        let now = self.now;
        for violation in violations {
            let (check, detail) = match violation {
                RaftViolation::TwoLeaders(detail) => (self.ids.one_leader, detail),
                RaftViolation::Diverged(detail) => (self.ids.committed_stable, detail),
                RaftViolation::AheadOfCommit(detail) => (self.ids.prefix, detail),
                RaftViolation::MinorityCommit(detail) => (self.ids.minority, detail),
            };
            self.checks.violate(check, now, || detail);
        }
    }

    /// Submits workload write `n` through a random running agent.
    fn write(&mut self, n: u64) {
        let workload = &self.scenario.workload;
        let stop = workload.stop.unwrap_or(
            self.liveness_from.max(
                self.end
                    .saturating_sub(self.scenario.checks.converge_within),
            ),
        );
        if self.now >= stop {
            return;
        }
        let period = Duration::from_secs_f64(1.0 / workload.writes_per_s);
        let keys = u64::from(workload.keys.unwrap_or(16).max(1));
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].status == Status::Running)
            .collect();
        let next = self.now + period;
        self.push(next, Ev::Write(n + 1));
        if running.is_empty() {
            return;
        }
        let node = running[self.workload_rng.below(running.len() as u64) as usize];
        let request_id = format!("w{n}");
        let command = shoal_consensus::Command {
            request_id: shoal_consensus::RequestId::new(request_id.clone()).expect("valid id"),
            actor: shoal_consensus::Actor("sim:workload".into()),
            time_unix_ms: 0,
            op: shoal_consensus::Op::SetConfig {
                key: format!("k{}", n % keys),
                value: n.to_string(),
                expected_version: None,
            },
        };
        self.metrics.writes_submitted += 1;
        self.writes_pending.insert(request_id, self.now);
        let mut out = std::mem::take(&mut self.out);
        self.nodes[node].submit(self.now, command, &mut out);
        self.after_input(node, out);
    }

    fn reschedule(&mut self, index: usize) {
        let next = self.nodes[index].next_timeout(self.now);
        if next != self.nodes[index].wake.map(|(at, _)| at) {
            let node = &mut self.nodes[index];
            node.wake_token += 1;
            node.wake = next.map(|at| (at, node.wake_token));
            if let Some((at, token)) = node.wake {
                self.push(
                    at,
                    Ev::Wake {
                        node: index as u32,
                        token,
                    },
                );
            }
        }
    }

    /// Looks in `observer`'s table for suspects among crashed subjects.
    fn scan_suspects(&mut self, observer: usize) {
        let wanted = self.metrics.unsuspected();
        let Some(core) = self.nodes[observer].core() else {
            return;
        };
        let rows = core.members();
        for (subject, generation) in wanted {
            let suspected = rows.iter().any(|row| {
                row.state == MemberState::Suspect
                    && row.identity.node_id == self.names[subject]
                    && row.identity.generation.0 == generation
            });
            if suspected {
                self.metrics.suspected(subject, self.now);
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, payload: Vec<u8>) {
        let kind = if self.scenario.sim.message_kinds {
            message_kind(&payload[self.envelope_len.min(payload.len())..])
        } else {
            "swim"
        };
        self.metrics.sent(kind, payload.len());
        if to >= self.nodes.len() {
            return;
        }
        let mut arrivals = std::mem::take(&mut self.arrivals);
        self.net.transit(from, to, self.now, &mut arrivals);
        match arrivals.len() {
            0 => self.metrics.lost += u64::from(!self.net.blocked(from, to)),
            2 => self.metrics.duplicated += 1,
            _ => {}
        }
        if let Some((last, rest)) = arrivals.split_last() {
            for at in rest {
                let copy = payload.clone();
                self.push(
                    *at,
                    Ev::Deliver {
                        from: from as u32,
                        to: to as u32,
                        payload: copy,
                    },
                );
            }
            self.push(
                *last,
                Ev::Deliver {
                    from: from as u32,
                    to: to as u32,
                    payload,
                },
            );
        }
        self.arrivals = arrivals;
    }

    /// Sends a peer message on the stream from `from` to `to`: reliable and
    /// in order while the link is up (a lost packet costs a retransmission
    /// delay, not the message); cut by a partition at either end of its
    /// flight, like a QUIC connection that times out.
    fn stream(
        &mut self,
        from: usize,
        to: usize,
        bytes: bytes::Bytes,
        kind: &'static str,
        snapshot: bool,
    ) {
        self.metrics.sent_stream(kind, bytes.len());
        if to >= self.nodes.len() {
            return;
        }
        let leaky = self.scenario.test_only.leaky_streams;
        let mut arrivals = std::mem::take(&mut self.arrivals);
        let mut at = None;
        // Retransmit until a copy gets through (bounded: a link with 100% loss
        // behaves as cut).
        for attempt in 0..8u32 {
            if leaky {
                self.net
                    .transit_ignoring_cuts(from, to, self.now, &mut arrivals);
            } else {
                self.net.transit(from, to, self.now, &mut arrivals);
            }
            if let Some(first) = arrivals.first() {
                at = Some(*first + STREAM_RETRANSMIT * attempt);
                break;
            }
            if self.net.blocked(from, to) {
                break;
            }
        }
        self.arrivals = arrivals;
        let at = match at {
            Some(at) => at,
            None if snapshot => self.now,
            None => return,
        };
        // In order per link.
        let last = self
            .stream_last
            .entry((from as u32, to as u32))
            .or_default();
        let at = at.max(*last);
        *last = at;
        self.push(
            at,
            Ev::Stream {
                from: from as u32,
                to: to as u32,
                bytes,
                snapshot,
            },
        );
    }

    fn subject_of(&self, identity: &Identity) -> Option<usize> {
        index_of(&identity.addr)
            .filter(|i| *i < self.nodes.len() && self.names[*i] == identity.node_id)
    }

    /// A membership event from `observer`.
    fn observe(&mut self, observer: usize, event: Event) {
        let now = self.now;
        match event {
            Event::MemberUp(identity) => {
                self.fold(&[
                    6,
                    observer as u64,
                    identity.generation.0,
                    u64::from(identity.rejoin),
                ]);
                let Some(subject) = self.subject_of(&identity) else {
                    let id = self.ids.invented;
                    let observer_name = self.nodes[observer].spec.name.clone();
                    self.checks.violate(id, now, || {
                        format!(
                            "{observer_name} reports unknown member {} at {}",
                            identity.node_id, identity.addr
                        )
                    });
                    return;
                };
                let generation = identity.generation.0;
                if generation == 0 || generation > self.nodes[subject].generation {
                    let id = self.ids.invented;
                    let observer_name = self.nodes[observer].spec.name.clone();
                    let started = self.nodes[subject].generation;
                    self.checks.violate(id, now, || {
                        format!("{observer_name} reports {} generation {generation}, but only {started} were started", identity.node_id)
                    });
                }
                self.metrics.member_up(observer, subject, generation, now);
            }
            Event::MemberDown(identity) => {
                self.fold(&[
                    7,
                    observer as u64,
                    identity.generation.0,
                    u64::from(identity.rejoin),
                ]);
                let Some(subject) = self.subject_of(&identity) else {
                    return;
                };
                let generation = identity.generation.0;
                self.metrics.member_down(observer, subject, generation, now);
                let node = &self.nodes[subject];
                let alive = node.status.is_up() && !self.zombies.contains(subject);
                if alive && generation == node.generation {
                    if self
                        .net
                        .involved_recently(subject, now, self.partition_grace)
                    {
                        self.metrics.partition_downs += 1;
                    } else if self.stalled_beyond_tolerance(subject, now) {
                        self.metrics.stall_downs += 1;
                    } else {
                        self.metrics
                            .false_down(observer, subject, generation, identity.rejoin);
                        if let Some(id) = self.ids.false_down {
                            let max = self.scenario.checks.false_down_max.unwrap_or(0);
                            if self.metrics.false_downs > max {
                                let observer_name = self.nodes[observer].spec.name.clone();
                                let subject_name = self.nodes[subject].spec.name.clone();
                                let status = self.nodes[subject].status;
                                self.checks.violate(id, now, || {
                                    format!("{observer_name} declared {subject_name} down ({status:?}, not partitioned); {} false verdicts > {max}", max + 1)
                                });
                            }
                        }
                    }
                }
            }
            Event::Renamed { new, .. } => {
                self.fold(&[8, observer as u64, new.generation.0, u64::from(new.rejoin)]);
                if let Some(subject) = self.subject_of(&new) {
                    self.metrics
                        .renamed(observer, subject, new.generation.0, now);
                }
            }
            Event::Active => self.fold(&[9, observer as u64]),
            Event::Idle => self.fold(&[10, observer as u64]),
            Event::Defunct => self.fold(&[11, observer as u64]),
            Event::Rejoined(identity) => {
                self.fold(&[12, observer as u64, u64::from(identity.rejoin)])
            }
        }
    }

    /// Whether `subject` is in, or just came out of, a stall longer than
    /// the config tolerates: declaring it down then is detection, not a
    /// false verdict. While it is stalled, what counts is how long it has
    /// been so far (a verdict before the tolerated time is false however
    /// long the stall turns out); after it, the whole stall, for verdicts
    /// within the partition grace (refutations take a moment to spread).
    fn stalled_beyond_tolerance(&self, subject: usize, now: Duration) -> bool {
        let Some((start, end)) = self.stalls[subject] else {
            return false;
        };
        match end {
            None => now.saturating_sub(start) > self.stall_tolerated,
            Some(end) => {
                now.saturating_sub(end) <= self.partition_grace
                    && end.saturating_sub(start) > self.stall_tolerated
            }
        }
    }

    fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].status.is_up())
            .collect()
    }

    fn start_node(&mut self, index: usize, boot: bool) {
        if self.zombies.contains(index) {
            // A zombie "crash" never stopped it; starting it is a real restart.
            self.zombies.remove(index);
            self.nodes[index].crash();
        }
        if self.nodes[index].status.is_up() {
            return;
        }
        self.started_at[index] = self.now;
        let generation = self.nodes[index].generation + 1;
        let rng_seed = stream_seed(
            self.seed,
            &format!("node/{}/{generation}", self.nodes[index].spec.name),
        );
        let up = self.up_nodes();
        self.metrics.started(index, generation, boot, self.now, &up);
        self.metrics.suspicions_seen[index] = 0;
        self.raft.restarted(index);
        let mut out = std::mem::take(&mut self.out);
        let seeds = std::mem::take(&mut self.seeds);
        let expect = self.bootstrap_expect;
        self.nodes[index].start(
            index,
            self.now,
            &self.config,
            expect,
            !self.scenario.sim.membership_only,
            rng_seed,
            &seeds,
            &mut out,
        );
        self.seeds = seeds;
        self.after_input(index, out);
    }

    fn crash_node(&mut self, index: usize) {
        if !self.nodes[index].status.is_up() || self.zombies.contains(index) {
            return;
        }
        let generation = self.nodes[index].generation;
        if self.scenario.test_only.zombie_crash {
            self.zombies.insert(index);
        } else {
            self.nodes[index].crash();
            self.metrics.observer_gone(index, self.now);
        }
        let up: Vec<usize> = self
            .up_nodes()
            .into_iter()
            .filter(|i| !self.zombies.contains(*i))
            .collect();
        self.metrics.crashed(index, generation, self.now, &up);
    }

    fn leave_node(&mut self, index: usize) {
        if !self.nodes[index].status.is_up() {
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        self.nodes[index].leave(self.now, &mut out);
        self.metrics.observer_gone(index, self.now);
        self.after_input(index, out);
    }

    /// Resolves one selector to node indices. `eligible` filters `random:`
    /// picks (e.g. only running nodes can crash).
    fn select_one(
        &self,
        selector: &str,
        rng: &mut SimRng,
        eligible: &dyn Fn(usize) -> bool,
    ) -> anyhow::Result<Vec<usize>> {
        let n = self.nodes.len();
        let all = 0..n;
        if selector == "leader" {
            return Ok(self.effective_leader().into_iter().collect());
        }
        if let Some(base) = selector.strip_prefix("round_robin:") {
            let candidates = self.select_one(base, rng, &|_| true)?;
            if candidates.is_empty() {
                return Ok(Vec::new());
            }
            return Ok(vec![
                candidates[self.repetition as usize % candidates.len()],
            ]);
        }
        if let Some(rest) = selector.strip_prefix("random:") {
            let (count, base) = match rest.split_once(':') {
                Some((count, base)) => (count, base),
                None => (rest, "all"),
            };
            let mut candidates: Vec<usize> = self
                .select_one(base, rng, &|_| true)?
                .into_iter()
                .filter(|i| eligible(*i))
                .collect();
            let want = match count.strip_suffix('%') {
                Some(percent) => {
                    let percent: f64 = percent.parse().context("random:P%: bad percent")?;
                    ((candidates.len() as f64 * percent / 100.0).round() as usize).max(1)
                }
                None => count.parse().context("random:K: bad count")?,
            };
            rng.shuffle(&mut candidates);
            candidates.truncate(want);
            candidates.sort_unstable();
            return Ok(candidates);
        }
        let nodes = &self.nodes;
        let selected: Vec<usize> = match selector {
            "all" => all.collect(),
            "seeds" => all.filter(|i| nodes[*i].spec.role == Role::Seed).collect(),
            "members" => all
                .filter(|i| nodes[*i].spec.role == Role::Member)
                .collect(),
            _ => {
                if let Some((key, value)) = selector.split_once('=') {
                    all.filter(|i| {
                        nodes[*i].spec.labels.get(key).map(String::as_str) == Some(value)
                    })
                    .collect()
                } else if let Some(prefix) = selector.strip_suffix('*') {
                    all.filter(|i| nodes[*i].spec.name.starts_with(prefix))
                        .collect()
                } else {
                    all.filter(|i| nodes[*i].spec.name == selector).collect()
                }
            }
        };
        Ok(selected)
    }

    fn select(
        &self,
        selectors: &[String],
        rng: &mut SimRng,
        eligible: impl Fn(usize) -> bool + Copy,
    ) -> Vec<usize> {
        let mut set = Vec::new();
        for selector in selectors {
            // Validated when the world was built; a bad random spec selects nothing.
            set.extend(
                self.select_one(selector, rng, &eligible)
                    .unwrap_or_default(),
            );
        }
        set.sort_unstable();
        set.dedup();
        set
    }

    /// Resolves partition groups; `rest` is everything in no other group
    /// and not in `excluded`.
    fn select_groups(
        &self,
        groups: &[Vec<String>],
        excluded: &[usize],
        rng: &mut SimRng,
    ) -> Vec<Vec<usize>> {
        let mut resolved: Vec<Vec<usize>> = groups
            .iter()
            .map(|group| {
                let explicit: Vec<String> =
                    group.iter().filter(|s| *s != "rest").cloned().collect();
                self.select(&explicit, rng, |_| true)
            })
            .collect();
        let mut taken = NodeSet::from_nodes(excluded);
        for group in &resolved {
            for node in group {
                taken.insert(*node);
            }
        }
        for (index, group) in groups.iter().enumerate() {
            if group.iter().any(|s| s == "rest") {
                resolved[index].extend((0..self.nodes.len()).filter(|i| !taken.contains(*i)));
            }
        }
        for group in &mut resolved {
            group.retain(|node| !excluded.contains(node));
        }
        resolved
    }

    fn next_id(&mut self, given: &Option<String>) -> String {
        given.clone().unwrap_or_else(|| {
            self.auto_id += 1;
            format!("auto-{}", self.auto_id)
        })
    }

    fn record(&mut self, action: &str, targets: &[usize], note: String) {
        let names = targets
            .iter()
            .take(TARGETS_LISTED_MAX)
            .map(|i| self.nodes[*i].spec.name.clone())
            .collect();
        self.applied.push(AppliedAction {
            at_s: self.now.as_secs_f64(),
            action: action.into(),
            targets: names,
            target_count: targets.len(),
            note,
        });
    }

    fn open_band(&mut self, kind: &str, key: String, label: String, until: Option<Duration>) {
        self.bands.push(Band {
            kind: kind.into(),
            key,
            label,
            start_s: self.now.as_secs_f64(),
            end_s: until.map(|at| at.as_secs_f64()),
        });
    }

    fn close_bands(&mut self, matches: impl Fn(&Band) -> bool) {
        let now = self.now.as_secs_f64();
        for band in &mut self.bands {
            if band.end_s.is_none() && matches(band) {
                band.end_s = Some(now);
            }
        }
    }

    /// Applies one planned timeline entry.
    fn apply(&mut self, index: usize) {
        let planned = self.plan[index].clone();
        let entry = self.scenario.timeline[planned.entry].clone();
        let mut rng = SimRng::stream(self.seed, &planned.stream);
        self.repetition = planned.repetition;
        let status: Vec<Status> = self.nodes.iter().map(|node| node.status).collect();
        let status = &status;
        let up = |i: usize| status[i].is_up();
        let running = |i: usize| status[i] == Status::Running;
        let down = |i: usize| !status[i].is_up();
        let label = entry.action.as_str();
        match entry.action {
            Action::Crash => {
                let targets = self.select(&entry.targets, &mut rng, up);
                for &t in &targets {
                    self.crash_node(t);
                }
                let until = entry.duration.map(|d| self.now + d);
                if let Some(at) = until {
                    self.push(at, Ev::Undo(Undo::Start(targets.clone())));
                }
                self.open_band(
                    "crash",
                    "crash".into(),
                    band_label(label, &targets, &self.nodes),
                    until,
                );
                self.record(label, &targets, String::new());
            }
            Action::Restart => {
                let targets = self.select(&entry.targets, &mut rng, up);
                for &t in &targets {
                    self.crash_node(t);
                    self.start_node(t, false);
                }
                self.open_band(
                    "restart",
                    "restart".into(),
                    band_label(label, &targets, &self.nodes),
                    Some(self.now),
                );
                self.record(label, &targets, String::new());
            }
            Action::Start => {
                let targets = self.select(&entry.targets, &mut rng, down);
                for &t in &targets {
                    self.start_node(t, false);
                }
                self.close_bands(|band| band.kind == "crash");
                self.record(label, &targets, String::new());
            }
            Action::Leave => {
                let targets = self.select(&entry.targets, &mut rng, up);
                for &t in &targets {
                    self.leave_node(t);
                }
                self.record(label, &targets, String::new());
            }
            Action::Pause => {
                let targets = self.select(&entry.targets, &mut rng, running);
                let mut longest = None;
                for &t in &targets {
                    if self.nodes[t].status == Status::Running {
                        self.stalls[t] = Some((self.now, None));
                    }
                    self.nodes[t].pause();
                    if let Some(min) = entry.duration {
                        let stall = rng.duration_between(min, entry.for_max.unwrap_or(min));
                        longest = longest.max(Some(stall));
                        self.push(self.now + stall, Ev::Undo(Undo::Resume(vec![t])));
                    }
                }
                let until = longest.map(|d| self.now + d);
                self.open_band(
                    "pause",
                    "pause".into(),
                    band_label(label, &targets, &self.nodes),
                    until,
                );
                self.record(label, &targets, String::new());
            }
            Action::Resume => {
                let targets = self.select(&entry.targets, &mut rng, |_| true);
                self.resume(&targets);
                self.close_bands(|band| band.kind == "pause");
                self.record(label, &targets, String::new());
            }
            Action::Skew | Action::Drift => {
                let targets = self.select(&entry.targets, &mut rng, up);
                let now = self.now;
                let note = if entry.action == Action::Skew {
                    let text = entry.offset.clone().unwrap_or_default();
                    let (negative, offset) = parse_offset(&text).expect("validated");
                    for &t in &targets {
                        self.nodes[t].clock.skew(now, negative, offset);
                    }
                    format!("offset {text}")
                } else {
                    let ppm = entry.ppm.expect("validated");
                    for &t in &targets {
                        self.nodes[t].clock.drift(now, ppm);
                    }
                    format!("{ppm} ppm")
                };
                for &t in &targets {
                    self.reschedule(t);
                }
                self.record(label, &targets, note);
            }
            Action::Partition | Action::Bridge | Action::Isolate | Action::OneWay => {
                let id = self.next_id(&entry.id);
                let (cut, touched, note) = match entry.action {
                    Action::OneWay => {
                        let from = self.select(&entry.from, &mut rng, |_| true);
                        let to = self.select(&entry.to, &mut rng, |_| true);
                        let note = format!("{} → {} cut", from.len(), to.len());
                        let mut touched = from.clone();
                        touched.extend(&to);
                        let cut = Cut::OneWay {
                            from: NodeSet::from_nodes(&from),
                            to: NodeSet::from_nodes(&to),
                        };
                        (cut, touched, note)
                    }
                    Action::Isolate => {
                        let targets = self.select(&entry.targets, &mut rng, up);
                        let groups = vec![
                            targets.clone(),
                            (0..self.nodes.len())
                                .filter(|i| !targets.contains(i))
                                .collect(),
                        ];
                        (
                            Cut::groups(self.nodes.len(), &groups),
                            targets,
                            String::new(),
                        )
                    }
                    _ => {
                        let bridge = self.select(&entry.bridge, &mut rng, |_| true);
                        let groups = self.select_groups(&entry.groups, &bridge, &mut rng);
                        let sizes: Vec<String> =
                            groups.iter().map(|g| g.len().to_string()).collect();
                        let mut note = format!("sides {}", sizes.join(" | "));
                        if !bridge.is_empty() {
                            note.push_str(&format!(", bridge {}", bridge.len()));
                        }
                        let touched = groups
                            .iter()
                            .min_by_key(|g| g.len())
                            .cloned()
                            .unwrap_or_default();
                        (Cut::groups(self.nodes.len(), &groups), touched, note)
                    }
                };
                self.net.add_partition(Some(id.clone()), cut);
                let until = entry.duration.map(|d| self.now + d);
                if let Some(at) = until {
                    self.push(at, Ev::Undo(Undo::Heal(id.clone())));
                }
                self.open_band(
                    "partition",
                    format!("partition:{id}"),
                    band_label(label, &touched, &self.nodes),
                    until,
                );
                self.record(label, &touched, format!("id {id}; {note}"));
            }
            Action::Heal => {
                let healed = self.net.heal(entry.id.as_deref(), self.now);
                let key = entry.id.as_ref().map(|id| format!("partition:{id}"));
                self.close_bands(|band| {
                    band.kind == "partition" && key.as_ref().is_none_or(|k| *k == band.key)
                });
                self.record(label, &[], format!("{healed} healed"));
            }
            Action::Degrade => {
                let targets = self.select(&entry.targets, &mut rng, |_| true);
                let id = self.next_id(&entry.id);
                let base = self.net.default_quality().clone();
                let quality = LinkQuality {
                    latency: entry.latency.clone().unwrap_or(base.latency),
                    loss: entry.loss.unwrap_or(base.loss),
                    duplicate: entry.duplicate.unwrap_or(base.duplicate),
                    reorder: entry.reorder.unwrap_or(base.reorder),
                    reorder_delay: base.reorder_delay,
                };
                let note = format!("id {id}; loss {}", quality.loss);
                self.net
                    .degrade(Some(id.clone()), NodeSet::from_nodes(&targets), quality);
                let until = entry.duration.map(|d| self.now + d);
                if let Some(at) = until {
                    self.push(at, Ev::Undo(Undo::Restore(id.clone())));
                }
                self.open_band(
                    "degrade",
                    format!("degrade:{id}"),
                    band_label(label, &targets, &self.nodes),
                    until,
                );
                self.record(label, &targets, note);
            }
            Action::Restore => {
                let restored = self.net.restore(entry.id.as_deref());
                let key = entry.id.as_ref().map(|id| format!("degrade:{id}"));
                self.close_bands(|band| {
                    band.kind == "degrade" && key.as_ref().is_none_or(|k| *k == band.key)
                });
                self.record(label, &[], format!("{restored} restored"));
            }
        }
    }

    fn resume(&mut self, targets: &[usize]) {
        for &t in targets {
            if self.nodes[t].status == Status::Paused
                && let Some((_, end)) = &mut self.stalls[t]
            {
                *end = Some(self.now);
            }
            let mut out = std::mem::take(&mut self.out);
            self.nodes[t].resume(self.now, &self.names, &mut out);
            self.after_input(t, out);
        }
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Start(targets) => {
                for &t in &targets {
                    self.start_node(t, false);
                }
                self.record("start", &targets, "end of crash".into());
            }
            Undo::Resume(targets) => {
                self.resume(&targets);
                self.record("resume", &targets, "end of pause".into());
            }
            Undo::Heal(id) => {
                self.net.heal(Some(&id), self.now);
                self.record("heal", &[], format!("id {id}"));
            }
            Undo::Restore(id) => {
                self.net.restore(Some(&id));
                self.record("restore", &[], format!("id {id}"));
            }
        }
    }

    fn sample(&mut self) {
        let mut running = 0;
        let mut views = (usize::MAX, 0);
        for (i, node) in self.nodes.iter().enumerate() {
            if node.status == Status::Running
                && !self.zombies.contains(i)
                && let Some(core) = node.core()
            {
                running += 1;
                let view = core.membership().active_members() + 1;
                views = (views.0.min(view), views.1.max(view));
            }
        }
        if running == 0 {
            views = (0, 0);
        }
        let nodes_up = self.nodes.iter().filter(|node| node.status.is_up()).count();
        let period = self.scenario.sim.sample_period;
        let leader = self.effective_leader();
        let term = self
            .nodes
            .iter()
            .filter(|node| node.status == Status::Running)
            .filter_map(|node| node.core()?.raft().map(|raft| raft.term().0))
            .max()
            .unwrap_or(0);
        let catalog_index = leader
            .and_then(|l| self.nodes[l].core())
            .map_or(0, |core| core.catalog().applied_index().0);
        if leader.is_none() && self.bootstrap_expect > 0 {
            self.raft.leaderless += period;
        }
        let stale_since = if self.now >= self.next_freshness_at {
            while self.next_freshness_at <= self.now {
                self.next_freshness_at += FRESHNESS_PERIOD;
            }
            self.telemetry_staleness()
        } else {
            Vec::new()
        };
        let after_faults = (self.now >= self.liveness_from).then_some(self.liveness_from);
        self.metrics.sample(
            self.now,
            period,
            running,
            nodes_up,
            views,
            (term, leader.is_some(), catalog_index),
        );
        self.metrics
            .sample_staleness(self.now, &stale_since, after_faults);
        if self.now >= self.liveness_from {
            let id = self.ids.converged;
            if !self.checks.has_held(id) && !self.checks.is_failed(id) {
                let result = self.converged();
                self.liveness(id, result);
            }
            let checks: [(Option<usize>, LivenessCheck); 3] = [
                (self.ids.raft_leader, Self::leader_settled),
                (self.ids.catalog_converged, Self::catalog_converged),
                (
                    Some(self.ids.telemetry_converged),
                    Self::telemetry_converged,
                ),
            ];
            for (id, check) in checks {
                let Some(id) = id else { continue };
                if !self.checks.has_held(id) && !self.checks.is_failed(id) {
                    let result = check(self);
                    self.liveness(id, result);
                }
            }
        }
    }

    /// Records a liveness observation: held, or failed past the deadline.
    fn liveness(&mut self, id: usize, result: Result<(), String>) {
        if self.checks.has_held(id) || self.checks.is_failed(id) {
            return;
        }
        match result {
            Ok(()) => self.checks.held(id, self.now),
            Err(detail) => {
                let deadline = self.liveness_from + self.scenario.checks.converge_within;
                if self.now >= deadline {
                    let now = self.now;
                    let since = humantime::format_duration(now - self.liveness_from);
                    self.checks.violate(id, now, || {
                        format!("not yet {since} after the last fault: {detail}")
                    });
                }
            }
        }
    }

    /// The running seed that leads while reaching a majority of its voters.
    fn effective_leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|i| {
            let node = &self.nodes[*i];
            node.status == Status::Running
                && node
                    .core()
                    .and_then(|core| core.raft())
                    .is_some_and(|raft| {
                        let voters: Vec<usize> = raft
                            .voters()
                            .iter()
                            .filter_map(|voter| self.index_by_name.get(voter.as_str()).copied())
                            .collect();
                        raft.role() == shoal_consensus::Role::Leader
                            && component_size(*i, &voters, &self.net) * 2 > voters.len()
                    })
        })
    }

    /// A leader reaching a majority, followed by every running seed.
    fn leader_settled(&self) -> Result<(), String> {
        let leader = self
            .effective_leader()
            .ok_or("no seed leads with a majority")?;
        let leader_id = self.nodes[leader].spec.node_id.as_str();
        for node in &self.nodes {
            if node.status != Status::Running || node.spec.role != Role::Seed {
                continue;
            }
            let Some(raft) = node.core().and_then(|core| core.raft()) else {
                return Err(format!("{} runs no Raft node", node.spec.name));
            };
            if raft.leader().as_ref().map(|l| l.as_str()) != Some(leader_id) {
                return Err(format!(
                    "{} follows {:?}, not {leader_id}",
                    node.spec.name,
                    raft.leader().map(|l| l.to_string())
                ));
            }
        }
        Ok(())
    }

    /// Notes a new telemetry version of node `index`, if its last input
    /// published one.
    fn note_published(&mut self, index: usize) {
        let Some(history) = &mut self.published[index] else {
            return;
        };
        let Some(version) = self.nodes[index].core().and_then(|core| {
            core.membership()
                .with_telemetry(|store| store.local_version())
        }) else {
            return;
        };
        if history.back().is_none_or(|(last, _)| *last != version) {
            if history.len() == PUBLISHED_KEPT {
                history.pop_front();
            }
            history.push_back((version, self.now));
        }
    }

    /// For each sampled agent's copy of each other sampled node's
    /// telemetry, since when it lacks a version (`None`: it holds the
    /// newest): see [`stale_since`]. A copy counts as stale only while both
    /// runs are up: from the later of the two nodes' starts at the earliest.
    /// Reads the cores only.
    fn telemetry_staleness(&self) -> Vec<Option<Duration>> {
        let sampled: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.published[*i].is_some() && self.is_live(*i))
            .collect();
        let mut since = Vec::with_capacity(sampled.len() * sampled.len());
        for &observer in &sampled {
            let core = self.nodes[observer].core().expect("running");
            core.membership().with_telemetry(|store| {
                for &subject in sampled.iter().filter(|s| **s != observer) {
                    let history = self.published[subject].as_ref().expect("sampled");
                    if history.is_empty() {
                        continue;
                    }
                    let held = store.record(&self.names[subject]).map(|r| r.version);
                    let floor = self.started_at[observer].max(self.started_at[subject]);
                    since.push(stale_since(history, held, floor));
                }
            });
        }
        since
    }

    /// Running, and not a zombie: a node whose core the checks read.
    fn is_live(&self, index: usize) -> bool {
        self.nodes[index].status == Status::Running && !self.zombies.contains(index)
    }

    /// Every running agent holds a telemetry record of every running node,
    /// at that node's current generation: the CRDT has spread everyone's
    /// newest start everywhere (versions within a generation keep moving
    /// with heartbeats, so they are not compared).
    fn telemetry_converged(&self) -> Result<(), String> {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|i| self.is_live(*i)).collect();
        for &observer in &running {
            let core = self.nodes[observer].core().expect("running");
            let lagging = core.membership().with_telemetry(|store| {
                running.iter().copied().find(|subject| {
                    store.record(&self.names[*subject]).is_none_or(|record| {
                        record.version.generation.0 != self.nodes[*subject].generation
                    })
                })
            });
            if let Some(subject) = lagging {
                return Err(format!(
                    "{} holds no telemetry of {} at generation {}",
                    self.nodes[observer].spec.name,
                    self.nodes[subject].spec.name,
                    self.nodes[subject].generation
                ));
            }
        }
        Ok(())
    }

    /// Every running agent holds the leader's catalog.
    fn catalog_converged(&self) -> Result<(), String> {
        let leader = self.effective_leader().ok_or("no leader")?;
        let catalog = self.nodes[leader].core().expect("running").catalog();
        let (index, hash) = (catalog.applied_index(), catalog.chain_hash());
        for (i, node) in self.nodes.iter().enumerate() {
            if node.status != Status::Running || self.zombies.contains(i) {
                continue;
            }
            let theirs = node.core().expect("running").catalog();
            if theirs.applied_index() != index || theirs.chain_hash() != hash {
                return Err(format!(
                    "{} holds catalog index {}, the leader {}",
                    node.spec.name,
                    theirs.applied_index().0,
                    index.0
                ));
            }
        }
        Ok(())
    }

    /// Whether every running agent holds the one true view; the error says
    /// who disagrees first.
    pub(crate) fn converged(&self) -> Result<(), String> {
        if self.net.partitioned() {
            return Err("a partition is still in force".into());
        }
        if let Some(node) = self.nodes.iter().find(|node| node.status == Status::Paused) {
            return Err(format!("{} is still paused", node.spec.name));
        }
        let expected: Vec<usize> = (0..self.nodes.len()).filter(|i| self.is_live(*i)).collect();
        let observers: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].status == Status::Running)
            .collect();
        // Cheap first: every running agent has the right number of active members.
        for &i in &observers {
            let core = self.nodes[i].core().expect("running");
            let active = core.membership().active_members();
            let wanted = expected.len() - usize::from(!self.zombies.contains(i));
            if active != wanted {
                return Err(format!(
                    "{} holds {active} active members, expected {wanted}",
                    self.nodes[i].spec.name
                ));
            }
        }
        for &i in &observers {
            let core = self.nodes[i].core().expect("running");
            let mut seen = NodeSet::default();
            for row in core.members() {
                let name = &self.nodes[i].spec.name;
                let Some(subject) = self.subject_of(&row.identity) else {
                    return Err(format!("{name} lists unknown {}", row.identity.node_id));
                };
                if seen.contains(subject) {
                    return Err(format!("{name} lists {} twice", row.identity.node_id));
                }
                seen.insert(subject);
                let node = &self.nodes[subject];
                let should_be_up =
                    node.status == Status::Running && !self.zombies.contains(subject);
                if should_be_up {
                    if row.state != MemberState::Alive
                        || row.identity.generation.0 != node.generation
                    {
                        return Err(format!(
                            "{name} sees {} {} at generation {}, expected alive at {}",
                            node.spec.name,
                            row.state.as_str(),
                            row.identity.generation,
                            node.generation
                        ));
                    }
                } else if row.state != MemberState::Down && !row.is_local {
                    return Err(format!(
                        "{name} sees {} ({:?}) {}",
                        node.spec.name,
                        if self.zombies.contains(subject) {
                            Status::Crashed
                        } else {
                            node.status
                        },
                        row.state.as_str()
                    ));
                }
            }
            if let Some(missing) = expected.iter().find(|s| !seen.contains(**s)) {
                return Err(format!(
                    "{} does not know {}",
                    self.nodes[i].spec.name, self.nodes[*missing].spec.name
                ));
            }
        }
        Ok(())
    }

    fn final_checks(&mut self) {
        let id = self.ids.converged;
        if !self.checks.has_held(id) && !self.checks.is_failed(id) {
            let detail = self.converged().err().unwrap_or_default();
            let now = self.now;
            self.checks
                .violate(id, now, || format!("never converged: {detail}"));
        }
        if let (Some(id), Some(max)) = (self.ids.detection, self.scenario.checks.detection_p99_max)
        {
            let times: Vec<Duration> = self
                .metrics
                .detections
                .iter()
                .filter_map(|d| d.all_down.map(|at| at - d.crashed_at))
                .collect();
            let p99 = crate::metrics::Percentiles::of(&times).p99_ms;
            let missed = self
                .metrics
                .detections
                .iter()
                .filter(|d| d.all_down.is_none() && !d.cut_short)
                .count();
            if p99 > max.as_secs_f64() * 1e3 || missed > 0 {
                let now = self.now;
                self.checks.violate(id, now, || {
                    format!(
                        "detection p99 {p99:.0} ms (bound {} ms), {missed} never detected",
                        max.as_millis()
                    )
                });
            }
        }
        if let (Some(id), Some(max)) = (
            self.ids.dissemination,
            self.scenario.checks.dissemination_p99_max,
        ) {
            let p99 = crate::report::dissemination_times(&self.metrics);
            let p99 = crate::metrics::Percentiles::of(&p99).p99_ms;
            if p99 > max.as_secs_f64() * 1e3 {
                let now = self.now;
                self.checks.violate(id, now, || {
                    format!(
                        "dissemination p99 {p99:.0} ms (bound {} ms)",
                        max.as_millis()
                    )
                });
            }
        }
    }

    /// Membership counters summed over the running nodes.
    pub(crate) fn membership_totals(&self) -> BTreeMap<&'static str, u64> {
        let mut totals = BTreeMap::new();
        for node in &self.nodes {
            if let Some(core) = node.core() {
                let stats = core.membership().stats();
                *totals.entry("probes").or_default() += stats.probes;
                *totals.entry("probes_failed").or_default() += stats.probes_failed;
                *totals.entry("suspicions").or_default() += stats.suspicions;
                *totals.entry("suspicions_expired").or_default() += stats.suspicions_expired;
                *totals.entry("suspicions_refuted_late").or_default() +=
                    stats.suspicions_refuted_late;
                *totals.entry("timers_late").or_default() += stats.timers_late;
                *totals.entry("self_suspected").or_default() += stats.self_suspected;
                *totals.entry("drops").or_default() += stats.drops.values().sum::<u64>();
            }
        }
        totals
    }
}

fn pick(options: &[String], i: usize, default: &str) -> String {
    if options.is_empty() {
        default.to_string()
    } else {
        options[i % options.len()].clone()
    }
}

fn band_label(action: &str, targets: &[usize], nodes: &[SimNode]) -> String {
    match targets {
        [] => action.to_string(),
        [one] => format!("{action} {}", nodes[*one].spec.name),
        many => format!("{action} {} nodes", many.len()),
    }
}

/// Expands `repeat`, sorts by time (stable: file order breaks ties), and
/// names each entry's random stream by its time, action and ordinal among
/// equal (time, action) entries, so removing one entry leaves the others'
/// random choices alone.
fn expand_timeline(timeline: &[TimelineEntry]) -> Vec<Planned> {
    let mut plan = Vec::new();
    let mut ordinals: BTreeMap<(Duration, Action), usize> = BTreeMap::new();
    for (index, entry) in timeline.iter().enumerate() {
        let repeat = entry
            .repeat
            .map_or((1, Duration::ZERO), |r| (r.times, r.every));
        let ordinal = ordinals.entry((entry.at, entry.action)).or_default();
        for k in 0..repeat.0 {
            plan.push(Planned {
                at: entry.at + repeat.1 * k,
                entry: index,
                stream: format!(
                    "timeline/{}/{}/{}/{k}",
                    entry.at.as_millis(),
                    entry.action.as_str(),
                    ordinal
                ),
                repetition: k,
            });
        }
        *ordinal += 1;
    }
    plan.sort_by_key(|planned| (planned.at, planned.entry));
    plan
}

/// A fast 64-bit hash of a datagram for the digest.
fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        hash = (hash ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    for byte in chunks.remainder() {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(hash)
}

/// The SWIM message kind of a datagram's payload (after the envelope).
fn message_kind(payload: &[u8]) -> &'static str {
    use foca::Message;
    let mut buf = payload;
    match MsgpackCodec.decode_header(&mut buf) {
        Ok(header) => match header.message {
            Message::Ping(_) => "ping",
            Message::Ack(_) => "ack",
            Message::PingReq { .. } => "ping_req",
            Message::IndirectPing { .. } => "indirect_ping",
            Message::IndirectAck { .. } => "indirect_ack",
            Message::ForwardedAck { .. } => "forwarded_ack",
            Message::Gossip => "gossip",
            Message::Announce => "announce",
            Message::Feed => "feed",
            Message::Broadcast => "broadcast",
            Message::TurnUndead => "turn_undead",
        },
        Err(_) => "undecodable",
    }
}
