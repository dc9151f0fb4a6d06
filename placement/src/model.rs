//! The planner's vocabulary: identities, the cluster state it reads and the moves it writes.
//!
//! These are plain data. The catalog (in `consensus`) and the telemetry map (in `membership`)
//! are converted into a [`ClusterState`] at the edge, in the agent; nothing here knows about
//! serialization, the network or the clock.

use std::collections::BTreeMap;
use std::fmt;

/// The operator-chosen stable name of a node, e.g. `db-07`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub String);

/// The identity of a shard (a key range of one table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u64);

/// The fencing epoch of a shard's primary. Every primary change strictly increases it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

/// How far a replica has applied the shard's log (e.g. the log index); larger is more advanced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

/// The name of a table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId(pub String);

/// A key, compared bytewise.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Key(pub Vec<u8>);

/// A half-open key range `[start, end)`; `end == None` means "to the end of the table".
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct KeyRange {
    /// First key of the range (inclusive). The empty key is the start of the table.
    pub start: Key,
    /// First key after the range (exclusive), or `None` for the end of the table.
    pub end: Option<Key>,
}

impl KeyRange {
    /// Whether `key` lies strictly inside the range, so that splitting there leaves two
    /// non-empty halves.
    pub fn splits_at(&self, key: &Key) -> bool {
        *key > self.start && self.end.as_ref().is_none_or(|end| key < end)
    }
}

/// Where a node sits. Names are compared as the full path, so zone `a` in two regions is two
/// different zones.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Locality {
    /// Region, e.g. `us-east`.
    pub region: String,
    /// Zone within the region, e.g. `us-east-1a`.
    pub zone: String,
    /// Rack within the zone.
    pub rack: String,
}

/// The controller's verdict on a node, as committed in the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeStatus {
    /// Serving; a valid target for replicas and primaries.
    Alive,
    /// Possibly failing (SWIM suspicion). Its replicas still count as live, but it receives
    /// nothing new and its primaries are not moved until the controller decides.
    Suspect,
    /// Gone. Its replicas are replaced and its primaries failed over.
    Dead,
    /// Leaving on purpose. Its replicas are replaced and its primaries moved; it receives
    /// nothing new.
    Draining,
}

/// A resource vector: used for both a node's capacity and its usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Resources {
    /// Disk, in bytes.
    pub disk_bytes: u64,
    /// CPU, in thousandths of a core.
    pub cpu_millicores: u64,
    /// Queries per second.
    pub qps: u64,
}

/// One database node as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Stable name.
    pub id: NodeId,
    /// Region, zone and rack.
    pub locality: Locality,
    /// The committed status.
    pub status: NodeStatus,
    /// What the node can hold. Zero disk or qps capacity means "unknown": the node then counts
    /// as an average node for balance, and a zero disk capacity makes it full.
    pub capacity: Resources,
    /// What the node reports it uses (telemetry).
    pub usage: Resources,
}

/// One replica of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// The node that holds it.
    pub node: NodeId,
    /// How far it has applied the shard's log.
    pub applied: Position,
}

/// A load sample inside a shard: the bucket `[start_key, next sample's start_key)` and what
/// it carries. The database reports these with its per-shard telemetry; the planner splits at
/// the load midpoint between samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySample {
    /// First key of the bucket.
    pub start_key: Key,
    /// Queries per second in the bucket.
    pub qps: u64,
    /// Bytes in the bucket.
    pub size_bytes: u64,
}

/// One shard: a key range of a table, replicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Identity.
    pub id: ShardId,
    /// The table it belongs to.
    pub table: TableId,
    /// The keys it holds.
    pub range: KeyRange,
    /// Bytes stored (per replica).
    pub size_bytes: u64,
    /// Queries per second (whole shard).
    pub qps: u64,
    /// The replicas in place (learners still catching up are in-flight moves, not replicas).
    pub replicas: Vec<Replica>,
    /// The node of the primary replica, if any.
    pub primary: Option<NodeId>,
    /// The current fencing epoch.
    pub epoch: Epoch,
    /// When the shard's range last changed (created by a split or a merge), for the reshape
    /// cool-down. `None` means "long ago".
    pub reshaped_at_ms: Option<u64>,
    /// Load samples, sorted by key, for choosing a split point. May be empty (then the shard
    /// cannot be split by load).
    pub samples: Vec<KeySample>,
}

/// What the planner remembers between rounds about each shard, so that "hot for at least
/// `split_hold_ms`" can be decided by a pure function.
///
/// The planner returns the next value in [`Plan::history`]; the caller stores it and passes
/// it back in [`ClusterState::history`] on the next round. It is the only state the planner
/// carries. Losing it only delays splits and merges by one hold period.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct History {
    /// Per shard, since when its hot/cold conditions have held. Shards with neither are absent.
    pub shards: BTreeMap<ShardId, ShardHistory>,
}

