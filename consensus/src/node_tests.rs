//! Distributed behaviour of [`crate::RaftNode`] on the in-memory harness.

use crate::harness::node_id;
use crate::harness::{Cluster, set_config};
use crate::{CatalogIndex, MembershipChange, Outcome, Output, Role};

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

#[test]
fn leader_failure_elects_a_new_leader_that_keeps_committed_entries() {
    let mut cluster = Cluster::new(3, 3);
    cluster.propose_and_commit(&set_config("r1", "k", "v1"));
    let old_leader = cluster.leader().unwrap();
    cluster.crash(&old_leader);
    let new_leader = cluster.elect();
    assert_ne!(new_leader, old_leader);
    cluster.propose_and_commit(&set_config("r2", "k", "v2"));
    assert_eq!(
        cluster.node(&new_leader).catalog().state().config["k"].version,
        2
    );
    cluster.start(&old_leader);
    // Restarted, it may first be behind (its last commit index reaches disk
    // with a later sync); it catches up from the new leader.
    assert!(cluster.run_until(200, |c| {
        c.node(&old_leader)
            .catalog()
            .state()
            .config
            .get("k")
            .is_some_and(|entry| entry.version == 2)
    }));
}

#[test]
fn minority_cannot_commit() {
    let mut cluster = Cluster::new(5, 4);
    let leader = cluster.elect();
    let others: Vec<_> = cluster
        .nodes
        .keys()
        .filter(|n| **n != leader)
        .cloned()
        .collect();
    // The leader keeps one follower: a minority of two.
    cluster.partition(&[leader.clone(), others[0].clone()]);
    let before = cluster.node(&leader).commit_index();
    let proposed = cluster
        .node_mut(&leader)
        .propose(&set_config("r1", "k", "v"));
    cluster.collect(&leader);
    cluster.run_ticks(100);
    assert!(cluster.node(&leader).commit_index() == before || proposed.is_err());
    assert!(
        !cluster
            .node(&others[0])
            .catalog()
            .state()
            .config
            .contains_key("k")
    );
    // Check-quorum makes the isolated leader step down; the majority elects another.
    assert_ne!(cluster.node(&leader).role(), Role::Leader);
    let majority_leader = cluster.leader().unwrap();
    assert!(others[1..].contains(&majority_leader));
    cluster.heal();
    cluster.propose_and_commit(&set_config("r2", "k", "w"));
    for node in cluster.nodes.values().flatten() {
        assert_eq!(node.catalog().state().config["k"].value, "w");
    }
}

#[test]
fn add_and_remove_voters() {
    let mut cluster = Cluster::new(3, 5);
    let leader = cluster.elect();
    let n4 = node_id("n4");
    let n5 = node_id("n5");
    cluster.add_empty_node(&n4);
    cluster.add_empty_node(&n5);
    // Two changes at once go through a joint configuration.
    cluster
        .node_mut(&leader)
        .propose_conf_change(&[
            MembershipChange::AddVoter(n4.clone()),
            MembershipChange::AddVoter(n5.clone()),
        ])
        .unwrap();
    cluster.collect(&leader);
    assert!(cluster.run_until(300, |c| {
        c.nodes
            .values()
            .flatten()
            .all(|node| node.voters().len() == 5)
            && c.nodes
                .values()
                .flatten()
                .all(|n| n.catalog().seeds().voters_outgoing.is_empty())
    }));
    cluster.propose_and_commit(&set_config("r1", "k", "v"));
    assert_eq!(cluster.node(&n5).catalog().state().config["k"].value, "v");
    // Remove a follower with a simple change.
    let leader = cluster.elect();
    let victim = cluster
        .nodes
        .keys()
        .find(|n| **n != leader)
        .unwrap()
        .clone();
    cluster
        .node_mut(&leader)
        .propose_conf_change(&[MembershipChange::Remove(victim.clone())])
        .unwrap();
    cluster.collect(&leader);
    assert!(cluster.run_until(300, |c| c.node(&leader).voters().len() == 4));
    assert!(!cluster.node(&leader).voters().contains(&victim));
    cluster.crash(&victim);
    cluster.propose_and_commit(&set_config("r2", "k", "w"));
}

