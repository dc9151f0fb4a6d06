//! The node core: everything one agent decides, with no IO.
//!
//! It composes the sans-IO parts — SWIM membership, and the seed group's
//! Raft node with the catalog it replicates (or, on a non-seed agent, a
//! catalog copy that follows the committed log) — behind one
//! `handle_* / poll_*` surface. The tokio shell (`shell.rs`) drives it with
//! real time, QUIC and sled; the simulator drives the very same type with
//! virtual time, a virtual network and in-memory storage.
//!
//! What lives here, beyond the parts it composes:
//! * forming the seed group from `bootstrap_expect` (see [`seeds`]);
//! * writes from any agent forwarded to the leader, retried with the same
//!   request id until they commit or time out (the catalog deduplicates);
//! * linearizable reads by read barrier (Raft ReadIndex at the leader, then
//!   waiting for the local catalog to reach that index);
//! * catalog replication to non-seed agents by long-poll pulls from seeds;
//! * each agent registering itself in the catalog.

pub mod messages;
mod seeds;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_consensus::{
    Capacity, Catalog, CatalogIndex, Command, LogStore, NodeRole, NodeStatus, Op, Output,
    RaftConfig, RaftNode, RequestId, Role as RaftRole, Term,
};
use shoal_membership::alerts::{ActiveAlert, AlertConfig, AlertEvaluator};
use shoal_membership::telemetry::{DatabaseReport, HostMetrics, TelemetryError};
use shoal_membership::{
    Event, Identity, MemberView, Membership, MembershipConfig, NodeId, Role, Transmit,
};

use self::messages::{PeerMessage, SeedChange, SubmitOutcome};
use self::seeds::Bootstrap;

/// Largest batch of catalog entries sent in answer to one pull, in bytes.
pub const CATALOG_BATCH_BYTES_MAX: usize = 1 << 20;
/// Most writes this agent waits on at once; more are refused at once.
pub const SUBMISSIONS_MAX: usize = 10_000;
/// Most read barriers this agent waits on at once.
pub const READS_MAX: usize = 10_000;
/// Most catalog pulls a seed holds open at once (one per agent).
pub const PULLS_PARKED_MAX: usize = 100_000;
/// Most outgoing peer messages queued; a driver that keeps up never sees it.
pub const OUTBOX_MAX: usize = 100_000;

/// Settings of the node core beyond membership.
#[derive(Clone, Debug)]
pub struct NodeCoreConfig {
    /// This agent's SWIM identity (node id, address, generation, metadata).
    pub identity: Identity,
    /// SWIM and Lifeguard settings.
    pub membership: MembershipConfig,
    /// How many seeds form the first Raft group.
    pub bootstrap_expect: usize,
    /// One Raft tick. Default 100 ms: elections after 1–2 s without a leader,
    /// heartbeats every 200 ms.
    pub raft_tick: Duration,
    /// A write or read barrier not done after this long fails. Default 10 s.
    pub request_timeout: Duration,
    /// A forwarded write or barrier unanswered this long is sent again (same
    /// request id). Default 1 s.
    pub request_retry: Duration,
    /// How long a seed holds a catalog pull that has nothing new. Default 5 s.
    pub catalog_wait: Duration,
    /// A catalog pull unanswered this long is sent again, perhaps elsewhere.
    /// Default 8 s; must exceed `catalog_wait`.
    pub catalog_pull_timeout: Duration,
    /// How often a seed without a group checks whether it can form one.
    /// Default 1 s.
    pub bootstrap_probe_period: Duration,
    /// What this node offers, as registered in the catalog.
    pub capacity: Capacity,
    /// Alert rules evaluated on the merged telemetry.
    pub alerts: AlertConfig,
    /// How often alerts are evaluated. Default 1 s.
    pub alert_period: Duration,
    /// Wall-clock time at `now = 0`, in ms since the Unix epoch: commands carry
    /// `wall_base_unix_ms + now`, and membership counts probe periods on it
    /// (probe rings).
    pub wall_base_unix_ms: u64,
    /// Whether this core takes part in consensus: forms or joins the Raft
    /// group (seeds), pulls the catalog and registers itself. Default true;
    /// the simulator turns it off to measure membership alone at the
    /// largest sizes. Without it the core is SWIM, telemetry and alerts.
    pub consensus: bool,
}

impl NodeCoreConfig {
    /// Defaults around `identity` and `membership`.
    pub fn new(identity: Identity, membership: MembershipConfig, bootstrap_expect: usize) -> Self {
        Self {
            identity,
            membership,
            bootstrap_expect,
            raft_tick: Duration::from_millis(100),
            request_timeout: Duration::from_secs(10),
            request_retry: Duration::from_secs(1),
            catalog_wait: Duration::from_secs(5),
            catalog_pull_timeout: Duration::from_secs(8),
            bootstrap_probe_period: Duration::from_secs(1),
            capacity: Capacity::default(),
            alerts: AlertConfig::default(),
            alert_period: Duration::from_secs(1),
            wall_base_unix_ms: 0,
            consensus: true,
        }
    }
}

/// Why the core could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A membership setting is invalid.
    #[error(transparent)]
    Membership(#[from] shoal_membership::ConfigError),
    /// The Raft node could not open its storage.
    #[error("raft: {0}")]
    Raft(#[from] shoal_consensus::Error),
    /// A node id is valid for membership but not for the catalog.
    #[error("node id {0:?} is not a valid catalog node id")]
    NodeId(String),
    /// An alert rule is invalid.
    #[error("alerts: {0}")]
    Alerts(#[from] TelemetryError),
}

/// A seed's encoded answer to a catalog pull (see `NodeCore::pull_answer`).
#[derive(Clone, Debug, PartialEq)]
struct PullAnswer {
    kind: &'static str,
    bytes: Bytes,
    /// `Some(index)`: the answer brings the copy up to `index`, and the
    /// pull stays parked there.
    kept_at: Option<CatalogIndex>,
}

/// A peer message for the driver to send on a QUIC stream.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The receiving agent.
    pub to: shoal_consensus::NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The message's kind ([`PeerMessage::kind`]), for metrics.
    pub kind: &'static str,
    /// The message, encoded ([`PeerMessage::encode`]). Shared by the copies
    /// of one answer sent to many peers: a commit answers every catalog
    /// copy's pull parked at the same index alike (the same entries, or the
    /// whole catalog).
    pub bytes: Bytes,
    /// Whether it carries a Raft snapshot: the driver reports delivery with
    /// [`NodeCore::report_snapshot`].
    pub carries_snapshot: bool,
}

/// The end of something a local client asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Completion {
    /// A write (or seed change) submitted with [`NodeCore::submit`] or
    /// [`NodeCore::change_seeds`] is done; for a write, the local catalog has
    /// applied it.
    Submitted {
        /// The request.
        request_id: RequestId,
        /// What happened.
        outcome: SubmitOutcome,
    },
    /// A read barrier from [`NodeCore::read_barrier`] is done: on success the
    /// local catalog has applied at least the leader's commit index at the
    /// time of the barrier, so reading it now is linearizable.
    Read {
        /// The barrier.
        id: u64,
        /// The index reached, or why it failed.
        result: Result<CatalogIndex, String>,
    },
}

