//! The crate's error type for operations on a node, its storage and its codecs.
//!
//! Catalog *validation* failures are not here: a rejected command is still a
//! committed log entry, and its typed result ([`crate::CommandError`]) is data that
//! is replicated, returned to the proposer and serialized, so it lives with the
//! catalog. This enum covers calls that fail locally and synchronously.

use crate::ids::{NodeId, RaftId};

/// Errors returned by this crate's API. Each variant says whether state changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A node name does not satisfy [`NodeId::new`]'s constraints. Nothing changed.
    #[error("invalid node id {name:?}")]
    InvalidNodeId {
        /// The rejected name.
        name: String,
    },
    /// A request id does not satisfy [`crate::RequestId::new`]'s constraints. Nothing changed.
    #[error("invalid request id {id:?}")]
    InvalidRequestId {
        /// The rejected id.
        id: String,
    },
    /// This node is not the Raft leader, so it cannot accept the proposal, conf
    /// change or leader transfer. Nothing changed; retry at `leader` if known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// raft-rs dropped the proposal (for example during a leader transfer, or when the
    /// uncommitted-size limit is reached). Nothing changed; retry later.
    #[error("proposal dropped by raft")]
    ProposalDropped,
    /// An encoded command or message is larger than its named limit. Nothing changed.
    #[error("{what} is {len_bytes} bytes, more than the limit of {len_max_bytes} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len_bytes: usize,
        /// The limit it exceeded.
        len_max_bytes: usize,
    },
    /// Two different node names map to the same Raft id (see [`RaftId::of`]). The
    /// bootstrap or membership change was refused; nothing changed. Rename one node.
    #[error("raft id {raft_id} of node {node} collides with node {existing}")]
    RaftIdCollision {
        /// The node being added.
        node: NodeId,
        /// The known node with the same Raft id.
        existing: NodeId,
        /// The shared id.
        raft_id: RaftId,
    },
    /// A membership change or leader transfer is not valid in the current
    /// configuration (for example removing a non-member, or a change already in
    /// progress). Nothing changed.
    #[error("invalid membership change: {reason}")]
    InvalidConfChange {
        /// Why it was refused.
        reason: String,
    },
    /// Too many linearizable reads are waiting; the limit is
    /// [`crate::READS_PENDING_MAX`]. Nothing changed; retry later.
    #[error("too many pending reads")]
    ReadsPendingFull,
    /// Bytes received from a peer do not decode to a message. Nothing changed; the
    /// caller should count and drop it.
    #[error("malformed message: {reason}")]
    MalformedMessage {
        /// What was wrong.
        reason: String,
    },
    /// A message addressed to another node, or whose sender name does not match its
    /// Raft id, was given to [`crate::RaftNode::step`]. Nothing changed.
    #[error("misrouted message: {reason}")]
    Misrouted {
        /// What did not match.
        reason: String,
    },
    /// raft-rs refused an input (for example a message from an unknown peer). Nothing
    /// changed.
    #[error("raft refused the input: {0}")]
    Raft(String),
    /// The storage failed to read or write. The node has stopped: every later call
    /// returns [`Error::Stopped`]. State on disk is whatever the storage last synced.
    #[error("storage failure: {message}")]
    Storage {
        /// The storage's description of the failure.
        message: String,
    },
    /// Persisted or received state (a snapshot, a backup) does not decode or breaks an
    /// invariant. When it came from storage the node has stopped; when it came from a
    /// caller (a backup) nothing changed.
    #[error("corrupt state: {reason}")]
    Corrupt {
        /// What was wrong.
        reason: String,
    },
    /// The node stopped earlier after a storage or corruption error; it accepts no
    /// input. Restart it from its storage.
    #[error("node stopped after an earlier fatal error")]
    Stopped,
    /// The configuration is invalid. Nothing was created.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What was wrong.
        reason: String,
    },
    /// The storage already holds Raft state, so it cannot be bootstrapped again.
    /// Nothing changed.
    #[error("storage is already bootstrapped")]
    AlreadyBootstrapped,
}

impl Error {
    /// A storage failure described by `err` (for stores outside this crate).
    pub fn storage(err: impl std::fmt::Display) -> Self {
        Error::Storage {
            message: err.to_string(),
        }
    }
}
