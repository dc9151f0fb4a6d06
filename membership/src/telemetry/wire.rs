//! Telemetry on the wire: the versioned MessagePack envelope, the deltas that
//! ride on foca's custom broadcasts (with their foca [`Invalidates`] key), and
//! the anti-entropy messages (digest, record batches).
//!
//! Structs are encoded as MessagePack arrays (`rmp_serde::to_vec`), not maps:
//! field names would double the size of a delta. Compatibility is by the
//! envelope's `version`: a peer that sees a version it does not speak drops
//! the message with [`TelemetryError::UnsupportedVersion`]. Within a
//! version, a new kind of anti-entropy message (`Summary`, later `Reply`)
//! only adds a variant, so the messages an older agent knows keep their
//! bytes, and it refuses the new ones as malformed (see
//! [`AntiEntropyMessage`] for what that does to an upgrade). Every decoder
//! checks the byte length against its limit *before* decoding, checks the
//! structure it decoded (a record's head, a digest's order) before anything
//! is done with it, validates a record before it is stored, and never
//! panics on arbitrary input.
//!
//! Wire format version 2, the shapes (`{name: value}` is how rmp-serde
//! writes an enum variant, `bin` a MessagePack binary string):
//!
//! ```text
//! envelope      [version: u16, body]
//! delta         {"Record": bin(record)} | {"Tombstone": [node_id, generation, retention_ms]}
//! anti-entropy  {"Summary": [records, summary]} | {"Request": [digest]}
//!               | {"Reply": [batch, [node_id, ...]]} | {"Push": [batch]}
//!               | {"Response": [digest, batch]} (written by older agents)
//! summary       u64: the wrapping sum of a hash of every (node, version) held
//!               and every tombstone in the digest (see `AntiEntropyMessage`)
//! digest        [bin(digest entries), [tombstone, ...]]
//! batch         [[tombstone, ...], [bin(record), ...], truncated: bool]
//! record        the MessagePack array of a NodeRecord's seven fields,
//!               starting [node_id, [generation, sequence], ...]
//! entries       (node id, generation, sequence) in varints, node-ordered:
//!               see `super::digest`
//! ```
//!
//! Why records travel as `bin` ([`EncodedRecord`]): a receiver reads only
//! the node and version at the front of the bytes, so a stale or duplicate
//! copy — most of what gossip and anti-entropy deliver — is recognised
//! without decoding the record; the bytes are held as they arrived and
//! forwarded unchanged, so no agent ever re-encodes a record to learn its
//! size, to compare two of them, or to send it on. Why the digest's entries
//! are a format of their own: see [`super::digest`].

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use foca::Invalidates;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::TelemetryError;
use super::digest::{DigestEntries, DigestWriter};
use super::record::{NodeRecord, Version};
use crate::codec::value_len;
use crate::{Generation, NodeId};

/// The telemetry wire format version this agent writes and reads.
pub const WIRE_VERSION: u16 = 2;

/// Most node ids a `Reply` asks for; a `Reply` asking for more is refused
/// as malformed. An agent asks for at most `anti_entropy_records_max` of
/// them, and this many at the most.
pub const WANTS_MAX: usize = 4096;

/// The first byte of every encoded record: a MessagePack fixarray of the
/// seven fields of [`NodeRecord`] (checked by a unit test).
const RECORD_ARRAY_MARKER: u8 = 0x97;

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    version: u16,
    body: &'a T,
}

/// Reads an envelope in one pass: the version first (noted in
/// `version_seen`, and the body not read at all if it is not ours), then
/// the body.
struct EnvelopeSeed<'c, T> {
    version_seen: &'c Cell<Option<u16>>,
    body: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for EnvelopeSeed<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_tuple(2, self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for EnvelopeSeed<'_, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an envelope [version, body]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        let version: u16 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        self.version_seen.set(Some(version));
        if version != WIRE_VERSION {
            return Err(de::Error::custom("unsupported version"));
        }
        seq.next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))
    }
}

/// A MessagePack binary string borrowed from the message being decoded (or
/// to be written): how records and digest entries travel.
#[derive(Clone, Copy)]
struct Bin<'a>(&'a [u8]);

