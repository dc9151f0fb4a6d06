//! The records the catalog holds: nodes, tables, shards, operations, configuration
//! entries and access tokens.
//!
//! Field names are snake_case and stable: these types are serialized into the Raft
//! log and snapshots (rmp-serde, named fields) and are meant to be served as JSON by
//! the agent's HTTP API. Maps are `BTreeMap`s so that iteration and bytes are
//! deterministic.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, Generation, NodeId, ShardId};

/// Longest accepted [`Actor`], in bytes.
pub const ACTOR_LEN_MAX: usize = 128;
/// Longest accepted table name, in bytes.
pub const TABLE_NAME_LEN_MAX: usize = 64;
/// Longest accepted configuration key, in bytes.
pub const CONFIG_KEY_LEN_MAX: usize = 128;
/// Longest accepted configuration value, in bytes.
pub const CONFIG_VALUE_LEN_MAX: usize = 64 * 1024;
/// Longest accepted schema text, in bytes.
pub const SCHEMA_LEN_MAX: usize = 256 * 1024;
/// Longest accepted shard key bound, in bytes.
pub const KEY_LEN_MAX: usize = 1024;
/// Longest accepted node address, in bytes.
pub const ADDRESS_LEN_MAX: usize = 256;
/// Most labels on one node.
pub const LABELS_PER_NODE_MAX: usize = 32;
/// Longest label key or value, in bytes.
pub const LABEL_LEN_MAX: usize = 128;
/// Most replicas of one shard.
pub const REPLICAS_PER_SHARD_MAX: usize = 16;
/// Largest replication factor of a table.
pub const REPLICATION_FACTOR_MAX: u32 = 16;
/// Longest accepted token id or description, in bytes.
pub const TOKEN_TEXT_LEN_MAX: usize = 256;

/// Who issued a command: a token id, a node, a controller (`controller`,
/// `token:ops-1`, `node:db-07`). Recorded in the audit log. 1 to [`ACTOR_LEN_MAX`]
/// printable ASCII bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(pub String);

impl Actor {
    /// Whether the actor satisfies its constraints.
    pub fn is_valid(&self) -> bool {
        !self.0.is_empty()
            && self.0.len() <= ACTOR_LEN_MAX
            && self.0.bytes().all(|b| b.is_ascii_graphic())
    }
}

/// A node's role in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// A Raft voter of the seed group.
    Seed,
    /// Any other node.
    Member,
}

/// A node's lifecycle status: `Joining → Active → Draining → Dead / Removed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Registered, not yet serving.
    Joining,
    /// Serving.
    Active,
    /// Having its replicas moved away before removal.
    Draining,
    /// Declared dead by the controller.
    Dead,
    /// Removed from the cluster; may hold no replica. Re-registering revives it as `Joining`.
    Removed,
}

impl NodeStatus {
    /// Whether the status machine allows `self → next` (a no-op `self → self` is allowed).
    pub fn can_become(self, next: NodeStatus) -> bool {
        use NodeStatus::*;
        self == next
            || matches!(
                (self, next),
                (Joining, Active)
                    | (Joining, Dead)
                    | (Joining, Removed)
                    | (Active, Draining)
                    | (Active, Dead)
                    | (Draining, Active)
                    | (Draining, Dead)
                    | (Draining, Removed)
                    | (Dead, Joining)
                    | (Dead, Removed)
            )
    }
}

/// What a node offers; used by placement to weigh nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capacity {
    /// Disk capacity of the database's data dir.
    pub disk_bytes: u64,
    /// Memory available to the database.
    pub memory_bytes: u64,
    /// CPU available to the database, in thousandths of a core.
    pub cpu_millicores: u64,
}

/// One node as the catalog knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's name.
    pub node_id: NodeId,
    /// Where the node's agent listens (`host:port`).
    pub address: String,
    /// Placement labels (`region`, `zone`, `rack`, …). Shared: the records
    /// of nodes with the same labels hold one map.
    #[serde(deserialize_with = "deserialize_labels")]
    pub labels: Arc<BTreeMap<String, String>>,
    /// Seed or member.
    pub role: NodeRole,
    /// Lifecycle status.
    pub status: NodeStatus,
    /// The newest generation registered; never decreases.
    pub generation: Generation,
    /// What the node offers.
    pub capacity: Capacity,
    /// Wall-clock time (from the command) of the first registration.
    pub registered_at_unix_ms: u64,
    /// Wall-clock time (from the command) of the last change.
    pub updated_at_unix_ms: u64,
}