/// Counters of the core beyond membership's, for metrics.
#[derive(Clone, Debug, Default)]
pub struct CoreStats {
    /// Peer messages received, by kind.
    pub messages_in: BTreeMap<&'static str, u64>,
    /// Peer messages sent, by kind.
    pub messages_out: BTreeMap<&'static str, u64>,
    /// Peer messages that did not decode, or came from a stranger.
    pub messages_dropped: u64,
    /// Writes this agent forwarded to a leader (counting retries).
    pub forwarded: u64,
    /// Writes this agent proposed as leader on behalf of others.
    pub proposed_for_others: u64,
    /// Raft leader changes seen.
    pub leader_changes: u64,
    /// Catalog snapshots received by this agent's copy.
    pub catalog_snapshots: u64,
    /// Bytes of membership-layer stream messages (telemetry anti-entropy,
    /// push-pull) sent and received.
    pub membership_stream_bytes: u64,
}

/// Status of the seed group as this agent sees it (`shoal seeds`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedStatus {
    /// Voters of the group.
    pub voters: Vec<shoal_consensus::NodeId>,
    /// Outgoing voters during a joint configuration.
    pub voters_outgoing: Vec<shoal_consensus::NodeId>,
    /// The leader, if known.
    pub leader: Option<shoal_consensus::NodeId>,
    /// This agent's Raft role, if it runs a Raft node.
    pub role: Option<RaftRole>,
    /// The term, if this agent runs a Raft node.
    pub term: Option<Term>,
    /// The commit index, if this agent runs a Raft node.
    pub commit_index: Option<CatalogIndex>,
    /// The applied index of this agent's catalog.
    pub applied_index: CatalogIndex,
}

#[derive(Clone, Debug)]
enum SubmissionKind {
    Write(Command),
    Seeds(SeedChange),
}

#[derive(Clone, Debug)]
struct Submission {
    kind: SubmissionKind,
    deadline: Duration,
    retry_at: Duration,
    /// Committed at this index; done once the local catalog applies it.
    applied: Option<(CatalogIndex, shoal_consensus::CommandResult)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    Local,
    Remote(shoal_consensus::NodeId),
}

#[derive(Clone, Debug)]
struct PendingRead {
    deadline: Duration,
    retry_at: Duration,
    /// Confirmed by the leader at this index; done once applied locally.
    confirmed: Option<CatalogIndex>,
}

/// One agent's decisions. See the module docs.
pub struct NodeCore<S: LogStore> {
    config: NodeCoreConfig,
    membership: Membership,
    node_id: shoal_consensus::NodeId,
    raft: Option<RaftNode<S>>,
    bootstrap: Bootstrap<S>,
    /// The catalog copy of an agent without a Raft node.
    copy: Catalog,
    copy_confirmed_at: Option<Duration>,
    leader_hint: Option<shoal_consensus::NodeId>,
    leader_heard_at: Option<Duration>,
    next_tick_at: Duration,
    rng: ChaCha8Rng,
    submissions: BTreeMap<RequestId, Submission>,
    proposed_for: BTreeMap<RequestId, Origin>,
    /// Writes waiting for the next [`NodeCore::flush`] to be proposed in one
    /// Raft batch (one fsync for all of them).
    proposal_queue: Vec<(RequestId, Command, Origin)>,
    reads: BTreeMap<u64, PendingRead>,
    read_seq: u64,
    pulls_parked: BTreeMap<shoal_consensus::NodeId, (CatalogIndex, Duration)>,
    pull_in_flight: Option<(shoal_consensus::NodeId, Duration)>,
    /// The membership's seed version when the pull target and leader hint
    /// were last checked against it (`None`: check at the next tick).
    seeds_checked: Option<u64>,
    /// The catalog's node version (see `nodes_version`) at which this agent
    /// last found itself registered: nothing to check again until a node
    /// record changes.
    registered_at: Option<CatalogIndex>,
    outbox: VecDeque<Outgoing>,
    completions: VecDeque<Completion>,
    alerts: AlertEvaluator,
    active_alerts: Vec<ActiveAlert>,
    next_alert_at: Duration,
    /// Nodes whose removal from the catalog was already turned into a
    /// telemetry tombstone here.
    telemetry_removed: BTreeSet<(shoal_consensus::NodeId, shoal_consensus::Generation)>,
    /// The catalog's node version (see `nodes_version`) when `telemetry_removed` was last
    /// brought up to date (walking every node costs O(n) per agent, and the
    /// catalog changes far more often than its nodes do).
    telemetry_removed_at: Option<CatalogIndex>,
    stats: CoreStats,
    now: Duration,
}

impl<S: LogStore> std::fmt::Debug for NodeCore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCore")
            .field("node_id", &self.node_id)
            .field("raft", &self.raft)
            .finish_non_exhaustive()
    }
}

fn catalog_id(node_id: &NodeId) -> Result<shoal_consensus::NodeId, CoreError> {
    shoal_consensus::NodeId::new(node_id.as_str())
        .map_err(|_| CoreError::NodeId(node_id.to_string()))
}