impl Serialize for Bin<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Bin<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BinVisitor;
        impl<'de> Visitor<'de> for BinVisitor {
            type Value = &'de [u8];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MessagePack bin")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, bytes: &'de [u8]) -> Result<&'de [u8], E> {
                Ok(bytes)
            }
        }
        deserializer.deserialize_bytes(BinVisitor).map(Bin)
    }
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

/// A record in its wire form: its MessagePack encoding exactly as its writer
/// produced it, with the node and version read from the front of it. Cheap
/// to clone (the bytes are shared).
///
/// The bytes are what the map holds next to the decoded record, what deltas
/// and batches carry, what `record_bytes_max` measures and what the
/// same-version tie-break compares: every agent holds and forwards the very
/// bytes the writer produced, so they all compare the same thing.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    node_id: NodeId,
    version: Version,
    bytes: Arc<[u8]>,
}

impl fmt::Debug for EncodedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedRecord")
            .field("node_id", &self.node_id)
            .field("version", &self.version)
            .field("size_bytes", &self.bytes.len())
            .finish()
    }
}

impl EncodedRecord {
    /// Encodes `record` (the writer's side).
    pub fn encode(record: &NodeRecord) -> Self {
        let bytes = encode_record(record);
        debug_assert_eq!(bytes.first(), Some(&RECORD_ARRAY_MARKER));
        Self {
            node_id: record.node_id.clone(),
            version: record.version,
            bytes: bytes.into(),
        }
    }

    /// Reads the node and version at the front of `bytes` (the record is
    /// not decoded: see [`EncodedRecord::decode`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TelemetryError> {
        RecordRef::read(bytes).map(|record| record.to_owned())
    }

    pub(crate) fn from_parts(node_id: NodeId, version: Version, bytes: Arc<[u8]>) -> Self {
        Self {
            node_id,
            version,
            bytes,
        }
    }

    /// The node the record describes.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The record's version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The encoded record.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Size of the encoded record, bytes.
    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Decodes and validates the whole record.
    pub fn decode(&self) -> Result<NodeRecord, TelemetryError> {
        self.as_ref().decode()
    }

    pub(crate) fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            node_id: self.node_id.clone(),
            version: self.version,
            bytes: &self.bytes,
        }
    }
}

impl Serialize for EncodedRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.bytes)
    }
}

/// An encoded record borrowed from an incoming message, its head read.
#[derive(Clone, Debug)]
pub(crate) struct RecordRef<'a> {
    pub(crate) node_id: NodeId,
    pub(crate) version: Version,
    pub(crate) bytes: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// Reads the head of an encoded record: the record's first two fields,
    /// the node id and the version. Costs no allocation for node ids of up
    /// to `NODE_ID_INLINE_LEN` bytes, and no look at the rest of the record.
    pub(crate) fn read(bytes: &'a [u8]) -> Result<Self, TelemetryError> {
        let malformed = |reason: String| TelemetryError::Malformed {
            what: "record",
            reason,
        };
        let Some((&RECORD_ARRAY_MARKER, fields)) = bytes.split_first() else {
            return Err(malformed(
                "not a MessagePack array of the 7 record fields".to_owned(),
            ));
        };
        let mut deserializer = rmp_serde::Deserializer::from_read_ref(fields);
        let node_id =
            NodeId::deserialize(&mut deserializer).map_err(|error| malformed(error.to_string()))?;
        let version = Version::deserialize(&mut deserializer)
            .map_err(|error| malformed(error.to_string()))?;
        Ok(Self {
            node_id,
            version,
            bytes,
        })
    }

    /// Decodes and validates the whole record: it must be exactly one
    /// MessagePack value (no trailing bytes) and agree with its head.
    pub(crate) fn decode(&self) -> Result<NodeRecord, TelemetryError> {
        let malformed = |reason: String| TelemetryError::Malformed {
            what: "record",
            reason,
        };
        if value_len(self.bytes) != Some(self.bytes.len()) {
            return Err(malformed("not exactly one MessagePack value".to_owned()));
        }
        let record: NodeRecord =
            rmp_serde::from_slice(self.bytes).map_err(|error| malformed(error.to_string()))?;
        // Both were read from the same bytes by the same `Deserialize`
        // impls, so they agree; checked rather than assumed since the bytes
        // come from a peer.
        if record.node_id != self.node_id || record.version != self.version {
            return Err(malformed("head and record disagree".to_owned()));
        }
        record.validate()?;
        Ok(record)
    }

    pub(crate) fn to_owned(&self) -> EncodedRecord {
        EncodedRecord {
            node_id: self.node_id.clone(),
            version: self.version,
            bytes: self.bytes.into(),
        }
    }

    fn key(&self) -> TelemetryKey {
        TelemetryKey {
            node_id: self.node_id.clone(),
            kind: TelemetryKeyKind::Record(self.version),
        }
    }
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
            Delta::Tombstone(tombstone) => tombstone_key(tombstone),
        }
    }
}

