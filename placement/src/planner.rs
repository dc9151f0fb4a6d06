//! The planner itself: canonicalize the input, project loads, then fill a bounded plan in
//! priority order — repair, failover, split/merge, balance primaries, balance replicas.
//!
//! Everything is indexed once: nodes and shards are sorted by id and referred to by `u32`
//! positions, and each locality domain keeps an ordered set of the nodes that can take a new
//! replica, keyed by relative load. Choosing a target costs one peek per domain, not a scan
//! of every node; a move updates the sets in `O(log n)`.
//!
//! Loads are *projected*: a node's load counts the replicas it holds, plus moves in flight
//! and moves already planned this round towards it, minus replicas leaving it. So a re-plan
//! after applying a plan sees exactly the loads this plan aimed for, and the balance
//! conditions (strict improvement outside a dead-band) cannot ask to undo it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::PlanError;
use crate::hash::{node_hash, rendezvous};
use crate::model::{
    ClusterState, Epoch, History, Infeasible, Key, Move, Node, NodeId, NodeStatus, Plan,
    PlannedMove, Position, Reason, Shard, ShardHistory, ShardId,
};
use crate::policy::{Policy, Tier};

/// Most nodes accepted in one input (indices are `u32`).
pub const NODES_MAX: usize = 1 << 20;
/// Most shards accepted in one input.
pub const SHARDS_MAX: usize = 1 << 26;
/// Nodes tried per domain, in load order, looking for one with disk room for the shard.
const SCAN_PER_DOMAIN_MAX: usize = 64;
/// Equally loaded nodes per domain compared by rendezvous hash when choosing a target.
const TIES_PER_DOMAIN_MAX: usize = 16;
/// Peers (sources or targets) examined for one balance move.
const BALANCE_PEERS_MAX: usize = 32;

/// Index of a node that is not in the input (treated as dead).
const UNKNOWN: u32 = u32::MAX;

/// An `f64` with a total order, for keys of ordered sets.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Load(f64);

impl Eq for Load {}

impl PartialOrd for Load {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Load {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

type LoadKey = (Load, u32);

/// Ranks relocations, smallest first: negated gap, imbalance left, moves a primary,
/// inverse rendezvous weight, then shard, source and target indices.
type RelocationScore = (Load, Load, bool, u64, u32, u32, u32);

/// How much a replica deserves removal: on a suspect node, its node stays inside the band,
/// relative load, not the primary, inverse rendezvous weight, inverse node index (larger is
/// removed first).
type VictimScore = (bool, bool, f64, bool, std::cmp::Reverse<u64>, u32);

struct NodeState<'a> {
    node: &'a Node,
    domain: u32,
    hash: u64,
    /// Relative capacity; 1.0 is an average node.
    capacity: f64,
    /// Projected replica load, in mean-shard units.
    load: f64,
    /// Projected primary load, in mean-shard units.
    primary_load: f64,
    /// Projected disk usage.
    disk_bytes: u64,
    /// Disk usage at which the node is full.
    disk_limit_bytes: u64,
    /// Moves in flight plus planned that name this node.
    moves: usize,
    /// Shards with an in-place replica here, ascending.
    hosted: Vec<u32>,
    /// Alive and below its CPU limit: may receive new replicas or primaries.
    takes_new: bool,
    in_targets: bool,
    in_sources: bool,
    in_primary_sources: bool,
    in_primary_targets: bool,
}

impl NodeState<'_> {
    fn ratio(&self) -> f64 {
        self.load / self.capacity
    }

    fn primary_ratio(&self) -> f64 {
        self.primary_load / self.capacity
    }
}

struct ReplicaState<'a> {
    node: u32,
    name: &'a NodeId,
    applied: Position,
    removing: bool,
}

struct ShardState<'a> {
    shard: &'a Shard,
    weight: f64,
    /// In-place replicas, ascending by node index (unknown nodes last).
    replicas: Vec<ReplicaState<'a>>,
    /// The primary's node index (`UNKNOWN` if it names a node not in the input).
    primary: Option<u32>,
    /// Nodes with a pending (in flight or planned) added replica.
    adding: Vec<u32>,
    /// Some move is in flight or planned for this shard.
    busy: bool,
    /// A primary transfer is in flight.
    transferring: bool,
    epoch: Epoch,
}

/// Plans one round. See [`crate::plan`] for the contract.
pub(crate) fn plan(input: &ClusterState, policy: &Policy) -> Result<Plan, PlanError> {
    policy.check()?;
    let mut planner = Planner::new(input, policy)?;
    planner.repair();
    planner.remove_surplus();
    planner.failover();
    let history = planner.reshape();
    planner.balance_primaries();
    planner.balance_replicas();
    Ok(planner.finish(history))
}

struct Planner<'a> {
    input: &'a ClusterState,
    policy: &'a Policy,
    nodes: Vec<NodeState<'a>>,
    shards: Vec<ShardState<'a>>,
    /// Per domain, the nodes that can take a replica now, by relative load.
    domain_targets: Vec<BTreeSet<LoadKey>>,
    /// Domains with at least one alive node with disk and CPU room (ignoring budgets).
    domains_usable: usize,
    /// All nodes that can take a replica now, by relative load.
    targets: BTreeSet<LoadKey>,
    /// Balance: alive nodes that may give replicas, by relative load.
    sources: BTreeSet<LoadKey>,
    /// Balance: alive nodes that may give primaries, by relative primary load.
    primary_sources: BTreeSet<LoadKey>,
    /// Balance: alive nodes that may take primaries, by relative primary load.
    primary_targets: BTreeSet<LoadKey>,
    moves: Vec<PlannedMove>,
    notes: BTreeSet<Infeasible>,
    budget_hit: bool,
    /// Some repair waits for a later round (budgets): excess replicas are kept until the
    /// repairs land, because where load ends up is not known yet.
    repairs_deferred: bool,
    next_shard_id: u64,
}

fn domain_name(node: &Node, tier: Tier) -> String {
    let locality = &node.locality;
    match tier {
        Tier::Region => locality.region.clone(),
        Tier::Zone => format!("{}/{}", locality.region, locality.zone),
        Tier::Rack => format!("{}/{}/{}", locality.region, locality.zone, locality.rack),
        Tier::Node => node.id.0.clone(),
    }
}

fn holds_data(status: NodeStatus) -> bool {
    matches!(
        status,
        NodeStatus::Alive | NodeStatus::Suspect | NodeStatus::Draining
    )
}

fn counts_as_live(status: NodeStatus) -> bool {
    matches!(status, NodeStatus::Alive | NodeStatus::Suspect)
}

fn ratio_of(part: u64, mean: f64) -> f64 {
    if mean > 0.0 { part as f64 / mean } else { 1.0 }
}

