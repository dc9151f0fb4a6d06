//! Identities shared by every part of the membership core: the operator-chosen
//! [`NodeId`], the per-start [`Generation`], and the SWIM identity that combines
//! them with the advertised address.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest node id accepted, in bytes. Ids travel in every SWIM packet, so
/// they are kept short enough that a packet still carries many updates.
pub const NODE_ID_LEN_MAX: usize = 64;

/// The stable, operator-chosen name of a node (`db-07`).
///
/// Valid ids are 1..=[`NODE_ID_LEN_MAX`] bytes of ASCII letters, digits, `-`,
/// `_` and `.`; they are also used as TLS certificate names, file names and
/// URL path segments, so nothing else is allowed.
///
/// Cheap to clone and to compare: ids of up to [`NODE_ID_INLINE_LEN`] bytes
/// (all the usual `db-07`s) are stored inline and compared as one 128-bit
/// integer, longer ones are a shared string. foca looks a member up by its
/// address key (our node id) for every update it applies: a hash of the id
/// and a comparison (its patched member index, `third_party/foca/PATCHES.md`).
/// On the wire a node id is a plain string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeId(Repr);

/// Longest node id stored inline (without a heap allocation).
pub const NODE_ID_INLINE_LEN: usize = 16;

/// The two representations of a [`NodeId`]. Canonical, so the derived
/// equality and hash are right: an id is `Inline` exactly when it is at most
/// [`NODE_ID_INLINE_LEN`] bytes and has no NUL byte (the zero padding must
/// not be mistaken for content; valid ids never contain NUL, but ids decoded
/// from the wire are not validated).
#[derive(Clone, Eq)]
enum Repr {
    /// The id's bytes followed by zeros.
    Inline([u8; NODE_ID_INLINE_LEN]),
    /// Anything else.
    Shared(Arc<str>),
}

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
        Ok(Self::from_str_unchecked(&id))
    }

    /// Wraps `id` without checking the rules (for ids decoded from the wire,
    /// which were never validated here either).
    pub(crate) fn from_str_unchecked(id: &str) -> Self {
        if id.len() <= NODE_ID_INLINE_LEN && !id.as_bytes().contains(&0) {
            let mut bytes = [0; NODE_ID_INLINE_LEN];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            Self(Repr::Inline(bytes))
        } else {
            Self(Repr::Shared(Arc::from(id)))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(bytes) => {
                let len = bytes
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(NODE_ID_INLINE_LEN);
                std::str::from_utf8(&bytes[..len]).expect("copied from a str, cut at a NUL")
            }
            Repr::Shared(id) => id,
        }
    }
}

impl PartialEq for Repr {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            // One integer comparison, inlined: the derived comparison of two
            // byte arrays is a call to `memcmp`.
            (Repr::Inline(mine), Repr::Inline(theirs)) => {
                u128::from_ne_bytes(*mine) == u128::from_ne_bytes(*theirs)
            }
            (Repr::Shared(mine), Repr::Shared(theirs)) => mine == theirs,
            _ => false,
        }
    }
}

impl std::hash::Hash for Repr {
    // As derived; written out only because `PartialEq` is.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Repr::Inline(bytes) => {
                state.write_u8(0);
                bytes.hash(state);
            }
            Repr::Shared(id) => {
                state.write_u8(1);
                id.hash(state);
            }
        }
    }
}

impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (&self.0, &other.0) {
            // Zero padding sorts before every byte an id may hold, so the
            // big-endian integers order exactly as the strings do.
            (Repr::Inline(mine), Repr::Inline(theirs)) => {
                u128::from_be_bytes(*mine).cmp(&u128::from_be_bytes(*theirs))
            }
            _ => self.as_str().cmp(other.as_str()),
        }
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NodeId").field(&self.as_str()).finish()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node id string")
            }
            fn visit_str<E: serde::de::Error>(self, id: &str) -> Result<NodeId, E> {
                Ok(NodeId::from_str_unchecked(id))
            }
        }
        deserializer.deserialize_str(Visitor)
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

/// What a node is in the cluster: a Raft voter (`Seed`) or not (`Member`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// One of the 3 or 5 agents that form the Raft group.
    Seed,
    /// Every other agent.
    Member,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Seed => "seed",
            Role::Member => "member",
        })
    }
}

/// Most labels a node may carry (region, zone, rack and a few more).
pub const LABELS_MAX: usize = 8;
/// Longest label key, in bytes.
pub const LABEL_KEY_LEN_MAX: usize = 32;
/// Longest label value, in bytes.
pub const LABEL_VALUE_LEN_MAX: usize = 64;
/// Longest agent version string, in bytes.
pub const VERSION_LEN_MAX: usize = 32;

/// Metadata every member can see about every other: it travels inside the
/// SWIM identity, so it is fixed for one run of an agent (a change of labels
/// or role takes a restart, which is also what bumps the generation).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberMeta {
    /// Seed or member.
    pub role: Role,
    /// Locality and other labels (`region`, `zone`, `rack`, ...), ordered.
    pub labels: BTreeMap<String, String>,
    /// The agent's version (`CARGO_PKG_VERSION` of the agent).
    pub version: String,
}

