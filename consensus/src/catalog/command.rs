//! Catalog commands (what is proposed and committed), their outcomes and the typed
//! rejections a committed command can yield.
//!
//! A command is an audit record: it carries its request id (idempotency), its actor
//! and the wall-clock time at which the proposer issued it (`time_unix_ms`, supplied
//! by the proposer; the catalog never reads a clock). The command's payload is an
//! [`Op`].
//!
//! Commands are encoded into log entries with [`Command::encode`]: one format byte
//! ([`COMMAND_FORMAT_V1`]) followed by rmp-serde with named fields, so fields can be
//! added compatibly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CatalogState;
use super::types::{
    Actor, Capacity, Digest, Key, KeyRange, NodeRole, NodeStatus, OperationKind, Replica,
    ReplicaRole, ShardStatus, Sharding, TokenRole,
};
use crate::error::Error;
use crate::ids::{CatalogIndex, Epoch, Generation, NodeId, RequestId, ShardId};

/// The format byte that starts every encoded command.
pub const COMMAND_FORMAT_V1: u8 = 1;
/// Largest encoded command, in bytes (a catalog restore is the biggest command).
pub const COMMAND_BYTES_MAX: usize = 16 * 1024 * 1024;

/// One catalog command: an [`Op`] plus its audit envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Makes the command idempotent: retries with the same id apply at most once.
    pub request_id: RequestId,
    /// Who issued it.
    pub actor: Actor,
    /// Wall-clock time at which the proposer issued it, in milliseconds since the Unix
    /// epoch. Recorded, never compared with a local clock.
    pub time_unix_ms: u64,
    /// What to do.
    pub op: Op,
}

impl Command {
    /// Encodes the command for the Raft log.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut bytes = vec![COMMAND_FORMAT_V1];
        rmp_serde::encode::write_named(&mut bytes, self).map_err(|err| Error::Corrupt {
            reason: format!("command does not encode: {err}"),
        })?;
        if bytes.len() > COMMAND_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "command",
                len_bytes: bytes.len(),
                len_max_bytes: COMMAND_BYTES_MAX,
            });
        }
        Ok(bytes)
    }

    /// Decodes a command encoded by [`Command::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Command, Error> {
        let malformed = |reason: String| Error::MalformedMessage { reason };
        match bytes.split_first() {
            Some((&COMMAND_FORMAT_V1, body)) => rmp_serde::from_slice(body)
                .map_err(|err| malformed(format!("command does not decode: {err}"))),
            Some((format, _)) => Err(malformed(format!("unknown command format {format}"))),
            None => Err(malformed("empty command".to_owned())),
        }
    }
}

