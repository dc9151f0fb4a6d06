//! Distributed behaviour of [`crate::RaftNode`] on the in-memory harness.

use crate::Outcome;
use crate::harness::{Cluster, set_config};

#[test]
fn three_nodes_elect_one_leader() {
    let mut cluster = Cluster::new(3, 1);
    let leader = cluster.elect();
    cluster.run_ticks(50);
    assert_eq!(cluster.leader(), Some(leader.clone()));
    for node in cluster.nodes.values().flatten() {
        assert_eq!(node.leader(), Some(leader.clone()));
    }
}

#[test]
fn proposal_commits_and_applies_on_all() {
    let mut cluster = Cluster::new(3, 2);
    let index = cluster.propose_and_commit(&set_config("r1", "k", "v1"));
    for node in cluster.nodes.values().flatten() {
        assert_eq!(node.catalog().state().config["k"].value, "v1");
        let applied = &cluster.applied[node.node_id()];
        let last = applied.last().unwrap();
        assert_eq!(last.index, index);
        assert_eq!(last.result, Ok(Outcome::ConfigSet { version: 1 }));
    }
}

#[test]
fn same_seed_same_history() {
    let run = |seed: u64| {
        let mut cluster = Cluster::new(5, seed);
        cluster.loss_percent = 10;
        cluster.elect();
        for i in 0..5 {
            cluster.propose_and_commit(&set_config(&format!("r{i}"), "k", &i.to_string()));
        }
        let leader = cluster.leader().unwrap();
        cluster.crash(&leader);
        cluster.elect();
        cluster.run_ticks(30);
        cluster.history
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}