/// A node's labels, key to value.
type LabelMap = BTreeMap<String, String>;

/// Distinct label maps kept for sharing, per thread. A cluster has a handful
/// (one per zone or rack); more only make the cache start over.
const LABELS_INTERNED_MAX: usize = 1024;

thread_local! {
    /// Every label map interned on this thread, each once. Only a cache: a
    /// record holds the same labels whether they came from here or not, so no
    /// behaviour depends on it (and a simulator's many catalogs share it).
    static LABELS: std::cell::RefCell<std::collections::BTreeSet<Arc<LabelMap>>> =
        const { std::cell::RefCell::new(std::collections::BTreeSet::new()) };
}

/// The shared copy of `labels`. Every node's record holds its labels, and a
/// `BTreeMap` allocates room for eleven entries however few it holds: a
/// copy of `zone=a` per record cost about half a kilobyte, per record and per
/// catalog (every agent holds one).
pub(super) fn intern_labels(labels: &LabelMap) -> Arc<LabelMap> {
    LABELS.with_borrow_mut(|interned| {
        if let Some(shared) = interned.get(labels) {
            return shared.clone();
        }
        if interned.len() >= LABELS_INTERNED_MAX {
            interned.clear();
        }
        let shared = Arc::new(labels.clone());
        interned.insert(shared.clone());
        shared
    })
}

fn deserialize_labels<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Arc<LabelMap>, D::Error> {
    Ok(intern_labels(&LabelMap::deserialize(deserializer)?))
}

/// How a table's keys map to shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharding {
    /// Keys are hashed to a 64-bit value; shard ranges are over the big-endian bytes
    /// of that hash.
    Hash,
    /// Shard ranges are over the raw key bytes.
    Range,
}

/// One version of a table's schema. The text is opaque to Shoal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// 1 for the table's first schema, then +1 per change.
    pub version: u64,
    /// The schema text, as the database understands it.
    pub schema: String,
    /// Wall-clock time (from the command) it was added.
    pub added_at_unix_ms: u64,
}

/// One table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRecord {
    /// The table's name.
    pub name: String,
    /// Every schema version, oldest first; never empty.
    pub schema_versions: Vec<SchemaVersion>,
    /// The schema version the cluster should run (changes when a schema change
    /// operation completes or rolls back).
    pub schema_version_current: u64,
    /// How keys map to shards.
    pub sharding: Sharding,
    /// How many replicas each shard should have.
    pub replication_factor: u32,
    /// Wall-clock time (from the command) of creation.
    pub created_at_unix_ms: u64,
}

/// A key bound: raw bytes, serialized as a lowercase hex string.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub Vec<u8>);

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::hash::decode_hex(&text)
            .map(Key)
            .ok_or_else(|| serde::de::Error::custom("key is not lowercase hex"))
    }
}

/// A half-open key range `[start, end)`; `end: None` means unbounded above.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    /// Inclusive lower bound (the empty key is the lowest).
    pub start: Key,
    /// Exclusive upper bound, or `None` for no upper bound.
    pub end: Option<Key>,
}

impl KeyRange {
    /// Whether the range holds at least one key.
    pub fn is_valid(&self) -> bool {
        match &self.end {
            Some(end) => self.start < *end,
            None => true,
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.0.as_slice() && self.end.as_ref().is_none_or(|end| key < end.0.as_slice())
    }

    /// Whether the two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        let self_below_other = self.end.as_ref().is_some_and(|end| *end <= other.start);
        let other_below_self = other.end.as_ref().is_some_and(|end| *end <= self.start);
        !(self_below_other || other_below_self)
    }
}

/// A replica's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaRole {
    /// Takes writes; at most one per shard.
    Primary,
    /// A full, caught-up copy.
    Secondary,
    /// A copy still catching up; never promoted to primary directly.
    Learner,
}

/// One replica of a shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Replica {
    /// The node that hosts it.
    pub node_id: NodeId,
    /// Its role.
    pub role: ReplicaRole,
}

/// A shard's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardStatus {
    /// Serving reads and writes.
    Active,
    /// Writes paused (during a split, merge or schema cut-over).
    Frozen,
    /// No replica can serve it.
    Offline,
}

