//! Identity and counter newtypes shared by the catalog and the Raft wrapper.
//!
//! Every identity or counter that crosses this crate's boundary is a newtype, so a
//! Raft `Term` cannot be passed where a shard `Epoch` is meant (see the glossary in
//! `ARCHITECTURE.md`: *epoch* is not *term*).
//!
//! The one non-obvious item here is [`RaftId`]: raft-rs identifies peers by a
//! non-zero `u64`, while Shoal names nodes by operator-chosen strings (`db-07`).
//! [`RaftId::of`] maps a [`NodeId`] to a `RaftId` with 64-bit FNV-1a over the
//! UTF-8 bytes of the name (offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`), mapping the result `0` to `1`. Every seed computes the same
//! id for the same name without coordination. Two names could collide; the
//! bootstrap and every membership change check the new name against all known
//! members and refuse with [`crate::Error::RaftIdCollision`] instead of letting two
//! nodes share an id.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Longest accepted [`NodeId`], in bytes.
pub const NODE_ID_LEN_MAX: usize = 64;
/// Longest accepted [`RequestId`], in bytes.
pub const REQUEST_ID_LEN_MAX: usize = 128;

/// The operator-chosen, stable name of a node (`db-07`).
///
/// Constraints (checked by [`NodeId::new`]): 1 to [`NODE_ID_LEN_MAX`] bytes of ASCII
/// letters, digits, `-`, `_` and `.`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// Validates and wraps a node name.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        if valid_name(&name, NODE_ID_LEN_MAX) {
            Ok(Self(name))
        } else {
            Err(Error::InvalidNodeId { name })
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this value satisfies the constraints of [`NodeId::new`]; values
    /// deserialized from the wire are checked with this before use.
    pub fn is_valid(&self) -> bool {
        valid_name(&self.0, NODE_ID_LEN_MAX)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-chosen identifier that makes a command idempotent: the catalog applies
/// a command with a given request id at most once and answers every retry with the
/// first result.
///
/// Constraints (checked by [`RequestId::new`]): 1 to [`REQUEST_ID_LEN_MAX`] bytes of
/// ASCII letters, digits, `-`, `_`, `.` and `:`.
///
/// Shared, so that the catalog's copies of one id (its dedup window, the
/// window's age order, the audit trail) are one allocation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// Validates and wraps a request id.
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        if valid_request_id(&id) {
            Ok(Self(Arc::from(id)))
        } else {
            Err(Error::InvalidRequestId { id })
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this value satisfies the constraints of [`RequestId::new`].
    pub fn is_valid(&self) -> bool {
        valid_request_id(&self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= REQUEST_ID_LEN_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub(crate) fn valid_name(name: &str, len_max: usize) -> bool {
    !name.is_empty()
        && name.len() <= len_max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

macro_rules! counter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

counter!(
    /// A Raft term: the logical clock of the seed group's leadership. Not an [`Epoch`].
    Term
);
counter!(
    /// The Raft log index of the last entry applied to a catalog: the catalog's version.
    CatalogIndex
);
counter!(
    /// A shard's fencing epoch: strictly increases whenever the shard's primary changes,
    /// never decreases. Not a Raft [`Term`].
    Epoch
);
counter!(
    /// A shard's identifier, unique across the catalog and never reused.
    ShardId
);
counter!(
    /// A node's generation: bumped by the node on every start, so a newer incarnation
    /// of the same [`NodeId`] always wins.
    Generation
);
counter!(
    /// The id raft-rs uses for a peer; derived from a [`NodeId`] by [`RaftId::of`]. Never 0.
    RaftId
);

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl RaftId {
    /// The deterministic Raft id of a node: 64-bit FNV-1a of the name's bytes, with 0
    /// (raft-rs's "no node") mapped to 1.
    pub fn of(node: &NodeId) -> RaftId {
        let mut hash = FNV_OFFSET_BASIS;
        for byte in node.as_str().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
        let id = if hash == 0 { 1 } else { hash };
        debug_assert_ne!(id, 0);
        RaftId(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    #[test]
    fn raft_id_is_fnv1a_and_stable() {
        // Known FNV-1a 64 test vector: "a" -> 0xaf63dc4c8601ec8c.
        assert_eq!(RaftId::of(&node("a")).0, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(RaftId::of(&node("db-07")), RaftId::of(&node("db-07")));
        assert_ne!(RaftId::of(&node("db-07")), RaftId::of(&node("db-08")));
    }

    #[test]
    fn node_id_validation() {
        assert!(NodeId::new("db-07").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("has space").is_err());
        assert!(NodeId::new("x".repeat(NODE_ID_LEN_MAX + 1)).is_err());
        assert!(RequestId::new("req:1").is_ok());
        assert!(RequestId::new("").is_err());
    }
}
