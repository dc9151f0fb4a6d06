//! Property tests of the telemetry CRDT and its wire format:
//! * merge is commutative, associative and idempotent;
//! * any order of the same records and tombstones gives the naive model's
//!   state (newest record per node, minus removed generations);
//! * a removed node's record never reappears at an agent that has seen the
//!   removal, through any interleaving of deltas and anti-entropy, and all
//!   agents converge;
//! * encodings round-trip, and decoding arbitrary or corrupted bytes never
//!   panics.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use shoal_membership::telemetry::{
    AntiEntropyMessage, AppliedPosition, DatabaseReport, DatabaseSnapshot, Delta, DeltaSource,
    Digest, Epoch, HostMetrics, NodeRecord, Sequence, ShardId, ShardReport, ShardRole,
    TelemetryConfig, TelemetryMap, TelemetryStore, Tombstone, Version, wire,
};
use shoal_membership::{Generation, NodeId};

const NODES: [&str; 3] = ["a", "b", "c"];

fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn host_strategy() -> impl Strategy<Value = Option<HostMetrics>> {
    prop::option::of(
        (prop::sample::select(vec![0.0, -0.0, 42.5, 99.9]), 0u64..4).prop_map(
            |(cpu_percent, used)| HostMetrics {
                cpu_percent,
                memory_used_bytes: used,
                memory_total_bytes: 4,
                disk_used_bytes: used,
                disk_capacity_bytes: 8,
            },
        ),
    )
}

fn database_strategy() -> impl Strategy<Value = Option<DatabaseSnapshot>> {
    prop::option::of(
        (
            0u64..3,
            0u64..2,
            0u64..5000,
            prop::sample::select(vec![0.0, 1.5]),
        )
            .prop_map(|(n_shards, lag_ms, p99_us, qps)| DatabaseSnapshot {
                report_age_ms: lag_ms,
                report: DatabaseReport {
                    qps,
                    latency_p50_us: p99_us / 2,
                    latency_p99_us: p99_us,
                    replication_lag_ms: lag_ms,
                    shards: (0..n_shards)
                        .map(|shard| {
                            (
                                ShardId(shard),
                                ShardReport {
                                    size_bytes: shard * 100,
                                    qps,
                                    applied_position: AppliedPosition(shard),
                                    role: ShardRole::Secondary,
                                    epoch: Epoch(1),
                                },
                            )
                        })
                        .collect(),
                    schema_versions: BTreeMap::new(),
                },
            }),
    )
}

/// Records over few nodes, generations and sequences, so versions collide
/// (including different content under the same version).
fn record_strategy() -> impl Strategy<Value = NodeRecord> {
    (
        prop::sample::select(NODES.to_vec()),
        1u64..4,
        1u64..4,
        host_strategy(),
        database_strategy(),
    )
        .prop_map(|(node, generation, sequence, host, database)| NodeRecord {
            node_id: id(node),
            version: Version {
                generation: Generation(generation),
                sequence: Sequence(sequence),
            },
            agent_version: "v".to_owned(),
            host: host.map(Box::new),
            database: database.map(Box::new),
            unreachable_peers: Default::default(),
            unreachable_peers_total: 0,
        })
}

#[derive(Clone, Debug)]
enum Op {
    Record(Box<NodeRecord>),
    Tombstone(NodeId, Generation),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => record_strategy().prop_map(|record| Op::Record(Box::new(record))),
        1 => (prop::sample::select(NODES.to_vec()), 0u64..4)
            .prop_map(|(node, generation)| Op::Tombstone(id(node), Generation(generation))),
    ]
}

fn apply(map: &mut TelemetryMap, op: &Op) {
    match op {
        Op::Record(record) => {
            map.merge_record(NodeRecord::clone(record));
        }
        Op::Tombstone(node_id, generation) => {
            map.merge_tombstone(node_id, *generation);
        }
    }
}

fn build(ops: &[Op]) -> TelemetryMap {
    let mut map = TelemetryMap::new();
    for op in ops {
        apply(&mut map, op);
    }
    map
}

/// The exact bytes of a map's state: `==` on records cannot tell 0.0 from
/// -0.0, the encoding (and so every peer's tie-break) can.
fn bytes_of(map: &TelemetryMap) -> Vec<Vec<u8>> {
    map.records()
        .map(wire::encode_record)
        .chain(
            map.tombstones()
                .map(|(node_id, generation)| format!("{node_id}/{generation}").into_bytes()),
        )
        .collect()
}