/// What a command does. Serialized with an `op` tag, e.g. `{"op": "create_table", ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Registers a node, or updates a registered one (address, labels, role, capacity,
    /// generation). A new or `Removed` node becomes `Joining`. The generation must not
    /// be older than the registered one.
    RegisterNode {
        /// The node.
        node_id: NodeId,
        /// Where its agent listens.
        address: String,
        /// Placement labels.
        labels: BTreeMap<String, String>,
        /// Seed or member.
        role: NodeRole,
        /// Its current generation.
        generation: Generation,
        /// What it offers.
        capacity: Capacity,
    },
    /// Replaces a node's labels.
    SetNodeLabels {
        /// The node.
        node_id: NodeId,
        /// The new labels.
        labels: BTreeMap<String, String>,
    },
    /// Changes a node's role.
    SetNodeRole {
        /// The node.
        node_id: NodeId,
        /// The new role.
        role: NodeRole,
    },
    /// Moves a node along its lifecycle (see [`NodeStatus::can_become`]). `Removed`
    /// requires that the node hosts no replica.
    SetNodeStatus {
        /// The node.
        node_id: NodeId,
        /// The new status.
        status: NodeStatus,
    },
    /// Replaces a node's capacity.
    SetNodeCapacity {
        /// The node.
        node_id: NodeId,
        /// The new capacity.
        capacity: Capacity,
    },
    /// Creates a table with schema version 1.
    CreateTable {
        /// Its name (same constraints as a node id).
        name: String,
        /// The first schema.
        schema: String,
        /// How keys map to shards.
        sharding: Sharding,
        /// Replicas per shard, 1 to [`crate::REPLICATION_FACTOR_MAX`].
        replication_factor: u32,
    },
    /// Drops a table and all its shards. Refused while an operation holds one of them.
    DropTable {
        /// The table.
        name: String,
    },
    /// Adds the next schema version to a table (it becomes current when a schema-change
    /// operation cuts over, or at once with [`Op::SetSchemaVersion`]).
    AddSchemaVersion {
        /// The table.
        table: String,
        /// Must be the table's newest version + 1.
        version: u64,
        /// The schema text.
        schema: String,
    },
    /// Makes an existing schema version current (cut-over or rollback).
    SetSchemaVersion {
        /// The table.
        table: String,
        /// An existing version.
        version: u64,
    },
    /// Creates a shard; the catalog assigns its id ([`Outcome::ShardCreated`]). Epoch
    /// starts at 1.
    CreateShard {
        /// The table.
        table: String,
        /// Its keys; must not overlap another shard of the table.
        range: KeyRange,
        /// Its replicas: distinct, known, non-removed nodes; at most one primary.
        replicas: Vec<Replica>,
    },
    /// Adds a replica (as `Secondary` or `Learner`, never `Primary`).
    AddReplica {
        /// The shard.
        shard_id: ShardId,
        /// The node; must be known, not removed, not already a replica.
        node_id: NodeId,
        /// `Secondary` or `Learner`.
        role: ReplicaRole,
    },
    /// Promotes a `Learner` replica to `Secondary`.
    PromoteReplica {
        /// The shard.
        shard_id: ShardId,
        /// The replica's node.
        node_id: NodeId,
    },
    /// Removes a non-primary replica.
    RemoveReplica {
        /// The shard.
        shard_id: ShardId,
        /// The replica's node.
        node_id: NodeId,
    },
    /// Makes a `Secondary` replica the primary under a strictly greater epoch; the old
    /// primary, if any, becomes `Secondary`.
    SetPrimary {
        /// The shard.
        shard_id: ShardId,
        /// The new primary's node.
        node_id: NodeId,
        /// The new epoch; must be greater than the shard's.
        epoch: Epoch,
    },
    /// Sets a shard's status.
    SetShardStatus {
        /// The shard.
        shard_id: ShardId,
        /// The new status.
        status: ShardStatus,
    },
    /// Splits a shard at `split_key`: the shard keeps `[start, split_key)`, a new shard
    /// ([`Outcome::ShardSplit`]) gets `[split_key, end)` with the same replicas; both
    /// take epoch + 1.
    SplitShard {
        /// The shard.
        shard_id: ShardId,
        /// Strictly inside the shard's range.
        split_key: Key,
    },
    /// Merges `right` into `left`: they must be adjacent shards of one table with the
    /// same replica nodes and roles. `left` takes the union range and the greater
    /// epoch + 1; `right` is deleted.
    MergeShards {
        /// The lower shard.
        left: ShardId,
        /// The upper shard.
        right: ShardId,
    },
    /// Begins a multi-step operation ([`Outcome::OperationStarted`]); at most one per
    /// shard at a time.
    BeginOperation {
        /// What it does.
        kind: OperationKind,
    },
    /// Records that step `step` (0-based) of an operation is done; steps complete in order.
    AdvanceOperation {
        /// The operation.
        operation_id: u64,
        /// Must equal the number of steps already done.
        step: u32,
    },
    /// Ends an operation (completed or aborted); it leaves the in-flight set. The audit
    /// log keeps the record.
    FinishOperation {
        /// The operation.
        operation_id: u64,
        /// `true` if it completed, `false` if it was aborted or rolled back.
        completed: bool,
    },
    /// Sets a configuration value (version + 1). With `expected_version`, refused
    /// unless the current version matches (0 = absent).
    SetConfig {
        /// The key.
        key: String,
        /// The new value.
        value: String,
        /// Compare-and-set guard.
        expected_version: Option<u64>,
    },
    /// Sets a configuration entry back to the value it had at `version` (as a new
    /// version, so history only grows).
    RollbackConfig {
        /// The key.
        key: String,
        /// A version still in the entry's history.
        version: u64,
    },
    /// Creates the first admin token and sets the ACL-bootstrapped flag. Accepted
    /// exactly once in a catalog's life.
    BootstrapAcl {
        /// The token's public name.
        token_id: String,
        /// SHA-256 of its secret ([`crate::hash_token_secret`]).
        secret_sha256: Digest,
    },
    /// Creates a token. Requires the ACL to be bootstrapped.
    CreateToken {
        /// The token's public name; must be new.
        token_id: String,
        /// What it may do.
        role: TokenRole,
        /// SHA-256 of its secret.
        secret_sha256: Digest,
        /// Free text.
        description: String,
    },
    /// Revokes a token.
    RevokeToken {
        /// The token.
        token_id: String,
    },
    /// Replaces the whole catalog state with a backup's state (see
    /// [`crate::Catalog::backup`]). The applied index and hash chain continue from the
    /// log; the dedup window of request ids is kept.
    Restore {
        /// The state to install.
        state: Box<CatalogState>,
    },
}