/// Since when a shard's split or merge condition has held continuously.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ShardHistory {
    /// First round (time in ms) at which the shard was seen above a split threshold.
    pub hot_since_ms: Option<u64>,
    /// First round (time in ms) at which the shard was seen below the merge thresholds.
    pub cold_since_ms: Option<u64>,
}

/// Everything the planner reads. The order of every list is irrelevant: the planner
/// canonicalizes it, so permuted inputs give byte-identical plans.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClusterState {
    /// The current time in milliseconds on the caller's monotonic clock.
    pub now_ms: u64,
    /// All known nodes.
    pub nodes: Vec<Node>,
    /// All shards.
    pub shards: Vec<Shard>,
    /// Moves already started and not yet finished. They count as load on the nodes they touch
    /// and against the per-node move budget.
    pub in_flight: Vec<Move>,
    /// What the previous round returned in [`Plan::history`].
    pub history: History,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Move {
    /// Create a new replica of `shard` on `target` (a learner that catches up and is promoted).
    AddReplica {
        /// The shard.
        shard: ShardId,
        /// The node that will hold the new replica.
        target: NodeId,
    },
    /// Delete the replica of `shard` on `source`. Planned either once the shard's other
    /// replicas already provide the replication factor and spread, or right after the
    /// `AddReplica` of its replacement in the same plan (then it waits for that add).
    RemoveReplica {
        /// The shard.
        shard: ShardId,
        /// The node that holds the replica to delete.
        source: NodeId,
    },
    /// Make the replica on `target` the primary. Valid only while the shard is still at
    /// `expected_epoch`; the new primary serves under `new_epoch`, which is strictly greater.
    TransferPrimary {
        /// The shard.
        shard: ShardId,
        /// The current primary, if any (it may be dead).
        source: Option<NodeId>,
        /// The replica that becomes primary.
        target: NodeId,
        /// The epoch the plan was made against (compare-and-set guard).
        expected_epoch: Epoch,
        /// The epoch of the new primary (`expected_epoch + 1`).
        new_epoch: Epoch,
    },
    /// Split `shard` at `split_key`: it keeps `[start, split_key)` and a new shard `right`
    /// takes `[split_key, end)` on the same replicas.
    Split {
        /// The shard that is split (keeps the left half).
        shard: ShardId,
        /// The first key of the right half.
        split_key: Key,
        /// The id proposed for the right half: one above the largest id in the input, in plan
        /// order. The catalog may allocate another; the plan stays valid.
        right: ShardId,
    },
    /// Merge `right` into its left neighbour `left` (same table, adjacent ranges, replicas on
    /// the same nodes). `left` keeps its id.
    Merge {
        /// The shard that absorbs its neighbour.
        left: ShardId,
        /// The shard that disappears.
        right: ShardId,
    },
}

impl Move {
    /// The shard this move is about (for `Merge`, the surviving left shard).
    pub fn shard(&self) -> ShardId {
        match self {
            Move::AddReplica { shard, .. }
            | Move::RemoveReplica { shard, .. }
            | Move::TransferPrimary { shard, .. }
            | Move::Split { shard, .. } => *shard,
            Move::Merge { left, .. } => *left,
        }
    }
}

/// Why a move was chosen.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The shard has fewer live replicas than the replication factor.
    Repair {
        /// Live replicas (in place or being added) before this move.
        live: usize,
        /// The replication factor.
        want: usize,
    },
    /// The shard's replicas span fewer locality domains than they could.
    Spread {
        /// Domains spanned before this move.
        domains: usize,
        /// Domains the shard should span.
        want: usize,
    },
    /// The replica is on a dead node and the shard no longer needs it.
    DeadReplica,
    /// The replica is on a draining node and its replacement is in place.
    Drain,
    /// The shard has more replicas than the replication factor.
    Excess,
    /// The primary's node is dead or draining, or the shard has no primary.
    Failover,
    /// The primary must leave a replica that is about to be removed.
    ClearForRemoval,
    /// The shard stayed above a split threshold for the hold period.
    Hot,
    /// The shard stayed below the merge thresholds, with its neighbour, for the hold period.
    Cold,
    /// Balance primaries: from a node with more primary load to one with less.
    BalancePrimaries,
    /// Balance replicas: from a node with more load to one with less. The removal from
    /// `from` follows in the same plan, as [`Reason::Replaced`].
    BalanceReplicas {
        /// The node the replica leaves.
        from: NodeId,
    },
    /// The replica's replacement, added earlier in the same plan, is on `by`: remove once
    /// that add is complete.
    Replaced {
        /// The node of the replacement.
        by: NodeId,
    },
}

/// A move and why it was chosen.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlannedMove {
    /// What to do.
    pub action: Move,
    /// Why.
    pub reason: Reason,
}

