//! The catalog: the replicated state machine the seed group commits.
//!
//! A [`Catalog`] is versioned by the Raft index of the last entry applied to it
//! ([`Catalog::applied_index`]). Entries are applied strictly in index order, and
//! every applied entry — command, leader no-op or membership change — extends a hash
//! chain `h_i = SHA-256(h_{i-1} || index || term || kind || data)` ([`Catalog::chain_hash`]),
//! so two catalogs at the same index agree exactly when their hashes agree. The
//! simulator uses this to check that every agent's catalog is a prefix of the
//! committed history.
//!
//! Command semantics:
//! * Every command is idempotent by request id: the catalog remembers the result of
//!   the last [`REQUESTS_REMEMBERED_MAX`] request ids and answers a retry with the first
//!   result without changing anything. A request id reused for a *different* op is
//!   refused with [`CommandError::RequestIdReused`].
//! * A rejected command (validation failure) is still a committed log entry — it is in
//!   the audit log — but changes nothing in the catalog state; its typed
//!   [`CommandError`] is the result returned to the proposer.
//! * Each op validates everything before it mutates anything, so a rejection never
//!   leaves a partial change.

mod apply;
mod command;
mod types;
mod window;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque, btree_map};

use serde::{Deserialize, Serialize};

pub use command::{
    COMMAND_BYTES_MAX, COMMAND_FORMAT_V1, Command, CommandError, CommandResult, Op, Outcome,
};
pub use types::{
    ACTOR_LEN_MAX, ADDRESS_LEN_MAX, Actor, CONFIG_KEY_LEN_MAX, CONFIG_VALUE_LEN_MAX, Capacity,
    ConfigEntry, ConfigVersion, Digest, KEY_LEN_MAX, Key, KeyRange, LABEL_LEN_MAX,
    LABELS_PER_NODE_MAX, NodeRecord, NodeRole, NodeStatus, OperationKind, OperationRecord,
    REPLICAS_PER_SHARD_MAX, REPLICATION_FACTOR_MAX, Replica, ReplicaRole, SCHEMA_LEN_MAX,
    SchemaVersion, ShardRecord, ShardStatus, Sharding, TABLE_NAME_LEN_MAX, TOKEN_TEXT_LEN_MAX,
    TokenRecord, TokenRole,
};

use crate::error::Error;
use crate::hash::sha256;
use crate::ids::{CatalogIndex, NodeId, RaftId, RequestId, ShardId, Term};
use window::WindowKey;

/// Most request ids whose results the catalog remembers for deduplication; the
/// oldest (by applied index) is forgotten first. A retry arriving after its id was
/// forgotten is applied again.
pub const REQUESTS_REMEMBERED_MAX: usize = 100_000;
/// Most nodes in the catalog.
pub const NODES_MAX: usize = 100_000;
/// Most tables.
pub const TABLES_MAX: usize = 10_000;
/// Most shards.
pub const SHARDS_MAX: usize = 1_000_000;
/// Most schema versions kept per table.
pub const SCHEMA_VERSIONS_MAX: usize = 1_000;
/// Most operations in flight.
pub const OPERATIONS_IN_FLIGHT_MAX: usize = 10_000;
/// Most configuration entries.
pub const CONFIG_ENTRIES_MAX: usize = 10_000;
/// Most versions kept in one configuration entry's history.
pub const CONFIG_HISTORY_MAX: usize = 32;
/// Most tokens.
pub const TOKENS_MAX: usize = 10_000;

/// The format byte that starts an encoded [`Catalog`] snapshot or [`CatalogBackup`].
pub const CATALOG_FORMAT_V1: u8 = 1;

/// The catalog's content: everything a backup carries and a restore replaces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogState {
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Tables by name.
    pub tables: BTreeMap<String, TableRecord>,
    /// Shards by id.
    pub shards: BTreeMap<ShardId, ShardRecord>,
    /// The id the next created shard gets (ids are never reused).
    pub shard_id_next: ShardId,
    /// Operations in flight by id.
    pub operations: BTreeMap<u64, OperationRecord>,
    /// Configuration entries by key.
    pub config: BTreeMap<String, ConfigEntry>,
    /// Tokens by id.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Whether the first admin token was created ([`Op::BootstrapAcl`]).
    pub acl_bootstrapped: bool,
}