impl Op {
    /// Whether applying this op (when it succeeds) may change a node record.
    pub fn changes_nodes(&self) -> bool {
        match self {
            Op::RegisterNode { .. }
            | Op::SetNodeLabels { .. }
            | Op::SetNodeRole { .. }
            | Op::SetNodeStatus { .. }
            | Op::SetNodeCapacity { .. }
            | Op::Restore { .. } => true,
            Op::CreateTable { .. }
            | Op::DropTable { .. }
            | Op::AddSchemaVersion { .. }
            | Op::SetSchemaVersion { .. }
            | Op::CreateShard { .. }
            | Op::AddReplica { .. }
            | Op::PromoteReplica { .. }
            | Op::RemoveReplica { .. }
            | Op::SetPrimary { .. }
            | Op::SetShardStatus { .. }
            | Op::SplitShard { .. }
            | Op::MergeShards { .. }
            | Op::BeginOperation { .. }
            | Op::AdvanceOperation { .. }
            | Op::FinishOperation { .. }
            | Op::SetConfig { .. }
            | Op::RollbackConfig { .. }
            | Op::BootstrapAcl { .. }
            | Op::CreateToken { .. }
            | Op::RevokeToken { .. } => false,
        }
    }

    /// The operation's name, as in its JSON tag and the audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            Op::RegisterNode { .. } => "register_node",
            Op::SetNodeLabels { .. } => "set_node_labels",
            Op::SetNodeRole { .. } => "set_node_role",
            Op::SetNodeStatus { .. } => "set_node_status",
            Op::SetNodeCapacity { .. } => "set_node_capacity",
            Op::CreateTable { .. } => "create_table",
            Op::DropTable { .. } => "drop_table",
            Op::AddSchemaVersion { .. } => "add_schema_version",
            Op::SetSchemaVersion { .. } => "set_schema_version",
            Op::CreateShard { .. } => "create_shard",
            Op::AddReplica { .. } => "add_replica",
            Op::PromoteReplica { .. } => "promote_replica",
            Op::RemoveReplica { .. } => "remove_replica",
            Op::SetPrimary { .. } => "set_primary",
            Op::SetShardStatus { .. } => "set_shard_status",
            Op::SplitShard { .. } => "split_shard",
            Op::MergeShards { .. } => "merge_shards",
            Op::BeginOperation { .. } => "begin_operation",
            Op::AdvanceOperation { .. } => "advance_operation",
            Op::FinishOperation { .. } => "finish_operation",
            Op::SetConfig { .. } => "set_config",
            Op::RollbackConfig { .. } => "rollback_config",
            Op::BootstrapAcl { .. } => "bootstrap_acl",
            Op::CreateToken { .. } => "create_token",
            Op::RevokeToken { .. } => "revoke_token",
            Op::Restore { .. } => "restore",
        }
    }

    /// The operation's main arguments in a few words, for the audit trail. Never
    /// includes a secret (token hashes) or a configuration value (it may be one).
    pub fn detail(&self) -> String {
        match self {
            Op::RegisterNode {
                node_id,
                address,
                generation,
                ..
            } => format!("node={node_id} address={address} generation={generation}"),
            Op::SetNodeLabels { node_id, .. } | Op::SetNodeCapacity { node_id, .. } => {
                format!("node={node_id}")
            }
            Op::SetNodeRole { node_id, role } => format!("node={node_id} role={role:?}"),
            Op::SetNodeStatus { node_id, status } => format!("node={node_id} status={status:?}"),
            Op::CreateTable {
                name,
                replication_factor,
                ..
            } => format!("table={name} replication_factor={replication_factor}"),
            Op::DropTable { name } => format!("table={name}"),
            Op::AddSchemaVersion { table, version, .. }
            | Op::SetSchemaVersion { table, version } => format!("table={table} version={version}"),
            Op::CreateShard {
                table, replicas, ..
            } => {
                format!("table={table} replicas={}", replicas.len())
            }
            Op::AddReplica {
                shard_id, node_id, ..
            }
            | Op::PromoteReplica { shard_id, node_id }
            | Op::RemoveReplica { shard_id, node_id } => format!("shard={shard_id} node={node_id}"),
            Op::SetPrimary {
                shard_id,
                node_id,
                epoch,
            } => format!("shard={shard_id} node={node_id} epoch={epoch}"),
            Op::SetShardStatus { shard_id, status } => {
                format!("shard={shard_id} status={status:?}")
            }
            Op::SplitShard { shard_id, .. } => format!("shard={shard_id}"),
            Op::MergeShards { left, right } => format!("left={left} right={right}"),
            Op::BeginOperation { kind } => format!("{kind:?}"),
            Op::AdvanceOperation { operation_id, step } => {
                format!("operation={operation_id} step={step}")
            }
            Op::FinishOperation {
                operation_id,
                completed,
            } => format!("operation={operation_id} completed={completed}"),
            Op::SetConfig {
                key,
                expected_version,
                ..
            } => match expected_version {
                Some(version) => format!("key={key} expected_version={version}"),
                None => format!("key={key}"),
            },
            Op::RollbackConfig { key, version } => format!("key={key} version={version}"),
            Op::BootstrapAcl { token_id, .. } | Op::RevokeToken { token_id } => {
                format!("token={token_id}")
            }
            Op::CreateToken { token_id, role, .. } => format!("token={token_id} role={role:?}"),
            Op::Restore { state } => format!(
                "nodes={} tables={} shards={} config={}",
                state.nodes.len(),
                state.tables.len(),
                state.shards.len(),
                state.config.len()
            ),
        }
    }

    /// The least token role the agent should require before proposing this op.
    pub fn required_role(&self) -> TokenRole {
        match self {
            Op::BootstrapAcl { .. }
            | Op::CreateToken { .. }
            | Op::RevokeToken { .. }
            | Op::Restore { .. } => TokenRole::Admin,
            _ => TokenRole::Operator,
        }
    }
}

