//! Validation and application of each [`Op`] against the [`CatalogState`].
//!
//! Every function here validates first and mutates last, so a returned
//! [`CommandError`] always means "nothing changed". This is what makes a rejected
//! command safe to commit.

use std::collections::BTreeMap;

use super::command::{Command, CommandError, CommandResult, Op, Outcome};
use super::types::{
    ADDRESS_LEN_MAX, CONFIG_KEY_LEN_MAX, CONFIG_VALUE_LEN_MAX, ConfigEntry, ConfigVersion,
    KEY_LEN_MAX, KeyRange, LABEL_LEN_MAX, LABELS_PER_NODE_MAX, NodeRecord, NodeStatus,
    OperationKind, OperationRecord, REPLICAS_PER_SHARD_MAX, REPLICATION_FACTOR_MAX, Replica,
    ReplicaRole, SCHEMA_LEN_MAX, SchemaVersion, ShardRecord, ShardStatus, TABLE_NAME_LEN_MAX,
    TOKEN_TEXT_LEN_MAX, TableRecord, TokenRecord, TokenRole, intern_labels,
};
use super::{
    CONFIG_ENTRIES_MAX, CONFIG_HISTORY_MAX, CatalogState, NODES_MAX, OPERATIONS_IN_FLIGHT_MAX,
    SCHEMA_VERSIONS_MAX, SHARDS_MAX, TABLES_MAX, TOKENS_MAX, invalid,
};
use crate::ids::{CatalogIndex, Epoch, NodeId, ShardId, valid_name};