fn merged(left: &TelemetryMap, right: &TelemetryMap) -> TelemetryMap {
    let mut out = left.clone();
    out.merge(right);
    out
}

/// The naive model: for each node the highest tombstone, and the greatest
/// record by (version, encoding) among those above it.
fn model(ops: &[Op]) -> (BTreeMap<NodeId, NodeRecord>, BTreeMap<NodeId, Generation>) {
    let mut tombstones: BTreeMap<NodeId, Generation> = BTreeMap::new();
    for op in ops {
        if let Op::Tombstone(node_id, generation) = op {
            let entry = tombstones.entry(node_id.clone()).or_insert(*generation);
            *entry = (*entry).max(*generation);
        }
    }
    let mut records: BTreeMap<NodeId, NodeRecord> = BTreeMap::new();
    for op in ops {
        let Op::Record(record) = op else { continue };
        if tombstones
            .get(&record.node_id)
            .is_some_and(|tombstone| record.version.generation <= *tombstone)
        {
            continue;
        }
        let key = |record: &NodeRecord| (record.version, wire::encode_record(record));
        match records.get(&record.node_id) {
            Some(held) if key(held) >= key(record) => {}
            _ => {
                records.insert(record.node_id.clone(), NodeRecord::clone(record));
            }
        }
    }
    (records, tombstones)
}

