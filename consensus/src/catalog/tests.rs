//! Unit and property tests of the catalog state machine: validation rules, the
//! idempotency law, a model test against plain maps, codec round trips, the hash
//! chain and backup/restore.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::hash::hash_token_secret;
use crate::ids::{Epoch, Generation};

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

/// Test driver: applies ops as consecutive committed entries.
struct Driver {
    catalog: Catalog,
    n_requests: u64,
}

impl Driver {
    fn new() -> Driver {
        Driver {
            catalog: Catalog::genesis(&[node("s1")], CatalogIndex(1), Term(1)).unwrap(),
            n_requests: 0,
        }
    }

    fn command(&mut self, op: Op) -> Command {
        self.n_requests += 1;
        Command {
            request_id: RequestId::new(format!("req-{}", self.n_requests)).unwrap(),
            actor: Actor("token:test".to_owned()),
            time_unix_ms: 1_700_000_000_000 + self.n_requests,
            op,
        }
    }

    fn apply_command(&mut self, command: &Command) -> CommandResult {
        let index = CatalogIndex(self.catalog.applied_index().0 + 1);
        let applied = self
            .catalog
            .apply_entry(index, Term(1), &command.encode().unwrap())
            .unwrap();
        applied.result
    }

    /// One line per case: apply an op with a fresh request id.
    fn apply(&mut self, op: Op) -> CommandResult {
        let command = self.command(op);
        self.apply_command(&command)
    }

    fn ok(&mut self, op: Op) -> Outcome {
        let debug = format!("{op:?}");
        self.apply(op)
            .unwrap_or_else(|err| panic!("{debug} failed: {err}"))
    }
}

fn register(name: &str) -> Op {
    Op::RegisterNode {
        node_id: node(name),
        address: format!("{name}:7400"),
        labels: BTreeMap::from([("zone".to_owned(), "z1".to_owned())]),
        role: NodeRole::Member,
        generation: Generation(1),
        capacity: Capacity::default(),
    }
}

fn table(name: &str) -> Op {
    Op::CreateTable {
        name: name.to_owned(),
        schema: "create table t (k bytes primary key)".to_owned(),
        sharding: Sharding::Range,
        replication_factor: 3,
    }
}

fn range(start: &[u8], end: Option<&[u8]>) -> KeyRange {
    KeyRange {
        start: Key(start.to_vec()),
        end: end.map(|e| Key(e.to_vec())),
    }
}

fn replica(name: &str, role: ReplicaRole) -> Replica {
    Replica {
        node_id: node(name),
        role,
    }
}

fn shard(table: &str, start: &[u8], end: Option<&[u8]>, replicas: Vec<Replica>) -> Op {
    Op::CreateShard {
        table: table.to_owned(),
        range: range(start, end),
        replicas,
    }
}

/// Three registered nodes, a table `t`, and shard 0 = [a, m) with n1 primary.
fn populated() -> Driver {
    let mut driver = Driver::new();
    for name in ["n1", "n2", "n3"] {
        driver.ok(register(name));
    }
    driver.ok(table("t"));
    let created = driver.ok(shard(
        "t",
        b"a",
        Some(b"m"),
        vec![
            replica("n1", ReplicaRole::Primary),
            replica("n2", ReplicaRole::Secondary),
        ],
    ));
    assert_eq!(
        created,
        Outcome::ShardCreated {
            shard_id: ShardId(0)
        }
    );
    driver
}

#[test]
fn rejected_command_is_committed_but_changes_nothing() {
    let mut driver = populated();
    let state_before = driver.catalog.state().clone();
    let hash_before = driver.catalog.chain_hash();
    let index_before = driver.catalog.applied_index();
    let result = driver.apply(Op::DropTable {
        name: "missing".to_owned(),
    });
    assert!(matches!(result, Err(CommandError::NotFound { .. })));
    assert_eq!(driver.catalog.state(), &state_before);
    assert_eq!(driver.catalog.applied_index().0, index_before.0 + 1);
    assert_ne!(driver.catalog.chain_hash(), hash_before);
}

