//! [`RaftNode`]: raft-rs's `RawNode` behind a sans-IO wrapper that owns the catalog.
//!
//! Inputs are method calls (`tick`, `step`, `propose`, `read_index`,
//! `propose_conf_change`, `transfer_leader`, `report_*`); outputs queue up as
//! [`Output`]s the caller drains. After every input the node handles raft's `Ready`
//! with raft-rs's asynchronous protocol (`advance_append_async`, `on_persist_ready`):
//! write the snapshot, entries and hard state to the [`LogStore`]; queue the messages
//! that depend on no write (a leader's appends, sent while its own disk syncs: raft
//! thesis §10.2.1); apply the committed entries raft hands out (only ones already
//! durable here); and hold the messages that depend on the writes (votes, acks) until
//! a **sync** covering those writes has finished. So no message that depends on a
//! write leaves before that write is durable. The node runs each sync itself, or —
//! when its store [syncs in the background](LogStore::syncs_in_background) — hands it
//! to the caller ([`RaftNode::take_sync`], [`RaftNode::finish_sync`]), which runs it
//! on another thread while the node takes further inputs; writes made meanwhile go
//! into the next sync, so one fsync serves every write that arrived during the
//! previous one.
//!
//! **Election timeouts** are drawn from the node's own ChaCha RNG, seeded by the
//! caller. raft-rs draws its randomized timeout from `thread_rng` whenever it resets
//! its election timer; it also zeroes `election_elapsed` then. After every input, if
//! `election_elapsed` is 0 the node overwrites the timeout with a draw from
//! `[election_ticks, 2 * election_ticks)` from its RNG. (It also redraws after a
//! heartbeat zeroed the counter; that leaves the distribution of the time from the
//! last heartbeat to the election unchanged.) raft's own draw is thus never used, and
//! one seed replays one history.
//!
//! **Names.** raft-rs ids are [`RaftId::of`] the node names. The node learns names
//! from the bootstrap voter set, from the names carried in membership-change entries
//! and from the envelopes of received messages; a message to an id with no known name
//! is dropped (raft retransmits).
//!
//! **Snapshots.** Every [`RaftConfig::snapshot_interval_entries`] applied entries the
//! node saves the encoded catalog as a snapshot and compacts the log below
//! `snapshot index + 1 - log_retained_entries`. A node restarted from its store
//! restores the catalog from the last snapshot and re-applies the committed entries
//! after it (emitting their `Applied` outputs again).
//!
//! A storage error stops the node for good ([`Error::Stopped`] afterwards): Raft
//! must not continue on a store whose contents are unknown.

// raft-rs's protobuf types are built by default-then-assign, as raft-rs itself does.
#![allow(clippy::field_reassign_with_default)]

use std::collections::{BTreeMap, VecDeque};

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    Entry, EntryType, Snapshot,
};
use raft::{RawNode, StateRole};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::catalog::{AppliedCommand, Catalog, Command, CommittedEntry, CommittedKind, SeedGroup};
use crate::codec::RaftMessage;
use crate::error::Error;
use crate::ids::{CatalogIndex, NodeId, RaftId, Term};
use crate::storage::{LogStore, SyncJob};

/// Most linearizable reads waiting at once (requested and not yet ready).
pub const READS_PENDING_MAX: usize = 1024;
/// Longest read context, in bytes.
pub const READ_CONTEXT_BYTES_MAX: usize = 256;
/// Most `Send` outputs queued; beyond it new messages are dropped (and counted) —
/// raft recovers from lost messages by retransmitting. Other outputs are never dropped.
pub const OUTPUT_MESSAGES_PENDING_MAX: usize = 100_000;
/// Most changes in one membership change.
pub const CONF_CHANGES_MAX: usize = 8;
/// Most applied entries kept in memory to ship to the catalog copies of non-seed
/// agents ([`RaftNode::entries_after`]); a copy further behind gets a snapshot.
pub const RECENT_ENTRIES_MAX: usize = 10_000;
/// Most bytes of applied entries kept for the same purpose.
pub const RECENT_BYTES_MAX: usize = 32 << 20;

/// The index and term of the genesis snapshot every bootstrapped seed starts from.
pub const GENESIS_INDEX: CatalogIndex = CatalogIndex(1);
/// See [`GENESIS_INDEX`].
pub const GENESIS_TERM: Term = Term(1);