fn tombstone_key(tombstone: &Tombstone) -> TelemetryKey {
    TelemetryKey {
        node_id: tombstone.node_id.clone(),
        kind: TelemetryKeyKind::Tombstone(tombstone.generation),
    }
}

/// A delta as written: the record as its bytes.
#[derive(Serialize)]
enum DeltaOut<'a> {
    Record(Bin<'a>),
    Tombstone(&'a Tombstone),
}

/// A delta as read: the record's bytes borrowed, not yet decoded.
#[derive(Deserialize)]
enum DeltaIn<'a> {
    Record(#[serde(borrow)] Bin<'a>),
    Tombstone(Tombstone),
}

/// A received delta whose record (if any) is not decoded yet.
#[derive(Debug)]
pub(crate) enum DeltaRef<'a> {
    Record(RecordRef<'a>),
    Tombstone(Tombstone),
}

impl DeltaRef<'_> {
    pub(crate) fn key(&self) -> TelemetryKey {
        match self {
            DeltaRef::Record(record) => record.key(),
            DeltaRef::Tombstone(tombstone) => tombstone_key(tombstone),
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
/// node's record the sender holds (node-ordered, in wire form: see
/// [`DigestEntries`]), and its tombstones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    records: Vec<u8>,
    records_len: usize,
    /// Every tombstone held, ordered by node.
    pub tombstones: Vec<Tombstone>,
}

impl Digest {
    /// A digest of `records` (a node listed twice keeps its newest version)
    /// and `tombstones`.
    pub fn new(
        records: impl IntoIterator<Item = (NodeId, Version)>,
        tombstones: Vec<Tombstone>,
    ) -> Self {
        let mut newest: BTreeMap<NodeId, Version> = BTreeMap::new();
        for (node_id, version) in records {
            let held = newest.entry(node_id).or_insert(version);
            *held = (*held).max(version);
        }
        Self::from_sorted(
            newest.iter().map(|(node_id, version)| (node_id, *version)),
            tombstones,
        )
    }

    /// A digest of `records` given in strictly increasing node order (the
    /// map's order).
    pub(crate) fn from_sorted<'a>(
        records: impl ExactSizeIterator<Item = (&'a NodeId, Version)>,
        tombstones: Vec<Tombstone>,
    ) -> Self {
        let mut writer = DigestWriter::with_capacity(records.len());
        for (node_id, version) in records {
            writer.push(node_id, version);
        }
        let (records, records_len) = writer.finish();
        Self {
            records,
            records_len,
            tombstones,
        }
    }

    /// The record entries, in node order.
    pub fn records(&self) -> DigestEntries<'_> {
        DigestEntries::from_written(&self.records, self.records_len)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (Bin(&self.records), &self.tombstones).serialize(serializer)
    }
}

/// A digest as read: entries borrowed, checked after decoding.
#[derive(Deserialize)]
struct DigestIn<'a> {
    #[serde(borrow)]
    records: Bin<'a>,
    tombstones: Vec<Tombstone>,
}

/// A received digest, checked.
#[derive(Debug)]
pub(crate) struct DigestView<'a> {
    pub(crate) records: DigestEntries<'a>,
    pub(crate) tombstones: Vec<Tombstone>,
}

