//! Shoal's consensus core: the seed group's Raft (raft-rs behind a sans-IO wrapper),
//! the catalog state machine it replicates, and the storage it persists to.
//!
//! # Contract
//!
//! * **No IO** except in [`storage::sled_store`], the sled-backed log store the agent
//!   uses. Everything else is pure computation over inputs the caller supplies.
//! * **Time comes from the caller.** Raft time is the number of [`RaftNode::tick`]
//!   calls; wall-clock timestamps recorded in the catalog travel *inside* commands
//!   ([`Command::time_unix_ms`]). Nothing here reads a clock.
//! * **Randomness comes from the caller.** A [`RaftNode`] draws its election timeouts
//!   from a ChaCha RNG seeded by the caller, overriding raft-rs's own draw, so one seed
//!   replays one history.
//! * **Deterministic.** Maps are `BTreeMap`s; no iteration order depends on hashing
//!   or addresses. Equal inputs give equal outputs, byte for byte.
//! * **Durable before visible.** A node writes and syncs entries, hard state and
//!   snapshots to its [`LogStore`] before it emits any message that depends on them
//!   and before it applies anything.
//!
//! # Map
//!
//! * [`RaftNode`] — drive it with `tick`, `step`, `propose`, `read_index`,
//!   `propose_conf_change`, `transfer_leader`; take its [`Output`]s with `drain_outputs`.
//! * [`Catalog`] — the state machine ([`Command`] in, [`CommandResult`] out).
//! * [`LogStore`], [`MemStorage`], [`SledStorage`] — where Raft state lives.
//! * [`encode_message`] / [`decode_message`] — bytes for the transport.
//!
//! # Driving a node
//!
//! ```
//! use shoal_consensus::{
//!     Actor, Command, MemStorage, NodeId, Op, Output, RaftConfig, RaftNode, RequestId,
//!     bootstrap, decode_message, encode_message,
//! };
//!
//! # fn main() -> Result<(), shoal_consensus::Error> {
//! let me = NodeId::new("db-01")?;
//! // Once, when the seed set is fixed: every seed writes the same genesis state.
//! // (The agent uses `SledStorage::open(db, sled_dir, snapshot_dir)?` instead.)
//! let mut storage = MemStorage::new();
//! bootstrap(&mut storage, &[me.clone()])?;
//! // On every start: open the node on its storage, with a seed for its RNG.
//! let mut node = RaftNode::new(RaftConfig::new(me.clone()), storage, 42)?;
//! node.campaign()?; // or just tick until a leader is elected
//!
//! let command = Command {
//!     request_id: RequestId::new("req-1")?,
//!     actor: Actor("token:ops".to_owned()),
//!     time_unix_ms: 1_700_000_000_000, // the shell's wall clock, read by the caller
//!     op: Op::SetConfig { key: "k".to_owned(), value: "v".to_owned(), expected_version: None },
//! };
//! node.propose(&command)?; // Err(NotLeader { leader }) on followers: forward there
//!
//! // After every input (tick every 100 ms, step on each received message, propose…):
//! for output in node.drain_outputs() {
//!     match output {
//!         // Already durable: ship the bytes to `message.to` over the transport.
//!         Output::Send(message) => {
//!             let bytes = encode_message(&message)?;
//!             let _received = decode_message(&bytes)?; // the peer then calls `step`
//!         }
//!         // Answer the client waiting on this request id.
//!         Output::Applied(applied) => assert!(applied.result.is_ok()),
//!         _ => {}
//!     }
//! }
//! assert_eq!(node.catalog().state().config["k"].value, "v");
//! # Ok(())
//! # }
//! ```

mod catalog;
mod codec;
mod error;
#[cfg(test)]
mod harness;
mod hash;
mod ids;
mod node;
#[cfg(test)]
mod node_tests;
pub mod storage;

pub use catalog::*;
pub use codec::{
    MESSAGE_BYTES_MAX, MESSAGE_FORMAT_V1, RaftMessage, decode_message, encode_message,
};
pub use error::Error;
pub use hash::hash_token_secret;
pub use ids::{
    CatalogIndex, Epoch, Generation, NODE_ID_LEN_MAX, NodeId, REQUEST_ID_LEN_MAX, RaftId,
    RequestId, ShardId, Term,
};
pub use node::{
    CONF_CHANGES_MAX, GENESIS_INDEX, GENESIS_TERM, MembershipChange, NodeCounters,
    OUTPUT_MESSAGES_PENDING_MAX, Output, PendingSync, READ_CONTEXT_BYTES_MAX, READS_PENDING_MAX,
    RECENT_BYTES_MAX, RECENT_ENTRIES_MAX, RaftConfig, RaftNode, Role, SyncTicket, bootstrap,
};
/// raft-rs's protobuf types ([`eraftpb::Message`] travels inside [`RaftMessage`]).
pub use raft::eraftpb;
pub use storage::{LogStore, MemStorage, SledStorage, SyncJob};