impl<'a> Planner<'a> {
    fn new(input: &'a ClusterState, policy: &'a Policy) -> Result<Self, PlanError> {
        if input.nodes.len() > NODES_MAX {
            return Err(PlanError::TooLarge("more than NODES_MAX nodes"));
        }
        if input.shards.len() > SHARDS_MAX {
            return Err(PlanError::TooLarge("more than SHARDS_MAX shards"));
        }
        // Canonical order: nodes and shards by id, so permuted inputs plan identically.
        let mut node_order: Vec<&Node> = input.nodes.iter().collect();
        node_order.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(pair) = node_order.windows(2).find(|pair| pair[0].id == pair[1].id) {
            return Err(PlanError::DuplicateNode(pair[0].id.0.clone()));
        }
        let mut shard_order: Vec<&Shard> = input.shards.iter().collect();
        shard_order.sort_by_key(|shard| shard.id);
        if let Some(pair) = shard_order.windows(2).find(|pair| pair[0].id == pair[1].id) {
            return Err(PlanError::DuplicateShard(pair[0].id.0));
        }
        // Lookup only; never iterated, so its order cannot leak.
        let node_index: HashMap<&str, u32> = node_order
            .iter()
            .enumerate()
            .map(|(index, node)| (node.id.0.as_str(), index as u32))
            .collect();
        let lookup = |id: &NodeId| node_index.get(id.0.as_str()).copied().unwrap_or(UNKNOWN);

        let mut domain_ids: BTreeMap<String, u32> = BTreeMap::new();
        for node in &node_order {
            domain_ids.insert(domain_name(node, policy.spread_tier), 0);
        }
        for (index, value) in domain_ids.values_mut().enumerate() {
            *value = index as u32;
        }

        // Relative capacities over alive nodes with known capacity.
        let alive: Vec<&&Node> = node_order
            .iter()
            .filter(|node| node.status == NodeStatus::Alive)
            .collect();
        let mean_of = |get: &dyn Fn(&Node) -> u64| {
            let known: Vec<u64> = alive.iter().map(|n| get(n)).filter(|v| *v > 0).collect();
            if known.is_empty() {
                0.0
            } else {
                known.iter().map(|v| *v as f64).sum::<f64>() / known.len() as f64
            }
        };
        let mean_disk = mean_of(&|node| node.capacity.disk_bytes);
        let mean_qps = mean_of(&|node| node.capacity.qps);
        let qps_share = policy.qps_weight_ratio;
        let relative = |value: u64, mean: f64| {
            if value > 0 && mean > 0.0 {
                value as f64 / mean
            } else {
                1.0
            }
        };

        let nodes: Vec<NodeState<'a>> = node_order
            .iter()
            .map(|node| {
                let capacity = (1.0 - qps_share) * relative(node.capacity.disk_bytes, mean_disk)
                    + qps_share * relative(node.capacity.qps, mean_qps);
                let cpu_full = node.capacity.cpu_millicores > 0
                    && node.usage.cpu_millicores as f64
                        >= node.capacity.cpu_millicores as f64 * policy.cpu_full_ratio;
                NodeState {
                    node,
                    domain: domain_ids[&domain_name(node, policy.spread_tier)],
                    hash: node_hash(&node.id),
                    capacity: capacity.max(f64::MIN_POSITIVE),
                    load: 0.0,
                    primary_load: 0.0,
                    disk_bytes: node.usage.disk_bytes,
                    disk_limit_bytes: (node.capacity.disk_bytes as f64 * policy.disk_full_ratio)
                        as u64,
                    moves: 0,
                    hosted: Vec::new(),
                    takes_new: node.status == NodeStatus::Alive && !cpu_full,
                    in_targets: false,
                    in_sources: false,
                    in_primary_sources: false,
                    in_primary_targets: false,
                }
            })
            .collect();

        // Shard weights: a shard of mean size and mean QPS weighs 1.
        let count = shard_order.len().max(1) as f64;
        let mean_size = shard_order.iter().map(|s| s.size_bytes as f64).sum::<f64>() / count;
        let mean_shard_qps = shard_order.iter().map(|s| s.qps as f64).sum::<f64>() / count;
        let mut shards = Vec::with_capacity(shard_order.len());
        for shard in &shard_order {
            let weight = (1.0 - qps_share) * ratio_of(shard.size_bytes, mean_size)
                + qps_share * ratio_of(shard.qps, mean_shard_qps);
            let mut replicas: Vec<ReplicaState<'a>> = shard
                .replicas
                .iter()
                .map(|replica| ReplicaState {
                    node: lookup(&replica.node),
                    name: &replica.node,
                    applied: replica.applied,
                    removing: false,
                })
                .collect();
            replicas.sort_by(|a, b| (a.node, a.name).cmp(&(b.node, b.name)));
            if let Some(pair) = replicas
                .windows(2)
                .find(|pair| pair[0].name == pair[1].name)
            {
                return Err(PlanError::DuplicateReplica {
                    shard: shard.id.0,
                    node: pair[0].name.0.clone(),
                });
            }
            let primary = match &shard.primary {
                None => None,
                Some(id) => {
                    if !replicas.iter().any(|replica| replica.name == id) {
                        return Err(PlanError::PrimaryNotReplica {
                            shard: shard.id.0,
                            node: id.0.clone(),
                        });
                    }
                    Some(lookup(id))
                }
            };
            shards.push(ShardState {
                shard,
                weight,
                replicas,
                primary,
                adding: Vec::new(),
                busy: false,
                transferring: false,
                epoch: shard.epoch,
            });
        }

        let next_shard_id = shard_order.last().map_or(0, |shard| shard.id.0) + 1;
        let mut planner = Planner {
            input,
            policy,
            nodes,
            shards,
            domain_targets: vec![BTreeSet::new(); domain_ids.len()],
            domains_usable: 0,
            targets: BTreeSet::new(),
            sources: BTreeSet::new(),
            primary_sources: BTreeSet::new(),
            primary_targets: BTreeSet::new(),
            moves: Vec::new(),
            notes: BTreeSet::new(),
            budget_hit: false,
            repairs_deferred: false,
            next_shard_id,
        };
        planner.project_loads();
        planner.index_targets();
        Ok(planner)
    }

    fn status(&self, node: u32) -> NodeStatus {
        if node == UNKNOWN {
            NodeStatus::Dead
        } else {
            self.nodes[node as usize].node.status
        }
    }

    fn shard_index(&self, id: ShardId) -> Option<u32> {
        self.shards
            .binary_search_by_key(&id, |state| state.shard.id)
            .ok()
            .map(|index| index as u32)
    }

    fn node_index(&self, id: &NodeId) -> Option<u32> {
        self.nodes
            .binary_search_by(|state| state.node.id.cmp(id))
            .ok()
            .map(|index| index as u32)
    }