pub(super) fn apply_op(
    state: &mut CatalogState,
    index: CatalogIndex,
    command: &Command,
) -> CommandResult {
    let now_ms = command.time_unix_ms;
    match &command.op {
        Op::RegisterNode {
            node_id,
            address,
            labels,
            role,
            generation,
            capacity,
        } => {
            check_node_id(node_id)?;
            if address.is_empty() || address.len() > ADDRESS_LEN_MAX {
                return Err(invalid("address", "empty or too long"));
            }
            check_labels(labels)?;
            match state.nodes.get_mut(node_id) {
                Some(node) => {
                    if *generation < node.generation {
                        return Err(CommandError::StaleGeneration {
                            registered: node.generation,
                            given: *generation,
                        });
                    }
                    if node.status == NodeStatus::Removed {
                        node.status = NodeStatus::Joining;
                    }
                    node.address = address.clone();
                    node.labels = intern_labels(labels);
                    node.role = *role;
                    node.generation = *generation;
                    node.capacity = *capacity;
                    node.updated_at_unix_ms = now_ms;
                }
                None => {
                    limit(state.nodes.len() < NODES_MAX, "nodes_max")?;
                    state.nodes.insert(
                        node_id.clone(),
                        NodeRecord {
                            node_id: node_id.clone(),
                            address: address.clone(),
                            labels: intern_labels(labels),
                            role: *role,
                            status: NodeStatus::Joining,
                            generation: *generation,
                            capacity: *capacity,
                            registered_at_unix_ms: now_ms,
                            updated_at_unix_ms: now_ms,
                        },
                    );
                }
            }
            Ok(Outcome::Done)
        }
        Op::SetNodeLabels { node_id, labels } => {
            check_labels(labels)?;
            let node = node_mut(state, node_id)?;
            node.labels = intern_labels(labels);
            node.updated_at_unix_ms = now_ms;
            Ok(Outcome::Done)
        }
        Op::SetNodeRole { node_id, role } => {
            let node = node_mut(state, node_id)?;
            node.role = *role;
            node.updated_at_unix_ms = now_ms;
            Ok(Outcome::Done)
        }
        Op::SetNodeCapacity { node_id, capacity } => {
            let node = node_mut(state, node_id)?;
            node.capacity = *capacity;
            node.updated_at_unix_ms = now_ms;
            Ok(Outcome::Done)
        }
        Op::SetNodeStatus { node_id, status } => {
            let from = node_mut(state, node_id)?.status;
            if !from.can_become(*status) {
                return Err(CommandError::InvalidTransition {
                    node_id: node_id.clone(),
                    from,
                    to: *status,
                });
            }
            if *status == NodeStatus::Removed {
                let n_replicas = replicas_on(state, node_id);
                if n_replicas > 0 {
                    return Err(CommandError::NodeHasReplicas {
                        node_id: node_id.clone(),
                        n_replicas,
                    });
                }
            }
            let node = node_mut(state, node_id)?;
            node.status = *status;
            node.updated_at_unix_ms = now_ms;
            Ok(Outcome::Done)
        }
        Op::CreateTable {
            name,
            schema,
            sharding,
            replication_factor,
        } => {
            check_table_name(name)?;
            check_schema(schema)?;
            if *replication_factor == 0 || *replication_factor > REPLICATION_FACTOR_MAX {
                return Err(invalid(
                    "replication_factor",
                    "must be 1 to REPLICATION_FACTOR_MAX",
                ));
            }
            if state.tables.contains_key(name) {
                return Err(exists("table", name));
            }
            limit(state.tables.len() < TABLES_MAX, "tables_max")?;
            state.tables.insert(
                name.clone(),
                TableRecord {
                    name: name.clone(),
                    schema_versions: vec![SchemaVersion {
                        version: 1,
                        schema: schema.clone(),
                        added_at_unix_ms: now_ms,
                    }],
                    schema_version_current: 1,
                    sharding: *sharding,
                    replication_factor: *replication_factor,
                    created_at_unix_ms: now_ms,
                },
            );
            Ok(Outcome::Done)
        }
        Op::DropTable { name } => {
            if !state.tables.contains_key(name) {
                return Err(not_found("table", name));
            }
            let table_shards: Vec<ShardId> = state
                .shards
                .values()
                .filter(|shard| shard.table == *name)
                .map(|shard| shard.shard_id)
                .collect();
            for operation in state.operations.values() {
                let holds_shard = operation
                    .kind
                    .shards()
                    .iter()
                    .any(|shard_id| table_shards.contains(shard_id));
                let holds_table = matches!(&operation.kind, OperationKind::SchemaChange { table, .. } if table == name);
                if holds_shard || holds_table {
                    return Err(busy(format!("table {name}"), operation.operation_id));
                }
            }
            for shard_id in table_shards {
                state.shards.remove(&shard_id);
            }
            state.tables.remove(name);
            Ok(Outcome::Done)
        }
        Op::AddSchemaVersion {
            table,
            version,
            schema,
        } => {
            check_schema(schema)?;
            let record = table_mut(state, table)?;
            let newest = record.schema_versions.last().map_or(0, |v| v.version);
            if *version != newest + 1 {
                return Err(CommandError::VersionMismatch {
                    current: newest,
                    expected: version.saturating_sub(1),
                });
            }
            limit(
                record.schema_versions.len() < SCHEMA_VERSIONS_MAX,
                "schema_versions_max",
            )?;
            record.schema_versions.push(SchemaVersion {
                version: *version,
                schema: schema.clone(),
                added_at_unix_ms: now_ms,
            });
            Ok(Outcome::Done)
        }
        Op::SetSchemaVersion { table, version } => {
            let record = table_mut(state, table)?;
            if !record.schema_versions.iter().any(|v| v.version == *version) {
                return Err(not_found("schema_version", &version.to_string()));
            }
            record.schema_version_current = *version;
            Ok(Outcome::Done)
        }
        Op::CreateShard {
            table,
            range,
            replicas,
        } => {
            if !state.tables.contains_key(table) {
                return Err(not_found("table", table));
            }
            check_range(range)?;
            check_overlap(state, table, range, &[])?;
            let replicas = check_replicas(state, replicas)?;
            limit(state.shards.len() < SHARDS_MAX, "shards_max")?;
            let shard_id = state.shard_id_next;
            state.shard_id_next = ShardId(shard_id.0 + 1);
            let primary = primary_of(&replicas);
            state.shards.insert(
                shard_id,
                ShardRecord {
                    shard_id,
                    table: table.clone(),
                    range: range.clone(),
                    replicas,
                    primary,
                    epoch: Epoch(1),
                    status: ShardStatus::Active,
                },
            );
            Ok(Outcome::ShardCreated { shard_id })
        }
        Op::AddReplica {
            shard_id,
            node_id,
            role,
        } => {
            if *role == ReplicaRole::Primary {
                return Err(invalid_replicas(
                    "a replica is added as secondary or learner",
                ));
            }
            check_host(state, node_id)?;
            let shard = shard_mut(state, *shard_id)?;
            if shard.replicas.iter().any(|r| r.node_id == *node_id) {
                return Err(exists("replica", node_id.as_str()));
            }
            if shard.replicas.len() >= REPLICAS_PER_SHARD_MAX {
                return Err(invalid_replicas("too many replicas"));
            }
            shard.replicas.push(Replica {
                node_id: node_id.clone(),
                role: *role,
            });
            shard.replicas.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            Ok(Outcome::Done)
        }
        Op::PromoteReplica { shard_id, node_id } => {
            let shard = shard_mut(state, *shard_id)?;
            let replica = replica_mut(shard, node_id)?;
            match replica.role {
                ReplicaRole::Learner => replica.role = ReplicaRole::Secondary,
                ReplicaRole::Secondary => {}
                ReplicaRole::Primary => {
                    return Err(invalid_replicas("the primary cannot be promoted"));
                }
            }
            Ok(Outcome::Done)
        }
        Op::RemoveReplica { shard_id, node_id } => {
            let shard = shard_mut(state, *shard_id)?;
            let role = replica_mut(shard, node_id)?.role;
            if role == ReplicaRole::Primary {
                return Err(invalid_replicas(
                    "the primary cannot be removed; fail over first",
                ));
            }
            shard.replicas.retain(|r| r.node_id != *node_id);
            Ok(Outcome::Done)
        }
        Op::SetPrimary {
            shard_id,
            node_id,
            epoch,
        } => {
            check_host(state, node_id)?;
            let shard = shard_mut(state, *shard_id)?;
            if *epoch <= shard.epoch {
                return Err(CommandError::StaleEpoch {
                    current: shard.epoch,
                    given: *epoch,
                });
            }
            let role = replica_mut(shard, node_id)?.role;
            if role == ReplicaRole::Learner {
                return Err(invalid_replicas("a learner cannot become primary"));
            }
            for replica in &mut shard.replicas {
                if replica.role == ReplicaRole::Primary {
                    replica.role = ReplicaRole::Secondary;
                }
                if replica.node_id == *node_id {
                    replica.role = ReplicaRole::Primary;
                }
            }
            shard.primary = Some(node_id.clone());
            shard.epoch = *epoch;
            Ok(Outcome::Done)
        }
        Op::SetShardStatus { shard_id, status } => {
            shard_mut(state, *shard_id)?.status = *status;
            Ok(Outcome::Done)
        }
        Op::SplitShard {
            shard_id,
            split_key,
        } => {
            if split_key.0.len() > KEY_LEN_MAX {
                return Err(invalid("split_key", "too long"));
            }
            let shard = state
                .shards
                .get(shard_id)
                .ok_or_else(|| not_found("shard", &shard_id.to_string()))?;
            let left = KeyRange {
                start: shard.range.start.clone(),
                end: Some(split_key.clone()),
            };
            let right = KeyRange {
                start: split_key.clone(),
                end: shard.range.end.clone(),
            };
            if !left.is_valid() || !right.is_valid() {
                return Err(invalid(
                    "split_key",
                    "not strictly inside the shard's range",
                ));
            }
            limit(state.shards.len() < SHARDS_MAX, "shards_max")?;
            let new_shard_id = state.shard_id_next;
            let epoch = Epoch(shard.epoch.0 + 1);
            let mut new_shard = shard.clone();
            new_shard.shard_id = new_shard_id;
            new_shard.range = right;
            new_shard.epoch = epoch;
            let shard = shard_mut(state, *shard_id)?;
            shard.range = left;
            shard.epoch = epoch;
            state.shards.insert(new_shard_id, new_shard);
            state.shard_id_next = ShardId(new_shard_id.0 + 1);
            Ok(Outcome::ShardSplit {
                new_shard_id,
                epoch,
            })
        }
        Op::MergeShards { left, right } => {
            let not_adjacent = || CommandError::NotAdjacent {
                left: *left,
                right: *right,
            };
            let left_shard = state
                .shards
                .get(left)
                .ok_or_else(|| not_found("shard", &left.to_string()))?;
            let right_shard = state
                .shards
                .get(right)
                .ok_or_else(|| not_found("shard", &right.to_string()))?;
            if left == right
                || left_shard.table != right_shard.table
                || left_shard.range.end.as_ref() != Some(&right_shard.range.start)
            {
                return Err(not_adjacent());
            }
            if left_shard.replicas != right_shard.replicas {
                return Err(invalid_replicas(
                    "merged shards must have the same replicas and roles",
                ));
            }
            if let Some(operation) = state.operations.values().find(
                |op| matches!(op.kind, OperationKind::Move { shard_id, .. } if shard_id == *right),
            ) {
                return Err(busy(format!("shard {right}"), operation.operation_id));
            }
            let end = right_shard.range.end.clone();
            let epoch = Epoch(left_shard.epoch.max(right_shard.epoch).0 + 1);
            state.shards.remove(right);
            let shard = shard_mut(state, *left)?;
            shard.range.end = end;
            shard.epoch = epoch;
            Ok(Outcome::Done)
        }
        Op::BeginOperation { kind } => {
            check_operation_kind(state, kind)?;
            for shard_id in kind.shards() {
                if let Some(operation) = state
                    .operations
                    .values()
                    .find(|op| op.kind.shards().contains(&shard_id))
                {
                    return Err(busy(format!("shard {shard_id}"), operation.operation_id));
                }
            }
            limit(
                state.operations.len() < OPERATIONS_IN_FLIGHT_MAX,
                "operations_in_flight_max",
            )?;
            let operation_id = index.0;
            assert!(
                !state.operations.contains_key(&operation_id),
                "operation ids are log indexes"
            );
            state.operations.insert(
                operation_id,
                OperationRecord {
                    operation_id,
                    kind: kind.clone(),
                    steps_done: 0,
                    actor: command.actor.clone(),
                    started_at_unix_ms: now_ms,
                    updated_at_unix_ms: now_ms,
                },
            );
            Ok(Outcome::OperationStarted { operation_id })
        }
        Op::AdvanceOperation { operation_id, step } => {
            let operation = state
                .operations
                .get_mut(operation_id)
                .ok_or_else(|| not_found("operation", &operation_id.to_string()))?;
            let n_steps = operation.kind.steps().len() as u32;
            if *step != operation.steps_done || *step >= n_steps {
                return Err(CommandError::StepOutOfOrder {
                    operation_id: *operation_id,
                    steps_done: operation.steps_done,
                    step: *step,
                });
            }
            operation.steps_done += 1;
            operation.updated_at_unix_ms = now_ms;
            Ok(Outcome::Done)
        }
        Op::FinishOperation { operation_id, .. } => {
            state
                .operations
                .remove(operation_id)
                .ok_or_else(|| not_found("operation", &operation_id.to_string()))?;
            Ok(Outcome::Done)
        }
        Op::SetConfig {
            key,
            value,
            expected_version,
        } => {
            check_config(key, value)?;
            let current = state.config.get(key).map_or(0, |entry| entry.version);
            if let Some(expected) = expected_version
                && *expected != current
            {
                return Err(CommandError::VersionMismatch {
                    current,
                    expected: *expected,
                });
            }
            set_config(state, key, value, command)
        }
        Op::RollbackConfig { key, version } => {
            let entry = state
                .config
                .get(key)
                .ok_or_else(|| not_found("config", key))?;
            let value = entry
                .history
                .iter()
                .find(|old| old.version == *version)
                .map(|old| old.value.clone())
                .ok_or_else(|| not_found("config_version", &format!("{key}@{version}")))?;
            set_config(state, key, &value, command)
        }
        Op::BootstrapAcl {
            token_id,
            secret_sha256,
        } => {
            if state.acl_bootstrapped {
                return Err(CommandError::AclAlreadyBootstrapped);
            }
            check_token_text("token_id", token_id)?;
            state.tokens.insert(
                token_id.clone(),
                TokenRecord {
                    token_id: token_id.clone(),
                    role: TokenRole::Admin,
                    secret_sha256: *secret_sha256,
                    description: "bootstrap admin".to_owned(),
                    created_by: command.actor.clone(),
                    created_at_unix_ms: now_ms,
                },
            );
            state.acl_bootstrapped = true;
            Ok(Outcome::Done)
        }
        Op::CreateToken {
            token_id,
            role,
            secret_sha256,
            description,
        } => {
            if !state.acl_bootstrapped {
                return Err(CommandError::AclNotBootstrapped);
            }
            check_token_text("token_id", token_id)?;
            check_token_text("description", description).or_else(|err| {
                if description.is_empty() {
                    Ok(())
                } else {
                    Err(err)
                }
            })?;
            if state.tokens.contains_key(token_id) {
                return Err(exists("token", token_id));
            }
            limit(state.tokens.len() < TOKENS_MAX, "tokens_max")?;
            state.tokens.insert(
                token_id.clone(),
                TokenRecord {
                    token_id: token_id.clone(),
                    role: *role,
                    secret_sha256: *secret_sha256,
                    description: description.clone(),
                    created_by: command.actor.clone(),
                    created_at_unix_ms: now_ms,
                },
            );
            Ok(Outcome::Done)
        }
        Op::RevokeToken { token_id } => {
            state
                .tokens
                .remove(token_id)
                .ok_or_else(|| not_found("token", token_id))?;
            Ok(Outcome::Done)
        }
        Op::Restore { state: restored } => {
            check_restored(restored)?;
            *state = (**restored).clone();
            Ok(Outcome::Done)
        }
    }
}