impl MemberMeta {
    /// Checks the size limits ([`LABELS_MAX`], [`LABEL_KEY_LEN_MAX`],
    /// [`LABEL_VALUE_LEN_MAX`], [`VERSION_LEN_MAX`]); they keep an identity
    /// small enough that a SWIM packet carries several updates.
    pub fn validate(&self) -> Result<(), String> {
        if self.labels.len() > LABELS_MAX {
            return Err(format!(
                "at most {LABELS_MAX} labels, got {}",
                self.labels.len()
            ));
        }
        for (key, value) in &self.labels {
            if key.is_empty() || key.len() > LABEL_KEY_LEN_MAX {
                return Err(format!(
                    "label key {key:?} must be 1 to {LABEL_KEY_LEN_MAX} bytes"
                ));
            }
            if value.len() > LABEL_VALUE_LEN_MAX {
                return Err(format!(
                    "label {key:?} value must be at most {LABEL_VALUE_LEN_MAX} bytes"
                ));
            }
        }
        if self.version.len() > VERSION_LEN_MAX {
            return Err(format!("version must be at most {VERSION_LEN_MAX} bytes"));
        }
        Ok(())
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
    /// Role, labels and version, visible to every member. Shared, so that
    /// cloning an identity (foca does, for every update it applies and every
    /// broadcast it queues) copies no strings; and decoded through
    /// `meta_cache::interned_meta`, so that the copies of one member's identity that
    /// arrive in every packet share one allocation, and comparing two of
    /// them compares two pointers. A value already seen is decoded
    /// without allocating (`meta_cache`).
    #[serde(deserialize_with = "crate::meta_cache::interned_meta")]
    pub meta: Arc<MemberMeta>,
}

impl Identity {
    /// A stand-in identity for a peer known only by node id and address
    /// (a seed before we have heard from it): enough to send it an announce,
    /// which foca accepts when the node id matches, whatever the generation.
    pub fn placeholder(node_id: NodeId, addr: SocketAddr) -> Self {
        Self {
            node_id,
            addr,
            generation: Generation(0),
            rejoin: 0,
            meta: Arc::new(MemberMeta {
                role: Role::Member,
                labels: BTreeMap::new(),
                version: String::new(),
            }),
        }
    }
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

    /// Decoding the same metadata twice gives one shared allocation (and an
    /// equal value); other metadata gets its own.
    #[test]
    fn decoded_identities_share_equal_metadata() {
        let identity = |zone: &str| Identity {
            node_id: NodeId::new("db-1").unwrap(),
            addr: SocketAddr::from(([10, 0, 0, 1], 7946)),
            generation: Generation(1),
            rejoin: 0,
            meta: Arc::new(MemberMeta {
                role: Role::Member,
                labels: [("zone".to_string(), zone.to_string())].into(),
                version: "1.0.0".into(),
            }),
        };
        let decode = |identity: &Identity| -> Identity {
            rmp_serde::from_slice(&rmp_serde::to_vec(identity).unwrap()).unwrap()
        };
        let (a, b, c) = (
            decode(&identity("a")),
            decode(&identity("a")),
            decode(&identity("b")),
        );
        assert_eq!(a, identity("a"));
        assert!(Arc::ptr_eq(&a.meta, &b.meta));
        assert!(!Arc::ptr_eq(&a.meta, &c.meta));
        assert_eq!(c.meta.labels["zone"], "b");
    }

    #[test]
    fn node_id_rules() {
        for good in ["db-07", "a", "node_1.zone-a", &"x".repeat(64)] {
            assert!(NodeId::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "has space",
            "slash/",
            "ümlaut",
            &"x".repeat(65),
        ] {
            assert!(NodeId::new(bad).is_err(), "{bad}");
        }
    }

    /// Inline and shared ids order, compare and encode exactly like the
    /// strings they hold.
    #[test]
    fn node_id_representations_agree_with_strings() {
        let ids = [
            "a",
            "a-",
            "a\0",
            "ab",
            "db-07",
            "db-070",
            "db-7",
            "z",
            "seed-1",
            "exactly-16-bytes",
            "exactly-16-bytez",
            "seventeen-bytes-x",
            "seventeen-bytes-y",
            &"x".repeat(64),
        ];
        let wrap = |id: &str| NodeId::from_str_unchecked(id);
        for a in ids {
            assert_eq!(wrap(a).as_str(), a);
            let bytes = rmp_serde::to_vec(&wrap(a)).unwrap();
            assert_eq!(
                bytes,
                rmp_serde::to_vec(a).unwrap(),
                "{a:?} encodes as a string"
            );
            assert_eq!(rmp_serde::from_slice::<NodeId>(&bytes).unwrap(), wrap(a));
            for b in ids {
                assert_eq!(wrap(a).cmp(&wrap(b)), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(wrap(a) == wrap(b), a == b, "{a:?} == {b:?}");
            }
        }
    }
}