/// What an accepted command produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The change was made (or was already in place).
    Done,
    /// A shard was created.
    ShardCreated {
        /// Its id.
        shard_id: ShardId,
    },
    /// A shard was split.
    ShardSplit {
        /// The new, upper shard.
        new_shard_id: ShardId,
        /// The epoch both halves now have.
        epoch: Epoch,
    },
    /// An operation began.
    OperationStarted {
        /// Its id.
        operation_id: u64,
    },
    /// A configuration entry changed.
    ConfigSet {
        /// Its new version.
        version: u64,
    },
}

/// Why a committed command changed nothing. Every variant is a committed, audited
/// rejection: the log entry exists, the catalog is unchanged (only its applied index
/// and hash chain advance).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum CommandError {
    /// The entry's bytes did not decode to a command.
    #[error("malformed command: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
    /// A field violates its constraint (length, characters, range).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What was wrong.
        reason: String,
    },
    /// The request id was already used for a different command.
    #[error("request id reused for a different command (first applied at {first_index})")]
    RequestIdReused {
        /// Where the first command with this id was applied.
        first_index: CatalogIndex,
    },
    /// A referenced object does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// `node`, `table`, `shard`, `operation`, `config`, `token`, `schema_version`,
        /// `replica`, `config_version`.
        kind: String,
        /// Its id.
        id: String,
    },
    /// The object to create already exists.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// `table`, `token`, `replica`.
        kind: String,
        /// Its id.
        id: String,
    },
    /// The node status change is not allowed.
    #[error("node {node_id} cannot go from {from:?} to {to:?}")]
    InvalidTransition {
        /// The node.
        node_id: NodeId,
        /// Its status.
        from: NodeStatus,
        /// The refused status.
        to: NodeStatus,
    },
    /// The registration's generation is older than the registered one.
    #[error("generation {given} is older than registered {registered}")]
    StaleGeneration {
        /// Registered.
        registered: Generation,
        /// Given.
        given: Generation,
    },
    /// The given epoch does not exceed the shard's epoch.
    #[error("epoch {given} does not exceed shard epoch {current}")]
    StaleEpoch {
        /// The shard's epoch.
        current: Epoch,
        /// The refused epoch.
        given: Epoch,
    },
    /// A replica would be placed on an unknown or removed node.
    #[error("node {node_id} cannot host replicas")]
    NodeUnavailable {
        /// The node.
        node_id: NodeId,
    },
    /// The node still hosts replicas, so it cannot be removed.
    #[error("node {node_id} still hosts {n_replicas} replicas")]
    NodeHasReplicas {
        /// The node.
        node_id: NodeId,
        /// How many.
        n_replicas: usize,
    },
    /// The range overlaps an existing shard of the table.
    #[error("range overlaps shard {shard_id}")]
    RangeOverlap {
        /// The overlapped shard.
        shard_id: ShardId,
    },
    /// The replica set is not acceptable (duplicate node, two primaries, too many, a
    /// primary where none may be, removing the primary, merge of unlike replica sets).
    #[error("invalid replicas: {reason}")]
    InvalidReplicas {
        /// What was wrong.
        reason: String,
    },
    /// The shards of a merge are not adjacent ranges of one table.
    #[error("shards {left} and {right} are not adjacent in one table")]
    NotAdjacent {
        /// The lower shard.
        left: ShardId,
        /// The upper shard.
        right: ShardId,
    },
    /// Another operation holds the shard (or table).
    #[error("{what} is busy with operation {operation_id}")]
    Busy {
        /// What is held.
        what: String,
        /// The holding operation.
        operation_id: u64,
    },
    /// The operation step is not the next one.
    #[error("operation {operation_id} is at step {steps_done}, not {step}")]
    StepOutOfOrder {
        /// The operation.
        operation_id: u64,
        /// Steps done.
        steps_done: u32,
        /// The refused step.
        step: u32,
    },
    /// A compare-and-set guard failed.
    #[error("version is {current}, expected {expected}")]
    VersionMismatch {
        /// The current version.
        current: u64,
        /// The expected one.
        expected: u64,
    },
    /// The ACL was already bootstrapped.
    #[error("acl already bootstrapped")]
    AclAlreadyBootstrapped,
    /// Tokens cannot be created before the ACL is bootstrapped.
    #[error("acl not bootstrapped")]
    AclNotBootstrapped,
    /// A named limit would be exceeded.
    #[error("limit reached: {limit}")]
    LimitReached {
        /// The limit's name.
        limit: String,
    },
}