fn set_config(
    state: &mut CatalogState,
    key: &str,
    value: &str,
    command: &Command,
) -> CommandResult {
    if !state.config.contains_key(key) {
        limit(
            state.config.len() < CONFIG_ENTRIES_MAX,
            "config_entries_max",
        )?;
    }
    let entry = state
        .config
        .entry(key.to_owned())
        .or_insert_with(|| ConfigEntry {
            key: key.to_owned(),
            value: String::new(),
            version: 0,
            history: Vec::new(),
        });
    entry.version += 1;
    entry.value = value.to_owned();
    entry.history.push(ConfigVersion {
        version: entry.version,
        value: value.to_owned(),
        actor: command.actor.clone(),
        set_at_unix_ms: command.time_unix_ms,
    });
    if entry.history.len() > CONFIG_HISTORY_MAX {
        entry.history.remove(0);
    }
    assert_eq!(entry.history.last().map(|v| v.version), Some(entry.version));
    Ok(Outcome::ConfigSet {
        version: entry.version,
    })
}

fn check_operation_kind(state: &CatalogState, kind: &OperationKind) -> Result<(), CommandError> {
    let shard_exists = |shard_id: &ShardId| {
        if state.shards.contains_key(shard_id) {
            Ok(())
        } else {
            Err(not_found("shard", &shard_id.to_string()))
        }
    };
    match kind {
        OperationKind::Move {
            shard_id,
            source,
            target,
        } => {
            shard_exists(shard_id)?;
            if !state.nodes.contains_key(source) {
                return Err(not_found("node", source.as_str()));
            }
            check_host(state, target)
        }
        OperationKind::Split { shard_id, .. } => shard_exists(shard_id),
        OperationKind::Merge { left, right } => {
            shard_exists(left)?;
            shard_exists(right)
        }
        OperationKind::SchemaChange { table, version } => {
            let record = state
                .tables
                .get(table)
                .ok_or_else(|| not_found("table", table))?;
            if !record.schema_versions.iter().any(|v| v.version == *version) {
                return Err(not_found("schema_version", &version.to_string()));
            }
            if let Some(operation) = state.operations.values().find(|op| {
                matches!(&op.kind, OperationKind::SchemaChange { table: held, .. } if held == table)
            }) {
                return Err(busy(format!("table {table}"), operation.operation_id));
            }
            Ok(())
        }
    }
}