impl<S: LogStore> NodeCore<S> {
    /// A core for the agent described by `config`. `storage` is the Raft log
    /// store; only seeds use it (a restarted seed resumes its group at once;
    /// a new seed keeps it until the group forms). Every random choice
    /// derives from `rng_seed`.
    pub fn new(
        config: NodeCoreConfig,
        storage: S,
        rng_seed: u64,
        now: Duration,
    ) -> Result<Self, CoreError> {
        let mut membership = Membership::new(
            config.identity.clone(),
            config.membership.clone(),
            rng_seed,
            now,
        )?;
        membership.set_wall_base(Duration::from_millis(config.wall_base_unix_ms));
        let node_id = catalog_id(&config.identity.node_id)?;
        let is_seed = config.identity.meta.role == Role::Seed;
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed ^ 0x5EED_CA7A_1065);
        let raft_seed = rng.random();
        let (raft, bootstrap) = if is_seed && seeds::is_initialized(&storage)? {
            let node = RaftNode::new(RaftConfig::new(node_id.clone()), storage, raft_seed)?;
            (Some(node), Bootstrap::Done)
        } else if is_seed {
            (None, Bootstrap::waiting(storage, raft_seed, now))
        } else {
            (None, Bootstrap::NotSeed)
        };
        let alerts = AlertEvaluator::new(config.alerts.clone())?;
        Ok(Self {
            next_tick_at: now + config.raft_tick,
            next_alert_at: now + config.alert_period,
            alerts,
            active_alerts: Vec::new(),
            telemetry_removed: BTreeSet::new(),
            telemetry_removed_at: None,
            config,
            membership,
            node_id,
            raft,
            bootstrap,
            copy: Catalog::empty(),
            copy_confirmed_at: None,
            leader_hint: None,
            leader_heard_at: None,
            rng,
            submissions: BTreeMap::new(),
            proposed_for: BTreeMap::new(),
            proposal_queue: Vec::new(),
            reads: BTreeMap::new(),
            read_seq: 0,
            pulls_parked: BTreeMap::new(),
            pull_in_flight: None,
            seeds_checked: None,
            registered_at: None,
            outbox: VecDeque::new(),
            completions: VecDeque::new(),
            stats: CoreStats::default(),
            now,
        })
    }

    // ----- reading -----

    /// The membership part.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// This agent's member table.
    pub fn members(&self) -> Vec<MemberView> {
        self.membership.members()
    }

    /// The Raft node, on a seed whose group has formed.
    pub fn raft(&self) -> Option<&RaftNode<S>> {
        self.raft.as_ref()
    }

    /// This agent's catalog: the Raft node's on a seed, the copy elsewhere.
    pub fn catalog(&self) -> &Catalog {
        match &self.raft {
            Some(raft) => raft.catalog(),
            None => &self.copy,
        }
    }

    /// How stale the local catalog may be: zero on the leader; on a follower
    /// seed, the time since it last heard the leader; on a copy, the time
    /// since a seed last confirmed it current. `None`: never confirmed.
    pub fn catalog_staleness(&self) -> Option<Duration> {
        match &self.raft {
            Some(raft) if raft.role() == RaftRole::Leader => Some(Duration::ZERO),
            Some(_) => self.leader_heard_at.map(|at| self.now.saturating_sub(at)),
            None => self.copy_confirmed_at.map(|at| self.now.saturating_sub(at)),
        }
    }

    /// The leader as this agent knows it.
    pub fn leader(&self) -> Option<shoal_consensus::NodeId> {
        match &self.raft {
            Some(raft) => raft.leader(),
            None => self.leader_hint.clone(),
        }
    }

    /// The seed group as this agent sees it.
    pub fn seed_status(&self) -> SeedStatus {
        let seeds = self.catalog().seeds();
        SeedStatus {
            voters: seeds.voters.iter().cloned().collect(),
            voters_outgoing: seeds.voters_outgoing.iter().cloned().collect(),
            leader: self.leader(),
            role: self.raft.as_ref().map(RaftNode::role),
            term: self.raft.as_ref().map(RaftNode::term),
            commit_index: self.raft.as_ref().map(RaftNode::commit_index),
            applied_index: self.catalog().applied_index(),
        }
    }

    /// The latest `now` the core was given.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Counters beyond membership's.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// Wall-clock time at `now`, in ms since the Unix epoch, as the core knows it.
    pub fn wall_unix_ms(&self, now: Duration) -> u64 {
        self.config.wall_base_unix_ms + now.as_millis() as u64
    }

    // ----- membership inputs -----

    /// A seed was resolved to its node id: announce to it.
    pub fn add_seed(&mut self, now: Duration, node_id: NodeId, addr: SocketAddr) {
        self.advance(now);
        self.membership.add_seed(now, node_id, addr);
    }

    /// A SWIM datagram arrived from `from` (as authenticated by TLS).
    pub fn handle_datagram(&mut self, now: Duration, from: Option<&NodeId>, payload: &[u8]) {
        self.advance(now);
        self.membership.handle_datagram(now, from, payload);
    }

    /// The next SWIM datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.membership.poll_transmit()
    }

    /// The next membership event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.membership.poll_event()
    }

    /// Leave the cluster gracefully.
    pub fn leave(&mut self, now: Duration) {
        self.advance(now);
        self.membership.leave(now);
    }

    // ----- time -----

    /// When [`NodeCore::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let membership = self.membership.poll_timeout();
        Some(membership.map_or(self.next_tick_at, |at| at.min(self.next_tick_at)))
    }

    /// Delivers every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.advance(now);
        self.membership.handle_timeout(now);
        if now < self.next_tick_at {
            return;
        }
        // Ticks are not caught up one by one after a stall: Raft time is
        // "ticks delivered", and a burst of ticks would only start a needless
        // election.
        // Without consensus the tick only evaluates alerts.
        let tick = if self.config.consensus {
            self.config.raft_tick
        } else {
            self.config.alert_period
        };
        self.next_tick_at = now + tick;
        if self.config.consensus {
            self.consensus_tick(now);
        }
        if now >= self.next_alert_at {
            self.next_alert_at = now + self.config.alert_period;
            self.forget_removed_telemetry(now);
            let alerts = &mut self.alerts;
            self.active_alerts = self
                .membership
                .with_telemetry(|store| alerts.evaluate(store.map(), now));
        }
    }

    /// One Raft tick's worth of consensus work: proposals, the tick itself
    /// (or the bootstrap), timeouts, the catalog pull and registration.
    fn consensus_tick(&mut self, now: Duration) {
        self.flush(now);
        if let Some(raft) = &mut self.raft {
            if let Err(error) = raft.tick() {
                tracing::error!(%error, "raft tick");
            }
            self.after_raft();
        } else {
            self.bootstrap_step(now);
        }
        self.expire(now);
        self.pull_catalog(now);
        self.register(now);
    }

    /// Nodes the catalog marks `Removed` lose their telemetry everywhere.
    fn forget_removed_telemetry(&mut self, now: Duration) {
        let index = self.nodes_version();
        if self.telemetry_removed_at == Some(index) {
            return;
        }
        self.telemetry_removed_at = Some(index);
        let removed: Vec<(shoal_consensus::NodeId, shoal_consensus::Generation)> = self
            .catalog()
            .state()
            .nodes
            .values()
            .filter(|record| record.status == NodeStatus::Removed)
            .map(|record| (record.node_id.clone(), record.generation))
            .filter(|key| !self.telemetry_removed.contains(key))
            .collect();
        for (node_id, generation) in removed {
            if let Ok(member_id) = NodeId::new(node_id.as_str()) {
                self.membership.remove_telemetry(
                    now,
                    &member_id,
                    shoal_membership::Generation(generation.0),
                );
            }
            self.telemetry_removed.insert((node_id, generation));
        }
    }

    // ----- telemetry -----

    /// Sets this host's metrics for the next telemetry refresh.
    pub fn set_host_metrics(&mut self, host: HostMetrics) -> Result<(), TelemetryError> {
        self.membership.set_host_metrics(host)
    }

    /// Sets what the local database reports (validated; the error names the
    /// field and nothing changes).
    pub fn set_database_report(
        &mut self,
        now: Duration,
        report: DatabaseReport,
    ) -> Result<(), TelemetryError> {
        self.advance(now);
        self.membership.set_database_report(now, report)
    }

    /// The alerts firing at the last evaluation.
    pub fn alerts(&self) -> &[ActiveAlert] {
        &self.active_alerts
    }

    fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    // ----- client requests -----

    /// Submits a write; its end arrives as [`Completion::Submitted`]. The
    /// command's request id makes retries safe: it applies at most once. On
    /// the leader the write is proposed at the next [`NodeCore::flush`].
    pub fn submit(&mut self, now: Duration, command: Command) {
        self.advance(now);
        let request_id = command.request_id.clone();
        if self.submissions.contains_key(&request_id) {
            return;
        }
        if self.submissions.len() >= SUBMISSIONS_MAX {
            self.complete(
                request_id,
                SubmitOutcome::Failed {
                    reason: "too many writes in flight at this agent".into(),
                },
            );
            return;
        }
        self.submissions.insert(
            request_id.clone(),
            Submission {
                kind: SubmissionKind::Write(command),
                deadline: now + self.config.request_timeout,
                retry_at: now,
                applied: None,
            },
        );
        self.attempt(now, &request_id);
    }

    /// Asks the leader to change the seed group; the end arrives as
    /// [`Completion::Submitted`] with [`SubmitOutcome::Accepted`] once the
    /// leader has proposed it.
    pub fn change_seeds(&mut self, now: Duration, request_id: RequestId, change: SeedChange) {
        self.advance(now);
        if self.submissions.contains_key(&request_id) || self.submissions.len() >= SUBMISSIONS_MAX {
            return;
        }
        self.submissions.insert(
            request_id.clone(),
            Submission {
                kind: SubmissionKind::Seeds(change),
                deadline: now + self.config.request_timeout,
                retry_at: now,
                applied: None,
            },
        );
        self.attempt(now, &request_id);
    }

    /// Starts a read barrier (for `?consistent` reads); returns its id, whose
    /// end arrives as [`Completion::Read`].
    pub fn read_barrier(&mut self, now: Duration) -> u64 {
        self.advance(now);
        self.read_seq += 1;
        let id = self.read_seq;
        if self.reads.len() >= READS_MAX {
            self.completions.push_back(Completion::Read {
                id,
                result: Err("too many consistent reads in flight at this agent".into()),
            });
            return id;
        }
        self.reads.insert(
            id,
            PendingRead {
                deadline: now + self.config.request_timeout,
                retry_at: now,
                confirmed: None,
            },
        );
        self.attempt_read(now, id);
        id
    }

    /// Proposes every write queued since the last flush as one Raft batch
    /// (persisted with one sync). The driver calls it after each batch of
    /// inputs; every timer tick calls it too.
    pub fn flush(&mut self, now: Duration) {
        self.advance(now);
        if self.proposal_queue.is_empty() {
            return;
        }
        let queue = std::mem::take(&mut self.proposal_queue);
        let Some(raft) = self.raft.as_mut() else {
            // Leadership (and the Raft node) moved on: the writers retry.
            for (request_id, _, _) in queue {
                self.proposed_for.remove(&request_id);
            }
            return;
        };
        raft.begin_batch();
        let mut refused = Vec::new();
        for (request_id, command, origin) in queue {
            if let Err(error) = raft.propose(&command) {
                refused.push((request_id, origin, error));
            }
        }
        if let Err(error) = raft.end_batch() {
            tracing::error!(%error, "raft batch");
        }
        for (request_id, origin, error) in refused {
            self.proposed_for.remove(&request_id);
            let outcome = match error {
                shoal_consensus::Error::NotLeader { leader } => SubmitOutcome::NotLeader { leader },
                error => SubmitOutcome::Failed {
                    reason: error.to_string(),
                },
            };
            match origin {
                // Not the leader any more: the submission retries elsewhere.
                Origin::Local if matches!(outcome, SubmitOutcome::NotLeader { .. }) => {}
                Origin::Local => self.complete(request_id, outcome),
                Origin::Remote(node) => self.send(
                    &node,
                    PeerMessage::SubmitResult {
                        request_id,
                        outcome,
                    },
                ),
            }
        }
        self.after_raft();
    }

    /// The next finished client request.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    fn complete(&mut self, request_id: RequestId, outcome: SubmitOutcome) {
        self.submissions.remove(&request_id);
        self.completions.push_back(Completion::Submitted {
            request_id,
            outcome,
        });
    }

    fn is_leader(&self) -> bool {
        self.raft
            .as_ref()
            .is_some_and(|raft| raft.role() == RaftRole::Leader)
    }

    /// Tries to move a submission along: propose it as leader, or forward it.
    fn attempt(&mut self, now: Duration, request_id: &RequestId) {
        let Some(submission) = self.submissions.get_mut(request_id) else {
            return;
        };
        if submission.applied.is_some() {
            return;
        }
        submission.retry_at = now + self.config.request_retry;
        let kind = submission.kind.clone();
        if self.is_leader() {
            let outcome = self.lead(&kind, request_id, Origin::Local);
            if let Some(outcome) = outcome {
                self.complete(request_id.clone(), outcome);
            }
            return;
        }
        let Some(leader) = self.leader().filter(|leader| *leader != self.node_id) else {
            return; // no leader known yet: retried at `retry_at`
        };
        let message = match kind {
            SubmissionKind::Write(command) => match command.encode() {
                Ok(bytes) => PeerMessage::Submit { command: bytes },
                Err(error) => {
                    self.complete(
                        request_id.clone(),
                        SubmitOutcome::Failed {
                            reason: error.to_string(),
                        },
                    );
                    return;
                }
            },
            SubmissionKind::Seeds(change) => PeerMessage::ChangeSeeds {
                request_id: request_id.clone(),
                change,
            },
        };
        self.stats.forwarded += 1;
        self.send(&leader, message);
    }

    /// As leader: proposes a write or makes a seed change for `origin`.
    /// Returns an outcome to report now, or `None` when the outcome comes
    /// once the entry applies.
    fn lead(
        &mut self,
        kind: &SubmissionKind,
        request_id: &RequestId,
        origin: Origin,
    ) -> Option<SubmitOutcome> {
        match kind {
            SubmissionKind::Write(command) => {
                // Proposed at the next flush, with every other write that
                // arrived meanwhile: one Raft batch, one fsync.
                self.proposed_for.insert(request_id.clone(), origin.clone());
                self.proposal_queue
                    .push((request_id.clone(), command.clone(), origin));
                None
            }
            SubmissionKind::Seeds(change) => {
                let raft = self.raft.as_mut().expect("only a leader leads");
                let result = match change {
                    SeedChange::Membership(changes) => raft.propose_conf_change(changes),
                    SeedChange::TransferLeader(target) => raft.transfer_leader(target),
                };
                Some(match result {
                    Ok(()) => SubmitOutcome::Accepted,
                    Err(shoal_consensus::Error::NotLeader { leader }) => {
                        SubmitOutcome::NotLeader { leader }
                    }
                    Err(error) => SubmitOutcome::Failed {
                        reason: error.to_string(),
                    },
                })
            }
        }
    }

    fn attempt_read(&mut self, now: Duration, id: u64) {
        let Some(read) = self.reads.get_mut(&id) else {
            return;
        };
        if read.confirmed.is_some() {
            return;
        }
        read.retry_at = now + self.config.request_retry;
        if self.is_leader() {
            let context = read_context(None, id);
            let raft = self.raft.as_mut().expect("leader has raft");
            if let Err(error) = raft.read_index(context) {
                self.reads.remove(&id);
                self.completions.push_back(Completion::Read {
                    id,
                    result: Err(error.to_string()),
                });
            }
            self.after_raft();
            return;
        }
        if let Some(leader) = self.leader().filter(|leader| *leader != self.node_id) {
            self.send(&leader, PeerMessage::ReadBarrier { id });
        }
    }

    /// Fails what ran out of time; retries what waits for a reply.
    fn expire(&mut self, now: Duration) {
        let expired: Vec<RequestId> = self
            .submissions
            .iter()
            .filter(|(_, submission)| submission.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for request_id in expired {
            self.complete(request_id, SubmitOutcome::Failed {
                reason: "not committed in time: no leader reachable, or the seed group has no quorum \
                         (it may still commit later; retry with the same request id to learn its fate)"
                    .into(),
            });
        }
        let retry: Vec<RequestId> = self
            .submissions
            .iter()
            .filter(|(_, submission)| submission.retry_at <= now && submission.applied.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for request_id in retry {
            self.attempt(now, &request_id);
        }
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, read)| read.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.reads.remove(&id);
            self.completions.push_back(Completion::Read {
                id,
                result: Err(
                    "no leader confirmed the read in time: the seed group may have no quorum"
                        .into(),
                ),
            });
        }
        let retry: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, read)| read.retry_at <= now && read.confirmed.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in retry {
            self.attempt_read(now, id);
        }
        // Parked catalog pulls that waited long enough get an empty answer.
        let due: Vec<shoal_consensus::NodeId> = self
            .pulls_parked
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(node, _)| node.clone())
            .collect();
        for node in due {
            self.pulls_parked.remove(&node);
            self.answer_empty(&node);
        }
    }

    /// Completes what waited for the local catalog to reach an index.
    fn settle(&mut self) {
        let applied = self.catalog().applied_index();
        let done: Vec<RequestId> = self
            .submissions
            .iter()
            .filter(|(_, submission)| {
                submission
                    .applied
                    .as_ref()
                    .is_some_and(|(index, _)| *index <= applied)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for request_id in done {
            let submission = self.submissions.remove(&request_id).expect("listed above");
            let (index, result) = submission.applied.expect("filtered on applied");
            self.completions.push_back(Completion::Submitted {
                request_id,
                outcome: SubmitOutcome::Applied { index, result },
            });
        }
        let done: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, read)| read.confirmed.is_some_and(|index| index <= applied))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let read = self.reads.remove(&id).expect("listed above");
            self.completions.push_back(Completion::Read {
                id,
                result: Ok(read.confirmed.expect("filtered on confirmed")),
            });
        }
    }

    /// A command applied to the local catalog: complete a local write that
    /// waited for it.
    fn applied_locally(&mut self, applied: shoal_consensus::AppliedCommand) {
        let Some(request_id) = applied.request_id else {
            return;
        };
        if let Some(submission) = self.submissions.get_mut(&request_id) {
            submission.applied = Some((applied.index, applied.result.clone()));
        }
        if let Some(Origin::Remote(origin)) = self.proposed_for.remove(&request_id) {
            self.send(
                &origin,
                PeerMessage::SubmitResult {
                    request_id,
                    outcome: SubmitOutcome::Applied {
                        index: applied.index,
                        result: applied.result,
                    },
                },
            );
        }
    }

    // ----- peer messages -----

    /// A peer message arrived from `from` (as authenticated by TLS).
    pub fn handle_message(&mut self, now: Duration, from: &NodeId, bytes: &[u8]) {
        self.advance(now);
        let (Some(message), Ok(from)) = (PeerMessage::decode(bytes), catalog_id(from)) else {
            self.stats.messages_dropped += 1;
            return;
        };
        *self.stats.messages_in.entry(message.kind()).or_default() += 1;
        match message {
            PeerMessage::Raft(batch) => self.handle_raft(now, &from, batch),
            PeerMessage::BootstrapProbe { candidates } => {
                let reply = PeerMessage::BootstrapReply {
                    bootstrapped: self.raft.is_some(),
                    candidates: self.seed_candidates(),
                };
                let _ = candidates; // the asker compares our answer with its view
                self.send(&from, reply);
            }
            PeerMessage::BootstrapReply {
                bootstrapped,
                candidates,
            } => self.bootstrap_reply(now, &from, bootstrapped, candidates),
            PeerMessage::Submit { command } => self.handle_submit(&from, &command),
            PeerMessage::ChangeSeeds { request_id, change } => {
                let outcome = if self.is_leader() {
                    self.lead(
                        &SubmissionKind::Seeds(change),
                        &request_id,
                        Origin::Remote(from.clone()),
                    )
                    .unwrap_or(SubmitOutcome::Accepted)
                } else {
                    SubmitOutcome::NotLeader {
                        leader: self.leader(),
                    }
                };
                self.after_raft();
                self.send(
                    &from,
                    PeerMessage::SubmitResult {
                        request_id,
                        outcome,
                    },
                );
            }
            PeerMessage::SubmitResult {
                request_id,
                outcome,
            } => self.handle_submit_result(now, request_id, outcome),
            PeerMessage::ReadBarrier { id } => {
                if self.is_leader() {
                    let context = read_context(Some(&from), id);
                    let raft = self.raft.as_mut().expect("leader has raft");
                    if raft.read_index(context).is_err() {
                        self.send(
                            &from,
                            PeerMessage::ReadBarrierDone {
                                id,
                                index: None,
                                leader: None,
                            },
                        );
                    }
                    self.after_raft();
                } else {
                    let leader = self.leader();
                    self.send(
                        &from,
                        PeerMessage::ReadBarrierDone {
                            id,
                            index: None,
                            leader,
                        },
                    );
                }
            }
            PeerMessage::ReadBarrierDone { id, index, leader } => match index {
                Some(index) => {
                    if let Some(read) = self.reads.get_mut(&id) {
                        read.confirmed = Some(index);
                    }
                    self.settle();
                }
                None => {
                    if leader.is_some() && self.raft.is_none() {
                        self.set_leader_hint(leader);
                    }
                    self.attempt_read(now, id);
                }
            },
            PeerMessage::CatalogPull { after } => self.handle_pull(now, &from, after),
            PeerMessage::CatalogEntries {
                entries,
                leader,
                kept,
            } => self.handle_entries(now, &from, entries, leader, kept),
            PeerMessage::CatalogSnapshot { catalog, leader } => {
                self.handle_snapshot(now, &from, &catalog, leader)
            }
            PeerMessage::Membership(bytes) => {
                self.stats.membership_stream_bytes += bytes.len() as u64;
                if let Ok(sender) = NodeId::new(from.as_str()) {
                    self.membership.handle_stream(now, &sender, &bytes);
                }
            }
        }
    }

    fn handle_raft(&mut self, now: Duration, from: &shoal_consensus::NodeId, batch: Vec<Vec<u8>>) {
        if self.raft.is_none() {
            // A seed group exists and talks to us: we are a seed it knows
            // (added by an operator, or formed while we were slow). Join it
            // with our empty store; the leader sends a snapshot.
            if !self.bootstrap.join_existing(&self.node_id, &mut self.raft) {
                self.stats.messages_dropped += 1;
                return;
            }
        }
        let raft = self.raft.as_mut().expect("created above");
        raft.begin_batch();
        for bytes in batch {
            match shoal_consensus::decode_message(&bytes) {
                Ok(message) => {
                    if Some(&message.from) == raft.leader().as_ref() {
                        self.leader_heard_at = Some(now);
                    }
                    if let Err(error) = raft.step(message) {
                        tracing::debug!(%error, %from, "raft step");
                    }
                }
                Err(_) => self.stats.messages_dropped += 1,
            }
        }
        if let Err(error) = raft.end_batch() {
            tracing::error!(%error, "raft batch");
        }
        self.after_raft();
    }

    fn handle_submit(&mut self, from: &shoal_consensus::NodeId, bytes: &[u8]) {
        let Ok(command) = Command::decode(bytes) else {
            self.stats.messages_dropped += 1;
            return;
        };
        let request_id = command.request_id.clone();
        if !self.is_leader() {
            let leader = self.leader();
            self.send(
                from,
                PeerMessage::SubmitResult {
                    request_id,
                    outcome: SubmitOutcome::NotLeader { leader },
                },
            );
            return;
        }
        // A retry of something already applied gets the first result at once.
        if let Some((index, result)) = self.catalog().result_of(&request_id) {
            let outcome = SubmitOutcome::Applied {
                index,
                result: result.clone(),
            };
            self.send(
                from,
                PeerMessage::SubmitResult {
                    request_id,
                    outcome,
                },
            );
            return;
        }
        if self.proposed_for.contains_key(&request_id) {
            return; // already proposed; the result follows when it applies
        }
        self.stats.proposed_for_others += 1;
        let outcome = self.lead(
            &SubmissionKind::Write(command),
            &request_id,
            Origin::Remote(from.clone()),
        );
        self.after_raft();
        if let Some(outcome) = outcome {
            self.send(
                from,
                PeerMessage::SubmitResult {
                    request_id,
                    outcome,
                },
            );
        }
    }

    fn handle_submit_result(
        &mut self,
        now: Duration,
        request_id: RequestId,
        outcome: SubmitOutcome,
    ) {
        let Some(submission) = self.submissions.get_mut(&request_id) else {
            return;
        };
        match outcome {
            SubmitOutcome::Applied { index, result } => {
                submission.applied = Some((index, result));
                self.settle();
                // The copy may lag the leader: make sure it is pulling.
                self.pull_catalog(now);
            }
            SubmitOutcome::NotLeader { leader } => {
                if self.raft.is_none() && leader.is_some() {
                    self.set_leader_hint(leader);
                }
                if let Some(submission) = self.submissions.get_mut(&request_id) {
                    submission.retry_at = now + self.config.request_retry / 4;
                }
            }
            outcome @ (SubmitOutcome::Accepted | SubmitOutcome::Failed { .. }) => {
                self.complete(request_id, outcome);
            }
        }
    }

    /// Runs after every input to the Raft node: takes its outputs.
    fn after_raft(&mut self) {
        let Some(raft) = self.raft.as_mut() else {
            return;
        };
        let outputs = raft.drain_outputs();
        let mut batches: BTreeMap<shoal_consensus::NodeId, (Vec<Vec<u8>>, bool)> = BTreeMap::new();
        let mut applied_any = false;
        for output in outputs {
            match output {
                Output::Send(message) => {
                    let snapshot = message.is_snapshot();
                    match shoal_consensus::encode_message(&message) {
                        Ok(bytes) => {
                            let batch = batches.entry(message.to.clone()).or_default();
                            batch.0.push(bytes);
                            batch.1 |= snapshot;
                        }
                        Err(error) => tracing::warn!(%error, "raft message does not encode"),
                    }
                }
                Output::Applied(applied) => {
                    applied_any = true;
                    self.applied_locally(applied);
                }
                Output::ReadReady { context, index } => match parse_read_context(&context) {
                    Some((None, id)) => {
                        if let Some(read) = self.reads.get_mut(&id) {
                            read.confirmed = Some(index);
                        }
                    }
                    Some((Some(origin), id)) => {
                        let leader = self.leader();
                        self.send(
                            &origin,
                            PeerMessage::ReadBarrierDone {
                                id,
                                index: Some(index),
                                leader,
                            },
                        );
                    }
                    None => {}
                },
                Output::RoleChanged { role, term, leader } => {
                    self.stats.leader_changes += 1;
                    tracing::info!(?role, term = term.0, leader = ?leader.as_ref().map(|l| l.as_str()), "raft role");
                    if role == RaftRole::Leader {
                        self.leader_heard_at = Some(self.now);
                    }
                }
                Output::MembershipChanged { .. } | Output::SnapshotInstalled { .. } => {
                    applied_any = true
                }
            }
        }
        for (to, (batch, carries_snapshot)) in batches {
            self.send_with(&to, PeerMessage::Raft(batch), carries_snapshot);
        }
        if applied_any {
            self.serve_parked();
        }
        self.settle();
    }

    /// The log-store sync the Raft node waits on, to run off the event loop
    /// (a store that syncs in the background); then [`NodeCore::finish_sync`].
    pub fn take_sync(&mut self) -> Option<shoal_consensus::PendingSync> {
        self.raft.as_mut()?.take_sync()
    }

    /// A sync from [`NodeCore::take_sync`] finished with `result`.
    pub fn finish_sync(
        &mut self,
        now: Duration,
        ticket: shoal_consensus::SyncTicket,
        result: Result<(), shoal_consensus::Error>,
    ) {
        self.advance(now);
        if let Some(raft) = &mut self.raft
            && let Err(error) = raft.finish_sync(ticket, result)
        {
            tracing::error!(%error, "raft sync");
        }
        self.after_raft();
    }

    /// The driver could not deliver a snapshot to `to` (or did): tell Raft.
    pub fn report_snapshot(
        &mut self,
        now: Duration,
        to: &shoal_consensus::NodeId,
        delivered: bool,
    ) {
        self.advance(now);
        if let Some(raft) = &mut self.raft {
            let _ = raft.report_snapshot(to, delivered);
            if !delivered {
                let _ = raft.report_unreachable(to);
            }
        }
        self.after_raft();
    }

    // ----- catalog replication -----

    /// A copy's pull: answered at once if there is news, else parked until
    /// the next commit or `catalog_wait`. A pull answered with entries that
    /// bring the copy up to date stays parked, at their last index, for the
    /// rest of its wait: the copy is sent each commit as it applies, without
    /// pulling again (a pull per copy per `catalog_wait` instead of one per
    /// commit).
    fn handle_pull(&mut self, now: Duration, from: &shoal_consensus::NodeId, after: CatalogIndex) {
        // This pull replaces any earlier one of the copy's; it stays parked
        // if there is nothing to send yet, or if its answer is kept and sent.
        self.pulls_parked.remove(from);
        let may_keep = self.pulls_parked.len() < PULLS_PARKED_MAX;
        match self.pull_answer(after, may_keep) {
            Some(answer) => {
                if self.queue(from, answer.kind, answer.bytes, false)
                    && let Some(index) = answer.kept_at
                {
                    self.pulls_parked
                        .insert(from.clone(), (index, now + self.config.catalog_wait));
                }
            }
            None => self.park(now, from, after),
        }
    }

    /// The encoded answer to a pull for what follows `after`: entries, or the
    /// whole catalog if they are gone from the log; `None` when there is
    /// nothing to send yet (no group here, or nothing after `after`). With
    /// `may_keep`, entries that reach this seed's catalog are sent as kept
    /// (see [`NodeCore::handle_pull`]).
    fn pull_answer(&self, after: CatalogIndex, may_keep: bool) -> Option<PullAnswer> {
        let leader = self.leader();
        let raft = self.raft.as_ref()?;
        let mut kept_at = None;
        let message = match raft.entries_after(after, CATALOG_BATCH_BYTES_MAX) {
            None => PeerMessage::CatalogSnapshot {
                catalog: raft.catalog().encode(),
                leader,
            },
            Some(entries) if entries.is_empty() => return None,
            Some(entries) => {
                let last = entries.last().map(|entry| entry.index);
                if may_keep && last >= Some(raft.catalog().applied_index()) {
                    kept_at = last;
                }
                PeerMessage::CatalogEntries {
                    entries,
                    leader,
                    kept: kept_at.is_some(),
                }
            }
        };
        Some(PullAnswer {
            kind: message.kind(),
            bytes: Bytes::from(message.encode()),
            kept_at,
        })
    }

    fn park(&mut self, now: Duration, from: &shoal_consensus::NodeId, after: CatalogIndex) {
        if self.pulls_parked.len() >= PULLS_PARKED_MAX && !self.pulls_parked.contains_key(from) {
            self.answer_empty(from);
            return;
        }
        self.pulls_parked
            .insert(from.clone(), (after, now + self.config.catalog_wait));
    }

    /// Answers a pull with no entries (up to date, as far as this seed
    /// knows), not kept: the copy pulls again.
    fn answer_empty(&mut self, to: &shoal_consensus::NodeId) {
        let leader = self.leader();
        self.send(
            to,
            PeerMessage::CatalogEntries {
                entries: Vec::new(),
                leader,
                kept: false,
            },
        );
    }

    fn serve_parked(&mut self) {
        let Some(raft) = &self.raft else { return };
        let applied = raft.catalog().applied_index();
        let ready: Vec<(shoal_consensus::NodeId, CatalogIndex, Duration)> = self
            .pulls_parked
            .iter()
            .filter(|(_, (after, _))| *after < applied)
            .map(|(node, (after, deadline))| (node.clone(), *after, *deadline))
            .collect();
        // Most copies wait at the same index, and get the same answer: it is
        // built and encoded once per index, and its bytes are shared. Each
        // pull answered is parked again (kept) or removed, so the parked
        // pulls never outgrow their bound here.
        let mut answers: BTreeMap<CatalogIndex, Option<PullAnswer>> = BTreeMap::new();
        for (node, after, deadline) in ready {
            self.pulls_parked.remove(&node);
            let answer = answers
                .entry(after)
                .or_insert_with(|| self.pull_answer(after, true))
                .clone();
            debug_assert!(
                answer == self.pull_answer(after, true),
                "nothing between two answers changes what a pull is answered"
            );
            match answer {
                Some(answer) => {
                    // A kept pull keeps its deadline: a copy that has moved
                    // to another seed stops being fed within `catalog_wait`.
                    // Entries that could not be sent end it: its empty
                    // answer at the deadline would tell the copy it is up to
                    // date when it is not (it times out and pulls again).
                    if self.queue(&node, answer.kind, answer.bytes, false)
                        && let Some(index) = answer.kept_at
                    {
                        self.pulls_parked.insert(node.clone(), (index, deadline));
                    }
                }
                None => self.park(self.now, &node, after),
            }
        }
    }

    fn handle_entries(
        &mut self,
        now: Duration,
        from: &shoal_consensus::NodeId,
        entries: Vec<shoal_consensus::CommittedEntry>,
        leader: Option<shoal_consensus::NodeId>,
        kept: bool,
    ) {
        if self.raft.is_some() {
            return; // seeds follow the log through Raft
        }
        let our_pull_sent_at = self
            .pull_in_flight
            .as_ref()
            .filter(|(node, _)| node == from)
            .map(|(_, sent_at)| *sent_at);
        if our_pull_sent_at.is_some() {
            self.pull_in_flight = None;
        }
        if leader.is_some() {
            self.set_leader_hint(leader);
        }
        let mut in_order = true;
        for entry in &entries {
            let next = CatalogIndex(self.copy.applied_index().0 + 1);
            if entry.index < next {
                continue;
            }
            if entry.index > next {
                in_order = false;
                break;
            }
            if let Some(applied) = self.copy.apply_committed(entry) {
                self.applied_locally(applied);
            }
        }
        if in_order {
            self.copy_confirmed_at = Some(now);
        }
        // A kept pull goes on waiting at the seed, since it was sent (its
        // timeout still runs from then); a gap asks afresh.
        if let Some(sent_at) = our_pull_sent_at
            && kept
            && in_order
        {
            self.pull_in_flight = Some((from.clone(), sent_at));
        }
        self.settle();
        self.pull_catalog(now);
    }

    fn handle_snapshot(
        &mut self,
        now: Duration,
        from: &shoal_consensus::NodeId,
        bytes: &[u8],
        leader: Option<shoal_consensus::NodeId>,
    ) {
        if self.raft.is_some() {
            return;
        }
        if self
            .pull_in_flight
            .as_ref()
            .is_some_and(|(node, _)| node == from)
        {
            self.pull_in_flight = None;
        }
        match Catalog::decode(bytes) {
            Ok(catalog) if catalog.applied_index() >= self.copy.applied_index() => {
                self.stats.catalog_snapshots += 1;
                self.copy = catalog;
                self.copy_confirmed_at = Some(now);
                if leader.is_some() {
                    self.set_leader_hint(leader);
                }
                // Writes that committed inside the snapshot finish now.
                let ids: Vec<RequestId> = self.submissions.keys().cloned().collect();
                for request_id in ids {
                    if let Some((index, result)) = self.copy.result_of(&request_id) {
                        let result = result.clone();
                        if let Some(submission) = self.submissions.get_mut(&request_id) {
                            submission.applied = Some((index, result));
                        }
                    }
                }
                self.settle();
            }
            Ok(_) => {}
            Err(_) => self.stats.messages_dropped += 1,
        }
        self.pull_catalog(now);
    }

    /// Keeps one catalog pull outstanding on an agent without a Raft node.
    fn pull_catalog(&mut self, now: Duration) {
        if self.raft.is_some() {
            return;
        }
        if let Some((_, sent_at)) = &self.pull_in_flight
            && now.saturating_sub(*sent_at) >= self.config.catalog_pull_timeout
        {
            self.pull_in_flight = None;
        }
        // A pull parked at a seed that SWIM now reports down will never be
        // answered; neither will a write forwarded to a dead leader. Checked
        // when the seeds SWIM sees or the leader hint changed (a pull's target
        // is reachable when it is chosen), not on every tick.
        let seeds = self.membership.active_version(Role::Seed);
        if self.seeds_checked != Some(seeds) {
            self.seeds_checked = Some(seeds);
            if self
                .pull_in_flight
                .as_ref()
                .is_some_and(|(node, _)| !self.seed_reachable(node))
            {
                self.pull_in_flight = None;
            }
            if self
                .leader_hint
                .as_ref()
                .is_some_and(|leader| !self.seed_reachable(leader))
            {
                self.leader_hint = None;
            }
        }
        if self.pull_in_flight.is_some() {
            return;
        }
        // Past the check above, a hint names a seed SWIM has not declared
        // down: a new hint resets the check, and so does any change of the
        // seeds SWIM sees.
        let target = match &self.leader_hint {
            Some(leader) => {
                debug_assert!(self.seed_reachable(leader), "hint checked above");
                Some(leader.clone())
            }
            None => {
                let seeds = self.reachable_seeds();
                let pick = (!seeds.is_empty()).then(|| self.rng.random_range(0..seeds.len()));
                pick.and_then(|pick| seeds.into_iter().nth(pick))
            }
        };
        let Some(target) = target.filter(|target| *target != self.node_id) else {
            return;
        };
        self.pull_in_flight = Some((target.clone(), now));
        let after = self.copy.applied_index();
        self.send(&target, PeerMessage::CatalogPull { after });
    }

    /// Where a copy sends writes and catalog pulls first; checked against
    /// SWIM at the next tick.
    ///
    /// A hint that did not change was checked already (and is checked
    /// again when the seeds SWIM sees change), so only a new one resets the
    /// check: every batch of entries names the leader.
    fn set_leader_hint(&mut self, leader: Option<shoal_consensus::NodeId>) {
        if self.leader_hint != leader {
            self.leader_hint = leader;
            self.seeds_checked = None;
        }
    }

    /// Seeds seen alive through SWIM (this agent included if it is one).
    /// Walks the member table: for the bootstrap only.
    fn alive_seeds(&self) -> BTreeSet<shoal_consensus::NodeId> {
        self.membership
            .alive_with_role(Role::Seed)
            .filter_map(|node_id| catalog_id(node_id).ok())
            .collect()
    }

    /// Seeds SWIM has not declared down (alive or suspect; this agent
    /// included if it is one), from the membership's index: asked every
    /// Raft tick, so it must not walk the member table. A suspect seed
    /// keeps a parked catalog pull until it is declared down or the pull
    /// times out.
    fn reachable_seeds(&self) -> BTreeSet<shoal_consensus::NodeId> {
        self.membership
            .active_with_role(Role::Seed)
            .filter_map(|node_id| catalog_id(node_id).ok())
            .collect()
    }

    /// Whether `node` is among [`NodeCore::reachable_seeds`], in O(log n).
    fn seed_reachable(&self, node: &shoal_consensus::NodeId) -> bool {
        NodeId::new(node.as_str())
            .is_ok_and(|node_id| self.membership.is_active_with_role(&node_id, Role::Seed))
    }

    // ----- registration -----

    /// A catalog index that changes whenever a node record may have: the
    /// last entry that changed one, or (for a catalog restored from a
    /// snapshot of a format that did not say) every applied entry.
    fn nodes_version(&self) -> CatalogIndex {
        let catalog = self.catalog();
        match catalog.nodes_changed_at() {
            CatalogIndex(0) => catalog.applied_index(),
            changed => changed,
        }
    }

    /// Registers this agent in the catalog (and marks it active) once a
    /// leader is known; retried until the catalog shows it.
    fn register(&mut self, now: Duration) {
        let applied = self.catalog().applied_index();
        let nodes_version = self.nodes_version();
        if self.leader().is_none() || applied.0 == 0 || self.registered_at == Some(nodes_version) {
            return;
        }
        let generation = shoal_consensus::Generation(self.config.identity.generation.0);
        // The usual case: registered and active, nothing to do until the
        // catalog changes.
        if self
            .catalog()
            .state()
            .nodes
            .get(&self.node_id)
            .is_some_and(|record| {
                record.generation >= generation
                    && !matches!(record.status, NodeStatus::Removed | NodeStatus::Joining)
            })
        {
            self.registered_at = Some(nodes_version);
            return;
        }
        let identity = self.config.identity.clone();
        let record = self.catalog().state().nodes.get(&self.node_id).cloned();
        let registered = record.as_ref().is_some_and(|record| {
            record.generation >= generation && record.status != NodeStatus::Removed
        });
        let actor = shoal_consensus::Actor(format!("agent:{}", self.node_id));
        let tag = format!("{}.{}", self.node_id, identity.generation.0);
        if !registered {
            let Ok(request_id) = RequestId::new(format!("register.{tag}")) else {
                return;
            };
            if self.submissions.contains_key(&request_id) {
                return;
            }
            let op = Op::RegisterNode {
                node_id: self.node_id.clone(),
                address: identity.addr.to_string(),
                labels: identity.meta.labels.clone(),
                role: match identity.meta.role {
                    Role::Seed => NodeRole::Seed,
                    Role::Member => NodeRole::Member,
                },
                generation,
                capacity: self.config.capacity,
            };
            let command = Command {
                request_id,
                actor,
                time_unix_ms: self.wall_unix_ms(now),
                op,
            };
            self.submit_internal(now, command);
        } else if record.is_some_and(|record| record.status == NodeStatus::Joining) {
            let Ok(request_id) = RequestId::new(format!("activate.{tag}")) else {
                return;
            };
            if self.submissions.contains_key(&request_id) {
                return;
            }
            let op = Op::SetNodeStatus {
                node_id: self.node_id.clone(),
                status: NodeStatus::Active,
            };
            let command = Command {
                request_id,
                actor,
                time_unix_ms: self.wall_unix_ms(now),
                op,
            };
            self.submit_internal(now, command);
        }
    }

    /// Submits a write of the agent's own. Its completion is reported like any
    /// other; no client waits on it, so the driver ignores it.
    fn submit_internal(&mut self, now: Duration, command: Command) {
        self.submit(now, command);
    }

    // ----- sending -----

    fn send(&mut self, to: &shoal_consensus::NodeId, message: PeerMessage) {
        self.send_with(to, message, false);
    }

    fn send_with(
        &mut self,
        to: &shoal_consensus::NodeId,
        message: PeerMessage,
        carries_snapshot: bool,
    ) {
        let kind = message.kind();
        if let Some(addr) = self.destination(to, kind) {
            let bytes = Bytes::from(message.encode());
            self.push_outgoing(to, addr, kind, bytes, carries_snapshot);
        }
    }

    /// Queues an encoded message for `to`; `false` if it was dropped (see
    /// [`NodeCore::destination`]).
    fn queue(
        &mut self,
        to: &shoal_consensus::NodeId,
        kind: &'static str,
        bytes: Bytes,
        carries_snapshot: bool,
    ) -> bool {
        let Some(addr) = self.destination(to, kind) else {
            return false;
        };
        self.push_outgoing(to, addr, kind, bytes, carries_snapshot);
        true
    }

    /// Where to send a message of `kind` to `to`; `None` (the message is
    /// dropped) if its address is unknown or the outbox is full.
    fn destination(&self, to: &shoal_consensus::NodeId, kind: &'static str) -> Option<SocketAddr> {
        let Some(addr) = self.addr_of(to) else {
            tracing::debug!(%to, kind, "no address known; message dropped");
            return None;
        };
        if self.outbox.len() >= OUTBOX_MAX {
            tracing::warn!("peer outbox full; message dropped");
            return None;
        }
        Some(addr)
    }

    fn push_outgoing(
        &mut self,
        to: &shoal_consensus::NodeId,
        addr: SocketAddr,
        kind: &'static str,
        bytes: Bytes,
        carries_snapshot: bool,
    ) {
        *self.stats.messages_out.entry(kind).or_default() += 1;
        self.outbox.push_back(Outgoing {
            to: to.clone(),
            addr,
            kind,
            bytes,
            carries_snapshot,
        });
    }

    /// Where `node` listens: from the active members, else from the catalog.
    fn addr_of(&self, node: &shoal_consensus::NodeId) -> Option<SocketAddr> {
        NodeId::new(node.as_str())
            .ok()
            .and_then(|member| self.membership.active_addr(&member))
            .or_else(|| {
                self.catalog()
                    .state()
                    .nodes
                    .get(node)
                    .and_then(|record| record.address.parse().ok())
            })
    }

    /// The next peer message to send on a stream.
    pub fn poll_message(&mut self) -> Option<Outgoing> {
        while let Some(stream) = self.membership.poll_stream() {
            let Ok(to) = catalog_id(&stream.node_id) else {
                continue;
            };
            self.stats.membership_stream_bytes += stream.payload.len() as u64;
            let message = PeerMessage::Membership(stream.payload);
            let bytes = Bytes::from(message.encode());
            self.push_outgoing(&to, stream.addr, message.kind(), bytes, false);
        }
        self.outbox.pop_front()
    }
}

/// The context of a Raft read barrier: who asked, and their barrier id.
fn read_context(origin: Option<&shoal_consensus::NodeId>, id: u64) -> Vec<u8> {
    rmp_serde::to_vec(&(origin, id)).expect("read contexts always encode")
}

fn parse_read_context(bytes: &[u8]) -> Option<(Option<shoal_consensus::NodeId>, u64)> {
    rmp_serde::from_slice(bytes).ok()
}