fn state_of(map: &TelemetryMap) -> (BTreeMap<NodeId, NodeRecord>, BTreeMap<NodeId, Generation>) {
    (
        map.records()
            .map(|record| (record.node_id.clone(), record.clone()))
            .collect(),
        map.tombstones()
            .map(|(node_id, generation)| (node_id.clone(), generation))
            .collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_commutative(a in prop::collection::vec(op_strategy(), 0..12),
                            b in prop::collection::vec(op_strategy(), 0..12)) {
        let (a, b) = (build(&a), build(&b));
        prop_assert_eq!(bytes_of(&merged(&a, &b)), bytes_of(&merged(&b, &a)));
    }

    #[test]
    fn merge_is_associative(a in prop::collection::vec(op_strategy(), 0..8),
                            b in prop::collection::vec(op_strategy(), 0..8),
                            c in prop::collection::vec(op_strategy(), 0..8)) {
        let (a, b, c) = (build(&a), build(&b), build(&c));
        prop_assert_eq!(
            bytes_of(&merged(&merged(&a, &b), &c)),
            bytes_of(&merged(&a, &merged(&b, &c)))
        );
    }

    #[test]
    fn merge_is_idempotent(a in prop::collection::vec(op_strategy(), 0..12),
                           b in prop::collection::vec(op_strategy(), 0..12)) {
        let (a, b) = (build(&a), build(&b));
        prop_assert_eq!(bytes_of(&merged(&a, &a)), bytes_of(&a));
        let ab = merged(&a, &b);
        prop_assert_eq!(bytes_of(&merged(&ab, &b)), bytes_of(&ab));
    }

    #[test]
    fn any_order_matches_the_model(
        (ops, shuffled) in prop::collection::vec(op_strategy(), 0..20)
            .prop_flat_map(|ops| (Just(ops.clone()), Just(ops).prop_shuffle()))
    ) {
        let expected = model(&ops);
        prop_assert_eq!(state_of(&build(&ops)), expected.clone());
        prop_assert_eq!(state_of(&build(&shuffled)), expected);
        prop_assert_eq!(bytes_of(&build(&ops)), bytes_of(&build(&shuffled)));
    }

    #[test]
    fn delta_round_trips(record in record_strategy(), node in 0usize..3, generation in 0u64..9,
                         retention_ms in any::<u64>()) {
        let delta = Delta::Record(record);
        let encoded = wire::encode_delta(&delta, usize::MAX).unwrap();
        prop_assert_eq!(wire::decode_delta(&encoded.bytes, usize::MAX).unwrap(), delta);
        let delta = Delta::Tombstone(Tombstone {
            node_id: id(NODES[node]),
            generation: Generation(generation),
            retention_ms,
        });
        let encoded = wire::encode_delta(&delta, usize::MAX).unwrap();
        prop_assert_eq!(wire::decode_delta(&encoded.bytes, usize::MAX).unwrap(), delta);
    }

    #[test]
    fn anti_entropy_messages_round_trip(records in prop::collection::vec(record_strategy(), 0..6),
                                        generation in 0u64..9, retention_ms in any::<u64>()) {
        let mut source = store("y", 1);
        for record in records {
            let _ = source.merge_record(Duration::ZERO, record);
        }
        source.merge_tombstone(Duration::ZERO, &Tombstone {
            node_id: id("gone"),
            generation: Generation(generation),
            retention_ms,
        });
        let digest = source.digest(Duration::ZERO);
        let batch = source.missing_for(Duration::ZERO, &Digest::default());
        for message in [
            AntiEntropyMessage::Request { digest: digest.clone() },
            AntiEntropyMessage::Push { batch: batch.clone() },
            AntiEntropyMessage::Reply { batch: batch.clone(), wants: vec![id("a"), id("gone")] },
            AntiEntropyMessage::Response { digest, batch },
        ] {
            let bytes = wire::encode_anti_entropy(&message, usize::MAX).unwrap();
            prop_assert_eq!(wire::decode_anti_entropy(&bytes, usize::MAX).unwrap(), message);
        }
    }

    #[test]
    fn missing_for_and_wants_match_a_naive_model(
        held in prop::collection::btree_map(0usize..12, (1u64..4, 1u64..4), 0..12),
        peer in prop::collection::btree_map(0usize..14, (0u64..4, 1u64..4), 0..14),
        peer_tombstones in prop::collection::btree_map(0usize..14, 0u64..4, 0..3),
        // Of nodes the source holds no record of.
        source_tombstones in prop::collection::btree_map(12usize..14, 0u64..4, 0..2),
    ) {
        // "n1" < "n10" < "n2": ids compare as bytes, not as numbers.
        let name = |n: usize| id(&format!("n{n}"));
        let version = |generation: u64, sequence: u64| Version {
            generation: Generation(generation),
            sequence: Sequence(sequence),
        };
        let mut source = store("src", 1);
        for (n, (generation, sequence)) in &held {
            let record = NodeRecord {
                node_id: name(*n),
                version: version(*generation, *sequence),
                agent_version: "v".to_owned(),
                host: None,
                database: None,
                unreachable_peers: Default::default(),
                unreachable_peers_total: 0,
            };
            source.merge_record(Duration::ZERO, record).unwrap();
        }
        for (n, generation) in &source_tombstones {
            source.merge_tombstone(Duration::ZERO, &Tombstone {
                node_id: name(*n),
                generation: Generation(*generation),
                retention_ms: 3_600_000,
            });
        }
        let digest = Digest::new(
            peer.iter().map(|(n, (generation, sequence))| (name(*n), version(*generation, *sequence))),
            peer_tombstones
                .iter()
                .map(|(n, generation)| Tombstone {
                    node_id: name(*n),
                    generation: Generation(*generation),
                    retention_ms: 3_600_000,
                })
                .collect(),
        );
        let (batch, wants) = source.wants_from(Duration::ZERO, &digest);

        // The model: what the peer lacks or holds older, not covered by its
        // tombstones, in node order.
        let versions = |by_n: &BTreeMap<usize, (u64, u64)>| -> BTreeMap<NodeId, Version> {
            by_n.iter()
                .map(|(n, (generation, sequence))| (name(*n), version(*generation, *sequence)))
                .collect()
        };
        let generations = |by_n: &BTreeMap<usize, u64>| -> BTreeMap<NodeId, Generation> {
            by_n.iter()
                .map(|(n, generation)| (name(*n), Generation(*generation)))
                .collect()
        };
        let peer = versions(&peer);
        let peer_tombstones = generations(&peer_tombstones);
        let held = versions(&held);
        let source_tombstones = generations(&source_tombstones);
        let expected: Vec<(NodeId, Version)> = held
            .iter()
            .map(|(node_id, held)| (node_id.clone(), *held))
            .filter(|(node_id, held)| {
                peer.get(node_id).is_none_or(|theirs| theirs < held)
                    && peer_tombstones
                        .get(node_id)
                        .is_none_or(|tombstone| held.generation > *tombstone)
            })
            .collect();
        let sent: Vec<(NodeId, Version)> = batch
            .records
            .iter()
            .map(|record| (record.node_id().clone(), record.version()))
            .collect();
        prop_assert_eq!(sent, expected);
        prop_assert!(!batch.truncated);

        // What the source wants, in node order: the nodes the peer lists
        // that it holds no record of (unless its own tombstone covers the
        // peer's version), and those it holds older versions of.
        let expected: Vec<NodeId> = peer
            .iter()
            .filter(|(node_id, theirs)| match held.get(*node_id) {
                Some(mine) => mine < *theirs,
                None => source_tombstones
                    .get(*node_id)
                    .is_none_or(|removed| theirs.generation > *removed),
            })
            .map(|(node_id, _)| node_id.clone())
            .collect();
        prop_assert_eq!(wants, expected);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut store = store("z", 1);
        let _ = store.receive_delta(Duration::ZERO, &bytes, DeltaSource::Peer);
        let _ = store.handle_anti_entropy(Duration::ZERO, &bytes);
        let _ = wire::decode_delta(&bytes, usize::MAX);
        let _ = wire::decode_anti_entropy(&bytes, usize::MAX);
    }

    #[test]
    fn decoding_corrupted_messages_never_panics(
        record in record_strategy(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let delta = wire::encode_delta(&Delta::Record(record.clone()), usize::MAX).unwrap().bytes;
        let mut source = store("y", 1);
        source.merge_record(Duration::ZERO, record).unwrap();
        let summary = source.start_anti_entropy(Duration::ZERO).unwrap();
        let request = source.anti_entropy_request(Duration::ZERO).unwrap();
        let response = store("x", 1).handle_anti_entropy(Duration::ZERO, &request).unwrap().unwrap();
        for original in [delta, summary, request, response] {
            let mut bytes = original.clone();
            for (index, value) in &flips {
                let at = index.index(bytes.len());
                bytes[at] ^= value;
            }
            let truncated = &original[..cut.index(original.len())];
            let mut sink = store("z", 1);
            for input in [&bytes[..], truncated] {
                let _ = sink.receive_delta(Duration::ZERO, input, DeltaSource::Peer);
                let _ = sink.handle_anti_entropy(Duration::ZERO, input);
            }
        }
    }
}

fn store(name: &str, generation: u64) -> TelemetryStore {
    TelemetryStore::new(
        TelemetryConfig::default(),
        id(name),
        Generation(generation),
        "v",
        Duration::ZERO,
    )
    .unwrap()
}

/// One step of a randomized cluster run.
#[derive(Clone, Debug)]
enum Step {
    /// Agent `n` refreshes its record and broadcasts the delta.
    Refresh(usize),
    /// Agent `n` restarts with a newer generation (losing its map).
    Restart(usize),
    /// Agent `at` removes node `n` at its generation as `at` knows it.
    Remove { at: usize, node: usize },
    /// Deliver broadcast number `index` (any past one, any number of times) to agent `to`.
    Deliver {
        index: prop::sample::Index,
        to: usize,
    },
    /// A full anti-entropy exchange from `from` to `to`.
    AntiEntropy { from: usize, to: usize },
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0usize..3).prop_map(Step::Refresh),
        1 => (0usize..3).prop_map(Step::Restart),
        1 => (0usize..3, 0usize..3).prop_map(|(at, node)| Step::Remove { at, node }),
        6 => (any::<prop::sample::Index>(), 0usize..3)
            .prop_map(|(index, to)| Step::Deliver { index, to }),
        2 => (0usize..3, 0usize..3).prop_map(|(from, to)| Step::AntiEntropy { from, to }),
    ]
}