#[test]
fn epoch_only_increases() {
    let mut driver = populated();
    let stale = driver.apply(Op::SetPrimary {
        shard_id: ShardId(0),
        node_id: node("n2"),
        epoch: Epoch(1),
    });
    assert!(matches!(stale, Err(CommandError::StaleEpoch { .. })));
    driver.ok(Op::SetPrimary {
        shard_id: ShardId(0),
        node_id: node("n2"),
        epoch: Epoch(5),
    });
    let shard = &driver.catalog.state().shards[&ShardId(0)];
    assert_eq!(shard.epoch, Epoch(5));
    assert_eq!(shard.primary, Some(node("n2")));
    assert!(
        shard
            .replicas
            .contains(&replica("n1", ReplicaRole::Secondary))
    );
    let older = driver.apply(Op::SetPrimary {
        shard_id: ShardId(0),
        node_id: node("n1"),
        epoch: Epoch(4),
    });
    assert!(matches!(older, Err(CommandError::StaleEpoch { .. })));
}

#[test]
fn replicas_only_on_known_non_removed_nodes() {
    let mut driver = populated();
    let unknown = driver.apply(Op::AddReplica {
        shard_id: ShardId(0),
        node_id: node("ghost"),
        role: ReplicaRole::Learner,
    });
    assert!(matches!(unknown, Err(CommandError::NodeUnavailable { .. })));
    driver.ok(Op::SetNodeStatus {
        node_id: node("n3"),
        status: NodeStatus::Removed,
    });
    let removed = driver.apply(Op::AddReplica {
        shard_id: ShardId(0),
        node_id: node("n3"),
        role: ReplicaRole::Learner,
    });
    assert!(matches!(removed, Err(CommandError::NodeUnavailable { .. })));
    let busy_node = driver.apply(Op::SetNodeStatus {
        node_id: node("n1"),
        status: NodeStatus::Dead,
    });
    assert_eq!(busy_node, Ok(Outcome::Done));
    let remove_with_replicas = driver.apply(Op::SetNodeStatus {
        node_id: node("n1"),
        status: NodeStatus::Removed,
    });
    assert!(matches!(
        remove_with_replicas,
        Err(CommandError::NodeHasReplicas { n_replicas: 1, .. })
    ));
}

#[test]
fn shard_ranges_never_overlap_within_a_table() {
    let mut driver = populated();
    let overlap = driver.apply(shard("t", b"l", Some(b"z"), vec![]));
    assert_eq!(
        overlap,
        Err(CommandError::RangeOverlap {
            shard_id: ShardId(0)
        })
    );
    let unbounded = driver.apply(shard("t", b"", None, vec![]));
    assert!(unbounded.is_err());
    driver.ok(shard("t", b"m", None, vec![]));
    driver.ok(table("u"));
    driver.ok(shard("u", b"", None, vec![]));
    let bad_range = driver.apply(shard("u", b"z", Some(b"a"), vec![]));
    assert!(matches!(bad_range, Err(CommandError::Invalid { .. })));
    let two_primaries = driver.apply(shard(
        "t",
        b"0",
        Some(b"1"),
        vec![
            replica("n1", ReplicaRole::Primary),
            replica("n2", ReplicaRole::Primary),
        ],
    ));
    assert!(matches!(
        two_primaries,
        Err(CommandError::InvalidReplicas { .. })
    ));
}

#[test]
fn split_then_merge_restores_the_range_with_higher_epochs() {
    let mut driver = populated();
    let split = driver.ok(Op::SplitShard {
        shard_id: ShardId(0),
        split_key: Key(b"f".to_vec()),
    });
    assert_eq!(
        split,
        Outcome::ShardSplit {
            new_shard_id: ShardId(1),
            epoch: Epoch(2)
        }
    );
    let state = driver.catalog.state();
    assert_eq!(state.shards[&ShardId(0)].range, range(b"a", Some(b"f")));
    assert_eq!(state.shards[&ShardId(1)].range, range(b"f", Some(b"m")));
    assert_eq!(
        driver.catalog.route("t", b"g").unwrap().shard_id,
        ShardId(1)
    );
    let outside = driver.apply(Op::SplitShard {
        shard_id: ShardId(0),
        split_key: Key(b"a".to_vec()),
    });
    assert!(outside.is_err());
    driver.ok(Op::MergeShards {
        left: ShardId(0),
        right: ShardId(1),
    });
    let state = driver.catalog.state();
    assert_eq!(state.shards.len(), 1);
    assert_eq!(state.shards[&ShardId(0)].range, range(b"a", Some(b"m")));
    assert_eq!(state.shards[&ShardId(0)].epoch, Epoch(3));
}