    /// Loads from the replicas in place, then the moves in flight (in canonical order).
    fn project_loads(&mut self) {
        for (shard_index, shard) in self.shards.iter().enumerate() {
            for replica in &shard.replicas {
                if replica.node != UNKNOWN
                    && holds_data(self.nodes[replica.node as usize].node.status)
                {
                    let node = &mut self.nodes[replica.node as usize];
                    node.load += shard.weight;
                    node.hosted.push(shard_index as u32);
                }
            }
            if let Some(primary) = shard.primary
                && primary != UNKNOWN
            {
                self.nodes[primary as usize].primary_load += shard.weight;
            }
        }
        let mut in_flight: Vec<&Move> = self.input.in_flight.iter().collect();
        in_flight.sort();
        for action in in_flight {
            self.account_in_flight(action);
        }
    }

    fn account_in_flight(&mut self, action: &Move) {
        match action {
            Move::AddReplica { shard, target } => {
                let (Some(s), Some(t)) = (self.shard_index(*shard), self.node_index(target)) else {
                    return;
                };
                let state = &mut self.shards[s as usize];
                if state.replicas.iter().any(|r| r.node == t) || state.adding.contains(&t) {
                    return;
                }
                state.adding.push(t);
                state.busy = true;
                let (weight, size) = (state.weight, state.shard.size_bytes);
                let node = &mut self.nodes[t as usize];
                node.load += weight;
                node.disk_bytes = node.disk_bytes.saturating_add(size);
                node.moves += 1;
            }
            Move::RemoveReplica { shard, source } => {
                let Some(s) = self.shard_index(*shard) else {
                    return;
                };
                let state = &mut self.shards[s as usize];
                state.busy = true;
                let weight = state.weight;
                let Some(replica) = state.replicas.iter_mut().find(|r| r.name == source) else {
                    return;
                };
                if replica.removing {
                    return;
                }
                replica.removing = true;
                let node = replica.node;
                if node != UNKNOWN && holds_data(self.nodes[node as usize].node.status) {
                    let state = &mut self.nodes[node as usize];
                    state.load -= weight;
                    state.moves += 1;
                }
            }
            Move::TransferPrimary { shard, target, .. } => {
                let (Some(s), Some(t)) = (self.shard_index(*shard), self.node_index(target)) else {
                    return;
                };
                let state = &mut self.shards[s as usize];
                state.busy = true;
                state.transferring = true;
                let (weight, old) = (state.weight, state.primary);
                state.primary = Some(t);
                if let Some(old) = old.filter(|old| *old != UNKNOWN) {
                    self.nodes[old as usize].primary_load -= weight;
                }
                self.nodes[t as usize].primary_load += weight;
                self.nodes[t as usize].moves += 1;
            }
            Move::Split { shard, .. } => {
                if let Some(s) = self.shard_index(*shard) {
                    self.shards[s as usize].busy = true;
                }
            }
            Move::Merge { left, right } => {
                for id in [left, right] {
                    if let Some(s) = self.shard_index(*id) {
                        self.shards[s as usize].busy = true;
                    }
                }
            }
        }
    }

    fn can_target(&self, node: u32) -> bool {
        let state = &self.nodes[node as usize];
        state.takes_new
            && state.moves < self.policy.moves_per_node_max
            && state.disk_bytes < state.disk_limit_bytes
    }

    fn index_targets(&mut self) {
        let mut usable = vec![false; self.domain_targets.len()];
        for index in 0..self.nodes.len() as u32 {
            let state = &self.nodes[index as usize];
            if state.takes_new && state.disk_bytes < state.disk_limit_bytes {
                usable[state.domain as usize] = true;
            }
            if self.can_target(index) {
                let key = (Load(state.ratio()), index);
                let domain = state.domain as usize;
                self.domain_targets[domain].insert(key);
                self.targets.insert(key);
                self.nodes[index as usize].in_targets = true;
            }
        }
        self.domains_usable = usable.iter().filter(|usable| **usable).count();
    }