#[test]
fn conf_change_refuses_non_members_and_followers() {
    let mut cluster = Cluster::new(3, 6);
    let leader = cluster.elect();
    let follower = cluster
        .nodes
        .keys()
        .find(|n| **n != leader)
        .unwrap()
        .clone();
    let err = cluster
        .node_mut(&leader)
        .propose_conf_change(&[MembershipChange::Remove(node_id("nobody"))])
        .unwrap_err();
    assert!(matches!(err, crate::Error::InvalidConfChange { .. }));
    let err = cluster
        .node_mut(&follower)
        .propose_conf_change(&[MembershipChange::AddVoter(node_id("n9"))])
        .unwrap_err();
    assert!(matches!(err, crate::Error::NotLeader { leader: Some(ref l) } if *l == leader));
}

#[test]
fn leader_transfer_moves_leadership() {
    let mut cluster = Cluster::new(3, 7);
    let leader = cluster.elect();
    cluster.propose_and_commit(&set_config("r1", "k", "v"));
    let target = cluster
        .nodes
        .keys()
        .find(|n| **n != leader)
        .unwrap()
        .clone();
    cluster.node_mut(&leader).transfer_leader(&target).unwrap();
    cluster.collect(&leader);
    cluster.deliver();
    assert!(cluster.run_until(100, |c| c.leader() == Some(target.clone())));
}

#[test]
fn read_index_on_leader_and_follower() {
    let mut cluster = Cluster::new(3, 8);
    let leader = cluster.elect();
    let index = cluster.propose_and_commit(&set_config("r1", "k", "v"));
    let follower = cluster
        .nodes
        .keys()
        .find(|n| **n != leader)
        .unwrap()
        .clone();
    for (name, context) in [
        (leader.clone(), b"on-leader".to_vec()),
        (follower, b"on-follower".to_vec()),
    ] {
        cluster.node_mut(&name).read_index(context.clone()).unwrap();
        cluster.collect(&name);
        assert!(cluster.run_until(50, |c| c.reads.get(&name).is_some_and(|r| !r.is_empty())));
        let (got, read_at) = cluster.reads[&name][0].clone();
        assert_eq!(got, context);
        assert!(read_at >= index);
        assert!(cluster.node(&name).applied_index() >= read_at);
    }
}

/// Ten writes commit, an eleventh is only proposed, then every node crashes and
/// restarts: the committed ones are all there, everywhere. (The harness also
/// compares catalog hashes by index after every delivery round, so every node
/// re-derived the same history.)
fn committed_entries_survive_crash_of_every_node_on(mut cluster: Cluster) {
    for i in 0..10 {
        cluster.propose_and_commit(&set_config(&format!("r{i}"), "k", &i.to_string()));
    }
    // An entry proposed but not yet replicated may be lost; committed ones may not.
    let leader = cluster.leader().unwrap();
    let _ = cluster
        .node_mut(&leader)
        .propose(&set_config("late", "k", "late"));
    cluster.collect(&leader);
    let names: Vec<_> = cluster.nodes.keys().cloned().collect();
    let applied_before = cluster.node(&leader).applied_index();
    for name in &names {
        cluster.crash(name);
    }
    for name in &names {
        cluster.start(name);
    }
    cluster.elect();
    cluster.run_ticks(20);
    for name in &names {
        let node = cluster.node(name);
        assert!(node.applied_index() >= applied_before);
        assert!(node.catalog().state().config["k"].version >= 10);
    }
}

#[test]
fn committed_entries_survive_crash_of_every_node() {
    committed_entries_survive_crash_of_every_node_on(Cluster::new(3, 9));
}

#[test]
fn crash_loses_only_unsynced_writes() {
    let mut cluster = Cluster::new(3, 10);
    cluster.propose_and_commit(&set_config("r1", "k", "v"));
    for store in cluster.stores.values() {
        // Entries, votes and terms are synced before a node hands out outputs;
        // only a commit-index-only hard state may wait for the next sync.
        // (The stores are crashed under running nodes; nothing runs after this.)
        let before = store.live_state();
        store.crash();
        let after = store.live_state();
        assert_eq!(after.entries, before.entries, "entries survive a crash");
        assert_eq!(
            after.snapshot, before.snapshot,
            "the snapshot survives a crash"
        );
        assert_eq!(after.hard_state.term, before.hard_state.term);
        assert_eq!(after.hard_state.vote, before.hard_state.vote);
        assert!(after.hard_state.commit <= before.hard_state.commit);
    }
}