#[test]
fn operations_hold_shards_and_advance_in_order() {
    let mut driver = populated();
    let kind = OperationKind::Move {
        shard_id: ShardId(0),
        source: node("n2"),
        target: node("n3"),
    };
    let Outcome::OperationStarted { operation_id } =
        driver.ok(Op::BeginOperation { kind: kind.clone() })
    else {
        panic!("no operation id")
    };
    let again = driver.apply(Op::BeginOperation { kind });
    assert!(matches!(again, Err(CommandError::Busy { .. })));
    let skipped = driver.apply(Op::AdvanceOperation {
        operation_id,
        step: 1,
    });
    assert!(matches!(skipped, Err(CommandError::StepOutOfOrder { .. })));
    for step in 0..4 {
        driver.ok(Op::AdvanceOperation { operation_id, step });
    }
    let beyond = driver.apply(Op::AdvanceOperation {
        operation_id,
        step: 4,
    });
    assert!(beyond.is_err());
    driver.ok(Op::FinishOperation {
        operation_id,
        completed: true,
    });
    assert!(driver.catalog.state().operations.is_empty());
}

#[test]
fn config_versions_history_and_rollback() {
    let mut driver = Driver::new();
    let set = |value: &str, expected_version: Option<u64>| Op::SetConfig {
        key: "placement.balance".to_owned(),
        value: value.to_owned(),
        expected_version,
    };
    assert_eq!(
        driver.ok(set("on", Some(0))),
        Outcome::ConfigSet { version: 1 }
    );
    assert_eq!(
        driver.ok(set("off", None)),
        Outcome::ConfigSet { version: 2 }
    );
    let stale = driver.apply(set("x", Some(1)));
    assert_eq!(
        stale,
        Err(CommandError::VersionMismatch {
            current: 2,
            expected: 1
        })
    );
    let rollback = driver.ok(Op::RollbackConfig {
        key: "placement.balance".to_owned(),
        version: 1,
    });
    assert_eq!(rollback, Outcome::ConfigSet { version: 3 });
    let entry = &driver.catalog.state().config["placement.balance"];
    assert_eq!(entry.value, "on");
    assert_eq!(entry.history.len(), 3);
    for i in 0..CONFIG_HISTORY_MAX {
        driver.ok(set(&i.to_string(), None));
    }
    let entry = &driver.catalog.state().config["placement.balance"];
    assert_eq!(entry.history.len(), CONFIG_HISTORY_MAX);
    let forgotten = driver.apply(Op::RollbackConfig {
        key: "placement.balance".to_owned(),
        version: 1,
    });
    assert!(matches!(forgotten, Err(CommandError::NotFound { .. })));
}

#[test]
fn acl_bootstraps_exactly_once_and_tokens_are_hashed() {
    let mut driver = Driver::new();
    let early = driver.apply(Op::CreateToken {
        token_id: "ops".to_owned(),
        role: TokenRole::Operator,
        secret_sha256: hash_token_secret("ops-secret"),
        description: String::new(),
    });
    assert_eq!(early, Err(CommandError::AclNotBootstrapped));
    driver.ok(Op::BootstrapAcl {
        token_id: "root".to_owned(),
        secret_sha256: hash_token_secret("root-secret"),
    });
    let twice = driver.apply(Op::BootstrapAcl {
        token_id: "root2".to_owned(),
        secret_sha256: hash_token_secret("other"),
    });
    assert_eq!(twice, Err(CommandError::AclAlreadyBootstrapped));
    driver.ok(Op::CreateToken {
        token_id: "ops".to_owned(),
        role: TokenRole::Operator,
        secret_sha256: hash_token_secret("ops-secret"),
        description: "operators".to_owned(),
    });
    let catalog = &driver.catalog;
    assert_eq!(
        catalog.authenticate("root-secret").unwrap().role,
        TokenRole::Admin
    );
    assert_eq!(
        catalog.authenticate("ops-secret").unwrap().role,
        TokenRole::Operator
    );
    assert!(catalog.authenticate("wrong").is_none());
    let encoded = String::from_utf8_lossy(&catalog.encode()).to_string();
    assert!(!encoded.contains("root-secret"), "secrets are never stored");
    driver.ok(Op::RevokeToken {
        token_id: "ops".to_owned(),
    });
    assert!(driver.catalog.authenticate("ops-secret").is_none());
}