    /// Changes a node's projected numbers, keeping every ordered set it belongs to in step.
    fn update_node(&mut self, index: u32, change: impl FnOnce(&mut NodeState<'a>)) {
        if index == UNKNOWN {
            return;
        }
        let state = &self.nodes[index as usize];
        let key = (Load(state.ratio()), index);
        let primary_key = (Load(state.primary_ratio()), index);
        if state.in_targets {
            self.domain_targets[state.domain as usize].remove(&key);
            self.targets.remove(&key);
        }
        if state.in_sources {
            self.sources.remove(&key);
        }
        if state.in_primary_sources {
            self.primary_sources.remove(&primary_key);
        }
        if state.in_primary_targets {
            self.primary_targets.remove(&primary_key);
        }
        change(&mut self.nodes[index as usize]);
        let eligible = self.can_target(index);
        let state = &mut self.nodes[index as usize];
        let key = (Load(state.ratio()), index);
        let primary_key = (Load(state.primary_ratio()), index);
        state.in_targets &= eligible;
        state.in_primary_targets &= eligible;
        if state.in_targets {
            self.domain_targets[state.domain as usize].insert(key);
            self.targets.insert(key);
        }
        if state.in_sources {
            self.sources.insert(key);
        }
        if state.in_primary_sources {
            self.primary_sources.insert(primary_key);
        }
        if state.in_primary_targets {
            self.primary_targets.insert(primary_key);
        }
    }

    fn has_budget(&self, node: u32) -> bool {
        node == UNKNOWN
            || !holds_data(self.status(node))
            || self.nodes[node as usize].moves < self.policy.moves_per_node_max
    }

    fn round_full(&mut self) -> bool {
        if self.moves.len() >= self.policy.moves_per_round_max {
            self.budget_hit = true;
        }
        self.budget_hit
    }

    fn push(&mut self, action: Move, reason: Reason) {
        debug_assert!(self.moves.len() < self.policy.moves_per_round_max);
        self.moves.push(PlannedMove { action, reason });
    }

    // ---- accounting of planned moves ------------------------------------------------------

    fn plan_add(&mut self, shard: u32, target: u32, reason: Reason) {
        let state = &mut self.shards[shard as usize];
        assert!(
            !state.adding.contains(&target) && !state.replicas.iter().any(|r| r.node == target),
            "a node never receives a second replica of a shard"
        );
        state.adding.push(target);
        state.busy = true;
        let (weight, size, id) = (state.weight, state.shard.size_bytes, state.shard.id);
        self.update_node(target, |node| {
            node.load += weight;
            node.disk_bytes = node.disk_bytes.saturating_add(size);
            node.moves += 1;
        });
        let target_id = self.nodes[target as usize].node.id.clone();
        self.push(
            Move::AddReplica {
                shard: id,
                target: target_id,
            },
            reason,
        );
    }

    fn plan_remove(&mut self, shard: u32, replica: usize, reason: Reason) {
        let state = &mut self.shards[shard as usize];
        let weight = state.weight;
        let id = state.shard.id;
        let entry = &mut state.replicas[replica];
        assert!(!entry.removing, "a replica is removed once");
        assert_ne!(
            state.primary,
            Some(entry.node),
            "the primary is never removed"
        );
        entry.removing = true;
        state.busy = true;
        let (node, name) = (entry.node, entry.name.clone());
        if node != UNKNOWN && holds_data(self.status(node)) {
            self.update_node(node, |state| {
                state.load -= weight;
                state.moves += 1;
            });
        }
        self.push(
            Move::RemoveReplica {
                shard: id,
                source: name,
            },
            reason,
        );
    }

    fn plan_transfer(&mut self, shard: u32, target: u32, reason: Reason) {
        let state = &mut self.shards[shard as usize];
        let (weight, id, old) = (state.weight, state.shard.id, state.primary);
        let expected_epoch = state.epoch;
        let new_epoch = Epoch(expected_epoch.0 + 1);
        assert!(new_epoch > expected_epoch, "epochs only grow");
        state.primary = Some(target);
        state.epoch = new_epoch;
        state.busy = true;
        let source = old.map(|old| {
            let name = state
                .replicas
                .iter()
                .find(|r| r.node == old)
                .map(|r| r.name.clone());
            (old, name)
        });
        if let Some((old, _)) = source {
            self.update_node(old, |node| node.primary_load -= weight);
        }
        self.update_node(target, |node| {
            node.primary_load += weight;
            node.moves += 1;
        });
        let target_id = self.nodes[target as usize].node.id.clone();
        self.push(
            Move::TransferPrimary {
                shard: id,
                source: source.and_then(|(_, name)| name),
                target: target_id,
                expected_epoch,
                new_epoch,
            },
            reason,
        );
    }

    // ---- spread ----------------------------------------------------------------------------

    fn domain_of(&self, node: u32) -> Option<u32> {
        (node != UNKNOWN).then(|| self.nodes[node as usize].domain)
    }

    /// Domains of the shard's live replicas (in place and not leaving, or being added),
    /// sorted, with repetitions.
    fn live_domains(&self, shard: u32) -> Vec<u32> {
        let state = &self.shards[shard as usize];
        let mut domains: Vec<u32> = state
            .replicas
            .iter()
            .filter(|r| !r.removing && counts_as_live(self.status(r.node)))
            .filter_map(|r| self.domain_of(r.node))
            .chain(state.adding.iter().filter_map(|t| self.domain_of(*t)))
            .collect();
        domains.sort_unstable();
        domains
    }

    fn distinct(sorted: &[u32]) -> usize {
        sorted.windows(2).filter(|pair| pair[0] != pair[1]).count()
            + usize::from(!sorted.is_empty())
    }

    fn spread_want(&self) -> usize {
        self.policy.replication_factor.min(self.domains_usable)
    }

    fn hosts(&self, shard: u32, node: u32) -> bool {
        let state = &self.shards[shard as usize];
        state.adding.contains(&node) || state.replicas.iter().any(|r| r.node == node)
    }

    fn fits(&self, shard: u32, node: u32) -> bool {
        let state = &self.nodes[node as usize];
        state
            .disk_bytes
            .saturating_add(self.shards[shard as usize].shard.size_bytes)
            <= state.disk_limit_bytes
    }

    /// Whether candidate `a` beats `b` for `shard`: lower relative load, then higher
    /// rendezvous weight, then smaller id.
    fn better_target(&self, shard: ShardId, a: (f64, u32), b: Option<(f64, u32)>) -> bool {
        let Some(b) = b else {
            return true;
        };
        if a.0 != b.0 {
            return a.0 < b.0;
        }
        let (na, nb) = (&self.nodes[a.1 as usize], &self.nodes[b.1 as usize]);
        let (ha, hb) = (rendezvous(na.hash, shard), rendezvous(nb.hash, shard));
        if ha != hb {
            return ha > hb;
        }
        a.1 < b.1
    }

    /// The best node to receive a new replica of `shard`, in a domain the shard does not use
    /// yet; or, if `allow_shared` and no such domain exists, in the least used domain.
    fn choose_target(&self, shard: u32, allow_shared: bool) -> Choice {
        let id = self.shards[shard as usize].shard.id;
        let used = self.live_domains(shard);
        let mut best: Option<(f64, u32)> = None;
        let mut unused_usable = false;
        for (domain, set) in self.domain_targets.iter().enumerate() {
            if used.binary_search(&(domain as u32)).is_ok() || set.is_empty() {
                continue;
            }
            unused_usable = true;
            best = self.best_in_domain(shard, id, set, best);
        }
        if let Some((_, node)) = best {
            return Choice::Node(node);
        }
        if !unused_usable && self.unused_usable_domain_exists(&used) {
            return Choice::Defer;
        }
        if !allow_shared {
            return Choice::Defer;
        }
        // Spread cannot grow: take the least used domain that has room.
        let mut best_shared: Option<(usize, f64, u32)> = None;
        for (domain, set) in self.domain_targets.iter().enumerate() {
            if set.is_empty() {
                continue;
            }
            let count = used.iter().filter(|d| **d == domain as u32).count();
            if best_shared.is_some_and(|(c, _, _)| c < count) {
                continue;
            }
            let current = best_shared
                .filter(|(c, _, _)| *c == count)
                .map(|(_, load, node)| (load, node));
            if let Some((load, node)) = self.best_in_domain(shard, id, set, current) {
                best_shared = Some((count, load, node));
            }
        }
        match best_shared {
            Some((_, _, node)) => Choice::Node(node),
            None if self.some_node_could_take(shard) => Choice::Defer,
            None => Choice::None,
        }
    }

    fn best_in_domain(
        &self,
        shard: u32,
        id: ShardId,
        set: &BTreeSet<LoadKey>,
        mut best: Option<(f64, u32)>,
    ) -> Option<(f64, u32)> {
        let mut level: Option<f64> = None;
        let mut ties = 0;
        for (load, node) in set.iter().take(SCAN_PER_DOMAIN_MAX) {
            if level.is_some_and(|level| load.0 > level) || ties >= TIES_PER_DOMAIN_MAX {
                break;
            }
            if self.hosts(shard, *node) || !self.fits(shard, *node) {
                continue;
            }
            level = Some(load.0);
            ties += 1;
            if self.better_target(id, (load.0, *node), best) {
                best = Some((load.0, *node));
            }
        }
        best
    }

    /// A domain the shard does not use has a node that could take replicas but is out of
    /// budget this round: wait rather than lower the spread.
    fn unused_usable_domain_exists(&self, used: &[u32]) -> bool {
        self.nodes.iter().any(|node| {
            node.takes_new
                && node.disk_bytes < node.disk_limit_bytes
                && used.binary_search(&node.domain).is_err()
        })
    }

    fn some_node_could_take(&self, shard: u32) -> bool {
        (0..self.nodes.len() as u32).any(|index| {
            let node = &self.nodes[index as usize];
            node.takes_new && !self.hosts(shard, index) && self.fits(shard, index)
        })
    }

    // ---- phase 1: repair -------------------------------------------------------------------

    fn live_count(&self, shard: u32) -> usize {
        let state = &self.shards[shard as usize];
        state
            .replicas
            .iter()
            .filter(|r| !r.removing && counts_as_live(self.status(r.node)))
            .count()
            + state.adding.len()
    }

    /// Adds replicas to shards below the replication factor (fewest live first), then to
    /// shards whose spread can grow.
    fn repair(&mut self) {
        let rf = self.policy.replication_factor;
        let want = self.spread_want();
        if self.domains_usable < rf && !self.shards.is_empty() {
            self.notes.insert(Infeasible::Spread {
                domains: self.domains_usable,
                want: rf,
            });
        }
        let mut needy: Vec<(usize, u32)> = Vec::new();
        for index in 0..self.shards.len() as u32 {
            let state = &self.shards[index as usize];
            let holders = state
                .replicas
                .iter()
                .filter(|r| holds_data(self.status(r.node)))
                .count();
            if !state.replicas.is_empty() && holders == 0 && state.adding.is_empty() {
                self.notes.insert(Infeasible::AllReplicasLost {
                    shard: state.shard.id,
                });
                continue;
            }
            let live = self.live_count(index);
            if live < rf || Self::distinct(&self.live_domains(index)) < want {
                needy.push((live, index));
            }
        }
        needy.sort_unstable();
        for (_, shard) in needy {
            loop {
                let live = self.live_count(shard);
                let spread = Self::distinct(&self.live_domains(shard));
                let reason = if live < rf {
                    Reason::Repair { live, want: rf }
                } else if spread < want {
                    Reason::Spread {
                        domains: spread,
                        want,
                    }
                } else {
                    break;
                };
                if self.round_full() {
                    self.repairs_deferred = true;
                    return;
                }
                let id = self.shards[shard as usize].shard.id;
                match self.choose_target(shard, live < rf) {
                    Choice::Node(target) => {
                        self.plan_add(shard, target, reason);
                        self.retire_draining(shard, target);
                    }
                    Choice::Defer => {
                        self.repairs_deferred = true;
                        break;
                    }
                    Choice::None => {
                        self.notes.insert(Infeasible::NoTarget { shard: id });
                        break;
                    }
                }
            }
        }
    }

    /// After adding a replica to a shard that has one on a draining node, plans the
    /// draining replica's removal behind the add (same sequence, see [`Plan`]).
    fn retire_draining(&mut self, shard: u32, added: u32) {
        let state = &self.shards[shard as usize];
        let draining = state.replicas.iter().position(|r| {
            !r.removing
                && state.primary != Some(r.node)
                && self.status(r.node) == NodeStatus::Draining
                && self.has_budget(r.node)
        });
        if let Some(replica) = draining
            && !self.round_full()
        {
            let by = self.nodes[added as usize].node.id.clone();
            self.plan_remove(shard, replica, Reason::Replaced { by });
        }
    }

    /// Removes replicas the shard no longer needs: on dead nodes, on draining nodes once the
    /// replacements are in place, and beyond the replication factor (keeping spread).
    fn remove_surplus(&mut self) {
        let rf = self.policy.replication_factor;
        let want = self.spread_want();
        // Excess removal must not leave a node below the band, or balance would pull the
        // replica straight back.
        // The mean is the one after every excess replica is gone.
        let excess: f64 = (0..self.shards.len() as u32)
            .map(|shard| {
                let extra = self.live_count(shard).saturating_sub(rf);
                extra as f64 * self.shards[shard as usize].weight
            })
            .sum();
        let capacity: f64 = self
            .nodes
            .iter()
            .filter(|n| n.node.status == NodeStatus::Alive)
            .map(|n| n.capacity)
            .sum();
        let mean = if capacity > 0.0 {
            (self.alive_mean(|node| node.load) * capacity - excess).max(0.0) / capacity
        } else {
            0.0
        };
        for shard in 0..self.shards.len() as u32 {
            // Replicas counted here are *in place*: a replacement still being added does not
            // make its predecessor removable.
            let live_in_place = |planner: &Self| -> Vec<u32> {
                planner.shards[shard as usize]
                    .replicas
                    .iter()
                    .filter(|r| !r.removing && counts_as_live(planner.status(r.node)))
                    .map(|r| r.node)
                    .collect()
            };
            let live = live_in_place(self);
            if live.len() < rf {
                continue;
            }
            let mut live_domains: Vec<u32> =
                live.iter().filter_map(|n| self.domain_of(*n)).collect();
            live_domains.sort_unstable();
            let spread = Self::distinct(&live_domains);
            let primary = self.shards[shard as usize].primary;
            for replica in 0..self.shards[shard as usize].replicas.len() {
                let entry = &self.shards[shard as usize].replicas[replica];
                if entry.removing || primary == Some(entry.node) {
                    continue;
                }
                let reason = match self.status(entry.node) {
                    NodeStatus::Dead => Reason::DeadReplica,
                    NodeStatus::Draining if spread >= want => Reason::Drain,
                    _ => continue,
                };
                if !self.has_budget(entry.node) || self.round_full() {
                    continue;
                }
                self.plan_remove(shard, replica, reason);
            }
            // Excess live replicas: drop the one whose loss keeps the spread, preferring
            // suspect nodes, then the most loaded, then the lowest rendezvous weight. Not while
            // the shard awaits a failover: the most advanced replica must stay a candidate.
            let primary_live = primary.is_some_and(|p| counts_as_live(self.status(p)));
            if !primary_live || self.repairs_deferred {
                continue;
            }
            let mut live = live_in_place(self);
            while live.len() > rf && !self.round_full() {
                let Some(victim) = self.excess_victim(shard, &live, mean) else {
                    break;
                };
                let node = self.shards[shard as usize].replicas[victim].node;
                if self.shards[shard as usize].primary == Some(node) {
                    // The primary's node is the most loaded: hand the primary over first, in
                    // the same sequence, then remove.
                    let Some(target) = self.most_advanced(shard, Some(node)) else {
                        break;
                    };
                    if self.moves.len() + 2 > self.policy.moves_per_round_max {
                        self.budget_hit = true;
                        break;
                    }
                    self.plan_transfer(shard, target, Reason::ClearForRemoval);
                }
                self.plan_remove(shard, victim, Reason::Excess);
                live.retain(|n| *n != node);
            }
        }
    }

    fn excess_victim(&self, shard: u32, live: &[u32], mean: f64) -> Option<usize> {
        let state = &self.shards[shard as usize];
        let mut domains: Vec<u32> = live.iter().filter_map(|n| self.domain_of(*n)).collect();
        domains.sort_unstable();
        let spread = Self::distinct(&domains);
        let keep = spread.min(self.spread_want());
        let mut best: Option<(usize, VictimScore)> = None;
        for (position, replica) in state.replicas.iter().enumerate() {
            let is_primary = state.primary == Some(replica.node);
            if replica.removing || !live.contains(&replica.node) || !self.has_budget(replica.node) {
                continue;
            }
            let mut rest = domains.clone();
            if let Some(domain) = self.domain_of(replica.node)
                && let Ok(at) = rest.binary_search(&domain)
            {
                rest.remove(at);
            }
            if Self::distinct(&rest) < keep {
                continue;
            }
            let node = &self.nodes[replica.node as usize];
            let after = (node.load - state.weight) / node.capacity;
            let stays_in_band = self.band(after, mean, node.capacity) != Band::Under;
            let score = (
                self.status(replica.node) == NodeStatus::Suspect,
                stays_in_band,
                node.ratio(),
                !is_primary,
                std::cmp::Reverse(rendezvous(node.hash, state.shard.id)),
                u32::MAX - replica.node,
            );
            let better = match &best {
                None => true,
                Some((_, current)) => {
                    (score.0, score.1, Load(score.2), score.3, score.4, score.5)
                        > (
                            current.0,
                            current.1,
                            Load(current.2),
                            current.3,
                            current.4,
                            current.5,
                        )
                }
            };
            if better {
                best = Some((position, score));
            }
        }
        best.map(|(position, _)| position)
    }

    // ---- phase 2: failover -----------------------------------------------------------------

    /// Gives every shard whose primary is missing, dead or draining a new primary: the alive
    /// replica with the most advanced applied position.
    fn failover(&mut self) {
        for shard in 0..self.shards.len() as u32 {
            let state = &self.shards[shard as usize];
            if state.transferring {
                continue;
            }
            let needs = match state.primary {
                None => true,
                Some(node) => matches!(self.status(node), NodeStatus::Dead | NodeStatus::Draining),
            };
            if !needs {
                continue;
            }
            let any_alive = state
                .replicas
                .iter()
                .any(|r| !r.removing && self.status(r.node) == NodeStatus::Alive);
            if !any_alive {
                if !state.replicas.is_empty() {
                    self.notes.insert(Infeasible::NoPrimaryCandidate {
                        shard: state.shard.id,
                    });
                }
                continue;
            }
            let Some(target) = self.most_advanced(shard, None) else {
                continue;
            };
            if self.round_full() {
                return;
            }
            self.plan_transfer(shard, target, Reason::Failover);
        }
    }

    /// The alive replica (other than `except`) with the most advanced applied position;
    /// among equals the one with the least primary load, then by rendezvous weight. `None`
    /// if no such replica has budget left this round: the caller waits rather than pick a
    /// less advanced one.
    fn most_advanced(&self, shard: u32, except: Option<u32>) -> Option<u32> {
        let state = &self.shards[shard as usize];
        let candidates = state.replicas.iter().filter(|r| {
            !r.removing && Some(r.node) != except && self.status(r.node) == NodeStatus::Alive
        });
        let top = candidates.clone().map(|r| r.applied).max()?;
        let mut best: Option<(f64, u32)> = None;
        for replica in candidates.filter(|r| r.applied == top) {
            if !self.has_budget(replica.node) {
                continue;
            }
            let load = self.nodes[replica.node as usize].primary_ratio();
            if self.better_target(state.shard.id, (load, replica.node), best) {
                best = Some((load, replica.node));
            }
        }
        let chosen = best.map(|(_, node)| node);
        debug_assert!(chosen.is_none_or(|node| {
            state
                .replicas
                .iter()
                .any(|r| r.node == node && r.applied == top)
        }));
        chosen
    }

    // ---- phase 3: split and merge ----------------------------------------------------------

    fn is_hot(&self, shard: &Shard) -> (bool, bool) {
        let by_qps = self
            .policy
            .split_qps_min
            .is_some_and(|min| shard.qps >= min);
        let by_size = self
            .policy
            .split_size_bytes_min
            .is_some_and(|min| shard.size_bytes >= min);
        (by_qps, by_size)
    }

    fn is_cold(&self, shard: &Shard) -> bool {
        let policy = self.policy;
        (policy.merge_qps_max.is_some() || policy.merge_size_bytes_max.is_some())
            && policy.merge_qps_max.is_none_or(|max| shard.qps <= max)
            && policy
                .merge_size_bytes_max
                .is_none_or(|max| shard.size_bytes <= max)
    }

    fn cooled(&self, shard: &Shard) -> bool {
        shard.reshaped_at_ms.is_none_or(|at| {
            self.input.now_ms.saturating_sub(at) >= self.policy.reshape_cooldown_ms
        })
    }

    /// A shard that may be reshaped or rebalanced: nothing pending, every replica on an
    /// alive node, exactly the replication factor, and a live primary.
    fn settled(&self, shard: u32) -> bool {
        let state = &self.shards[shard as usize];
        !state.busy
            && state.replicas.len() == self.policy.replication_factor
            && state
                .replicas
                .iter()
                .all(|r| self.status(r.node) == NodeStatus::Alive)
            && state
                .primary
                .is_some_and(|p| self.status(p) == NodeStatus::Alive)
    }

    /// Updates the hot/cold history and plans splits of shards hot for `split_hold_ms` and
    /// merges of adjacent pairs cold for `merge_hold_ms`. Returns the next history.
    fn reshape(&mut self) -> History {
        let now = self.input.now_ms;
        let mut history = History::default();
        for state in &self.shards {
            let shard = state.shard;
            let previous = self.input.history.shards.get(&shard.id);
            let (by_qps, by_size) = self.is_hot(shard);
            let entry = ShardHistory {
                hot_since_ms: (by_qps || by_size)
                    .then(|| previous.and_then(|p| p.hot_since_ms).unwrap_or(now)),
                cold_since_ms: self
                    .is_cold(shard)
                    .then(|| previous.and_then(|p| p.cold_since_ms).unwrap_or(now)),
            };
            if entry != ShardHistory::default() {
                history.shards.insert(shard.id, entry);
            }
        }
        let held = |since: Option<u64>, hold_ms: u64| {
            since.is_some_and(|since| now.saturating_sub(since) >= hold_ms)
        };

        for shard in 0..self.shards.len() as u32 {
            let state = &self.shards[shard as usize];
            let id = state.shard.id;
            let entry = history.shards.get(&id).copied().unwrap_or_default();
            if !held(entry.hot_since_ms, self.policy.split_hold_ms)
                || !self.cooled(state.shard)
                || !self.settled(shard)
            {
                continue;
            }
            let (by_qps, _) = self.is_hot(state.shard);
            let Some(split_key) = split_point(state.shard, by_qps) else {
                self.notes.insert(Infeasible::NoSplitPoint { shard: id });
                continue;
            };
            if self.round_full() {
                return history;
            }
            let right = ShardId(self.next_shard_id);
            self.next_shard_id += 1;
            self.shards[shard as usize].busy = true;
            self.push(
                Move::Split {
                    shard: id,
                    split_key,
                    right,
                },
                Reason::Hot,
            );
        }

        // Merge candidates: per table, in key order.
        let mut by_range: Vec<u32> = (0..self.shards.len() as u32)
            .filter(|s| {
                let entry = history
                    .shards
                    .get(&self.shards[*s as usize].shard.id)
                    .copied()
                    .unwrap_or_default();
                held(entry.cold_since_ms, self.policy.merge_hold_ms)
            })
            .collect();
        by_range.sort_by(|a, b| {
            let (a, b) = (
                self.shards[*a as usize].shard,
                self.shards[*b as usize].shard,
            );
            (&a.table, &a.range.start).cmp(&(&b.table, &b.range.start))
        });
        for pair in by_range.windows(2) {
            let (left, right) = (pair[0], pair[1]);
            if !self.mergeable(left, right) {
                continue;
            }
            if self.round_full() {
                return history;
            }
            self.shards[left as usize].busy = true;
            self.shards[right as usize].busy = true;
            let (left_id, right_id) = (
                self.shards[left as usize].shard.id,
                self.shards[right as usize].shard.id,
            );
            self.push(
                Move::Merge {
                    left: left_id,
                    right: right_id,
                },
                Reason::Cold,
            );
        }
        history
    }

    fn mergeable(&self, left: u32, right: u32) -> bool {
        let (a, b) = (&self.shards[left as usize], &self.shards[right as usize]);
        let adjacent = a.shard.table == b.shard.table
            && a.shard.range.end.as_ref() == Some(&b.shard.range.start);
        let same_nodes = a
            .replicas
            .iter()
            .map(|r| r.node)
            .eq(b.replicas.iter().map(|r| r.node));
        // The merged shard must stay well clear of the split thresholds.
        let qps = a.shard.qps.saturating_add(b.shard.qps);
        let size = a.shard.size_bytes.saturating_add(b.shard.size_bytes);
        let clear = self
            .policy
            .split_qps_min
            .is_none_or(|min| qps.saturating_mul(2) < min)
            && self
                .policy
                .split_size_bytes_min
                .is_none_or(|min| size.saturating_mul(2) < min);
        adjacent
            && same_nodes
            && clear
            && self.settled(left)
            && self.settled(right)
            && self.cooled(a.shard)
            && self.cooled(b.shard)
    }

    // ---- phase 4: balance ------------------------------------------------------------------

    fn band(&self, ratio: f64, mean: f64, capacity: f64) -> Band {
        let policy = self.policy;
        let gap = (ratio - mean) * capacity;
        if ratio > mean * (1.0 + policy.balance_band_ratio) && gap > policy.balance_band_abs {
            Band::Over
        } else if ratio < mean * (1.0 - policy.balance_band_ratio) && -gap > policy.balance_band_abs
        {
            Band::Under
        } else {
            Band::Within
        }
    }

    fn alive_mean(&self, get: impl Fn(&NodeState<'_>) -> f64) -> f64 {
        let (mut total, mut capacity) = (0.0, 0.0);
        for node in self
            .nodes
            .iter()
            .filter(|n| n.node.status == NodeStatus::Alive)
        {
            total += get(node);
            capacity += node.capacity;
        }
        if capacity > 0.0 {
            total / capacity
        } else {
            0.0
        }
    }

    /// Moves primaries between replicas, from nodes above the band to nodes below it. Cheap:
    /// no data moves.
    fn balance_primaries(&mut self) {
        if self.budget_hit {
            return;
        }
        let mean = self.alive_mean(|node| node.primary_load);
        for index in 0..self.nodes.len() as u32 {
            let state = &mut self.nodes[index as usize];
            if state.node.status != NodeStatus::Alive {
                continue;
            }
            let key = (Load(state.primary_ratio()), index);
            state.in_primary_sources = true;
            self.primary_sources.insert(key);
            if self.can_target(index) {
                self.nodes[index as usize].in_primary_targets = true;
                self.primary_targets.insert(key);
            }
        }
        while !self.round_full() {
            if let Some(&(ratio, source)) = self.primary_sources.last() {
                let capacity = self.nodes[source as usize].capacity;
                if self.band(ratio.0, mean, capacity) == Band::Over {
                    match self.primary_move(source, None) {
                        Some((shard, target)) => {
                            self.plan_transfer(shard, target, Reason::BalancePrimaries)
                        }
                        None => self.update_node(source, |n| n.in_primary_sources = false),
                    }
                    continue;
                }
            }
            if let Some(&(ratio, target)) = self.primary_targets.first() {
                let capacity = self.nodes[target as usize].capacity;
                if self.band(ratio.0, mean, capacity) == Band::Under {
                    match self.primary_move(target, Some(())) {
                        Some((shard, target)) => {
                            self.plan_transfer(shard, target, Reason::BalancePrimaries)
                        }
                        None => self.update_node(target, |n| n.in_primary_targets = false),
                    }
                    continue;
                }
            }
            break;
        }
    }

    /// The best primary transfer giving from `node` (`pull == None`) or taking onto `node`
    /// (`pull == Some`). Returns the shard and the new primary.
    fn primary_move(&self, node: u32, pull: Option<()>) -> Option<(u32, u32)> {
        let mut best: Option<(Load, Load, u64, u32, u32)> = None;
        for &shard in &self.nodes[node as usize].hosted {
            if !self.settled(shard) {
                continue;
            }
            let state = &self.shards[shard as usize];
            let Some(primary) = state.primary else {
                continue;
            };
            let top = state.replicas.iter().map(|r| r.applied).max()?;
            let lag_ok = |replica: &ReplicaState<'_>| {
                top.0.saturating_sub(replica.applied.0) <= self.policy.transfer_lag_max
            };
            let pairs: Vec<(u32, u32)> = match pull {
                None if primary == node => state
                    .replicas
                    .iter()
                    .filter(|r| r.node != node && lag_ok(r))
                    .map(|r| (node, r.node))
                    .collect(),
                Some(()) if primary != node => state
                    .replicas
                    .iter()
                    .filter(|r| r.node == node && lag_ok(r))
                    .map(|_| (primary, node))
                    .collect(),
                _ => continue,
            };
            for (source, target) in pairs {
                let (s, t) = (&self.nodes[source as usize], &self.nodes[target as usize]);
                if !t.takes_new || t.moves >= self.policy.moves_per_node_max {
                    continue;
                }
                let after_target = (t.primary_load + state.weight) / t.capacity;
                let after_source = (s.primary_load - state.weight) / s.capacity;
                if after_target >= s.primary_ratio() {
                    continue;
                }
                let candidate = (
                    Load(t.primary_ratio() - s.primary_ratio()),
                    Load((after_source - after_target).abs()),
                    u64::MAX - rendezvous(t.hash, state.shard.id),
                    shard,
                    target,
                );
                if best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
        }
        best.map(|(_, _, _, shard, target)| (shard, target))
    }

    /// Relocates replicas from nodes above the band, or onto nodes below it, never lowering
    /// a shard's spread. The old replica is removed in a later round, once the new one is in
    /// place.
    fn balance_replicas(&mut self) {
        if self.budget_hit {
            return;
        }
        let mean = self.alive_mean(|node| node.load);
        for index in 0..self.nodes.len() as u32 {
            let state = &mut self.nodes[index as usize];
            if state.node.status == NodeStatus::Alive {
                state.in_sources = true;
                self.sources.insert((Load(state.ratio()), index));
            }
        }
        while !self.round_full() {
            if let Some(&(ratio, source)) = self.sources.last() {
                let capacity = self.nodes[source as usize].capacity;
                if self.band(ratio.0, mean, capacity) == Band::Over {
                    let peers: Vec<u32> = self
                        .targets
                        .iter()
                        .take(BALANCE_PEERS_MAX)
                        .map(|(_, n)| *n)
                        .collect();
                    let pairs = peers.iter().map(|t| (source, *t));
                    match self.replica_move(pairs) {
                        Some((shard, from, to)) => self.plan_relocation(shard, from, to),
                        None => self.update_node(source, |n| n.in_sources = false),
                    }
                    continue;
                }
            }
            if let Some(&(ratio, target)) = self.targets.first() {
                let capacity = self.nodes[target as usize].capacity;
                if self.band(ratio.0, mean, capacity) == Band::Under {
                    let peers: Vec<u32> = self
                        .sources
                        .iter()
                        .rev()
                        .take(BALANCE_PEERS_MAX)
                        .map(|(_, n)| *n)
                        .collect();
                    let pairs = peers.iter().map(|s| (*s, target));
                    match self.replica_move(pairs) {
                        Some((shard, from, to)) => self.plan_relocation(shard, from, to),
                        None => self.update_node(target, |n| n.in_targets = false),
                    }
                    continue;
                }
            }
            break;
        }
    }

    /// Plans a relocation as one sequence: add on `to`, hand over the primary if `from`
    /// holds it, then remove from `from`. The removal waits for the add (see [`Plan`]).
    fn plan_relocation(&mut self, shard: u32, from: u32, to: u32) {
        let moves_primary = self.shards[shard as usize].primary == Some(from);
        let needed = 2 + usize::from(moves_primary);
        if self.moves.len() + needed > self.policy.moves_per_round_max {
            self.budget_hit = true;
            return;
        }
        let from_id = self.nodes[from as usize].node.id.clone();
        let to_id = self.nodes[to as usize].node.id.clone();
        self.plan_add(shard, to, Reason::BalanceReplicas { from: from_id });
        if moves_primary {
            self.plan_transfer(shard, to, Reason::ClearForRemoval);
        }
        let replica = self.shards[shard as usize]
            .replicas
            .iter()
            .position(|r| r.node == from)
            .expect("a relocation leaves a node that holds the shard");
        self.plan_remove(shard, replica, Reason::Replaced { by: to_id });
    }

    /// The best relocation among the candidate (source, target) pairs: the one leaving the
    /// pair's larger relative load smallest; ties by rendezvous weight, then ids.
    fn replica_move(&self, pairs: impl Iterator<Item = (u32, u32)>) -> Option<(u32, u32, u32)> {
        let mut best: Option<RelocationScore> = None;
        for (source, target) in pairs {
            if source == target {
                continue;
            }
            let (s, t) = (&self.nodes[source as usize], &self.nodes[target as usize]);
            if !t.in_targets || s.moves >= self.policy.moves_per_node_max {
                continue;
            }
            for &shard in &s.hosted {
                let state = &self.shards[shard as usize];
                if !self.settled(shard) {
                    continue;
                }
                // Moving the primary's replica also hands the primary to the target.
                let target_moves = 1 + usize::from(state.primary == Some(source));
                if t.moves + target_moves > self.policy.moves_per_node_max {
                    continue;
                }
                let after_target = (t.load + state.weight) / t.capacity;
                if after_target >= s.ratio() {
                    continue;
                }
                if self.hosts(shard, target) || !self.fits(shard, target) {
                    continue;
                }
                // Spread: the target's domain must be the source's or one the others lack.
                if t.domain != s.domain
                    && state
                        .replicas
                        .iter()
                        .any(|r| r.node != source && self.domain_of(r.node) == Some(t.domain))
                {
                    continue;
                }
                let after_source = (s.load - state.weight) / s.capacity;
                // Widest gap first (the heaviest source for a pull, the lightest target for
                // a push), then the weight that best evens the pair, then a non-primary.
                let candidate = (
                    Load(t.ratio() - s.ratio()),
                    Load((after_source - after_target).abs()),
                    state.primary == Some(source),
                    u64::MAX - rendezvous(t.hash, state.shard.id),
                    shard,
                    source,
                    target,
                );
                if best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
        }
        best.map(|(_, _, _, _, shard, source, target)| (shard, source, target))
    }

    fn finish(mut self, history: History) -> Plan {
        if self.budget_hit {
            self.notes.insert(Infeasible::Budget {
                moves_max: self.policy.moves_per_round_max,
            });
        }
        assert!(self.moves.len() <= self.policy.moves_per_round_max);
        debug_assert!(
            self.moves.iter().all(|planned| {
                let named = match &planned.action {
                    Move::AddReplica { target, .. } => Some(target),
                    Move::RemoveReplica { source, .. } => Some(source),
                    Move::TransferPrimary { target, .. } => Some(target),
                    Move::Split { .. } | Move::Merge { .. } => None,
                };
                named
                    .and_then(|id| self.node_index(id))
                    .filter(|n| holds_data(self.status(*n)))
                    .is_none_or(|n| self.nodes[n as usize].moves <= self.policy.moves_per_node_max)
            }),
            "no node named by more than moves_per_node_max moves"
        );
        Plan {
            moves: self.moves,
            infeasible: self.notes.into_iter().collect(),
            history,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Band {
    Over,
    Within,
    Under,
}

enum Choice {
    /// This node.
    Node(u32),
    /// Nothing now, but a node will have room in a later round.
    Defer,
    /// No node can ever take it under the current membership.
    None,
}

/// The key at the load midpoint of the shard's samples (by QPS if `by_qps`, else by size),
/// strictly inside its range.
fn split_point(shard: &Shard, by_qps: bool) -> Option<Key> {
    let weight = |sample: &crate::model::KeySample| {
        if by_qps {
            sample.qps
        } else {
            sample.size_bytes
        }
    };
    let total: u64 = shard.samples.iter().map(weight).sum();
    let mut before: u64 = 0;
    let mut best: Option<(u64, &Key)> = None;
    for sample in &shard.samples {
        if shard.range.splits_at(&sample.start_key) {
            // Distance from this boundary to the midpoint, doubled to stay in integers.
            let distance = (2 * u128::from(before)).abs_diff(u128::from(total));
            let distance = u64::try_from(distance).unwrap_or(u64::MAX);
            if best.is_none_or(|(d, _)| distance < d) {
                best = Some((distance, &sample.start_key));
            }
        }
        before += weight(sample);
    }
    best.map(|(_, key)| key.clone())
}