#[test]
fn snapshots_bound_the_log_and_catch_up_new_nodes() {
    let mut cluster = Cluster::with_config(3, 11, |config| {
        config.snapshot_interval_entries = 10;
        config.log_retained_entries = 2;
    });
    for i in 0..40 {
        cluster.propose_and_commit(&set_config(&format!("r{i}"), "k", &i.to_string()));
    }
    use raft::Storage as _;
    for node in cluster.nodes.values().flatten() {
        let store = node.storage();
        let n_entries = store.last_index().unwrap() + 1 - store.first_index().unwrap();
        assert!(n_entries <= 10 + 2 + 2, "log holds {n_entries} entries");
        assert!(node.counters().snapshots_taken >= 3);
    }
    let leader = cluster.elect();
    let n4 = node_id("n4");
    cluster.add_empty_node(&n4);
    cluster
        .node_mut(&leader)
        .propose_conf_change(&[MembershipChange::AddLearner(n4.clone())])
        .unwrap();
    cluster.collect(&leader);
    assert!(cluster.run_until(300, |c| {
        c.node(&n4)
            .catalog()
            .state()
            .config
            .get("k")
            .is_some_and(|e| e.version == 40)
    }));
    // Restart from a snapshot: the catalog comes back from storage.
    cluster.crash(&n4);
    cluster.start(&n4);
    assert!(cluster.node(&n4).applied_index() > CatalogIndex(1));
}

#[test]
fn retried_request_applies_once() {
    let mut cluster = Cluster::new(3, 12);
    let command = set_config("same-id", "k", "v");
    cluster.propose_and_commit(&command);
    cluster.propose_and_commit(&command);
    let leader = cluster.leader().unwrap();
    let entry = &cluster.node(&leader).catalog().state().config["k"];
    assert_eq!(entry.version, 1);
    let results: Vec<_> = cluster.applied[&leader]
        .iter()
        .map(|a| a.result.clone())
        .collect();
    assert_eq!(results[results.len() - 1], results[results.len() - 2]);
}

#[test]
fn followers_refuse_proposals_with_the_leader_named() {
    let mut cluster = Cluster::new(3, 13);
    let leader = cluster.elect();
    let follower = cluster
        .nodes
        .keys()
        .find(|n| **n != leader)
        .unwrap()
        .clone();
    let err = cluster
        .node_mut(&follower)
        .propose(&set_config("r", "k", "v"))
        .unwrap_err();
    assert!(matches!(err, crate::Error::NotLeader { leader: Some(ref l) } if *l == leader));
}

/// Five seeds under 20% loss, one crash and restart per round, a proposal per
/// round; then, without loss, a write commits everywhere. Safety (one leader per
/// term, one history by index) is checked by the harness after every delivery.
fn stays_safe_under_loss_and_crashes(mut cluster: Cluster, seed: u64) {
    cluster.loss_percent = 20;
    let names: Vec<_> = cluster.nodes.keys().cloned().collect();
    for round in 0..6u64 {
        if let Some(leader) = cluster.leader() {
            let _ = cluster.node_mut(&leader).propose(&set_config(
                &format!("s{seed}r{round}"),
                "k",
                "v",
            ));
            cluster.collect(&leader);
        }
        cluster.run_ticks(15);
        let victim = names[(seed + round) as usize % names.len()].clone();
        cluster.crash(&victim);
        cluster.run_ticks(15);
        cluster.start(&victim);
    }
    cluster.loss_percent = 0;
    let index = cluster.propose_and_commit(&set_config(&format!("s{seed}end"), "k", "end"));
    for name in &names {
        assert!(cluster.node(name).applied_index() >= index, "seed {seed}");
    }
}

#[test]
fn many_seeds_stay_safe_under_loss_and_crashes() {
    for seed in 0..8 {
        stays_safe_under_loss_and_crashes(Cluster::new(5, 100 + seed), seed);
    }
}