#[test]
fn request_ids_dedupe_and_detect_reuse() {
    let mut driver = populated();
    let command = driver.command(Op::SetConfig {
        key: "k".to_owned(),
        value: "v".to_owned(),
        expected_version: None,
    });
    let first = driver.apply_command(&command);
    let state = driver.catalog.state().clone();
    let retry = driver.apply_command(&command);
    assert_eq!(first, retry);
    assert_eq!(driver.catalog.state(), &state);
    let mut reused = command.clone();
    reused.op = Op::DropTable {
        name: "t".to_owned(),
    };
    assert!(matches!(
        driver.apply_command(&reused),
        Err(CommandError::RequestIdReused { .. })
    ));
    assert!(driver.catalog.state().tables.contains_key("t"));
    assert_eq!(
        driver.catalog.result_of(&command.request_id).unwrap().1,
        &first
    );
}

/// Nodes with equal labels share one label map, in the catalog that applied
/// them and in one decoded from its snapshot; other labels get their own.
#[test]
fn equal_labels_are_held_once() {
    let mut driver = populated();
    driver.ok(Op::SetNodeLabels {
        node_id: node("n3"),
        labels: BTreeMap::from([("zone".to_owned(), "z2".to_owned())]),
    });
    let restored = Catalog::decode(&driver.catalog.encode()).unwrap();
    for catalog in [&driver.catalog, &restored] {
        let labels = |name: &str| catalog.state().nodes[&node(name)].labels.clone();
        assert!(std::sync::Arc::ptr_eq(&labels("n1"), &labels("n2")));
        assert!(!std::sync::Arc::ptr_eq(&labels("n1"), &labels("n3")));
        assert_eq!(labels("n1")["zone"], "z1");
        assert_eq!(labels("n3")["zone"], "z2");
    }
    assert_eq!(restored.state(), driver.catalog.state());
}

/// The dedup window holds the latest `REQUESTS_REMEMBERED_MAX` request ids:
/// past it the oldest are forgotten (a retry of one applies again), the
/// rest still answer with their first result, and the window survives a
/// snapshot round trip.
#[test]
fn the_dedup_window_forgets_the_oldest_requests() {
    let mut driver = Driver::new();
    let commands: Vec<Command> = (0..REQUESTS_REMEMBERED_MAX + 2)
        .map(|n| {
            driver.command(Op::SetConfig {
                key: format!("k{}", n % 8),
                value: n.to_string(),
                expected_version: None,
            })
        })
        .collect();
    let results: Vec<CommandResult> = commands
        .iter()
        .map(|command| driver.apply_command(command))
        .collect();
    let catalog = &driver.catalog;
    for forgotten in &commands[..2] {
        assert!(catalog.result_of(&forgotten.request_id).is_none());
    }
    for (command, result) in commands[2..].iter().zip(&results[2..]) {
        assert_eq!(catalog.result_of(&command.request_id).unwrap().1, result);
    }
    let restored = Catalog::decode(&catalog.encode()).unwrap();
    assert_eq!(
        restored.result_of(&commands[2].request_id).unwrap().1,
        &results[2]
    );
    let applied = driver.catalog.applied_index();
    // A retry inside the window changes nothing; one of a forgotten request
    // applies again.
    assert_eq!(driver.apply_command(&commands[2]), results[2]);
    assert_ne!(driver.apply_command(&commands[0]), results[0]);
    assert_eq!(
        driver.catalog.result_of(&commands[0].request_id).unwrap().0,
        CatalogIndex(applied.0 + 2)
    );
    assert!(driver.catalog.result_of(&commands[2].request_id).is_none());
}

/// A copy restored from a snapshot stays equal to the catalog it came from,
/// to the byte, as both apply the same further commands (dedup window,
/// audit trail and state included).
#[test]
fn a_restored_copy_stays_equal_to_its_source() {
    let mut original = Driver::new();
    for n in 0..300 {
        original.ok(Op::SetConfig {
            key: format!("k{}", n % 7),
            value: n.to_string(),
            expected_version: None,
        });
    }
    let mut restored = Driver {
        catalog: Catalog::decode(&original.catalog.encode()).unwrap(),
        n_requests: original.n_requests,
    };
    for driver in [&mut original, &mut restored] {
        for n in 0..700 {
            driver.ok(Op::SetConfig {
                key: format!("j{}", n % 5),
                value: n.to_string(),
                expected_version: None,
            });
        }
    }
    assert_eq!(restored.catalog, original.catalog);
    assert_eq!(restored.catalog.encode(), original.catalog.encode());
}