fn check_restored(restored: &CatalogState) -> Result<(), CommandError> {
    for (shard_id, shard) in &restored.shards {
        if shard.shard_id != *shard_id || *shard_id >= restored.shard_id_next {
            return Err(invalid("state", "shard ids inconsistent"));
        }
        if shard.primary != primary_of(&shard.replicas) {
            return Err(invalid("state", "shard primary inconsistent with replicas"));
        }
    }
    Ok(())
}

fn check_node_id(node_id: &NodeId) -> Result<(), CommandError> {
    if node_id.is_valid() {
        Ok(())
    } else {
        Err(invalid("node_id", "bad characters or length"))
    }
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), CommandError> {
    if labels.len() > LABELS_PER_NODE_MAX {
        return Err(invalid("labels", "too many"));
    }
    let bad = |text: &String| text.is_empty() || text.len() > LABEL_LEN_MAX;
    if labels.iter().any(|(key, value)| bad(key) || bad(value)) {
        return Err(invalid("labels", "empty or too long"));
    }
    Ok(())
}

fn check_table_name(name: &str) -> Result<(), CommandError> {
    if valid_name(name, TABLE_NAME_LEN_MAX) {
        Ok(())
    } else {
        Err(invalid("name", "bad characters or length"))
    }
}

fn check_schema(schema: &str) -> Result<(), CommandError> {
    if schema.len() > SCHEMA_LEN_MAX {
        return Err(invalid("schema", "too long"));
    }
    Ok(())
}