pub use types::TableRecord;

/// The Raft membership of the seed group, by name, as of the catalog's applied index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedGroup {
    /// Voters (in a joint configuration: the incoming voters).
    pub voters: BTreeSet<NodeId>,
    /// Outgoing voters while a joint configuration is in effect, else empty.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Learners (non-voting members).
    pub learners: BTreeSet<NodeId>,
    /// Every name ever seen in the group, by Raft id; used to route messages and to
    /// detect Raft id collisions.
    pub names: BTreeMap<RaftId, NodeId>,
}

impl SeedGroup {
    /// Records `node`'s name, refusing a Raft id collision with another name.
    pub fn learn_name(&mut self, node: &NodeId) -> Result<RaftId, Error> {
        let raft_id = RaftId::of(node);
        match self.names.get(&raft_id) {
            Some(existing) if existing != node => Err(Error::RaftIdCollision {
                node: node.clone(),
                existing: existing.clone(),
                raft_id,
            }),
            Some(_) => Ok(raft_id),
            None => {
                self.names.insert(raft_id, node.clone());
                Ok(raft_id)
            }
        }
    }

    /// The name of a Raft id, if known.
    pub fn name_of(&self, raft_id: RaftId) -> Option<&NodeId> {
        self.names.get(&raft_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RequestRecord {
    index: CatalogIndex,
    op_sha256: Digest,
    result: CommandResult,
}

/// Most audit records a catalog keeps; older ones are dropped first. The audit
/// trail travels in snapshots, so every agent can answer `GET /v1/audit`.
pub const AUDIT_RECORDS_MAX: usize = 10_000;
/// Longest `detail` of an audit record, in bytes.
pub const AUDIT_DETAIL_LEN_MAX: usize = 200;

/// One committed command in the audit trail: who did what, when, with what result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The log index the command committed at.
    pub index: CatalogIndex,
    /// The proposer's wall-clock time, in milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// Who issued it.
    pub actor: String,
    /// Its request id.
    pub request_id: RequestId,
    /// The operation's name (`set_config`, `create_table`, ...).
    pub op: Cow<'static, str>,
    /// The operation's main arguments, abbreviated (never a secret).
    pub detail: String,
    /// `ok`, or the error code it was rejected with.
    pub result: Cow<'static, str>,
}

/// One applied log entry as shipped to the catalog copies of non-seed agents, which
/// apply it with [`Catalog::apply_committed`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedEntry {
    /// Its log index.
    pub index: CatalogIndex,
    /// Its term.
    pub term: Term,
    /// What it holds.
    pub kind: CommittedKind,
}

/// The payload of a [`CommittedEntry`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommittedKind {
    /// A command (or, when empty, a leader's no-op).
    Normal {
        /// The entry data, as in the log.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A seed-group change, with the group it resulted in.
    Membership {
        /// The entry data, as in the log.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// The seed group after the change.
        seeds: SeedGroup,
    },
}

impl CommittedEntry {
    /// Bytes this entry takes (for batching limits).
    pub fn size_bytes(&self) -> usize {
        match &self.kind {
            CommittedKind::Normal { data } => data.len() + 24,
            CommittedKind::Membership { data, .. } => data.len() + 256,
        }
    }
}

/// The catalog state machine. See the module documentation for its semantics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    applied_index: CatalogIndex,
    applied_term: Term,
    chain_hash: Digest,
    state: CatalogState,
    seeds: SeedGroup,
    /// The dedup window (see `window.rs`).
    #[serde(with = "window")]
    requests: BTreeMap<WindowKey, RequestRecord>,
    request_order: BTreeMap<CatalogIndex, RequestId>,
    /// Boxed: the deque doubles as it grows, and an empty slot then costs a
    /// pointer rather than a whole record.
    #[serde(default)]
    audit: VecDeque<Box<AuditRecord>>,
    /// The index of the last entry that changed a node record (see
    /// [`Catalog::nodes_changed_at`]).
    #[serde(default)]
    nodes_changed_at: CatalogIndex,
}

/// One applied command, as reported to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedCommand {
    /// The log index the command was committed at.
    pub index: CatalogIndex,
    /// Its request id; `None` only for a malformed entry.
    pub request_id: Option<RequestId>,
    /// What it produced (for a retry: the first result).
    pub result: CommandResult,
}

