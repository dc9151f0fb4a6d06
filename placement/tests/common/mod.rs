//! Shared helpers for the placement tests: cluster builders, a seeded generator and the
//! plan → apply loop.

#![allow(dead_code, unreachable_pub)]

use shoal_placement::{
    ClusterState, Epoch, Key, KeyRange, Locality, Move, Node, NodeId, NodeStatus, Plan, Policy,
    Position, Replica, Resources, Shard, ShardId, TableId, apply, plan,
};

/// splitmix64, so a failing case is replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

pub fn node(id: &str, region: &str, zone: &str, status: NodeStatus) -> Node {
    Node {
        id: NodeId(id.into()),
        locality: Locality {
            region: region.into(),
            zone: zone.into(),
            rack: "k0".into(),
        },
        status,
        capacity: Resources {
            disk_bytes: 1 << 40,
            cpu_millicores: 0,
            qps: 0,
        },
        usage: Resources::default(),
    }
}

pub fn shard(id: u64, replicas: &[(&str, u64)], primary: Option<&str>) -> Shard {
    Shard {
        id: ShardId(id),
        table: TableId("t".into()),
        range: KeyRange {
            start: Key(format!("k{id:06}").into_bytes()),
            end: Some(Key(format!("k{:06}", id + 1).into_bytes())),
        },
        size_bytes: 1 << 20,
        qps: 10,
        replicas: replicas
            .iter()
            .map(|(node, applied)| Replica {
                node: NodeId((*node).into()),
                applied: Position(*applied),
            })
            .collect(),
        primary: primary.map(|p| NodeId(p.into())),
        epoch: Epoch(1),
        reshaped_at_ms: None,
        samples: Vec::new(),
    }
}

/// `zones` zones (in two regions) of `per_zone` nodes; node `z{zone}n{i}`.
pub fn nodes(zones: usize, per_zone: usize) -> Vec<Node> {
    let mut nodes = Vec::new();
    for zone in 0..zones {
        for i in 0..per_zone {
            nodes.push(node(
                &format!("z{zone}n{i}"),
                &format!("r{}", zone % 2),
                &format!("z{zone}"),
                NodeStatus::Alive,
            ));
        }
    }
    nodes
}

/// A perfectly uniform cluster: every node holds `rf × per_node_primaries` replicas and
/// `per_node_primaries` primaries, each shard across `rf` zones. Needs `zones ≥ rf`.
pub fn uniform(
    zones: usize,
    per_zone: usize,
    rf: usize,
    per_node_primaries: usize,
) -> ClusterState {
    assert!(zones >= rf);
    let nodes = nodes(zones, per_zone);
    let count = zones * per_zone * per_node_primaries;
    let shards = (0..count)
        .map(|i| {
            let names: Vec<String> = (0..rf)
                .map(|k| format!("z{}n{}", (i + k) % zones, (i / zones + k) % per_zone))
                .collect();
            let replicas: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 5)).collect();
            shard(i as u64 + 1, &replicas, Some(names[0].as_str()))
        })
        .collect();
    ClusterState {
        nodes,
        shards,
        ..ClusterState::default()
    }
}

/// Applies every move of `plan` and stores its history.
pub fn apply_plan(state: &mut ClusterState, plan: &Plan) {
    state.history = plan.history.clone();
    for planned in &plan.moves {
        apply(state, &planned.action)
            .unwrap_or_else(|e| panic!("{} does not apply: {e}", planned.action));
    }
    state.now_ms += 1000;
}

/// Plans and applies until a plan has no moves; returns the plans with moves, and the final
/// (empty) plan. Panics after `rounds_max` rounds.
pub fn converge(state: &mut ClusterState, policy: &Policy, rounds_max: usize) -> (Vec<Plan>, Plan) {
    let mut plans = Vec::new();
    loop {
        let next = plan(state, policy).expect("valid input");
        if next.moves.is_empty() {
            return (plans, next);
        }
        assert!(
            plans.len() < rounds_max,
            "no convergence within {rounds_max} rounds; last plan:\n{next}"
        );
        apply_plan(state, &next);
        plans.push(next);
    }
}

/// The locality domain of a node at zone tier.
pub fn zone_of(state: &ClusterState, id: &NodeId) -> Option<String> {
    state
        .nodes
        .iter()
        .find(|n| n.id == *id)
        .map(|n| format!("{}/{}", n.locality.region, n.locality.zone))
}

pub fn status_of(state: &ClusterState, id: &NodeId) -> NodeStatus {
    state
        .nodes
        .iter()
        .find(|n| n.id == *id)
        .map_or(NodeStatus::Dead, |n| n.status)
}

/// Zones with at least one alive node.
pub fn usable_zones(state: &ClusterState) -> usize {
    let zones: std::collections::BTreeSet<String> = state
        .nodes
        .iter()
        .filter(|n| n.status == NodeStatus::Alive)
        .filter_map(|n| zone_of(state, &n.id))
        .collect();
    zones.len()
}

/// Checks that every shard has `rf` replicas on alive nodes over `min(rf, zones)` zones and
/// an alive primary.
pub fn assert_fully_replicated(state: &ClusterState, policy: &Policy) {
    let rf = policy.replication_factor;
    let want = rf.min(usable_zones(state));
    for shard in &state.shards {
        let live: Vec<&Replica> = shard.replicas.iter().collect();
        assert_eq!(
            live.len(),
            rf,
            "shard {} replicas {:?}",
            shard.id.0,
            shard.replicas
        );
        for replica in &live {
            assert_eq!(status_of(state, &replica.node), NodeStatus::Alive);
        }
        let zones: std::collections::BTreeSet<Option<String>> =
            live.iter().map(|r| zone_of(state, &r.node)).collect();
        assert_eq!(zones.len(), want, "shard {} spread", shard.id.0);
        let primary = shard.primary.as_ref().expect("a primary");
        assert_eq!(status_of(state, primary), NodeStatus::Alive);
    }
}

/// Number of moves of `plan` naming each node.
pub fn per_node(plan: &Plan) -> std::collections::BTreeMap<NodeId, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for planned in &plan.moves {
        let named = match &planned.action {
            Move::AddReplica { target, .. } => Some(target),
            Move::RemoveReplica { source, .. } => Some(source),
            Move::TransferPrimary { target, .. } => Some(target),
            _ => None,
        };
        if let Some(node) = named {
            *counts.entry(node.clone()).or_insert(0) += 1;
        }
    }
    counts
}