fn check_config(key: &str, value: &str) -> Result<(), CommandError> {
    if !valid_name(key, CONFIG_KEY_LEN_MAX) {
        return Err(invalid("key", "bad characters or length"));
    }
    if value.len() > CONFIG_VALUE_LEN_MAX {
        return Err(invalid("value", "too long"));
    }
    Ok(())
}

fn check_token_text(field: &str, text: &str) -> Result<(), CommandError> {
    if text.is_empty() || text.len() > TOKEN_TEXT_LEN_MAX {
        return Err(invalid(field, "empty or too long"));
    }
    Ok(())
}

fn check_range(range: &KeyRange) -> Result<(), CommandError> {
    let too_long = range.start.0.len() > KEY_LEN_MAX
        || range
            .end
            .as_ref()
            .is_some_and(|end| end.0.len() > KEY_LEN_MAX);
    if too_long {
        return Err(invalid("range", "key too long"));
    }
    if !range.is_valid() {
        return Err(invalid("range", "start must be below end"));
    }
    Ok(())
}

fn check_overlap(
    state: &CatalogState,
    table: &str,
    range: &KeyRange,
    ignore: &[ShardId],
) -> Result<(), CommandError> {
    match state.shards.values().find(|shard| {
        shard.table == table && !ignore.contains(&shard.shard_id) && shard.range.overlaps(range)
    }) {
        Some(shard) => Err(CommandError::RangeOverlap {
            shard_id: shard.shard_id,
        }),
        None => Ok(()),
    }
}