/// A serialized catalog with its version: the unit of backup and restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogBackup {
    /// The applied index the state reflects.
    pub applied_index: CatalogIndex,
    /// The hash chain at that index.
    pub chain_hash: Digest,
    /// The content.
    pub state: CatalogState,
}

/// What kind of entry extended the hash chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryKind {
    Normal = 0,
    Membership = 1,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::empty()
    }
}

impl Catalog {
    /// An empty catalog at index 0 (a node that has not yet received state).
    pub fn empty() -> Catalog {
        Catalog {
            applied_index: CatalogIndex(0),
            applied_term: Term(0),
            chain_hash: Digest::default(),
            state: CatalogState::default(),
            seeds: SeedGroup::default(),
            requests: BTreeMap::new(),
            request_order: BTreeMap::new(),
            audit: VecDeque::new(),
            nodes_changed_at: CatalogIndex(0),
        }
    }

    /// The genesis catalog every seed computes identically from the bootstrap voter
    /// set: empty content, the voters recorded as the seed group, at `index`/`term`.
    pub fn genesis(voters: &[NodeId], index: CatalogIndex, term: Term) -> Result<Catalog, Error> {
        let mut catalog = Catalog::empty();
        for voter in voters {
            catalog.seeds.learn_name(voter)?;
            catalog.seeds.voters.insert(voter.clone());
        }
        catalog.applied_index = index;
        catalog.applied_term = term;
        let mut genesis_bytes = Vec::new();
        for voter in &catalog.seeds.voters {
            genesis_bytes.extend_from_slice(voter.as_str().as_bytes());
            genesis_bytes.push(0);
        }
        catalog.chain_hash = sha256(&[b"shoal-genesis", &genesis_bytes]);
        Ok(catalog)
    }

    /// The Raft index of the last applied entry: the catalog's version.
    pub fn applied_index(&self) -> CatalogIndex {
        self.applied_index
    }

    /// The index of the last applied entry that changed a node record: while
    /// it stays the same, so does [`CatalogState::nodes`], and callers that
    /// scan every node (at every catalog change, on every agent) can skip the
    /// scan. A catalog decoded from a snapshot of an older format says 0.
    pub fn nodes_changed_at(&self) -> CatalogIndex {
        self.nodes_changed_at
    }

    /// The Raft term of the last applied entry.
    pub fn applied_term(&self) -> Term {
        self.applied_term
    }

    /// The hash chain over every applied entry up to [`Catalog::applied_index`].
    pub fn chain_hash(&self) -> Digest {
        self.chain_hash
    }

    /// SHA-256 of the encoded content only (ignores index, chain and dedup window):
    /// equal content gives equal hashes on every node.
    pub fn state_hash(&self) -> Digest {
        let bytes = rmp_serde::to_vec_named(&self.state)
            .expect("catalog state always encodes (plain data, string keys)");
        sha256(&[&bytes])
    }

    /// The content.
    pub fn state(&self) -> &CatalogState {
        &self.state
    }

    /// The seed group's membership by name.
    pub fn seeds(&self) -> &SeedGroup {
        &self.seeds
    }

    /// The first result of a remembered request id, with the index it applied at.
    pub fn result_of(&self, request_id: &RequestId) -> Option<(CatalogIndex, &CommandResult)> {
        self.requests
            .get(&WindowKey::new(request_id.clone()))
            .map(|record| (record.index, &record.result))
    }

    /// The token whose secret is `secret`, if any.
    pub fn authenticate(&self, secret: &str) -> Option<&TokenRecord> {
        let digest = crate::hash::hash_token_secret(secret);
        // Tokens are few; a linear scan avoids keeping a second index in snapshots.
        self.state
            .tokens
            .values()
            .find(|token| token.secret_sha256 == digest)
    }

    /// The shard of `table` that holds `key`. For hash-sharded tables the key is first
    /// hashed with [`key_hash`] and the big-endian bytes of the hash are looked up.
    pub fn route(&self, table: &str, key: &[u8]) -> Option<&ShardRecord> {
        let table_record = self.state.tables.get(table)?;
        let hashed;
        let lookup: &[u8] = match table_record.sharding {
            Sharding::Hash => {
                hashed = key_hash(key).to_be_bytes();
                &hashed
            }
            Sharding::Range => key,
        };
        self.state
            .shards
            .values()
            .find(|shard| shard.table == table && shard.range.contains(lookup))
    }