impl CommandError {
    /// The stable machine code of the error (its JSON `code`).
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Malformed { .. } => "malformed",
            CommandError::Invalid { .. } => "invalid",
            CommandError::RequestIdReused { .. } => "request_id_reused",
            CommandError::NotFound { .. } => "not_found",
            CommandError::AlreadyExists { .. } => "already_exists",
            CommandError::InvalidTransition { .. } => "invalid_transition",
            CommandError::StaleGeneration { .. } => "stale_generation",
            CommandError::StaleEpoch { .. } => "stale_epoch",
            CommandError::NodeUnavailable { .. } => "node_unavailable",
            CommandError::NodeHasReplicas { .. } => "node_has_replicas",
            CommandError::RangeOverlap { .. } => "range_overlap",
            CommandError::InvalidReplicas { .. } => "invalid_replicas",
            CommandError::NotAdjacent { .. } => "not_adjacent",
            CommandError::Busy { .. } => "busy",
            CommandError::StepOutOfOrder { .. } => "step_out_of_order",
            CommandError::VersionMismatch { .. } => "version_mismatch",
            CommandError::AclAlreadyBootstrapped => "acl_already_bootstrapped",
            CommandError::AclNotBootstrapped => "acl_not_bootstrapped",
            CommandError::LimitReached { .. } => "limit_reached",
        }
    }
}

/// The result of applying one command, as returned to its proposer.
pub type CommandResult = Result<Outcome, CommandError>;