/// One shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The shard's id.
    pub shard_id: ShardId,
    /// The table it belongs to.
    pub table: String,
    /// The keys it holds; never overlaps another shard of the same table.
    pub range: KeyRange,
    /// Its replicas, sorted by node id, one per node.
    pub replicas: Vec<Replica>,
    /// The replica with role `Primary`, if any (kept equal to it).
    pub primary: Option<NodeId>,
    /// The fencing epoch; only ever increases, and strictly increases when the
    /// primary changes.
    pub epoch: Epoch,
    /// Serving status.
    pub status: ShardStatus,
}

/// What a multi-step operation does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OperationKind {
    /// Move a replica of `shard_id` from `source` to `target`.
    Move {
        /// The shard.
        shard_id: ShardId,
        /// The node losing the replica.
        source: NodeId,
        /// The node gaining it.
        target: NodeId,
    },
    /// Split `shard_id` at `split_key`.
    Split {
        /// The shard.
        shard_id: ShardId,
        /// The first key of the right half.
        split_key: Key,
    },
    /// Merge two adjacent shards.
    Merge {
        /// The lower shard, which survives.
        left: ShardId,
        /// The upper shard, which is absorbed.
        right: ShardId,
    },
    /// Roll out schema `version` of `table`.
    SchemaChange {
        /// The table.
        table: String,
        /// The target schema version.
        version: u64,
    },
}

impl OperationKind {
    /// The named steps of this kind of operation, in order.
    pub fn steps(&self) -> &'static [&'static str] {
        match self {
            OperationKind::Move { .. } => &["add_learner", "catch_up", "promote", "remove_source"],
            OperationKind::Split { .. } => &["freeze", "split", "unfreeze"],
            OperationKind::Merge { .. } => &["align_replicas", "freeze", "merge", "unfreeze"],
            OperationKind::SchemaChange { .. } => &["validate", "apply_on_nodes", "cut_over"],
        }
    }

    /// The shards this operation holds (at most one operation per shard at a time).
    pub fn shards(&self) -> Vec<ShardId> {
        match self {
            OperationKind::Move { shard_id, .. } | OperationKind::Split { shard_id, .. } => {
                vec![*shard_id]
            }
            OperationKind::Merge { left, right } => vec![*left, *right],
            OperationKind::SchemaChange { .. } => Vec::new(),
        }
    }
}

/// An operation in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// Its id: the catalog index of the command that began it.
    pub operation_id: u64,
    /// What it does.
    pub kind: OperationKind,
    /// How many of `kind.steps()` are done.
    pub steps_done: u32,
    /// Who began it.
    pub actor: Actor,
    /// Wall-clock time (from the command) it began.
    pub started_at_unix_ms: u64,
    /// Wall-clock time (from the command) of the last step.
    pub updated_at_unix_ms: u64,
}

/// One historical value of a configuration entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersion {
    /// The version this value had.
    pub version: u64,
    /// The value.
    pub value: String,
    /// Who set it.
    pub actor: Actor,
    /// Wall-clock time (from the command) it was set.
    pub set_at_unix_ms: u64,
}

/// A versioned configuration entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    /// The key.
    pub key: String,
    /// The current value.
    pub value: String,
    /// The current version (1 for the first value, +1 per change).
    pub version: u64,
    /// The last [`crate::CONFIG_HISTORY_MAX`] versions including the current one,
    /// oldest first.
    pub history: Vec<ConfigVersion>,
}

/// What a token may do. Ordered: `Read < Operator < Admin`; a higher role may do
/// everything a lower one may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// Read the catalog.
    Read,
    /// Operate the cluster (tables, shards, drains, config).
    Operator,
    /// Everything, including tokens.
    Admin,
}

/// A SHA-256 digest, serialized as lowercase hex.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Key(self.0.to_vec()), f)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = crate::hash::decode_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("digest is not lowercase hex"))?;
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("digest is not 32 bytes"))?;
        Ok(Digest(array))
    }
}

/// An access token. Only the SHA-256 of the secret is stored (see
/// [`crate::hash_token_secret`]); the secret never enters the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's public name.
    pub token_id: String,
    /// What it may do.
    pub role: TokenRole,
    /// SHA-256 of the secret.
    pub secret_sha256: Digest,
    /// Free text.
    pub description: String,
    /// Who created it.
    pub created_by: Actor,
    /// Wall-clock time (from the command) of creation.
    pub created_at_unix_ms: u64,
}