    /// Applies a committed normal entry at `index`. Empty `data` is raft's leader
    /// no-op: it extends the hash chain and yields nothing. Otherwise the data is a
    /// [`Command`] and its result is returned (a malformed entry yields
    /// [`CommandError::Malformed`] without a request id).
    ///
    /// # Panics
    /// If `index` is not `applied_index + 1`: entries must be applied in order.
    pub fn apply_entry(
        &mut self,
        index: CatalogIndex,
        term: Term,
        data: &[u8],
    ) -> Option<AppliedCommand> {
        self.extend_chain(index, term, EntryKind::Normal, data);
        if data.is_empty() {
            return None;
        }
        let applied = match Command::decode(data) {
            Err(err) => AppliedCommand {
                index,
                request_id: None,
                result: Err(CommandError::Malformed {
                    reason: err.to_string(),
                }),
            },
            Ok(command) => {
                let request_id = command.request_id.clone();
                let result = self.apply_command(index, command);
                AppliedCommand {
                    index,
                    request_id: Some(request_id),
                    result,
                }
            }
        };
        Some(applied)
    }

    /// Applies an entry shipped from a seed (see [`CommittedEntry`]): how the
    /// catalog copy of a non-seed agent follows the committed log.
    ///
    /// # Panics
    /// If `entry.index` is not `applied_index + 1`.
    pub fn apply_committed(&mut self, entry: &CommittedEntry) -> Option<AppliedCommand> {
        match &entry.kind {
            CommittedKind::Normal { data } => self.apply_entry(entry.index, entry.term, data),
            CommittedKind::Membership { data, seeds } => {
                self.apply_membership(entry.index, entry.term, data, seeds.clone());
                None
            }
        }
    }

    /// The audit trail, oldest first (at most [`AUDIT_RECORDS_MAX`]).
    pub fn audit(&self) -> impl DoubleEndedIterator<Item = &AuditRecord> {
        self.audit.iter().map(|record| &**record)
    }

    /// Applies a committed membership (conf change) entry at `index`: records the new
    /// seed group and extends the hash chain with the entry's bytes.
    ///
    /// # Panics
    /// If `index` is not `applied_index + 1`.
    pub fn apply_membership(
        &mut self,
        index: CatalogIndex,
        term: Term,
        data: &[u8],
        seeds: SeedGroup,
    ) {
        self.extend_chain(index, term, EntryKind::Membership, data);
        assert!(
            seeds
                .voters
                .iter()
                .all(|voter| seeds.names.contains_key(&RaftId::of(voter))),
            "every voter has a recorded name"
        );
        self.seeds = seeds;
    }

    fn extend_chain(&mut self, index: CatalogIndex, term: Term, kind: EntryKind, data: &[u8]) {
        assert_eq!(
            index.0,
            self.applied_index.0 + 1,
            "catalog entries must be applied in order"
        );
        assert!(
            term >= self.applied_term,
            "terms never decrease along the log"
        );
        self.chain_hash = sha256(&[
            &self.chain_hash.0,
            &index.0.to_be_bytes(),
            &term.0.to_be_bytes(),
            &[kind as u8],
            data,
        ]);
        self.applied_index = index;
        self.applied_term = term;
    }

    /// Applies a decoded command (idempotent by request id).
    fn apply_command(&mut self, index: CatalogIndex, command: Command) -> CommandResult {
        if !command.request_id.is_valid() {
            return Err(invalid("request_id", "bad characters or length"));
        }
        if !command.actor.is_valid() {
            return Err(invalid("actor", "bad characters or length"));
        }
        let op_bytes = rmp_serde::to_vec_named(&command.op)
            .expect("a decoded op always re-encodes (plain data, string keys)");
        let op_sha256 = sha256(&[&op_bytes]);
        // One search of the dedup window both answers a retry and keeps the
        // place for a new request.
        let slot = match self
            .requests
            .entry(WindowKey::new(command.request_id.clone()))
        {
            btree_map::Entry::Occupied(known) => {
                let record = known.get();
                if record.op_sha256 == op_sha256 {
                    return record.result.clone();
                }
                return Err(CommandError::RequestIdReused {
                    first_index: record.index,
                });
            }
            btree_map::Entry::Vacant(slot) => slot,
        };
        let result = apply::apply_op(&mut self.state, index, &command);
        if result.is_ok() && command.op.changes_nodes() {
            self.nodes_changed_at = index;
        }
        slot.insert(RequestRecord {
            index,
            op_sha256,
            result: result.clone(),
        });
        self.record_audit(index, &command, &result);
        self.remember(index, command.request_id);
        result
    }

