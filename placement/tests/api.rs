//! The public boundary: malformed input is refused without planning, and `apply` models
//! each move faithfully (including refusing stale ones).

mod common;

use common::{node, shard};
use shoal_placement::{
    ClusterState, Epoch, Key, KeySample, Move, NodeId, NodeStatus, PlanError, Policy, ShardId,
    apply, plan,
};

fn three_nodes() -> ClusterState {
    ClusterState {
        nodes: vec![
            node("a", "r", "z1", NodeStatus::Alive),
            node("b", "r", "z2", NodeStatus::Alive),
            node("c", "r", "z3", NodeStatus::Alive),
        ],
        shards: vec![shard(1, &[("a", 1), ("b", 1), ("c", 1)], Some("a"))],
        ..ClusterState::default()
    }
}

#[test]
fn malformed_input_is_refused() {
    let policy = Policy::default();
    let mut state = three_nodes();
    state.nodes.push(node("a", "r", "z9", NodeStatus::Alive));
    assert_eq!(
        plan(&state, &policy),
        Err(PlanError::DuplicateNode("a".into()))
    );

    let mut state = three_nodes();
    state.shards.push(shard(1, &[], None));
    assert_eq!(plan(&state, &policy), Err(PlanError::DuplicateShard(1)));

    let mut state = three_nodes();
    state.shards[0].primary = Some(NodeId("zz".into()));
    assert!(matches!(
        plan(&state, &policy),
        Err(PlanError::PrimaryNotReplica { .. })
    ));

    let mut state = three_nodes();
    let copy = state.shards[0].replicas[0].clone();
    state.shards[0].replicas.push(copy);
    assert!(matches!(
        plan(&state, &policy),
        Err(PlanError::DuplicateReplica { .. })
    ));

    let bad = Policy {
        replication_factor: 0,
        ..Policy::default()
    };
    assert!(matches!(
        plan(&three_nodes(), &bad),
        Err(PlanError::Policy(_))
    ));
    let flapping = Policy {
        split_qps_min: Some(100),
        merge_qps_max: Some(50),
        ..Policy::default()
    };
    assert!(matches!(
        plan(&three_nodes(), &flapping),
        Err(PlanError::Policy(_))
    ));
}

#[test]
fn replicas_on_unknown_nodes_count_as_dead() {
    let mut state = three_nodes();
    state.nodes.push(node("d", "r", "z3", NodeStatus::Alive));
    state.nodes.retain(|n| n.id.0 != "c");
    let plan = plan(&state, &Policy::default()).unwrap();
    assert_eq!(plan.to_string(), "add 1 -> d  # repair 2/3\n");
}

#[test]
fn apply_refuses_stale_moves_and_changes_nothing() {
    let mut state = three_nodes();
    let before = state.clone();
    let stale = Move::TransferPrimary {
        shard: ShardId(1),
        source: Some(NodeId("a".into())),
        target: NodeId("b".into()),
        expected_epoch: Epoch(7),
        new_epoch: Epoch(8),
    };
    assert!(apply(&mut state, &stale).is_err());
    let primary = Move::RemoveReplica {
        shard: ShardId(1),
        source: NodeId("a".into()),
    };
    assert!(apply(&mut state, &primary).is_err());
    assert_eq!(state, before);
}

#[test]
fn split_then_merge_restores_the_range() {
    let mut state = three_nodes();
    state.shards[0].qps = 100;
    state.shards[0].samples = vec![
        KeySample {
            start_key: state.shards[0].range.start.clone(),
            qps: 30,
            size_bytes: 10,
        },
        KeySample {
            start_key: Key(b"k000001m".to_vec()),
            qps: 70,
            size_bytes: 30,
        },
    ];
    let range = state.shards[0].range.clone();
    let split = Move::Split {
        shard: ShardId(1),
        split_key: Key(b"k000001m".to_vec()),
        right: ShardId(2),
    };
    apply(&mut state, &split).unwrap();
    assert_eq!(state.shards.len(), 2);
    assert_eq!(state.shards[0].qps + state.shards[1].qps, 100);
    assert_eq!(state.shards[0].qps, 30);
    assert!(state.shards.iter().all(|s| s.epoch == Epoch(2)));
    apply(
        &mut state,
        &Move::Merge {
            left: ShardId(1),
            right: ShardId(2),
        },
    )
    .unwrap();
    assert_eq!(state.shards.len(), 1);
    assert_eq!(state.shards[0].range, range);
    assert_eq!(state.shards[0].qps, 100);
    assert_eq!(state.shards[0].epoch, Epoch(3));
}

#[test]
fn history_tracks_hot_shards_across_rounds() {
    let policy = Policy {
        split_qps_min: Some(50),
        split_hold_ms: 1000,
        ..Policy::default()
    };
    let mut state = three_nodes();
    state.shards[0].qps = 60;
    state.now_ms = 5000;
    let first = plan(&state, &policy).unwrap();
    assert_eq!(first.history.shards[&ShardId(1)].hot_since_ms, Some(5000));
    state.history = first.history;
    state.now_ms = 5500;
    let second = plan(&state, &policy).unwrap();
    assert_eq!(second.history.shards[&ShardId(1)].hot_since_ms, Some(5000));
    // Held long enough, but there is no sample to split at: reported, not guessed.
    state.history = second.history;
    state.now_ms = 6000;
    let third = plan(&state, &policy).unwrap();
    assert_eq!(third.to_string(), "infeasible no-split-point 1\n");
    // Cooling below the threshold forgets the shard.
    state.shards[0].qps = 10;
    assert!(plan(&state, &policy).unwrap().history.shards.is_empty());
}
