//! Identities shared by every part of the membership core: the operator-chosen
//! [`NodeId`], the per-start [`Generation`], and the SWIM identity that combines
//! them with the advertised address.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Longest node id accepted, in bytes. Ids travel in every SWIM packet, so
/// they are kept short enough that a packet still carries many updates.
pub const NODE_ID_LEN_MAX: usize = 64;

/// The stable, operator-chosen name of a node (`db-07`).
///
/// Valid ids are 1..=[`NODE_ID_LEN_MAX`] bytes of ASCII letters, digits, `-`,
/// `_` and `.`; they are also used as TLS certificate names, file names and
/// URL path segments, so nothing else is allowed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// Checks `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidNodeId> {
        let id = id.into();
        let valid_chars = id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if id.is_empty() || id.len() > NODE_ID_LEN_MAX || !valid_chars || id.starts_with('.') {
            return Err(InvalidNodeId(id));
        }
        Ok(Self(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node id that breaks the rules of [`NodeId::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid node id {0:?}: expected 1 to 64 ASCII letters, digits, '-', '_' or '.', not starting with '.'"
)]
pub struct InvalidNodeId(pub String);

/// How many times a node's agent has started. Persisted by the agent in its
/// data dir and bumped on every start, so a restarted node is recognised at
/// once as the same node, newer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub u64);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The SWIM identity of one run of an agent: who, where, which start, and
/// how many times this run has rejoined after being declared down.
///
/// Two identities with the same [`NodeId`] are the same node; the one with the
/// newer `(generation, rejoin)` wins every conflict (foca keeps one identity
/// per address key, and our address key is the node id, so an old generation
/// is replaced as soon as the new one is heard of).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The node's stable name.
    pub node_id: NodeId,
    /// Where the node's agent receives SWIM datagrams.
    pub addr: SocketAddr,
    /// Which start of the agent this is.
    pub generation: Generation,
    /// How many times this run renewed its identity after the cluster
    /// declared it down (0 at start). Lets a node that was wrongly declared
    /// down, or was on the other side of a partition, come back at once
    /// without a restart.
    pub rejoin: u32,
}

impl foca::Identity for Identity {
    type Addr = NodeId;

    /// A node that learns the cluster declared it down comes back at once
    /// with `rejoin + 1`: a SWIM "down" is one observer's opinion, and the
    /// authoritative verdict belongs to the controllers, so staying out would
    /// only keep a partition from healing.
    fn renew(&self) -> Option<Self> {
        Some(Self {
            rejoin: self.rejoin.checked_add(1)?,
            ..self.clone()
        })
    }

    fn addr(&self) -> NodeId {
        self.node_id.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Newer generation wins; for equal generations (never expected) fall
        // back to a total order so every node picks the same winner.
        (self.generation, self.rejoin, &self.addr)
            > (adversary.generation, adversary.rejoin, &adversary.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_rules() {
        for good in ["db-07", "a", "node_1.zone-a", &"x".repeat(64)] {
            assert!(NodeId::new(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "has space", "slash/", "ümlaut", &"x".repeat(65)] {
            assert!(NodeId::new(bad).is_err(), "{bad}");
        }
    }
}
