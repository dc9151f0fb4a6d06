//! Telemetry on the wire: the versioned MessagePack envelope, the deltas that
//! ride on foca's custom broadcasts (with their foca [`Invalidates`] key), and
//! the anti-entropy messages (digest, record batches).
//!
//! Structs are encoded as MessagePack arrays (`rmp_serde::to_vec`), not maps:
//! field names would double the size of a delta. Compatibility is by the
//! envelope's `version`: a peer that sees a version it does not speak drops
//! the message with [`TelemetryError::UnsupportedVersion`]. Every decoder
//! checks the byte length against its limit *before* decoding, validates
//! what it decoded, and never panics on arbitrary input.

use std::collections::BTreeMap;

use foca::Invalidates;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::TelemetryError;
use super::record::{NodeRecord, Version};
use crate::{Generation, NodeId};

/// The telemetry wire format version this agent writes and reads.
pub const WIRE_VERSION: u16 = 1;

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    version: u16,
    body: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    version: u16,
    body: T,
}

/// A removal watermark as it travels: records of `node_id` at or below
/// `generation` are gone. `retention_ms` is how much longer the sender keeps
/// the tombstone; the receiver keeps it no longer (so copies expire together
/// and cannot bounce back and forth forever).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The removed node.
    pub node_id: NodeId,
    /// Its newest removed generation.
    pub generation: Generation,
    /// Remaining retention at the sender, milliseconds.
    pub retention_ms: u64,
}

/// One broadcastable change: a node's record or a node's removal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Delta {
    /// A (new) record of a node.
    Record(NodeRecord),
    /// A node removed at a generation.
    Tombstone(Tombstone),
}

impl Delta {
    /// The foca broadcast key of this delta.
    pub fn key(&self) -> TelemetryKey {
        match self {
            Delta::Record(record) => TelemetryKey {
                node_id: record.node_id.clone(),
                kind: TelemetryKeyKind::Record(record.version),
            },
            Delta::Tombstone(tombstone) => TelemetryKey {
                node_id: tombstone.node_id.clone(),
                kind: TelemetryKeyKind::Tombstone(tombstone.generation),
            },
        }
    }
}

/// The foca custom-broadcast key of a telemetry delta: which node, and which
/// version of its record (or which removed generation).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TelemetryKey {
    /// The node the delta is about.
    pub node_id: NodeId,
    /// What the delta carries.
    pub kind: TelemetryKeyKind,
}

/// What a [`TelemetryKey`]'s delta carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TelemetryKeyKind {
    /// A record of this version.
    Record(Version),
    /// A removal of this generation and all older ones.
    Tombstone(Generation),
}

impl Invalidates for TelemetryKey {
    /// A newer record of the same node replaces an older one in foca's
    /// backlog; a removal replaces every record it covers and older
    /// removals. A record never replaces a removal (a rejoined node's record
    /// and the removal of its old generation both still have news to tell).
    fn invalidates(&self, other: &Self) -> bool {
        if self.node_id != other.node_id {
            return false;
        }
        match (self.kind, other.kind) {
            (TelemetryKeyKind::Record(mine), TelemetryKeyKind::Record(theirs)) => mine > theirs,
            (TelemetryKeyKind::Tombstone(mine), TelemetryKeyKind::Record(theirs)) => {
                mine >= theirs.generation
            }
            (TelemetryKeyKind::Tombstone(mine), TelemetryKeyKind::Tombstone(theirs)) => {
                mine > theirs
            }
            (TelemetryKeyKind::Record(_), TelemetryKeyKind::Tombstone(_)) => false,
        }
    }
}

/// A delta ready to hand to `foca.add_broadcast(&bytes)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedDelta {
    /// The broadcast key foca's handler must return for these bytes.
    pub key: TelemetryKey,
    /// The enveloped MessagePack bytes, at most `delta_bytes_max`.
    pub bytes: Vec<u8>,
}

/// A compact summary of a map for anti-entropy: which version of each
/// node's record the sender holds, and its tombstones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Version of every record held, by node.
    pub records: BTreeMap<NodeId, Version>,
    /// Every tombstone held, ordered by node.
    pub tombstones: Vec<Tombstone>,
}

/// Records and tombstones one agent sends another, bounded by the
/// anti-entropy budget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordBatch {
    /// Tombstones the receiver lacks.
    pub tombstones: Vec<Tombstone>,
    /// Records the receiver lacks (or holds older versions of).
    pub records: Vec<NodeRecord>,
    /// Whether the budget cut the batch (more will follow in later rounds).
    pub truncated: bool,
}

impl RecordBatch {
    /// Whether the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.tombstones.is_empty() && self.records.is_empty()
    }
}