#[test]
fn malformed_entries_are_rejected_deterministically() {
    let mut driver = Driver::new();
    let applied = driver
        .catalog
        .apply_entry(CatalogIndex(2), Term(1), b"\x01garbage")
        .unwrap();
    assert!(applied.request_id.is_none());
    assert!(matches!(
        applied.result,
        Err(CommandError::Malformed { .. })
    ));
    assert!(
        driver
            .catalog
            .apply_entry(CatalogIndex(3), Term(1), b"")
            .is_none(),
        "leader no-op"
    );
}

#[test]
fn backup_restores_through_a_command() {
    let mut source = populated();
    source.ok(Op::SetConfig {
        key: "k".to_owned(),
        value: "v".to_owned(),
        expected_version: None,
    });
    let backup = CatalogBackup::decode(&source.catalog.backup().encode()).unwrap();
    assert_eq!(backup.applied_index, source.catalog.applied_index());
    let mut target = Driver::new();
    target.ok(table("other"));
    target.ok(Op::Restore {
        state: Box::new(backup.state),
    });
    assert_eq!(target.catalog.state(), source.catalog.state());
    assert_eq!(target.catalog.state_hash(), source.catalog.state_hash());
    assert!(CatalogBackup::decode(b"\x09junk").is_err());
}

#[test]
fn genesis_refuses_raft_id_collisions_and_is_order_independent() {
    let a = Catalog::genesis(&[node("s1"), node("s2")], CatalogIndex(1), Term(1)).unwrap();
    let b = Catalog::genesis(&[node("s2"), node("s1")], CatalogIndex(1), Term(1)).unwrap();
    assert_eq!(a, b);
    let mut seeds = SeedGroup::default();
    seeds.learn_name(&node("s1")).unwrap();
    // Forge a colliding entry: a different name recorded under s1's id.
    seeds
        .names
        .insert(RaftId::of(&node("s1")), node("impostor"));
    assert!(matches!(
        seeds.learn_name(&node("s1")),
        Err(crate::Error::RaftIdCollision { .. })
    ));
}

#[test]
fn hash_routing_uses_the_key_hash() {
    let mut driver = populated();
    driver.ok(Op::CreateTable {
        name: "h".to_owned(),
        schema: String::new(),
        sharding: Sharding::Hash,
        replication_factor: 1,
    });
    let middle = (u64::MAX / 2).to_be_bytes();
    driver.ok(shard("h", b"", Some(&middle), vec![]));
    driver.ok(shard("h", &middle, None, vec![]));
    let key = b"user-42";
    let expected = if key_hash(key) < u64::MAX / 2 { 1 } else { 2 };
    assert_eq!(
        driver.catalog.route("h", key).unwrap().shard_id,
        ShardId(expected)
    );
}

// ----- property tests ---------------------------------------------------------------

const NAMES: [&str; 3] = ["n1", "n2", "n3"];

fn any_node() -> impl Strategy<Value = NodeId> {
    prop::sample::select(&NAMES[..]).prop_map(node)
}

fn any_key() -> impl Strategy<Value = Key> {
    prop::collection::vec(b'a'..b'f', 0..2).prop_map(Key)
}