/// Configuration of one Raft node. Times are in ticks; the driver decides how long a
/// tick is (the agent: 100 ms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftConfig {
    /// This node's name.
    pub node_id: NodeId,
    /// A follower that hears no leader for a random time in `[election_ticks,
    /// 2 * election_ticks)` starts an election. Default 10; must exceed
    /// `heartbeat_ticks`. Raise it on slow or lossy networks.
    pub election_ticks: usize,
    /// The leader sends heartbeats every this many ticks. Default 2; at least 1.
    pub heartbeat_ticks: usize,
    /// Largest batch of entries in one append message, in bytes. Default 1 MiB.
    pub message_bytes_max: u64,
    /// Most append messages in flight to one follower. Default 256; at least 1.
    pub inflight_messages_max: usize,
    /// Largest total size of proposed but uncommitted entries, in bytes; proposals
    /// beyond it are dropped ([`Error::ProposalDropped`]). Default 64 MiB.
    pub uncommitted_bytes_max: u64,
    /// Take a snapshot every this many applied entries. Default 100,000 (etcd's
    /// `--snapshot-count` default too); at least 1. A snapshot encodes the whole
    /// catalog on the event loop — with a full 100,000-request dedup window about
    /// 20 MB and 80 ms here — so taking one every second or two under load shows
    /// up in tail latency. The log between snapshots stays on disk and in memory
    /// (a few hundred bytes per entry).
    pub snapshot_interval_entries: u64,
    /// Entries kept below a snapshot so slightly lagging followers can catch up
    /// without a snapshot. Default 100.
    pub log_retained_entries: u64,
}

impl RaftConfig {
    /// Defaults for a LAN seed group.
    pub fn new(node_id: NodeId) -> RaftConfig {
        RaftConfig {
            node_id,
            election_ticks: 10,
            heartbeat_ticks: 2,
            message_bytes_max: 1024 * 1024,
            inflight_messages_max: 256,
            uncommitted_bytes_max: 64 * 1024 * 1024,
            snapshot_interval_entries: 100_000,
            log_retained_entries: 100,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: &str| {
            Err(Error::InvalidConfig {
                reason: reason.to_owned(),
            })
        };
        if self.heartbeat_ticks == 0 {
            return invalid("heartbeat_ticks must be at least 1");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return invalid("election_ticks must exceed heartbeat_ticks");
        }
        if self.inflight_messages_max == 0 {
            return invalid("inflight_messages_max must be at least 1");
        }
        if self.snapshot_interval_entries == 0 {
            return invalid("snapshot_interval_entries must be at least 1");
        }
        Ok(())
    }
}

/// A Raft role. Not a [`crate::NodeRole`] (seed/member) nor a [`crate::ReplicaRole`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Polling peers before a real election (pre-vote).
    PreCandidate,
    /// Running an election.
    Candidate,
    /// Leads the group.
    Leader,
}

impl From<StateRole> for Role {
    fn from(role: StateRole) -> Role {
        match role {
            StateRole::Follower => Role::Follower,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Candidate => Role::Candidate,
            StateRole::Leader => Role::Leader,
        }
    }
}

/// One membership change of the seed group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", content = "node_id", rename_all = "snake_case")]
pub enum MembershipChange {
    /// Add a voter, or promote a learner.
    AddVoter(NodeId),
    /// Add a learner, or demote a voter.
    AddLearner(NodeId),
    /// Remove a voter or learner.
    Remove(NodeId),
}

impl MembershipChange {
    fn node_id(&self) -> &NodeId {
        match self {
            MembershipChange::AddVoter(node)
            | MembershipChange::AddLearner(node)
            | MembershipChange::Remove(node) => node,
        }
    }
}

/// Something the caller must act on, drained with [`RaftNode::drain_outputs`].
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send this message to `message.to` (encode it with [`crate::encode_message`]).
    /// Loss, duplication and reordering are tolerated.
    Send(RaftMessage),
    /// A committed command was applied to the catalog. Emitted on every node; the node
    /// that accepted the proposal matches `request_id` to answer its client.
    Applied(AppliedCommand),
    /// A membership change was applied; `seeds` is the new seed group.
    MembershipChanged {
        /// The entry's index.
        index: CatalogIndex,
        /// The group after the change.
        seeds: SeedGroup,
    },
    /// The catalog was replaced by a snapshot from the leader.
    SnapshotInstalled {
        /// The snapshot's index.
        index: CatalogIndex,
    },
    /// The linearizable read with this context may be served now: the local catalog
    /// has applied at least `index`, the commit index when the read was confirmed.
    ReadReady {
        /// The context given to [`RaftNode::read_index`].
        context: Vec<u8>,
        /// The confirmed commit index.
        index: CatalogIndex,
    },
    /// The role or the known leader changed.
    RoleChanged {
        /// The new role.
        role: Role,
        /// The current term.
        term: Term,
        /// The leader, if known.
        leader: Option<NodeId>,
    },
}

/// Counters of conditions the node handled by dropping something.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounters {
    /// Messages dropped because the receiver's name was unknown.
    pub messages_dropped_unknown_peer: u64,
    /// Messages dropped because the output queue was full.
    pub messages_dropped_queue_full: u64,
    /// Snapshots taken.
    pub snapshots_taken: u64,
}