impl<'a> DigestView<'a> {
    /// Checks a digest as read: its entries are at most `digest_bytes_max`
    /// bytes, well formed and in order.
    fn read(digest: DigestIn<'a>, digest_bytes_max: usize) -> Result<Self, TelemetryError> {
        if digest.records.0.len() > digest_bytes_max {
            return Err(TelemetryError::MessageTooLarge {
                what: "digest",
                size_bytes: digest.records.0.len(),
                max_bytes: digest_bytes_max,
            });
        }
        Ok(Self {
            records: DigestEntries::parse(digest.records.0)?,
            tombstones: digest.tombstones,
        })
    }

    fn to_owned(&self) -> Digest {
        Digest {
            records: self.records.bytes().to_vec(),
            records_len: self.records.len(),
            tombstones: self.tombstones.clone(),
        }
    }
}

/// Records and tombstones one agent sends another, bounded by the
/// anti-entropy budget.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RecordBatch {
    /// Tombstones the receiver lacks.
    pub tombstones: Vec<Tombstone>,
    /// Records the receiver lacks (or holds older versions of).
    pub records: Vec<EncodedRecord>,
    /// Whether the budget cut the batch (more will follow in later rounds).
    pub truncated: bool,
}

impl RecordBatch {
    /// Whether the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.tombstones.is_empty() && self.records.is_empty()
    }
}

/// A batch as read: records borrowed, heads not read yet.
#[derive(Deserialize)]
struct BatchIn<'a> {
    tombstones: Vec<Tombstone>,
    #[serde(borrow)]
    records: Vec<Bin<'a>>,
    truncated: bool,
}

/// A received batch whose records' heads are read, bodies not decoded.
#[derive(Debug)]
pub(crate) struct BatchView<'a> {
    pub(crate) tombstones: Vec<Tombstone>,
    pub(crate) records: Vec<RecordRef<'a>>,
    pub(crate) truncated: bool,
}

impl<'a> BatchView<'a> {
    fn read(batch: BatchIn<'a>) -> Result<Self, TelemetryError> {
        Ok(Self {
            tombstones: batch.tombstones,
            records: batch
                .records
                .into_iter()
                .map(|record| RecordRef::read(record.0))
                .collect::<Result<_, _>>()?,
            truncated: batch.truncated,
        })
    }

    fn to_owned(&self) -> RecordBatch {
        RecordBatch {
            tombstones: self.tombstones.clone(),
            records: self.records.iter().map(RecordRef::to_owned).collect(),
            truncated: self.truncated,
        }
    }
}

/// One anti-entropy exchange opens with `Summary` (A's record count and
/// summary, about 24 bytes). If B's are the same, the maps hold the same
/// versions and tombstones and the exchange ends there: in a settled
/// cluster that is almost every exchange. Otherwise B answers with the
/// three-message exchange, roles reversed: `Request` (B's digest) →
/// `Reply` (what B lacks, and the nodes whose records A wants) → `Push`
/// (those records), the last only if non-empty. Each message travels on a
/// stream of its own.
///
/// A finds both directions of the difference in its one walk of B's
/// digest: the nodes B lists that A does not hold, or holds an older
/// version of, are what A wants. So only one digest is built, sent and
/// walked per exchange, and B answers `Reply` with a lookup per wanted node.
/// If neither lacks anything (the summaries differed over records one side
/// refuses, say) A sends nothing.
///
/// Agents that predate `Reply` answered `Request` with `Response` (A's
/// digest and what B lacks), which B then walked; it is still understood.
/// An older agent refuses a whole `Reply` as malformed (counted in its
/// `decode_errors`), records and all. So during an upgrade, an exchange
/// between a newer and an older agent moves records only when the older
/// one is A (it answers with `Response`); when the newer one is A, nothing
/// moves. Gossip still carries material changes, and the exchanges among
/// agents of one version run as before. Shoal has had no release, so this
/// is written once, with no format version for it.
///
/// Equal summaries of different maps would need a 64-bit collision of two
/// sums of hashes; the exchange would then be skipped until either map
/// changes (the next heartbeat at the latest), which is what a lost
/// exchange costs too. A `Summary` compares versions, as digests do: two
/// different records of the same version are told apart by neither.
/// Agents that predate `Summary` refuse it as malformed (and counted), so
/// during an upgrade only exchanges opened by the older agents run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum AntiEntropyMessage {
    /// Opens an exchange with the initiator's record count and summary.
    Summary {
        /// Records held.
        records: u64,
        /// See the wire format in the module docs.
        summary: u64,
    },
    /// The full exchange's first message, a digest: the answer to a
    /// `Summary` that differs.
    Request {
        /// The initiator's digest.
        digest: Digest,
    },
    /// What the initiator lacks, and the nodes whose records the
    /// responder wants, those it does not hold or holds an older version of
    /// (see `TelemetryStore::wants_from` for the order): at most
    /// `anti_entropy_records_max` and [`WANTS_MAX`] of them.
    Reply {
        /// What the initiator lacks.
        batch: RecordBatch,
        /// The nodes whose records the responder wants.
        wants: Vec<NodeId>,
    },
    /// Older agents' answer to `Request`: the responder's digest and the
    /// records the initiator lacks.
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