/// A constraint the planner could not satisfy this round. Notes do not stop the plan: the
/// planner still returns every safe move it found (so a partial repair proceeds), and the
/// caller raises an alert from the notes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Infeasible {
    /// Fewer usable locality domains (at the policy's tier) than the replication factor:
    /// some shards' replicas share a domain. Replication is still restored; the note stays
    /// in every plan until enough domains are usable again.
    Spread {
        /// Domains with at least one usable node.
        domains: usize,
        /// The replication factor.
        want: usize,
    },
    /// No alive, non-draining, non-full node can take another replica of the shard.
    NoTarget {
        /// The shard.
        shard: ShardId,
    },
    /// Every replica of the shard is on a dead node: data must be restored by an operator.
    AllReplicasLost {
        /// The shard.
        shard: ShardId,
    },
    /// The shard needs a new primary but none of its replicas is on an alive node.
    NoPrimaryCandidate {
        /// The shard.
        shard: ShardId,
    },
    /// The shard should split but has no load sample strictly inside its range.
    NoSplitPoint {
        /// The shard.
        shard: ShardId,
    },
    /// The move budget of the round ran out before every needed move was planned.
    Budget {
        /// Moves the round was allowed.
        moves_max: usize,
    },
}

/// The planner's answer.
///
/// Moves of *different* shards are independent and may run in parallel. Moves of the *same*
/// shard form a sequence and must run in plan order, each after the previous one completed:
/// that is how a relocation reads — `AddReplica` on the target, maybe `TransferPrimary` to
/// it, then `RemoveReplica` on the source (reason [`Reason::Replaced`]) — so a replica is
/// only ever removed once its replacement is in place. The controller runs such a sequence as
/// one multi-step catalog operation, and lists the unfinished steps as in flight.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Plan {
    /// The moves to make, in priority order. At most `Policy::moves_per_round_max` of them,
    /// and no node named by more than `Policy::moves_per_node_max` of these plus in-flight
    /// moves (a removal from a dead node costs that node nothing).
    pub moves: Vec<PlannedMove>,
    /// Constraints that could not be met, sorted. Empty when the plan fully satisfies the
    /// policy (or will, once its moves are applied).
    pub infeasible: Vec<Infeasible>,
    /// The history to pass back in the next round's [`ClusterState::history`].
    pub history: History,
}

impl Plan {
    /// Whether the plan has nothing to do and nothing to report.
    pub fn is_quiet(&self) -> bool {
        self.moves.is_empty() && self.infeasible.is_empty()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) if text.chars().all(|c| c.is_ascii_graphic()) => write!(f, "{text}"),
            _ => {
                write!(f, "0x")?;
                self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
        }
    }
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Move::AddReplica { shard, target } => write!(f, "add {} -> {}", shard.0, target.0),
            Move::RemoveReplica { shard, source } => {
                write!(f, "remove {} from {}", shard.0, source.0)
            }
            Move::TransferPrimary {
                shard,
                source,
                target,
                expected_epoch,
                new_epoch,
            } => {
                let source = source.as_ref().map_or("-", |node| node.0.as_str());
                write!(
                    f,
                    "primary {} {} -> {} epoch {} -> {}",
                    shard.0, source, target.0, expected_epoch.0, new_epoch.0
                )
            }
            Move::Split {
                shard,
                split_key,
                right,
            } => write!(f, "split {} at {} -> {}", shard.0, split_key, right.0),
            Move::Merge { left, right } => write!(f, "merge {} + {}", left.0, right.0),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Repair { live, want } => write!(f, "repair {live}/{want}"),
            Reason::Spread { domains, want } => write!(f, "spread {domains}/{want}"),
            Reason::DeadReplica => write!(f, "dead"),
            Reason::Drain => write!(f, "drain"),
            Reason::Excess => write!(f, "excess"),
            Reason::Failover => write!(f, "failover"),
            Reason::ClearForRemoval => write!(f, "clear-for-removal"),
            Reason::Hot => write!(f, "hot"),
            Reason::Cold => write!(f, "cold"),
            Reason::BalancePrimaries => write!(f, "balance-primaries"),
            Reason::BalanceReplicas { from } => write!(f, "balance-replicas from {}", from.0),
            Reason::Replaced { by } => write!(f, "replaced by {}", by.0),
        }
    }
}

impl fmt::Display for PlannedMove {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}  # {}", self.action, self.reason)
    }
}

impl fmt::Display for Infeasible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Infeasible::Spread { domains, want } => {
                write!(f, "infeasible spread domains={domains} want={want}")
            }
            Infeasible::NoTarget { shard } => write!(f, "infeasible no-target {}", shard.0),
            Infeasible::AllReplicasLost { shard } => {
                write!(f, "infeasible all-replicas-lost {}", shard.0)
            }
            Infeasible::NoPrimaryCandidate { shard } => {
                write!(f, "infeasible no-primary-candidate {}", shard.0)
            }
            Infeasible::NoSplitPoint { shard } => {
                write!(f, "infeasible no-split-point {}", shard.0)
            }
            Infeasible::Budget { moves_max } => write!(f, "infeasible budget {moves_max}"),
        }
    }
}

impl fmt::Display for Plan {
    /// One line per move, then one per note: the format of the test fixtures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for planned in &self.moves {
            writeln!(f, "{planned}")?;
        }
        for note in &self.infeasible {
            writeln!(f, "{note}")?;
        }
        Ok(())
    }
}