/// One anti-entropy exchange is three messages over a QUIC stream:
/// `Request` (A's digest) → `Response` (B's digest and what A lacks) →
/// `Push` (what B lacks), the last only if non-empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AntiEntropyMessage {
    /// Opens an exchange with the initiator's digest.
    Request {
        /// The initiator's digest.
        digest: Digest,
    },
    /// The responder's digest and the records the initiator lacks.
    Response {
        /// The responder's digest.
        digest: Digest,
        /// What the initiator lacks.
        batch: RecordBatch,
    },
    /// Closes an exchange: the records the responder lacks.
    Push {
        /// What the responder lacks.
        batch: RecordBatch,
    },
}

/// MessagePack encoding of a bare record (no envelope): used to measure a
/// record against `record_bytes_max` and for the deterministic tie-break.
pub fn encode_record(record: &NodeRecord) -> Vec<u8> {
    // Invariant: a record is strings, integers, finite floats and maps with
    // string or integer keys; MessagePack encodes all of them infallibly.
    rmp_serde::to_vec(record).expect("records always encode")
}

/// Wraps `body` in the versioned envelope and encodes it, refusing results
/// over `max_bytes`.
pub(crate) fn encode_enveloped<T: Serialize>(
    what: &'static str,
    body: &T,
    max_bytes: usize,
) -> Result<Vec<u8>, TelemetryError> {
    let bytes = rmp_serde::to_vec(&EnvelopeOut {
        version: WIRE_VERSION,
        body,
    })
    .map_err(|error| TelemetryError::Malformed {
        what,
        reason: error.to_string(),
    })?;
    if bytes.len() > max_bytes {
        return Err(TelemetryError::MessageTooLarge {
            what,
            size_bytes: bytes.len(),
            max_bytes,
        });
    }
    Ok(bytes)
}

/// Decodes an enveloped message of at most `max_bytes`: the envelope's
/// version is checked first so an unknown version is reported as such rather
/// than as garbage.
pub(crate) fn decode_enveloped<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    max_bytes: usize,
) -> Result<T, TelemetryError> {
    if bytes.len() > max_bytes {
        return Err(TelemetryError::MessageTooLarge {
            what,
            size_bytes: bytes.len(),
            max_bytes,
        });
    }
    let malformed = |error: rmp_serde::decode::Error| TelemetryError::Malformed {
        what,
        reason: error.to_string(),
    };
    let header: EnvelopeIn<IgnoredAny> = rmp_serde::from_slice(bytes).map_err(malformed)?;
    if header.version != WIRE_VERSION {
        return Err(TelemetryError::UnsupportedVersion {
            version: header.version,
            supported: WIRE_VERSION,
        });
    }
    let envelope: EnvelopeIn<T> = rmp_serde::from_slice(bytes).map_err(malformed)?;
    Ok(envelope.body)
}

/// Encodes a delta, or says it does not fit in `delta_bytes_max`
/// ([`TelemetryError::DeltaTooLarge`]: don't broadcast it).
pub fn encode_delta(delta: &Delta, delta_bytes_max: usize) -> Result<EncodedDelta, TelemetryError> {
    let bytes = encode_enveloped("delta", delta, usize::MAX)?;
    if bytes.len() > delta_bytes_max {
        return Err(TelemetryError::DeltaTooLarge {
            size_bytes: bytes.len(),
            max_bytes: delta_bytes_max,
        });
    }
    Ok(EncodedDelta {
        key: delta.key(),
        bytes,
    })
}

/// Decodes and validates a delta of at most `delta_bytes_max` bytes.
pub fn decode_delta(bytes: &[u8], delta_bytes_max: usize) -> Result<Delta, TelemetryError> {
    let delta: Delta = decode_enveloped("delta", bytes, delta_bytes_max)?;
    if let Delta::Record(record) = &delta {
        record.validate()?;
    }
    Ok(delta)
}

/// Encodes an anti-entropy message of at most `max_bytes`.
pub fn encode_anti_entropy(
    message: &AntiEntropyMessage,
    max_bytes: usize,
) -> Result<Vec<u8>, TelemetryError> {
    encode_enveloped("anti-entropy message", message, max_bytes)
}

/// Decodes an anti-entropy message of at most `max_bytes` and validates
/// every record in it.
pub fn decode_anti_entropy(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<AntiEntropyMessage, TelemetryError> {
    let message: AntiEntropyMessage = decode_enveloped("anti-entropy message", bytes, max_bytes)?;
    let batch = match &message {
        AntiEntropyMessage::Request { .. } => None,
        AntiEntropyMessage::Response { batch, .. } | AntiEntropyMessage::Push { batch } => {
            Some(batch)
        }
    };
    for record in batch.into_iter().flat_map(|batch| &batch.records) {
        record.validate()?;
    }
    Ok(message)
}