/// An anti-entropy message as read (same shape as [`AntiEntropyMessage`]).
#[derive(Deserialize)]
enum AntiEntropyIn<'a> {
    Summary {
        records: u64,
        summary: u64,
    },
    Request {
        #[serde(borrow)]
        digest: DigestIn<'a>,
    },
    Reply {
        #[serde(borrow)]
        batch: BatchIn<'a>,
        wants: WantsIn,
    },
    Response {
        #[serde(borrow)]
        digest: DigestIn<'a>,
        #[serde(borrow)]
        batch: BatchIn<'a>,
    },
    Push {
        #[serde(borrow)]
        batch: BatchIn<'a>,
    },
}

/// A `Reply`'s wants as read: refused past [`WANTS_MAX`] ids before any is
/// decoded (the array's length comes first).
struct WantsIn(Vec<NodeId>);

impl<'de> Deserialize<'de> for WantsIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WantsVisitor;
        impl<'de> Visitor<'de> for WantsVisitor {
            type Value = WantsIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "at most {WANTS_MAX} node ids")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WantsIn, A::Error> {
                let too_many = || de::Error::invalid_length(WANTS_MAX + 1, &self);
                if seq.size_hint().is_some_and(|len| len > WANTS_MAX) {
                    return Err(too_many());
                }
                let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(node_id) = seq.next_element()? {
                    if ids.len() == WANTS_MAX {
                        return Err(too_many());
                    }
                    ids.push(node_id);
                }
                Ok(WantsIn(ids))
            }
        }
        deserializer.deserialize_seq(WantsVisitor)
    }
}

/// A received anti-entropy message, checked: digests well formed and in
/// node order, every record's head read. Records are decoded (and
/// validated) only if they are news to the receiver.
#[derive(Debug)]
pub(crate) enum AntiEntropyView<'a> {
    Summary {
        records: u64,
        summary: u64,
    },
    Request {
        digest: DigestView<'a>,
    },
    Reply {
        batch: BatchView<'a>,
        wants: Vec<NodeId>,
    },
    Response {
        digest: DigestView<'a>,
        batch: BatchView<'a>,
    },
    Push {
        batch: BatchView<'a>,
    },
}

/// MessagePack encoding of a bare record (no envelope): a record's wire form.
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

/// Decodes an enveloped message of at most `max_bytes` in one pass: the
/// envelope's version is read first so an unknown version is reported as
/// such rather than as garbage.
pub(crate) fn decode_enveloped<'de, T: Deserialize<'de>>(
    what: &'static str,
    bytes: &'de [u8],
    max_bytes: usize,
) -> Result<T, TelemetryError> {
    if bytes.len() > max_bytes {
        return Err(TelemetryError::MessageTooLarge {
            what,
            size_bytes: bytes.len(),
            max_bytes,
        });
    }
    let version_seen = Cell::new(None);
    let seed = EnvelopeSeed {
        version_seen: &version_seen,
        body: PhantomData,
    };
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
    seed.deserialize(&mut deserializer)
        .map_err(|error| match version_seen.get() {
            Some(version) if version != WIRE_VERSION => TelemetryError::UnsupportedVersion {
                version,
                supported: WIRE_VERSION,
            },
            _ => TelemetryError::Malformed {
                what,
                reason: error.to_string(),
            },
        })
}