/// One exchange as the agent runs it: `from`'s summary, then, if `to`'s
/// differs, `to`'s request, `from`'s reply and `to`'s push — at most
/// four messages.
fn anti_entropy(stores: &mut [TelemetryStore], from: usize, to: usize, now: Duration) {
    if from == to {
        return;
    }
    let mut message = Some(stores[from].start_anti_entropy(now).unwrap());
    let mut sent = 0;
    let mut receiver = to;
    while let Some(bytes) = message {
        sent += 1;
        assert!(sent <= 4, "an exchange is at most four messages");
        message = stores[receiver].handle_anti_entropy(now, &bytes).unwrap();
        receiver = if receiver == to { from } else { to };
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn removed_records_never_reappear_and_agents_converge(
        steps in prop::collection::vec(step_strategy(), 1..60)
    ) {
        let mut generations = [1u64; 3];
        let mut stores: Vec<TelemetryStore> =
            (0..3).map(|n| store(NODES[n], generations[n])).collect();
        let mut broadcasts: Vec<Vec<u8>> = Vec::new();
        // Every removal ever made: (node, generation).
        let mut removals: Vec<(NodeId, Generation)> = Vec::new();
        let now = Duration::from_secs(1);

        for step in steps {
            match step {
                Step::Refresh(n) => {
                    if stores[n].refresh(now).is_ok()
                        && let Ok(delta) = stores[n].local_delta(now)
                    {
                        broadcasts.push(delta.bytes);
                    }
                }
                Step::Restart(n) => {
                    generations[n] += 1;
                    stores[n] = store(NODES[n], generations[n]);
                }
                Step::Remove { at, node } => {
                    let node_id = id(NODES[node]);
                    let generation = match stores[at].record(&node_id) {
                        Some(record) => record.version.generation,
                        None => continue,
                    };
                    if let Ok(delta) = stores[at].remove_node(now, &node_id, generation) {
                        removals.push((node_id, generation));
                        broadcasts.push(delta.bytes);
                    }
                }
                Step::Deliver { index, to } => {
                    if broadcasts.is_empty() {
                        continue;
                    }
                    let bytes = broadcasts[index.index(broadcasts.len())].clone();
                    stores[to].receive_delta(now, &bytes, DeltaSource::Peer).unwrap();
                }
                Step::AntiEntropy { from, to } => anti_entropy(&mut stores, from, to, now),
            }
            // Safety: wherever a removal is known, nothing it covers is held.
            for store in &stores {
                for (node_id, removed) in &removals {
                    if store.map().tombstone(node_id).is_some_and(|known| known >= *removed) {
                        prop_assert!(
                            store.record(node_id).is_none_or(|r| r.version.generation > *removed),
                            "{} holds a removed record of {}", store.node_id(), node_id
                        );
                    }
                }
            }
        }

        // A removal known only to an agent that then restarted is lost (the
        // agent re-derives removals from the catalog); the others must hold.
        let surviving: Vec<_> = removals
            .iter()
            .filter(|(node_id, removed)| {
                stores.iter().any(|store| {
                    store.map().tombstone(node_id).is_some_and(|known| known >= *removed)
                })
            })
            .cloned()
            .collect();
        // Liveness: a round of anti-entropy among all pairs converges every map.
        for _ in 0..2 {
            for from in 0..3 {
                for to in 0..3 {
                    anti_entropy(&mut stores, from, to, now);
                }
            }
        }
        for store in &stores[1..] {
            prop_assert_eq!(store.map(), stores[0].map());
        }
        // The summary kept up to date through every insert, replacement
        // and removal is the one a map built afresh from the same records
        // has; after the rounds above, every agent's is the same.
        for store in &stores {
            let mut fresh = TelemetryMap::new();
            fresh.merge(store.map());
            prop_assert_eq!(store.map().summary(), fresh.summary());
            prop_assert_eq!(store.map().summary(), stores[0].map().summary());
        }
        for (node_id, removed) in &surviving {
            prop_assert!(stores[0].record(node_id).is_none_or(|r| r.version.generation > *removed));
        }
    }
}

#[test]
fn same_version_records_equal_under_eq_but_not_in_bytes_still_commute() {
    let record = |cpu_percent: f64| NodeRecord {
        node_id: id("a"),
        version: Version {
            generation: Generation(1),
            sequence: Sequence(1),
        },
        agent_version: "v".to_owned(),
        host: Some(Box::new(HostMetrics {
            cpu_percent,
            memory_used_bytes: 0,
            memory_total_bytes: 0,
            disk_used_bytes: 0,
            disk_capacity_bytes: 0,
        })),
        database: None,
        unreachable_peers: Default::default(),
        unreachable_peers_total: 0,
    };
    let positive = build(&[Op::Record(Box::new(record(0.0)))]);
    let negative = build(&[Op::Record(Box::new(record(-0.0)))]);
    assert_eq!(
        bytes_of(&merged(&positive, &negative)),
        bytes_of(&merged(&negative, &positive))
    );
}