    fn record_audit(&mut self, index: CatalogIndex, command: &Command, result: &CommandResult) {
        if self.audit.len() >= AUDIT_RECORDS_MAX {
            self.audit.pop_front();
        }
        let mut detail = command.op.detail();
        if detail.len() > AUDIT_DETAIL_LEN_MAX {
            let mut cut = AUDIT_DETAIL_LEN_MAX;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        self.audit.push_back(Box::new(AuditRecord {
            index,
            time_unix_ms: command.time_unix_ms,
            actor: command.actor.0.clone(),
            request_id: command.request_id.clone(),
            op: Cow::Borrowed(command.op.name()),
            detail,
            result: match result {
                Ok(_) => Cow::Borrowed("ok"),
                Err(error) => Cow::Borrowed(error.code()),
            },
        }));
    }

    /// Notes the age of a request just added to the dedup window, and keeps
    /// the window at [`REQUESTS_REMEMBERED_MAX`] by forgetting the oldest
    /// (never the one just added: its index is the newest).
    fn remember(&mut self, index: CatalogIndex, request_id: RequestId) {
        self.request_order.insert(index, request_id);
        if self.requests.len() > REQUESTS_REMEMBERED_MAX {
            let (_, oldest) = self
                .request_order
                .pop_first()
                .expect("order index mirrors the request map");
            self.requests.remove(&WindowKey::new(oldest));
        }
        assert_eq!(self.requests.len(), self.request_order.len());
    }

    /// Encodes the whole catalog (state, index, chain, seeds, dedup window) for a Raft
    /// snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![CATALOG_FORMAT_V1];
        rmp_serde::encode::write_named(&mut bytes, self)
            .expect("catalog always encodes (plain data, string keys)");
        bytes
    }

    /// Decodes a catalog encoded by [`Catalog::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Catalog, Error> {
        let body = strip_format(bytes, "catalog")?;
        let catalog: Catalog = rmp_serde::from_slice(body).map_err(|err| Error::Corrupt {
            reason: format!("catalog does not decode: {err}"),
        })?;
        if catalog.requests.len() != catalog.request_order.len() {
            return Err(Error::Corrupt {
                reason: "catalog dedup index is inconsistent".to_owned(),
            });
        }
        Ok(catalog)
    }

    /// A backup of the catalog's content with its version.
    pub fn backup(&self) -> CatalogBackup {
        CatalogBackup {
            applied_index: self.applied_index,
            chain_hash: self.chain_hash,
            state: self.state.clone(),
        }
    }
}

impl CatalogBackup {
    /// Encodes the backup (format byte + rmp-serde).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![CATALOG_FORMAT_V1];
        rmp_serde::encode::write_named(&mut bytes, self)
            .expect("backup always encodes (plain data, string keys)");
        bytes
    }

    /// Decodes a backup. Nothing changes on error.
    pub fn decode(bytes: &[u8]) -> Result<CatalogBackup, Error> {
        let body = strip_format(bytes, "backup")?;
        rmp_serde::from_slice(body).map_err(|err| Error::Corrupt {
            reason: format!("backup does not decode: {err}"),
        })
    }
}

fn strip_format<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8], Error> {
    match bytes.split_first() {
        Some((&CATALOG_FORMAT_V1, body)) => Ok(body),
        Some((format, _)) => Err(Error::Corrupt {
            reason: format!("unknown {what} format {format}"),
        }),
        None => Err(Error::Corrupt {
            reason: format!("empty {what}"),
        }),
    }
}

/// The 64-bit hash that maps a key of a hash-sharded table into the shard key space
/// (FNV-1a 64 over the key bytes; shard ranges hold its big-endian bytes). The
/// database must hash keys the same way.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

pub(crate) fn invalid(field: &str, reason: &str) -> CommandError {
    CommandError::Invalid {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests;