/// Encodes a delta, or says it does not fit in `delta_bytes_max`
/// ([`TelemetryError::DeltaTooLarge`]: don't broadcast it).
pub fn encode_delta(delta: &Delta, delta_bytes_max: usize) -> Result<EncodedDelta, TelemetryError> {
    match delta {
        Delta::Record(record) => {
            encode_record_delta(&EncodedRecord::encode(record), delta_bytes_max)
        }
        Delta::Tombstone(tombstone) => encode_delta_out(
            &DeltaOut::Tombstone(tombstone),
            tombstone_key(tombstone),
            delta_bytes_max,
        ),
    }
}

/// Encodes the delta of a record already in wire form (no re-encoding), or
/// says it does not fit in `delta_bytes_max`.
pub fn encode_record_delta(
    record: &EncodedRecord,
    delta_bytes_max: usize,
) -> Result<EncodedDelta, TelemetryError> {
    encode_delta_out(
        &DeltaOut::Record(Bin(record.bytes())),
        record.as_ref().key(),
        delta_bytes_max,
    )
}

fn encode_delta_out(
    delta: &DeltaOut<'_>,
    key: TelemetryKey,
    delta_bytes_max: usize,
) -> Result<EncodedDelta, TelemetryError> {
    let bytes = encode_enveloped("delta", delta, usize::MAX)?;
    if bytes.len() > delta_bytes_max {
        return Err(TelemetryError::DeltaTooLarge {
            size_bytes: bytes.len(),
            max_bytes: delta_bytes_max,
        });
    }
    Ok(EncodedDelta { key, bytes })
}

/// Decodes a delta of at most `delta_bytes_max` bytes, reading only the
/// head of its record.
pub(crate) fn decode_delta_ref(
    bytes: &[u8],
    delta_bytes_max: usize,
) -> Result<DeltaRef<'_>, TelemetryError> {
    match decode_enveloped("delta", bytes, delta_bytes_max)? {
        DeltaIn::Record(record) => RecordRef::read(record.0).map(DeltaRef::Record),
        DeltaIn::Tombstone(tombstone) => Ok(DeltaRef::Tombstone(tombstone)),
    }
}

/// Decodes and validates a delta of at most `delta_bytes_max` bytes,
/// record and all.
pub fn decode_delta(bytes: &[u8], delta_bytes_max: usize) -> Result<Delta, TelemetryError> {
    Ok(match decode_delta_ref(bytes, delta_bytes_max)? {
        DeltaRef::Record(record) => Delta::Record(record.decode()?),
        DeltaRef::Tombstone(tombstone) => Delta::Tombstone(tombstone),
    })
}

/// Encodes an anti-entropy message of at most `max_bytes`.
pub fn encode_anti_entropy(
    message: &AntiEntropyMessage,
    max_bytes: usize,
) -> Result<Vec<u8>, TelemetryError> {
    encode_enveloped("anti-entropy message", message, max_bytes)
}

/// Decodes an anti-entropy message of at most `max_bytes` whose digest (if
/// any) has at most `digest_bytes_max` bytes of entries, and checks it (see
/// [`AntiEntropyView`]).
pub(crate) fn decode_anti_entropy_view(
    bytes: &[u8],
    max_bytes: usize,
    digest_bytes_max: usize,
) -> Result<AntiEntropyView<'_>, TelemetryError> {
    Ok(
        match decode_enveloped("anti-entropy message", bytes, max_bytes)? {
            AntiEntropyIn::Summary { records, summary } => {
                AntiEntropyView::Summary { records, summary }
            }
            AntiEntropyIn::Request { digest } => AntiEntropyView::Request {
                digest: DigestView::read(digest, digest_bytes_max)?,
            },
            AntiEntropyIn::Reply { batch, wants } => AntiEntropyView::Reply {
                batch: BatchView::read(batch)?,
                wants: wants.0,
            },
            AntiEntropyIn::Response { digest, batch } => AntiEntropyView::Response {
                digest: DigestView::read(digest, digest_bytes_max)?,
                batch: BatchView::read(batch)?,
            },
            AntiEntropyIn::Push { batch } => AntiEntropyView::Push {
                batch: BatchView::read(batch)?,
            },
        },
    )
}