fn any_op() -> impl Strategy<Value = Op> {
    let status = prop::sample::select(vec![
        NodeStatus::Joining,
        NodeStatus::Active,
        NodeStatus::Draining,
        NodeStatus::Dead,
        NodeStatus::Removed,
    ]);
    let role = prop::sample::select(vec![
        ReplicaRole::Primary,
        ReplicaRole::Secondary,
        ReplicaRole::Learner,
    ]);
    prop_oneof![
        (any_node(), 0u64..3).prop_map(|(node_id, generation)| Op::RegisterNode {
            node_id,
            address: "h:1".to_owned(),
            labels: BTreeMap::new(),
            role: NodeRole::Member,
            generation: Generation(generation),
            capacity: Capacity::default(),
        }),
        (any_node(), status).prop_map(|(node_id, status)| Op::SetNodeStatus { node_id, status }),
        prop::sample::select(vec!["t", "u"]).prop_map(table),
        prop::sample::select(vec!["t", "u"]).prop_map(|name| Op::DropTable {
            name: name.to_owned()
        }),
        (
            any_key(),
            prop::option::of(any_key()),
            prop::collection::vec((any_node(), role.clone()), 0..3)
        )
            .prop_map(|(start, end, replicas)| Op::CreateShard {
                table: "t".to_owned(),
                range: KeyRange { start, end },
                replicas: replicas
                    .into_iter()
                    .map(|(node_id, role)| Replica { node_id, role })
                    .collect(),
            }),
        (0u64..3, any_node(), 0u64..6).prop_map(|(shard, node_id, epoch)| Op::SetPrimary {
            shard_id: ShardId(shard),
            node_id,
            epoch: Epoch(epoch),
        }),
        (0u64..3, any_node()).prop_map(|(shard, node_id)| Op::AddReplica {
            shard_id: ShardId(shard),
            node_id,
            role: ReplicaRole::Learner,
        }),
        (0u64..3, any_node()).prop_map(|(shard, node_id)| Op::RemoveReplica {
            shard_id: ShardId(shard),
            node_id,
        }),
        (0u64..3, any_key()).prop_map(|(shard, split_key)| Op::SplitShard {
            shard_id: ShardId(shard),
            split_key,
        }),
        (0u64..3, 0u64..3).prop_map(|(left, right)| Op::MergeShards {
            left: ShardId(left),
            right: ShardId(right),
        }),
        (
            prop::sample::select(vec!["a", "b"]),
            "[a-c]{1,2}",
            prop::option::of(0u64..3)
        )
            .prop_map(|(key, value, expected_version)| Op::SetConfig {
                key: key.to_owned(),
                value,
                expected_version,
            }),
        (prop::sample::select(vec!["a", "b"]), 1u64..4).prop_map(|(key, version)| {
            Op::RollbackConfig {
                key: key.to_owned(),
                version,
            }
        }),
        "[a-c]{1,3}".prop_map(|secret| Op::BootstrapAcl {
            token_id: "root".to_owned(),
            secret_sha256: hash_token_secret(&secret),
        }),
        ("[a-c]{1,2}", "[a-c]{1,3}").prop_map(|(token_id, secret)| Op::CreateToken {
            token_id,
            role: TokenRole::Read,
            secret_sha256: hash_token_secret(&secret),
            description: String::new(),
        }),
    ]
}

/// Invariants every reachable catalog satisfies.
fn check_invariants(state: &CatalogState) {
    for shard in state.shards.values() {
        let primaries: Vec<_> = shard
            .replicas
            .iter()
            .filter(|r| r.role == ReplicaRole::Primary)
            .collect();
        assert!(primaries.len() <= 1);
        assert_eq!(
            shard.primary.as_ref(),
            primaries.first().map(|r| &r.node_id)
        );
        assert!(shard.range.is_valid());
        assert!(state.tables.contains_key(&shard.table));
        assert!(shard.shard_id < state.shard_id_next);
        for other in state.shards.values() {
            if other.shard_id != shard.shard_id && other.table == shard.table {
                assert!(
                    !other.range.overlaps(&shard.range),
                    "{shard:?} overlaps {other:?}"
                );
            }
        }
    }
    for entry in state.config.values() {
        assert!(entry.history.len() <= CONFIG_HISTORY_MAX);
        assert_eq!(entry.history.last().unwrap().version, entry.version);
    }
}