#[test]
fn sled_backed_node_recovers_its_catalog_after_restart() {
    use crate::{Output, RaftConfig, RaftNode, SledStorage, bootstrap};
    let dir = tempfile::tempdir().unwrap();
    let me = node_id("db-01");
    let mut config = RaftConfig::new(me.clone());
    config.snapshot_interval_entries = 5;
    config.log_retained_entries = 1;
    let mut storage = SledStorage::open_path(dir.path()).unwrap();
    bootstrap(&mut storage, std::slice::from_ref(&me)).unwrap();
    let mut node = RaftNode::new(config.clone(), storage, 1).unwrap();
    node.campaign().unwrap();
    assert_eq!(node.role(), Role::Leader);
    for i in 0..12 {
        node.propose(&set_config(&format!("r{i}"), "k", &i.to_string()))
            .unwrap();
    }
    let outputs = node.drain_outputs();
    let n_applied = outputs
        .iter()
        .filter(|o| matches!(o, Output::Applied(a) if a.result.is_ok()))
        .count();
    assert_eq!(n_applied, 12);
    let state = node.catalog().state().clone();
    let chain_hash = node.catalog().chain_hash();
    let applied = node.applied_index();
    assert!(node.counters().snapshots_taken >= 2);
    drop(node);

    let storage = SledStorage::reopen_path(dir.path()).unwrap();
    let mut node = RaftNode::new(config, storage, 2).unwrap();
    // The entries are durable; the last commit index need not be (it is learned
    // again): whatever the node re-applied at start is the same history.
    assert!(node.applied_index() <= applied);
    assert!(node.applied_index().0 + 2 >= applied.0);
    if node.applied_index() == applied {
        assert_eq!(node.catalog().chain_hash(), chain_hash);
    }
    // Leading again, it commits and applies the rest.
    node.campaign().unwrap();
    assert!(node.applied_index() > applied);
    assert_eq!(node.catalog().state(), &state);
    assert_eq!(node.voters(), vec![me]);
}

#[test]
fn a_catalog_copy_follows_by_shipped_entries_and_snapshot() {
    use crate::{Catalog, MembershipChange};
    let mut cluster = Cluster::new(3, 21);
    let leader = cluster.elect();
    // A fresh copy is too far behind for entries: it starts from the catalog.
    assert!(
        cluster
            .node(&leader)
            .entries_after(CatalogIndex(0), 1 << 20)
            .is_none()
    );
    let mut copy = Catalog::decode(&cluster.node(&leader).catalog().encode()).unwrap();
    for i in 0..5 {
        cluster.propose_and_commit(&set_config(&format!("c{i}"), "k", &i.to_string()));
    }
    cluster
        .node_mut(&leader)
        .propose_conf_change(&[MembershipChange::AddLearner(node_id("n9"))])
        .unwrap();
    cluster.run_ticks(20);
    let leader_node = cluster.node(&leader);
    // Small batches: at least one entry each, in order, until up to date.
    loop {
        let entries = leader_node.entries_after(copy.applied_index(), 1).unwrap();
        if entries.is_empty() {
            break;
        }
        assert_eq!(entries.len(), 1);
        copy.apply_committed(&entries[0]);
    }
    assert_eq!(copy.applied_index(), leader_node.catalog().applied_index());
    assert_eq!(copy.chain_hash(), leader_node.catalog().chain_hash());
    assert_eq!(copy.seeds(), leader_node.catalog().seeds());
    assert!(copy.seeds().learners.contains(&node_id("n9")));
    // The audit trail travels with it: one record per command, in order.
    let audit: Vec<_> = copy
        .audit()
        .map(|record| record.request_id.as_str())
        .collect();
    assert_eq!(audit, ["c0", "c1", "c2", "c3", "c4"]);
    let last = copy.audit().last().unwrap();
    assert_eq!(
        (&*last.op, last.detail.as_str(), &*last.result),
        ("set_config", "key=k", "ok")
    );
}