/// Writes the genesis state into an empty store: a snapshot at [`GENESIS_INDEX`]
/// holding the genesis catalog, with `voters` as the configuration.
///
/// Every seed of a new cluster calls this with the same voter set (in any order) and
/// so starts from the same state, with no message exchanged. A node that joins later
/// starts from an empty store instead and receives a snapshot from the leader.
pub fn bootstrap<S: LogStore>(storage: &mut S, voters: &[NodeId]) -> Result<(), Error> {
    let state = storage.initial_state().map_err(Error::storage)?;
    let last_index = storage.last_index().map_err(Error::storage)?;
    if state.initialized() || last_index > 0 {
        return Err(Error::AlreadyBootstrapped);
    }
    if voters.is_empty() {
        return Err(Error::InvalidConfig {
            reason: "bootstrap needs at least one voter".to_owned(),
        });
    }
    let catalog = Catalog::genesis(voters, GENESIS_INDEX, GENESIS_TERM)?;
    let mut conf_state = ConfState::default();
    conf_state.voters = catalog
        .seeds()
        .voters
        .iter()
        .map(|v| RaftId::of(v).0)
        .collect();
    let mut snapshot = Snapshot::default();
    snapshot.data = catalog.encode().into();
    let metadata = snapshot.mut_metadata();
    metadata.index = GENESIS_INDEX.0;
    metadata.term = GENESIS_TERM.0;
    metadata.set_conf_state(conf_state);
    storage.install_snapshot(&snapshot)?;
    storage.sync()
}

/// A seed's Raft node and the catalog it applies to. See the module docs.
pub struct RaftNode<S: LogStore> {
    raw: RawNode<S>,
    config: RaftConfig,
    raft_id: RaftId,
    rng: ChaCha8Rng,
    catalog: Catalog,
    peers: BTreeMap<RaftId, NodeId>,
    outputs: VecDeque<Output>,
    n_messages_queued: usize,
    reads_ready: Vec<(Vec<u8>, CatalogIndex)>,
    soft_state: (Role, u64),
    snapshot_index: u64,
    counters: NodeCounters,
    stopped: bool,
    /// Recently applied entries, oldest first, for catalog copies.
    recent: VecDeque<CommittedEntry>,
    recent_bytes: usize,
    /// Inside [`RaftNode::begin_batch`]: readies wait for [`RaftNode::end_batch`].
    batching: bool,
    syncs: Syncs,
}

/// Where the node's writes stand against its syncs.
#[derive(Debug, Default)]
struct Syncs {
    /// Writes that must be durable before what depends on them, counted.
    written: u64,
    /// How many of them a finished sync covers.
    synced: u64,
    /// The sync running now (at most one), by how many writes it covers.
    running: Option<u64>,
    /// Readies whose messages wait for a sync, oldest first.
    waiting: VecDeque<WaitingReady>,
}

/// A handled ready whose messages wait for its writes to be durable.
#[derive(Debug)]
struct WaitingReady {
    number: u64,
    /// Durable once `Syncs::synced` reaches this.
    needs: u64,
    messages: Vec<raft::eraftpb::Message>,
}

/// A sync the caller runs for the node ([`RaftNode::take_sync`]): run `job` (on
/// any thread), then hand `ticket` and the job's result to [`RaftNode::finish_sync`].
#[derive(Debug)]
pub struct PendingSync {
    /// What the sync covers.
    pub ticket: SyncTicket,
    /// The slow part.
    pub job: SyncJob,
}

/// Which writes a sync covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncTicket(u64);

impl<S: LogStore> std::fmt::Debug for RaftNode<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("node_id", &self.config.node_id)
            .field("role", &self.role())
            .field("term", &self.term())
            .field("commit", &self.commit_index())
            .field("applied", &self.applied_index())
            .finish_non_exhaustive()
    }
}