/// A plain model of the parts of the catalog with simple semantics: config values
/// and versions, node statuses, the ACL flag and token ids.
#[derive(Debug, Default, PartialEq)]
struct Model {
    config: BTreeMap<String, (String, u64)>,
    history: BTreeMap<String, Vec<(u64, String)>>,
    acl_bootstrapped: bool,
    tokens: BTreeMap<String, TokenRole>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::SetConfig {
                key,
                value,
                expected_version,
            } => {
                let current = self.config.get(key).map_or(0, |(_, v)| *v);
                if expected_version.is_none_or(|e| e == current) {
                    self.set(key, value.clone(), current + 1);
                }
            }
            Op::RollbackConfig { key, version } => {
                let old = self
                    .history
                    .get(key)
                    .and_then(|h| h.iter().find(|(v, _)| v == version).cloned());
                if let Some((_, value)) = old {
                    let current = self.config[key].1;
                    self.set(key, value, current + 1);
                }
            }
            Op::BootstrapAcl { token_id, .. } if !self.acl_bootstrapped => {
                self.acl_bootstrapped = true;
                self.tokens.insert(token_id.clone(), TokenRole::Admin);
            }
            Op::CreateToken { token_id, role, .. } if self.acl_bootstrapped => {
                self.tokens.entry(token_id.clone()).or_insert(*role);
            }
            _ => {}
        }
    }

    fn set(&mut self, key: &str, value: String, version: u64) {
        self.config.insert(key.to_owned(), (value.clone(), version));
        let history = self.history.entry(key.to_owned()).or_default();
        history.push((version, value));
        if history.len() > CONFIG_HISTORY_MAX {
            history.remove(0);
        }
    }

    fn matches(&self, state: &CatalogState) -> bool {
        let config: BTreeMap<String, (String, u64)> = state
            .config
            .iter()
            .map(|(k, e)| (k.clone(), (e.value.clone(), e.version)))
            .collect();
        let tokens: BTreeMap<String, TokenRole> = state
            .tokens
            .iter()
            .map(|(k, t)| (k.clone(), t.role))
            .collect();
        config == self.config
            && tokens == self.tokens
            && state.acl_bootstrapped == self.acl_bootstrapped
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn applying_twice_equals_applying_once(ops in prop::collection::vec(any_op(), 1..30)) {
        let mut once = Driver::new();
        let mut twice = Driver::new();
        for op in ops {
            let command = once.command(op);
            twice.n_requests = once.n_requests;
            let first = once.apply_command(&command);
            let a = twice.apply_command(&command);
            let b = twice.apply_command(&command);
            prop_assert_eq!(&first, &a);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(once.catalog.state(), twice.catalog.state());
            check_invariants(once.catalog.state());
        }
        prop_assert_eq!(once.catalog.state_hash(), twice.catalog.state_hash());
    }

    #[test]
    fn catalog_matches_the_model(ops in prop::collection::vec(any_op(), 1..40)) {
        let mut driver = Driver::new();
        let mut model = Model::default();
        for op in &ops {
            let state_before = driver.catalog.state().clone();
            let result = driver.apply(op.clone());
            if result.is_err() {
                prop_assert_eq!(&state_before, driver.catalog.state(), "a rejection changed state");
            }
            // Callers skip scanning the nodes while nodes_changed_at stays.
            if driver.catalog.state().nodes != state_before.nodes {
                prop_assert_eq!(
                    driver.catalog.nodes_changed_at(),
                    driver.catalog.applied_index(),
                    "{:?} changed the nodes without saying so",
                    op
                );
            }
            model.apply(op);
            prop_assert!(model.matches(driver.catalog.state()), "diverged after {:?}: {:?}", op, model);
        }
    }

    #[test]
    fn commands_round_trip_through_rmp_and_json(op in any_op()) {
        let command = Driver::new().command(op);
        let decoded = Command::decode(&command.encode().unwrap()).unwrap();
        prop_assert_eq!(&decoded, &command);
        let json = serde_json::to_string(&command).unwrap();
        let from_json: Command = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&from_json, &command);
    }

    #[test]
    fn same_entries_same_hash_and_snapshot_round_trips(ops in prop::collection::vec(any_op(), 1..20)) {
        let mut a = Driver::new();
        let mut b = Driver::new();
        for op in ops {
            let command = a.command(op);
            let _ = a.apply_command(&command);
            let _ = b.apply_command(&command);
        }
        prop_assert_eq!(a.catalog.chain_hash(), b.catalog.chain_hash());
        let restored = Catalog::decode(&a.catalog.encode()).unwrap();
        prop_assert_eq!(&restored, &a.catalog);
        let json = serde_json::to_string(a.catalog.state()).unwrap();
        let from_json: CatalogState = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&from_json, a.catalog.state());
    }
}

#[test]
fn json_field_names_are_snake_case_and_stable() {
    let mut driver = populated();
    driver.ok(Op::SetConfig {
        key: "k".to_owned(),
        value: "v".to_owned(),
        expected_version: None,
    });
    let json = serde_json::to_value(driver.catalog.state()).unwrap();
    let shard = &json["shards"]["0"];
    assert_eq!(shard["range"]["start"], "61");
    assert_eq!(shard["primary"], "n1");
    assert_eq!(shard["replicas"][0]["role"], "primary");
    assert_eq!(json["nodes"]["n1"]["status"], "joining");
    let op = serde_json::to_value(Op::DropTable {
        name: "t".to_owned(),
    })
    .unwrap();
    assert_eq!(op["op"], "drop_table");
    let err = serde_json::to_value(CommandError::AclNotBootstrapped).unwrap();
    assert_eq!(err["code"], "acl_not_bootstrapped");
}