/// Decodes an anti-entropy message of at most `max_bytes` and checks it:
/// digests well formed and in node order, every record's head readable.
/// Records are not decoded: see [`EncodedRecord::decode`].
pub fn decode_anti_entropy(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<AntiEntropyMessage, TelemetryError> {
    Ok(
        match decode_anti_entropy_view(bytes, max_bytes, usize::MAX)? {
            AntiEntropyView::Summary { records, summary } => {
                AntiEntropyMessage::Summary { records, summary }
            }
            AntiEntropyView::Request { digest } => AntiEntropyMessage::Request {
                digest: digest.to_owned(),
            },
            AntiEntropyView::Reply { batch, wants } => AntiEntropyMessage::Reply {
                batch: batch.to_owned(),
                wants,
            },
            AntiEntropyView::Response { digest, batch } => AntiEntropyMessage::Response {
                digest: digest.to_owned(),
                batch: batch.to_owned(),
            },
            AntiEntropyView::Push { batch } => AntiEntropyMessage::Push {
                batch: batch.to_owned(),
            },
        },
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::telemetry::record::{
        AppliedPosition, DatabaseReport, DatabaseSnapshot, Epoch, HostMetrics, SchemaVersion,
        Sequence, ShardId, ShardReport, ShardRole,
    };

    pub(crate) fn id(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    pub(crate) fn version(generation: u64, sequence: u64) -> Version {
        Version {
            generation: Generation(generation),
            sequence: Sequence(sequence),
        }
    }

    fn record(node: &str, generation: u64, sequence: u64) -> NodeRecord {
        NodeRecord {
            node_id: id(node),
            version: version(generation, sequence),
            agent_version: "0.0.0 (test)".to_owned(),
            host: Some(Box::new(HostMetrics {
                cpu_percent: 12.5,
                memory_used_bytes: 1,
                memory_total_bytes: 2,
                disk_used_bytes: 3,
                disk_capacity_bytes: 4,
            })),
            database: Some(Box::new(DatabaseSnapshot {
                report_age_ms: 7,
                report: DatabaseReport {
                    qps: 1.5,
                    latency_p50_us: 10,
                    latency_p99_us: 20,
                    replication_lag_ms: 0,
                    shards: BTreeMap::from([(
                        ShardId(3),
                        ShardReport {
                            size_bytes: 100,
                            qps: 0.5,
                            applied_position: AppliedPosition(u64::MAX),
                            role: ShardRole::Primary,
                            epoch: Epoch(2),
                        },
                    )]),
                    schema_versions: BTreeMap::from([("t".to_owned(), SchemaVersion(1))]),
                },
            })),
            unreachable_peers: BTreeSet::from([id("z")]),
            unreachable_peers_total: 1,
        }
    }

    #[test]
    fn telemetry_records_encode_as_an_array_of_seven_fields() {
        for record in [
            record("a", 1, 1),
            record(&"x".repeat(64), u64::MAX, u64::MAX),
        ] {
            let bytes = encode_record(&record);
            assert_eq!(bytes[0], RECORD_ARRAY_MARKER);
            let head = RecordRef::read(&bytes).unwrap();
            assert_eq!(
                (head.node_id.clone(), head.version),
                (record.node_id.clone(), record.version)
            );
            assert_eq!(head.decode().unwrap(), record);
        }
    }

    #[test]
    fn telemetry_record_bytes_must_be_one_value_matching_the_head() {
        let bytes = encode_record(&record("a", 1, 1));
        let mut trailing = bytes.clone();
        trailing.push(0xc0);
        let head = RecordRef::read(&trailing).unwrap();
        assert!(matches!(
            head.decode(),
            Err(TelemetryError::Malformed { .. })
        ));
        for cut in [0, 1, 2, bytes.len() / 2, bytes.len() - 1] {
            let Ok(head) = RecordRef::read(&bytes[..cut]) else {
                continue;
            };
            assert!(head.decode().is_err(), "cut at {cut}");
        }
        // A head that is not an array of seven.
        assert!(RecordRef::read(&[0x96]).is_err());
        assert!(RecordRef::read(&rmp_serde::to_vec(&(1, 2)).unwrap()).is_err());
    }

    #[test]
    fn telemetry_envelope_names_an_unknown_version() {
        let bytes = rmp_serde::to_vec(&(WIRE_VERSION + 1, "anything")).unwrap();
        assert!(matches!(
            decode_enveloped::<IgnoredBody>("delta", &bytes, usize::MAX),
            Err(TelemetryError::UnsupportedVersion { version, .. }) if version == WIRE_VERSION + 1
        ));
        let bytes = rmp_serde::to_vec(&(WIRE_VERSION, 1, 2)).unwrap();
        assert!(matches!(
            decode_enveloped::<IgnoredBody>("delta", &bytes, usize::MAX),
            Err(TelemetryError::Malformed { .. })
        ));
    }

    #[test]
    fn telemetry_anti_entropy_reads_the_response_of_agents_that_predate_reply() {
        // The anti-entropy message enum as agents before `Reply` had it.
        #[derive(Serialize)]
        #[allow(dead_code)]
        enum Before<'a> {
            Summary {
                records: u64,
                summary: u64,
            },
            Request {
                digest: &'a Digest,
            },
            Response {
                digest: &'a Digest,
                batch: &'a RecordBatch,
            },
            Push {
                batch: &'a RecordBatch,
            },
        }
        let digest = Digest::new([(id("a"), version(1, 2))], Vec::new());
        let batch = RecordBatch {
            tombstones: Vec::new(),
            records: vec![EncodedRecord::encode(&record("b", 1, 1))],
            truncated: false,
        };
        let bytes = encode_enveloped(
            "anti-entropy message",
            &Before::Response {
                digest: &digest,
                batch: &batch,
            },
            usize::MAX,
        )
        .unwrap();
        assert_eq!(
            decode_anti_entropy(&bytes, usize::MAX).unwrap(),
            AntiEntropyMessage::Response { digest, batch }
        );
    }

    #[test]
    fn telemetry_anti_entropy_reply_asks_for_at_most_wants_max() {
        let reply = |wants: usize| AntiEntropyMessage::Reply {
            batch: RecordBatch::default(),
            wants: (0..wants).map(|n| id(&format!("n{n}"))).collect(),
        };
        let bytes = encode_anti_entropy(&reply(WANTS_MAX), usize::MAX).unwrap();
        assert_eq!(
            decode_anti_entropy(&bytes, usize::MAX).unwrap(),
            reply(WANTS_MAX)
        );
        let bytes = encode_anti_entropy(&reply(WANTS_MAX + 1), usize::MAX).unwrap();
        assert!(matches!(
            decode_anti_entropy(&bytes, usize::MAX),
            Err(TelemetryError::Malformed { .. })
        ));
    }

    #[test]
    fn telemetry_anti_entropy_reply_is_refused_whole_by_agents_that_predate_it() {
        // The anti-entropy message enum as agents before `Reply` read it.
        #[derive(Deserialize)]
        #[allow(dead_code)]
        enum Before {
            Summary {
                records: u64,
                summary: u64,
            },
            Request {
                digest: IgnoredBody,
            },
            Response {
                digest: IgnoredBody,
                batch: IgnoredBody,
            },
            Push {
                batch: IgnoredBody,
            },
        }
        let reply = AntiEntropyMessage::Reply {
            batch: RecordBatch {
                tombstones: Vec::new(),
                records: vec![EncodedRecord::encode(&record("b", 1, 1))],
                truncated: false,
            },
            wants: vec![id("a")],
        };
        let bytes = encode_anti_entropy(&reply, usize::MAX).unwrap();
        assert!(decode_enveloped::<Before>("anti-entropy message", &bytes, usize::MAX).is_err());
        let push = AntiEntropyMessage::Push {
            batch: RecordBatch::default(),
        };
        let bytes = encode_anti_entropy(&push, usize::MAX).unwrap();
        assert!(decode_enveloped::<Before>("anti-entropy message", &bytes, usize::MAX).is_ok());
    }

    type IgnoredBody = serde::de::IgnoredAny;
}