#[test]
fn a_batch_of_proposals_is_held_until_the_batch_ends_then_commits() {
    let mut cluster = Cluster::new(3, 5);
    let leader = cluster.elect();
    let node = cluster.node_mut(&leader);
    node.begin_batch();
    let indexes: Vec<CatalogIndex> = (0..20)
        .map(|i| {
            node.propose(&set_config(&format!("b{i}"), &format!("k{i}"), "v"))
                .unwrap()
        })
        .collect();
    // Nothing leaves the node before the batch ends.
    assert!(node.drain_outputs().is_empty());
    node.end_batch().unwrap();
    assert!(indexes.windows(2).all(|pair| pair[1].0 == pair[0].0 + 1));
    cluster.collect(&leader);
    cluster.run_ticks(10);
    for node in cluster.nodes.values().flatten() {
        assert_eq!(node.catalog().state().config.len(), 20);
    }
}

#[test]
fn background_syncs_stay_safe_under_loss_and_crashes() {
    for seed in 0..8 {
        stays_safe_under_loss_and_crashes(Cluster::with_background_syncs(5, 200 + seed), seed);
    }
}

#[test]
fn whole_cluster_crashes_mid_sync_never_lose_an_applied_entry() {
    // Every node crashes while syncs and messages are in flight; the harness
    // remembers the hash of every applied index across crashes, so an applied
    // entry that was not durable on a quorum shows up as a divergence.
    for seed in 0..16 {
        let mut cluster = Cluster::with_background_syncs(3, 300 + seed);
        let names: Vec<_> = cluster.nodes.keys().cloned().collect();
        for round in 0..8u64 {
            let leader = cluster.elect();
            for i in 0..3 {
                let _ = cluster.node_mut(&leader).propose(&set_config(
                    &format!("s{seed}r{round}i{i}"),
                    "k",
                    &format!("{round}.{i}"),
                ));
            }
            cluster.collect(&leader);
            cluster.deliver_some(((seed + round) % 12) as usize);
            for name in &names {
                cluster.crash(name);
            }
            for name in &names {
                cluster.start(name);
            }
        }
        cluster.propose_and_commit(&set_config(&format!("s{seed}end"), "k", "end"));
    }
}

#[test]
fn committed_entries_survive_crash_of_every_node_with_background_syncs() {
    committed_entries_survive_crash_of_every_node_on(Cluster::with_background_syncs(3, 19));
}

#[test]
fn a_leader_replicates_during_its_own_sync_and_a_follower_acks_after_its_own() {
    use raft::eraftpb::MessageType;
    let sends = |outputs: Vec<Output>, kind: MessageType| -> Vec<crate::RaftMessage> {
        outputs
            .into_iter()
            .filter_map(|output| match output {
                Output::Send(message) if message.message.get_msg_type() == kind => Some(message),
                _ => None,
            })
            .collect()
    };
    let mut cluster = Cluster::with_background_syncs(3, 21);
    let leader = cluster.elect();
    let index = cluster
        .node_mut(&leader)
        .propose(&set_config("r1", "k", "v"))
        .unwrap();
    let appends = sends(
        cluster.node_mut(&leader).drain_outputs(),
        MessageType::MsgAppend,
    );
    assert_eq!(appends.len(), 2, "appends leave before the leader's sync");
    let leader_sync = cluster
        .node_mut(&leader)
        .take_sync()
        .expect("the leader's write waits for a sync");

    let append = appends[0].clone();
    let follower = append.to.clone();
    cluster.node_mut(&follower).step(append).unwrap();
    let before_sync = cluster.node_mut(&follower).drain_outputs();
    assert!(
        sends(before_sync, MessageType::MsgAppendResponse).is_empty(),
        "no ack before the follower's sync"
    );
    let follower_sync = cluster.node_mut(&follower).take_sync().unwrap();
    cluster
        .node_mut(&follower)
        .finish_sync(follower_sync.ticket, follower_sync.job.run())
        .unwrap();
    let acks = sends(
        cluster.node_mut(&follower).drain_outputs(),
        MessageType::MsgAppendResponse,
    );
    assert_eq!(acks.len(), 1, "the ack leaves after the follower's sync");

    // One follower's ack is not a quorum until the leader's own write is durable.
    cluster.node_mut(&leader).step(acks[0].clone()).unwrap();
    assert!(cluster.node(&leader).applied_index() < index);
    cluster
        .node_mut(&leader)
        .finish_sync(leader_sync.ticket, leader_sync.job.run())
        .unwrap();
    assert!(cluster.node(&leader).applied_index() >= index);
}