/// A replica may only live on a known node that is not removed.
fn check_host(state: &CatalogState, node_id: &NodeId) -> Result<(), CommandError> {
    match state.nodes.get(node_id) {
        Some(node) if node.status != NodeStatus::Removed => Ok(()),
        _ => Err(CommandError::NodeUnavailable {
            node_id: node_id.clone(),
        }),
    }
}

fn check_replicas(
    state: &CatalogState,
    replicas: &[Replica],
) -> Result<Vec<Replica>, CommandError> {
    if replicas.len() > REPLICAS_PER_SHARD_MAX {
        return Err(invalid_replicas("too many replicas"));
    }
    let mut sorted = replicas.to_vec();
    sorted.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    if sorted
        .windows(2)
        .any(|pair| pair[0].node_id == pair[1].node_id)
    {
        return Err(invalid_replicas("a node appears twice"));
    }
    if sorted
        .iter()
        .filter(|r| r.role == ReplicaRole::Primary)
        .count()
        > 1
    {
        return Err(invalid_replicas("more than one primary"));
    }
    for replica in &sorted {
        check_host(state, &replica.node_id)?;
    }
    Ok(sorted)
}

fn primary_of(replicas: &[Replica]) -> Option<NodeId> {
    replicas
        .iter()
        .find(|r| r.role == ReplicaRole::Primary)
        .map(|r| r.node_id.clone())
}