impl<S: LogStore> RaftNode<S> {
    /// Opens a node on `storage`: a bootstrapped store (see [`bootstrap`]), a store of
    /// a restarted node, or an empty store (a node that will join). Election timeouts
    /// come from a ChaCha8 RNG seeded with `rng_seed`.
    pub fn new(config: RaftConfig, storage: S, rng_seed: u64) -> Result<RaftNode<S>, Error> {
        config.validate()?;
        let raft_id = RaftId::of(&config.node_id);
        let snapshot = storage.last_snapshot();
        let snapshot_index = snapshot.get_metadata().index;
        let catalog = if snapshot_index == 0 {
            Catalog::empty()
        } else {
            let catalog = Catalog::decode(&snapshot.data)?;
            if catalog.applied_index().0 != snapshot_index {
                return Err(Error::Corrupt {
                    reason: format!(
                        "snapshot at {snapshot_index} holds a catalog at {}",
                        catalog.applied_index()
                    ),
                });
            }
            catalog
        };
        let raft_config = raft::Config {
            id: raft_id.0,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: catalog.applied_index().0,
            max_size_per_msg: config.message_bytes_max,
            max_inflight_msgs: config.inflight_messages_max,
            check_quorum: true,
            pre_vote: true,
            max_uncommitted_size: config.uncommitted_bytes_max,
            ..raft::Config::default()
        };
        raft_config.validate().map_err(|err| Error::InvalidConfig {
            reason: err.to_string(),
        })?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, storage, &logger).map_err(Error::storage)?;
        let mut peers = catalog.seeds().names.clone();
        peers.insert(raft_id, config.node_id.clone());
        let mut node = RaftNode {
            soft_state: (Role::from(raw.raft.state), raw.raft.leader_id),
            raw,
            config,
            raft_id,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            catalog,
            peers,
            outputs: VecDeque::new(),
            n_messages_queued: 0,
            reads_ready: Vec::new(),
            snapshot_index,
            counters: NodeCounters::default(),
            stopped: false,
            recent: VecDeque::new(),
            recent_bytes: 0,
            batching: false,
            syncs: Syncs::default(),
        };
        node.after_input()?;
        Ok(node)
    }

    // ----- inputs -------------------------------------------------------------------

    /// Advances Raft time by one tick.
    pub fn tick(&mut self) -> Result<(), Error> {
        let _span = self.span("tick").entered();
        self.check_running()?;
        self.raw.tick();
        self.after_input()
    }

    /// Handles a message from a peer. Messages for another node, or whose names and
    /// ids disagree, are refused with [`Error::Misrouted`]; nothing changes then.
    pub fn step(&mut self, message: RaftMessage) -> Result<(), Error> {
        let _span = self.span("step").entered();
        self.check_running()?;
        if message.to != self.config.node_id || message.message.to != self.raft_id.0 {
            return Err(Error::Misrouted {
                reason: format!("message for {} reached {}", message.to, self.config.node_id),
            });
        }
        let from_id = RaftId::of(&message.from);
        if message.message.from != from_id.0 {
            return Err(Error::Misrouted {
                reason: format!("sender {} does not match its raft id", message.from),
            });
        }
        match self.peers.get(&from_id) {
            Some(known) if *known != message.from => {
                return Err(Error::RaftIdCollision {
                    node: message.from,
                    existing: known.clone(),
                    raft_id: from_id,
                });
            }
            Some(_) => {}
            None => {
                self.peers.insert(from_id, message.from.clone());
            }
        }
        if let Err(err) = self.raw.step(message.message) {
            return Err(Error::Raft(err.to_string()));
        }
        self.after_input()
    }

    /// Proposes a command. On success it was appended to the leader's log at the
    /// returned index; its result arrives later as [`Output::Applied`] with its request
    /// id — or never, if leadership is lost first (the caller should time out and retry
    /// with the same request id, which is safe).
    pub fn propose(&mut self, command: &Command) -> Result<CatalogIndex, Error> {
        let _span = self.span("propose").entered();
        self.check_running()?;
        self.check_leader()?;
        let bytes = command.encode()?;
        self.raw
            .propose(Vec::new(), bytes)
            .map_err(|_| Error::ProposalDropped)?;
        let index = CatalogIndex(self.raw.raft.raft_log.last_index());
        self.after_input()?;
        Ok(index)
    }

    /// Starts a linearizable read. When it is confirmed and the local catalog has
    /// caught up, [`Output::ReadReady`] carries `context` back. If there is no leader
    /// the read is silently dropped by raft: the caller should time out and retry.
    pub fn read_index(&mut self, context: Vec<u8>) -> Result<(), Error> {
        let _span = self.span("read_index").entered();
        self.check_running()?;
        if context.len() > READ_CONTEXT_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "read context",
                len_bytes: context.len(),
                len_max_bytes: READ_CONTEXT_BYTES_MAX,
            });
        }
        if self.raw.raft.pending_read_count() + self.reads_ready.len() >= READS_PENDING_MAX {
            return Err(Error::ReadsPendingFull);
        }
        self.raw.read_index(context);
        self.after_input()
    }

    /// Proposes a membership change. One change is applied directly; several are
    /// applied through a joint configuration that raft leaves automatically. Refused
    /// while another change is in progress.
    pub fn propose_conf_change(&mut self, changes: &[MembershipChange]) -> Result<(), Error> {
        let _span = self.span("propose_conf_change").entered();
        self.check_running()?;
        self.check_leader()?;
        let invalid = |reason: String| Err(Error::InvalidConfChange { reason });
        if changes.is_empty() || changes.len() > CONF_CHANGES_MAX {
            return invalid(format!("1 to {CONF_CHANGES_MAX} changes"));
        }
        if self.raw.raft.has_pending_conf() || !self.catalog.seeds().voters_outgoing.is_empty() {
            return invalid("a membership change is already in progress".to_owned());
        }
        let mut names = self.catalog.seeds().clone();
        let mut singles = Vec::with_capacity(changes.len());
        for change in changes {
            let node = change.node_id();
            let raft_id = names.learn_name(node)?;
            if let Some(known) = self.peers.get(&raft_id)
                && known != node
            {
                return Err(Error::RaftIdCollision {
                    node: node.clone(),
                    existing: known.clone(),
                    raft_id,
                });
            }
            let seeds = self.catalog.seeds();
            let is_member = seeds.voters.contains(node) || seeds.learners.contains(node);
            let change_type = match change {
                MembershipChange::AddVoter(_) => ConfChangeType::AddNode,
                MembershipChange::AddLearner(_) => ConfChangeType::AddLearnerNode,
                MembershipChange::Remove(_) if !is_member => {
                    return invalid(format!("{node} is not a member"));
                }
                MembershipChange::Remove(_) => ConfChangeType::RemoveNode,
            };
            let mut single = ConfChangeSingle::default();
            single.node_id = raft_id.0;
            single.set_change_type(change_type);
            singles.push(single);
        }
        let context: Vec<NodeId> = changes.iter().map(|c| c.node_id().clone()).collect();
        let mut conf_change = ConfChangeV2::default();
        conf_change.set_transition(ConfChangeTransition::Auto);
        conf_change.set_changes(singles.into());
        conf_change.context = rmp_serde::to_vec(&context)
            .map_err(|err| Error::InvalidConfChange {
                reason: err.to_string(),
            })?
            .into();
        self.raw
            .propose_conf_change(Vec::new(), conf_change)
            .map_err(|_| Error::ProposalDropped)?;
        self.after_input()
    }

    /// Asks the leader to hand leadership to `target`, a voter.
    pub fn transfer_leader(&mut self, target: &NodeId) -> Result<(), Error> {
        let _span = self.span("transfer_leader").entered();
        self.check_running()?;
        self.check_leader()?;
        if !self.catalog.seeds().voters.contains(target) {
            return Err(Error::InvalidConfChange {
                reason: format!("{target} is not a voter"),
            });
        }
        self.raw.transfer_leader(RaftId::of(target).0);
        self.after_input()
    }

    /// Starts an election at once (e.g. right after bootstrap, to skip one timeout).
    pub fn campaign(&mut self) -> Result<(), Error> {
        self.check_running()?;
        self.raw
            .campaign()
            .map_err(|err| Error::Raft(err.to_string()))?;
        self.after_input()
    }

    /// Tells raft a peer could not be reached (the leader then probes it gently).
    pub fn report_unreachable(&mut self, peer: &NodeId) -> Result<(), Error> {
        self.check_running()?;
        self.raw.report_unreachable(RaftId::of(peer).0);
        self.after_input()
    }

    /// Tells raft whether a snapshot message to `peer` was delivered. The transport
    /// must report every failed snapshot send, or the leader waits on that peer.
    pub fn report_snapshot(&mut self, peer: &NodeId, delivered: bool) -> Result<(), Error> {
        self.check_running()?;
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(RaftId::of(peer).0, status);
        self.after_input()
    }

    // ----- outputs and accessors -----------------------------------------------------

    /// Takes the next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.outputs.pop_front()?;
        if matches!(output, Output::Send(_)) {
            self.n_messages_queued -= 1;
        }
        Some(output)
    }

    /// Takes every queued output, oldest first.
    pub fn drain_outputs(&mut self) -> Vec<Output> {
        self.n_messages_queued = 0;
        self.outputs.drain(..).collect()
    }

    /// This node's name.
    pub fn node_id(&self) -> &NodeId {
        &self.config.node_id
    }

    /// This node's Raft id.
    pub fn raft_id(&self) -> RaftId {
        self.raft_id
    }

    /// The current term.
    pub fn term(&self) -> Term {
        Term(self.raw.raft.term)
    }

    /// The current role.
    pub fn role(&self) -> Role {
        Role::from(self.raw.raft.state)
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.name_of(self.raw.raft.leader_id)
    }

    /// The commit index this node knows of.
    pub fn commit_index(&self) -> CatalogIndex {
        CatalogIndex(self.raw.raft.raft_log.committed)
    }

    /// The index of the last entry applied to the catalog.
    pub fn applied_index(&self) -> CatalogIndex {
        self.catalog.applied_index()
    }

    /// The current voters, by name.
    pub fn voters(&self) -> Vec<NodeId> {
        self.catalog.seeds().voters.iter().cloned().collect()
    }

    /// The catalog as of [`RaftNode::applied_index`].
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The store.
    pub fn storage(&self) -> &S {
        self.raw.store()
    }

    /// The applied entries after `index`, at most `bytes_max` of them (at least
    /// one), for a catalog copy at `index`. `None` if they are no longer held (the
    /// copy is too far behind, or this node restarted since): send the catalog
    /// instead. An empty vector means the copy is up to date.
    pub fn entries_after(
        &self,
        index: CatalogIndex,
        bytes_max: usize,
    ) -> Option<Vec<CommittedEntry>> {
        if index >= self.catalog.applied_index() {
            return Some(Vec::new());
        }
        let first = self.recent.front()?.index;
        if index.0 + 1 < first.0 {
            return None;
        }
        let skip = (index.0 + 1 - first.0) as usize;
        let mut bytes = 0;
        let mut entries = Vec::new();
        for entry in self.recent.iter().skip(skip) {
            bytes += entry.size_bytes();
            if !entries.is_empty() && bytes > bytes_max {
                break;
            }
            entries.push(entry.clone());
        }
        Some(entries)
    }

    /// Counters of dropped messages and snapshots taken.
    pub fn counters(&self) -> NodeCounters {
        self.counters
    }

    /// Whether a fatal error stopped the node.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    // ----- ready handling ------------------------------------------------------------

    fn span(&self, input: &'static str) -> tracing::Span {
        tracing::trace_span!(
            "raft_node",
            input,
            node = %self.config.node_id,
            term = self.raw.raft.term
        )
    }

    fn check_running(&self) -> Result<(), Error> {
        if self.stopped {
            Err(Error::Stopped)
        } else {
            Ok(())
        }
    }

    fn check_leader(&self) -> Result<(), Error> {
        if self.raw.raft.state == StateRole::Leader {
            Ok(())
        } else {
            Err(Error::NotLeader {
                leader: self.leader(),
            })
        }
    }

    fn name_of(&self, raft_id: u64) -> Option<NodeId> {
        self.peers.get(&RaftId(raft_id)).cloned()
    }

    /// Starts a batch: the inputs that follow (proposals, received messages)
    /// are all persisted with one sync and sent together at
    /// [`RaftNode::end_batch`]. This is how many concurrent writes share one
    /// fsync. Nothing is sent or applied before `end_batch`.
    pub fn begin_batch(&mut self) {
        self.batching = true;
    }

    /// Ends a batch: persists (one sync), sends and applies everything the
    /// batch's inputs produced.
    pub fn end_batch(&mut self) -> Result<(), Error> {
        self.batching = false;
        self.check_running()?;
        self.after_input()
    }

    /// Runs after every input: handles every ready, then replaces raft's election
    /// timeout draw. A fatal error stops the node.
    fn after_input(&mut self) -> Result<(), Error> {
        if self.batching {
            self.redraw_election_timeout();
            return Ok(());
        }
        let result = self.handle_readies();
        self.redraw_election_timeout();
        if let Err(error) = &result {
            self.stop(error);
        }
        result
    }

    /// A storage (or other fatal) error: the node stops for good.
    fn stop(&mut self, error: &Error) {
        if !self.stopped {
            tracing::error!(node = %self.config.node_id, "raft node stopped: {error}");
        }
        self.stopped = true;
    }

    fn redraw_election_timeout(&mut self) {
        if self.raw.raft.election_elapsed == 0 {
            let timeout = self
                .rng
                .random_range(self.config.election_ticks..2 * self.config.election_ticks);
            self.raw.raft.set_randomized_election_timeout(timeout);
        }
    }

    fn handle_readies(&mut self) -> Result<(), Error> {
        loop {
            while self.raw.has_ready() {
                self.handle_ready()?;
            }
            self.release_reads();
            self.maybe_snapshot()?;
            if self.raw.store().syncs_in_background() {
                return Ok(());
            }
            let Some(sync) = self.take_sync() else {
                return Ok(());
            };
            // What the sync releases may make more readies: go round again.
            self.settle_sync(sync.ticket, sync.job.run())?;
        }
    }

    fn handle_ready(&mut self) -> Result<(), Error> {
        let mut ready = self.raw.ready();

        // 1. Write: snapshot, entries, hard state (durable at the next sync).
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone())?;
        }
        self.raw.mut_store().append(ready.entries())?;
        if let Some(hard_state) = ready.hs() {
            self.raw.mut_store().set_hard_state(hard_state)?;
        }
        // raft-rs says which writes something will depend on: new entries, a
        // snapshot, a changed vote or term. A hard state that only moves the commit
        // index reaches disk with the next sync: a commit index lost in a crash is
        // learned again from the leader, and the entries it covers are durable on a
        // quorum already.
        if ready.must_sync() {
            self.syncs.written += 1;
        }

        // 2. Role changes.
        if let Some(soft_state) = ready.ss() {
            let now = (Role::from(soft_state.raft_state), soft_state.leader_id);
            if now != self.soft_state {
                self.soft_state = now;
                self.outputs.push_back(Output::RoleChanged {
                    role: now.0,
                    term: self.term(),
                    leader: self.name_of(now.1),
                });
            }
        }

        // 3. Send what depends on no write: a leader's appends go out while its
        //    own disk syncs.
        let messages = ready.take_messages();
        self.queue_messages(messages);

        // 4. Apply. raft-rs hands out only committed entries that are durable here.
        for read_state in ready.take_read_states() {
            self.reads_ready
                .push((read_state.request_ctx, CatalogIndex(read_state.index)));
        }
        let committed = ready.take_committed_entries();
        self.apply_entries(committed)?;

        // 5. What depends on the writes (votes, acks) waits for a sync covering them.
        let waiting = WaitingReady {
            number: ready.number(),
            needs: self.syncs.written,
            messages: ready.take_persisted_messages(),
        };
        self.raw.advance_append_async(ready);
        self.syncs.waiting.push_back(waiting);
        self.release_synced();
        self.advance_applied();
        Ok(())
    }

    /// Tells raft what the catalog applied — once it is durable here too: a
    /// received snapshot is applied before the sync that persists it.
    fn advance_applied(&mut self) {
        let log = &self.raw.raft.raft_log;
        let applied = self.catalog.applied_index().0.min(log.persisted);
        if applied > log.applied {
            self.raw.advance_apply_to(applied);
        }
    }

    /// Queues the held messages whose writes are durable, and tells raft.
    fn release_synced(&mut self) {
        let mut persisted = None;
        while let Some(front) = self.syncs.waiting.front()
            && front.needs <= self.syncs.synced
        {
            let ready = self.syncs.waiting.pop_front().expect("not empty");
            self.queue_messages(ready.messages);
            persisted = Some(ready.number);
        }
        if let Some(number) = persisted {
            self.raw.on_persist_ready(number);
        }
    }

    /// The sync the node waits on, if one is due and none is running. Only for a
    /// store that [syncs in the background](LogStore::syncs_in_background): run the
    /// job (on another thread), then call [`RaftNode::finish_sync`]. Writes made
    /// meanwhile wait for the next sync.
    pub fn take_sync(&mut self) -> Option<PendingSync> {
        if self.stopped || self.syncs.running.is_some() || self.syncs.written == self.syncs.synced {
            return None;
        }
        match self.raw.mut_store().start_sync() {
            Ok(job) => {
                self.syncs.running = Some(self.syncs.written);
                Some(PendingSync {
                    ticket: SyncTicket(self.syncs.written),
                    job,
                })
            }
            Err(error) => {
                self.stop(&error);
                None
            }
        }
    }

    /// A sync from [`RaftNode::take_sync`] ended with `result`: what waited on it
    /// is sent and applied. A failed sync stops the node (what the disk holds is
    /// unknown).
    pub fn finish_sync(
        &mut self,
        ticket: SyncTicket,
        result: Result<(), Error>,
    ) -> Result<(), Error> {
        self.check_running()?;
        self.settle_sync(ticket, result)?;
        self.after_input()
    }

    fn settle_sync(&mut self, ticket: SyncTicket, result: Result<(), Error>) -> Result<(), Error> {
        if self.syncs.running != Some(ticket.0) {
            return Err(Error::storage(format!(
                "sync {} finished, but {:?} was running",
                ticket.0, self.syncs.running
            )));
        }
        self.syncs.running = None;
        if let Err(error) = result {
            self.stop(&error);
            return Err(error);
        }
        self.syncs.synced = ticket.0;
        self.release_synced();
        self.advance_applied();
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), Error> {
        let index = snapshot.get_metadata().index;
        let catalog = Catalog::decode(&snapshot.data)?;
        if catalog.applied_index().0 != index {
            return Err(Error::Corrupt {
                reason: format!(
                    "received snapshot at {index} holds a catalog at {}",
                    catalog.applied_index()
                ),
            });
        }
        self.raw.mut_store().install_snapshot(&snapshot)?;
        for (raft_id, name) in &catalog.seeds().names {
            self.peers.entry(*raft_id).or_insert_with(|| name.clone());
        }
        self.catalog = catalog;
        self.snapshot_index = index;
        // Copies behind this snapshot need the snapshot too, not our old entries.
        self.recent.clear();
        self.recent_bytes = 0;
        self.outputs.push_back(Output::SnapshotInstalled {
            index: CatalogIndex(index),
        });
        Ok(())
    }

    fn queue_messages(&mut self, messages: Vec<raft::eraftpb::Message>) {
        for message in messages {
            let Some(to) = self.name_of(message.to) else {
                self.counters.messages_dropped_unknown_peer += 1;
                tracing::debug!(node = %self.config.node_id, to = message.to, "dropping message to unnamed peer");
                continue;
            };
            if self.n_messages_queued >= OUTPUT_MESSAGES_PENDING_MAX {
                self.counters.messages_dropped_queue_full += 1;
                continue;
            }
            self.n_messages_queued += 1;
            self.outputs.push_back(Output::Send(RaftMessage {
                from: self.config.node_id.clone(),
                to,
                message,
            }));
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), Error> {
        for entry in entries {
            let index = CatalogIndex(entry.index);
            let term = Term(entry.term);
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if let Some(applied) = self.catalog.apply_entry(index, term, &entry.data) {
                        self.outputs.push_back(Output::Applied(applied));
                    }
                    self.remember_entry(CommittedEntry {
                        index,
                        term,
                        kind: CommittedKind::Normal {
                            data: entry.data.to_vec(),
                        },
                    });
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change_entry(&entry)?;
                }
            }
        }
        Ok(())
    }

    fn apply_conf_change_entry(&mut self, entry: &Entry) -> Result<(), Error> {
        let index = CatalogIndex(entry.index);
        let corrupt = |what: &str| Error::Corrupt {
            reason: format!("conf change at {index}: {what}"),
        };
        let conf_change = if entry.get_entry_type() == EntryType::EntryConfChange {
            let v1 = ConfChange::parse_from_bytes(&entry.data).map_err(|_| corrupt("bad v1"))?;
            let mut v2 = ConfChangeV2::default();
            let mut single = ConfChangeSingle::default();
            single.node_id = v1.node_id;
            single.set_change_type(v1.get_change_type());
            v2.set_changes(vec![single].into());
            v2.context = v1.context;
            v2
        } else {
            ConfChangeV2::parse_from_bytes(&entry.data).map_err(|_| corrupt("bad v2"))?
        };
        let mut seeds = self.catalog.seeds().clone();
        if !conf_change.context.is_empty() {
            let names: Vec<NodeId> =
                rmp_serde::from_slice(&conf_change.context).map_err(|_| corrupt("bad context"))?;
            for name in &names {
                seeds.learn_name(name)?;
                self.peers
                    .entry(RaftId::of(name))
                    .or_insert_with(|| name.clone());
            }
        }
        match self.raw.apply_conf_change(&conf_change) {
            Ok(conf_state) => {
                self.raw.mut_store().set_conf_state(&conf_state)?;
                let name = |id: &u64| {
                    seeds
                        .name_of(RaftId(*id))
                        .cloned()
                        .ok_or_else(|| corrupt("member without a name"))
                };
                let voters = conf_state
                    .voters
                    .iter()
                    .map(name)
                    .collect::<Result<_, _>>()?;
                let voters_outgoing = conf_state
                    .voters_outgoing
                    .iter()
                    .map(name)
                    .collect::<Result<_, _>>()?;
                let learners = conf_state
                    .learners
                    .iter()
                    .chain(conf_state.learners_next.iter())
                    .map(name)
                    .collect::<Result<_, _>>()?;
                seeds.voters = voters;
                seeds.voters_outgoing = voters_outgoing;
                seeds.learners = learners;
            }
            Err(err) => {
                // Every node rejects the same committed change the same way; the entry
                // still extends the hash chain.
                tracing::warn!(node = %self.config.node_id, %index, "conf change rejected: {err}");
            }
        }
        self.catalog
            .apply_membership(index, Term(entry.term), &entry.data, seeds.clone());
        self.remember_entry(CommittedEntry {
            index,
            term: Term(entry.term),
            kind: CommittedKind::Membership {
                data: entry.data.to_vec(),
                seeds: seeds.clone(),
            },
        });
        self.outputs
            .push_back(Output::MembershipChanged { index, seeds });
        Ok(())
    }

    fn remember_entry(&mut self, entry: CommittedEntry) {
        debug_assert!(
            self.recent
                .back()
                .is_none_or(|last| last.index.0 + 1 == entry.index.0)
        );
        self.recent_bytes += entry.size_bytes();
        self.recent.push_back(entry);
        while self.recent.len() > RECENT_ENTRIES_MAX || self.recent_bytes > RECENT_BYTES_MAX {
            let dropped = self.recent.pop_front().expect("not empty");
            self.recent_bytes -= dropped.size_bytes();
        }
    }

    fn release_reads(&mut self) {
        let applied = self.catalog.applied_index();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
            .into_iter()
            .partition(|(_, index)| *index <= applied);
        self.reads_ready = waiting;
        for (context, index) in ready {
            self.outputs.push_back(Output::ReadReady { context, index });
        }
    }

    /// Saves a snapshot every `snapshot_interval_entries` applied entries, or sooner
    /// when raft asked the store for a snapshot it did not have (a new peer, or a
    /// follower too far behind).
    fn maybe_snapshot(&mut self) -> Result<(), Error> {
        let applied = self.catalog.applied_index().0;
        let requested = self.raw.mut_store().take_snapshot_request();
        let due = applied >= self.snapshot_index + self.config.snapshot_interval_entries;
        if !(due || requested && applied > self.snapshot_index) {
            return Ok(());
        }
        let term = self.raw.store().term(applied).map_err(Error::storage)?;
        assert_eq!(
            term,
            self.catalog.applied_term().0,
            "catalog term matches the log"
        );
        let conf_state = self.raw.raft.prs().conf().to_conf_state();
        let mut snapshot = Snapshot::default();
        snapshot.data = self.catalog.encode().into();
        let metadata = snapshot.mut_metadata();
        metadata.index = applied;
        metadata.term = term;
        metadata.set_conf_state(conf_state);
        let first_index = self.raw.store().first_index().map_err(Error::storage)?;
        let compact_index = (applied + 1)
            .saturating_sub(self.config.log_retained_entries)
            .max(first_index);
        self.raw
            .mut_store()
            .save_snapshot(&snapshot, compact_index)?;
        // The next sync makes the compaction durable (and retires the old file).
        self.syncs.written += 1;
        self.snapshot_index = applied;
        self.counters.snapshots_taken += 1;
        Ok(())
    }
}