fn replicas_on(state: &CatalogState, node_id: &NodeId) -> usize {
    state
        .shards
        .values()
        .filter(|shard| shard.replicas.iter().any(|r| r.node_id == *node_id))
        .count()
}

fn node_mut<'a>(
    state: &'a mut CatalogState,
    node_id: &NodeId,
) -> Result<&'a mut NodeRecord, CommandError> {
    state
        .nodes
        .get_mut(node_id)
        .ok_or_else(|| not_found("node", node_id.as_str()))
}

fn table_mut<'a>(
    state: &'a mut CatalogState,
    name: &str,
) -> Result<&'a mut TableRecord, CommandError> {
    state
        .tables
        .get_mut(name)
        .ok_or_else(|| not_found("table", name))
}

fn shard_mut(
    state: &mut CatalogState,
    shard_id: ShardId,
) -> Result<&mut ShardRecord, CommandError> {
    state
        .shards
        .get_mut(&shard_id)
        .ok_or_else(|| not_found("shard", &shard_id.to_string()))
}

fn replica_mut<'a>(
    shard: &'a mut ShardRecord,
    node_id: &NodeId,
) -> Result<&'a mut Replica, CommandError> {
    shard
        .replicas
        .iter_mut()
        .find(|r| r.node_id == *node_id)
        .ok_or_else(|| not_found("replica", node_id.as_str()))
}

fn limit(ok: bool, name: &str) -> Result<(), CommandError> {
    if ok {
        Ok(())
    } else {
        Err(CommandError::LimitReached {
            limit: name.to_owned(),
        })
    }
}

fn not_found(kind: &str, id: &str) -> CommandError {
    CommandError::NotFound {
        kind: kind.to_owned(),
        id: id.to_owned(),
    }
}

fn exists(kind: &str, id: &str) -> CommandError {
    CommandError::AlreadyExists {
        kind: kind.to_owned(),
        id: id.to_owned(),
    }
}

fn busy(what: String, operation_id: u64) -> CommandError {
    CommandError::Busy { what, operation_id }
}

fn invalid_replicas(reason: &str) -> CommandError {
    CommandError::InvalidReplicas {
        reason: reason.to_owned(),
    }
}
