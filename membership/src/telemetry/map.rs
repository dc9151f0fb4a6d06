//! The telemetry CRDT: one last-writer-wins register per node, keyed by the
//! record's version, plus a per-node removal watermark (tombstone).
//!
//! State is `records: NodeId → newest record` and `tombstones: NodeId → the
//! newest removed generation`. Its join is: tombstones take the pointwise
//! maximum; records take, per node, the maximum by version and are then
//! filtered by the rule *a record whose generation is at or below its node's
//! tombstone is gone*. Both halves are semilattices and the filter is
//! monotone (if the newest record is tombstoned, so is every older one), so
//! [`TelemetryMap::merge`] is commutative, associative and idempotent; the
//! property tests in `membership/tests/telemetry_crdt.rs` check this against
//! a naive model. A node that rejoins with a newer generation is accepted;
//! any record of a removed generation is refused in every merge order.
//!
//! Why these types and not more of `crdts`: each register *is* a
//! [`crdts::LWWReg`] with the [`Version`] as marker — a single writer bumps
//! it, which is exactly LWWReg's contract. LWWReg alone keeps `self` when two
//! different values carry the same marker (it reports that through
//! `validate_merge`); that happens in practice when a data dir is restored
//! from a backup and a generation is reused, so we resolve it with a
//! deterministic tie-break (larger MessagePack encoding wins) to stay
//! commutative.
//!
//! Each register holds the record twice: decoded (for readers) and in the
//! wire form it was written in ([`EncodedRecord`]), which every agent
//! forwards unchanged. The register's value *is* those bytes: two records
//! are the same record exactly when their bytes are equal, and the
//! tie-break compares them. So a merge decides from the version alone
//! whether an incoming record is stale, and from a byte comparison whether
//! it is a duplicate; it decodes a record only when it will keep it (or
//! must validate a same-version rival).
//!
//! The map around the registers is a plain `BTreeMap`:
//! `crdts::Map` and `Orswot` are multi-writer observed-remove structures that
//! need a vector clock with an entry per writing actor (here: every agent)
//! and use a `HashMap` internally, and their add-wins semantics are the
//! opposite of what removal needs here (the controllers' removal of a
//! generation must beat any concurrent update of that generation). The
//! tombstones are a max-register per node, which `crdts` does not offer.
//! [`crdts::CvRDT`] is implemented so the map composes with `crdts` tooling.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crdts::{CvRDT, LWWReg};

use super::record::{NodeRecord, Version};
use super::wire::{EncodedRecord, RecordRef};
use crate::summary::SummaryRow;
use crate::{Generation, NodeId};

/// Puts `new` in place of `bytes`: into the same allocation when no one
/// else shares it and the length is the same (a node's records keep their
/// size from one version to the next), so a replaced record costs no
/// allocation for its bytes.
fn replace_bytes(bytes: &mut Arc<[u8]>, new: &[u8]) {
    match Arc::get_mut(bytes) {
        Some(unshared) if unshared.len() == new.len() => unshared.copy_from_slice(new),
        _ => *bytes = Arc::from(new),
    }
}

/// What merging one record into the map did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordMerge {
    /// No record was known for the node: inserted.
    Inserted,
    /// Newer than the known record: replaced it.
    Replaced,
    /// Same version as the known record but different content (a writer
    /// reused a version); the deterministic tie-break kept the incoming one.
    TieBrokeIncoming,
    /// Same version, different content; the tie-break kept the known one.
    TieBrokeKnown,
    /// Identical to the known record. Nothing changed.
    Duplicate,
    /// Older than the known record. Nothing changed.
    Stale,
    /// Its generation is at or below the node's tombstone: refused, nothing
    /// changed.
    Tombstoned,
}

impl RecordMerge {
    /// Whether the map changed.
    pub fn changed(self) -> bool {
        matches!(
            self,
            Self::Inserted | Self::Replaced | Self::TieBrokeIncoming
        )
    }

    /// Whether a known record and a different incoming one met and one of
    /// them won (the "merge conflicts resolved" counter).
    pub fn resolved_conflict(self) -> bool {
        matches!(
            self,
            Self::Replaced | Self::TieBrokeIncoming | Self::TieBrokeKnown | Self::Stale
        )
    }
}

/// What merging one tombstone into the map did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TombstoneMerge {
    /// The tombstone raised the node's removal watermark (it was new).
    pub raised: bool,
    /// A record was deleted because its generation is now tombstoned.
    pub removed_record: bool,
}

/// The merged telemetry of the whole cluster, as every agent holds it.
///
/// Two maps are equal when they hold the same records and tombstones; the
/// change journal is bookkeeping for readers of this one map and does not
/// take part.
#[derive(Clone, Debug, Default)]
pub struct TelemetryMap {
    /// Boxed: a register is then 24 bytes, so the walks over every record
    /// (digests, anti-entropy, every 10 s on every agent) read the ids and
    /// versions from the tree's own nodes rather than one 300-byte record
    /// after another, and the tree moves 24 bytes, not 300, when it shifts.
    records: BTreeMap<NodeId, LWWReg<Box<HeldRecord>, Version>>,
    tombstones: BTreeMap<NodeId, Generation>,
    journal: Journal,
    /// The wrapping sum of [`summary_row`] over every record's node and
    /// version, kept up to date by every change: what an anti-entropy
    /// `Summary` compares, without walking the map.
    summary: u64,
}

/// The hash of one record's node and version in [`TelemetryMap::summary`].
fn summary_row(node_id: &NodeId, version: Version) -> u64 {
    SummaryRow::default()
        .field(node_id.as_str().as_bytes())
        .number(version.generation.0)
        .number(version.sequence.0)
        .finish()
}

impl PartialEq for TelemetryMap {
    fn eq(&self, other: &Self) -> bool {
        self.records == other.records && self.tombstones == other.tombstones
    }
}

/// A record as the map holds it: decoded, and in its wire form. Equal to
/// another exactly when the wire forms are equal (the bytes determine the
/// record; `==` on decoded records cannot tell 0.0 from -0.0).
///
/// Beside the record it keeps this map's own bookkeeping, which takes no
/// part in equality or merges: when it was stored and the journal's number
/// for that change (kept here rather than in maps of their own, so a merge
/// that stores a record costs one lookup, not three).
#[derive(Clone, Debug)]
pub struct HeldRecord {
    record: NodeRecord,
    bytes: Arc<[u8]>,
    stored_at: Duration,
    change: u64,
}

impl PartialEq for HeldRecord {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl HeldRecord {
    /// The decoded record.
    pub fn record(&self) -> &NodeRecord {
        &self.record
    }

    /// Its wire form, the bytes it arrived in (or was written in).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// When this map stored it, on the clock of whoever merged it (the
    /// store's `now`; zero for [`TelemetryMap::merge_record`]).
    pub fn stored_at(&self) -> Duration {
        self.stored_at
    }

    /// Its wire form, sharing the bytes.
    pub fn encoded(&self) -> EncodedRecord {
        EncodedRecord::from_parts(
            self.record.node_id.clone(),
            self.record.version,
            Arc::clone(&self.bytes),
        )
    }
}

/// Which nodes' records changed (inserted, replaced or removed), in order:
/// lets a reader that walks the map every second (the alert evaluator)
/// look only at what changed since its last walk. One entry per node (its
/// latest change), and the entry of a removed node goes when its tombstone
/// is forgotten, so it holds exactly one entry per record (its number in
/// the record's [`HeldRecord`]) and per removal still remembered.
#[derive(Clone, Debug, Default)]
struct Journal {
    /// The sequence number of the latest change; 0 before any.
    last: u64,
    /// The newest change whose entry was dropped: a reader that last looked
    /// before it must walk the whole map.
    dropped_through: u64,
    by_change: BTreeMap<u64, NodeId>,
    /// The change number of each node whose latest change removed its
    /// record (kept while its tombstone is).
    removed: BTreeMap<NodeId, u64>,
}

impl Journal {
    /// Numbers a new change of `node_id`, replacing its entry for the
    /// `previous` change, if any.
    fn note(&mut self, node_id: &NodeId, previous: Option<u64>) -> u64 {
        if let Some(previous) = previous {
            let dropped = self.by_change.remove(&previous);
            debug_assert_eq!(dropped.as_ref(), Some(node_id));
        }
        self.last += 1;
        self.by_change.insert(self.last, node_id.clone());
        self.last
    }

    fn forget(&mut self, node_id: &NodeId) {
        if let Some(change) = self.removed.remove(node_id) {
            self.by_change.remove(&change);
            self.dropped_through = self.dropped_through.max(change);
        }
    }
}

impl TelemetryMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The newest record of `node_id`, if any and not removed.
    pub fn record(&self, node_id: &NodeId) -> Option<&NodeRecord> {
        self.records
            .get(node_id)
            .map(|register| &register.val.record)
    }

    /// The newest record of `node_id` with its wire form.
    pub fn held(&self, node_id: &NodeId) -> Option<&HeldRecord> {
        self.records.get(node_id).map(|register| &*register.val)
    }

    /// Every record, ordered by node id.
    pub fn records(&self) -> impl ExactSizeIterator<Item = &NodeRecord> + '_ {
        self.records.values().map(|register| &register.val.record)
    }

    /// Every record with its wire form, ordered by node id.
    pub fn held_records(&self) -> impl ExactSizeIterator<Item = &HeldRecord> + '_ {
        self.records.values().map(|register| &*register.val)
    }

    /// Every node and the version of its record, ordered by node id, with
    /// the record (not read unless the caller does).
    pub fn versions(&self) -> impl ExactSizeIterator<Item = (&NodeId, Version, &HeldRecord)> + '_ {
        self.records
            .iter()
            .map(|(node_id, register)| (node_id, register.marker, &*register.val))
    }

    /// The removal watermark of `node_id`: records of this generation or
    /// older are refused.
    pub fn tombstone(&self, node_id: &NodeId) -> Option<Generation> {
        self.tombstones.get(node_id).copied()
    }

    /// Every tombstone, ordered by node id.
    pub fn tombstones(&self) -> impl ExactSizeIterator<Item = (&NodeId, Generation)> + '_ {
        self.tombstones
            .iter()
            .map(|(node_id, generation)| (node_id, *generation))
    }

    /// The sequence number of the latest change to any record (0 before
    /// the first). Changes after it are listed by [`TelemetryMap::changed_since`].
    pub fn last_change(&self) -> u64 {
        self.journal.last
    }

    /// The nodes whose record was inserted, replaced or removed after change
    /// `after`, each once, oldest change first; `None` if this map cannot
    /// tell (`after` is older than a forgotten removal, or newer than any
    /// change of this map): then the reader must walk every record.
    pub fn changed_since(&self, after: u64) -> Option<impl Iterator<Item = &NodeId> + '_> {
        let journal = &self.journal;
        (journal.dropped_through <= after && after <= journal.last).then(|| {
            journal
                .by_change
                .range(after.saturating_add(1)..)
                .map(|(_, node_id)| node_id)
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The wrapping sum of a hash of every record's node and version: maps
    /// holding the same versions have the same summary, whatever the order
    /// they learned them in. O(1).
    pub fn summary(&self) -> u64 {
        self.summary
    }

    /// Merges one record (the CRDT's per-register join). The record is
    /// assumed valid; the store validates before calling. If stored, its
    /// [`HeldRecord::stored_at`] is zero.
    pub fn merge_record(&mut self, record: NodeRecord) -> RecordMerge {
        let encoded = EncodedRecord::encode(&record);
        let Ok(outcome) = self.merge_encoded(&encoded.as_ref(), Duration::ZERO, |_| {
            Ok::<_, Infallible>(record)
        });
        outcome
    }

    /// Merges one record given in wire form (its head read, its body not
    /// decoded), calling `decode` for the decoded, validated record only if
    /// it is needed: when the incoming record wins, or when it is a
    /// different record of the held version (a rival must be valid to
    /// count as a conflict). `decode` is told whether the record would be
    /// the node's first (so the caller can refuse new nodes at a limit). A
    /// stale record, a duplicate (same bytes) and a tombstoned one are
    /// settled without decoding, by one lookup. If `decode` fails the map
    /// is unchanged and its error returned. A record stored is stamped
    /// `now` ([`HeldRecord::stored_at`]).
    pub(crate) fn merge_encoded<E>(
        &mut self,
        incoming: &RecordRef<'_>,
        now: Duration,
        decode: impl FnOnce(bool) -> Result<NodeRecord, E>,
    ) -> Result<RecordMerge, E> {
        let version = incoming.version;
        if self
            .tombstones
            .get(&incoming.node_id)
            .is_some_and(|tombstone| version.generation <= *tombstone)
        {
            return Ok(RecordMerge::Tombstoned);
        }
        let Some(register) = self.records.get_mut(&incoming.node_id) else {
            let record = decode(true)?;
            debug_assert!(record.node_id == incoming.node_id && record.version == version);
            // A node whose latest change was its removal rejoins.
            let previous = self.journal.removed.remove(&incoming.node_id);
            let change = self.journal.note(&incoming.node_id, previous);
            self.summary = self
                .summary
                .wrapping_add(summary_row(&incoming.node_id, version));
            self.records.insert(
                incoming.node_id.clone(),
                LWWReg {
                    val: Box::new(HeldRecord {
                        record,
                        bytes: Arc::from(incoming.bytes),
                        stored_at: now,
                        change,
                    }),
                    marker: version,
                },
            );
            self.check_journal();
            return Ok(RecordMerge::Inserted);
        };
        debug_assert_eq!(
            register.marker, register.val.record.version,
            "marker is the record's version"
        );
        let outcome = match version.cmp(&register.marker) {
            Ordering::Less => return Ok(RecordMerge::Stale),
            Ordering::Greater => RecordMerge::Replaced,
            // Same marker: LWWReg would keep whichever it holds, which
            // depends on merge order when the values differ. Compare the
            // encodings instead: equal bytes are the same record; otherwise
            // the larger wins, everywhere.
            Ordering::Equal => match incoming.bytes.cmp(&register.val.bytes) {
                Ordering::Equal => return Ok(RecordMerge::Duplicate),
                Ordering::Greater => RecordMerge::TieBrokeIncoming,
                Ordering::Less => {
                    decode(false)?;
                    return Ok(RecordMerge::TieBrokeKnown);
                }
            },
        };
        // The incoming record wins: what LWWReg::update does, in place.
        let record = decode(false)?;
        debug_assert!(record.node_id == incoming.node_id && record.version == version);
        let held = &mut register.val;
        held.record = record;
        replace_bytes(&mut held.bytes, incoming.bytes);
        held.stored_at = now;
        held.change = self.journal.note(&incoming.node_id, Some(held.change));
        if register.marker != version {
            self.summary = self
                .summary
                .wrapping_sub(summary_row(&incoming.node_id, register.marker))
                .wrapping_add(summary_row(&incoming.node_id, version));
        }
        register.marker = version;
        self.check_journal();
        Ok(outcome)
    }

    fn check_journal(&self) {
        debug_assert_eq!(
            self.journal.by_change.len(),
            self.records.len() + self.journal.removed.len(),
            "one journal entry per record and per remembered removal"
        );
    }

    /// Merges one tombstone: records of `node_id` with a generation at or
    /// below `generation` are deleted now and refused from now on.
    pub fn merge_tombstone(&mut self, node_id: &NodeId, generation: Generation) -> TombstoneMerge {
        let raised = match self.tombstones.get_mut(node_id) {
            Some(known) if *known >= generation => false,
            Some(known) => {
                *known = generation;
                true
            }
            None => {
                self.tombstones.insert(node_id.clone(), generation);
                true
            }
        };
        let removed_record = self
            .records
            .get(node_id)
            .is_some_and(|register| register.marker.generation <= generation);
        if removed_record {
            let removed = self.records.remove(node_id).expect("checked just above");
            self.summary = self
                .summary
                .wrapping_sub(summary_row(node_id, removed.marker));
            let change = self.journal.note(node_id, Some(removed.val.change));
            self.journal.removed.insert(node_id.clone(), change);
            self.check_journal();
        }
        debug_assert!(
            self.records
                .get(node_id)
                .is_none_or(|register| register.marker.generation > generation),
            "no record at or below a tombstone survives"
        );
        TombstoneMerge {
            raised,
            removed_record,
        }
    }

    /// Merges a whole other map (the CRDT join). Tombstones go first so
    /// records they cover are refused rather than inserted and deleted.
    pub fn merge(&mut self, other: &TelemetryMap) {
        for (node_id, generation) in &other.tombstones {
            self.merge_tombstone(node_id, *generation);
        }
        for register in other.records.values() {
            let held = &register.val;
            let Ok(_) = self.merge_encoded(&held.encoded().as_ref(), held.stored_at, |_| {
                Ok::<_, Infallible>(held.record.clone())
            });
        }
    }

    /// Forgets the tombstone of `node_id` (local garbage collection once its
    /// retention has passed; see the store). Not a CRDT operation: after it,
    /// an old record of that node would be accepted again.
    pub(crate) fn forget_tombstone(&mut self, node_id: &NodeId) -> Option<Generation> {
        let forgotten = self.tombstones.remove(node_id);
        // Without a record the node's journal entry is its removal, which
        // readers have long seen (tombstones are kept for an hour); a reader
        // that has not is told to walk the whole map.
        if !self.records.contains_key(node_id) {
            self.journal.forget(node_id);
        }
        self.check_journal();
        forgotten
    }
}

impl CvRDT for TelemetryMap {
    type Validation = Infallible;

    fn validate_merge(&self, _other: &Self) -> Result<(), Self::Validation> {
        // Every pair of maps merges: equal-version conflicts are tie-broken.
        Ok(())
    }

    fn merge(&mut self, other: Self) {
        TelemetryMap::merge(self, &other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::record::Sequence;

    fn record(node: &str, generation: u64, sequence: u64, agent_version: &str) -> NodeRecord {
        NodeRecord {
            node_id: NodeId::new(node).unwrap(),
            version: Version {
                generation: Generation(generation),
                sequence: Sequence(sequence),
            },
            agent_version: agent_version.to_owned(),
            host: None,
            database: None,
            unreachable_peers: Default::default(),
            unreachable_peers_total: 0,
        }
    }

    /// Holds `held` (if any) under tombstone `tombstone` (if any), merges
    /// `incoming`, and returns the outcome.
    fn merge_one(
        held: Option<(u64, u64, &str)>,
        tombstone: Option<u64>,
        incoming: (u64, u64, &str),
    ) -> RecordMerge {
        let mut map = TelemetryMap::new();
        if let Some((generation, sequence, content)) = held {
            map.merge_record(record("a", generation, sequence, content));
        }
        if let Some(generation) = tombstone {
            map.merge_tombstone(&NodeId::new("a").unwrap(), Generation(generation));
        }
        let (generation, sequence, content) = incoming;
        map.merge_record(record("a", generation, sequence, content))
    }

    #[test]
    fn telemetry_record_merge_table() {
        use RecordMerge::*;
        let cases = [
            (None, None, (1, 1, "x"), Inserted),
            (Some((1, 1, "x")), None, (1, 2, "x"), Replaced),
            (Some((1, 5, "x")), None, (2, 1, "x"), Replaced),
            (Some((1, 2, "x")), None, (1, 1, "x"), Stale),
            (Some((2, 1, "x")), None, (1, 9, "x"), Stale),
            (Some((1, 1, "x")), None, (1, 1, "x"), Duplicate),
            (Some((1, 1, "x")), None, (1, 1, "y"), TieBrokeIncoming),
            (Some((1, 1, "y")), None, (1, 1, "x"), TieBrokeKnown),
            (None, Some(1), (1, 9, "x"), Tombstoned),
            (None, Some(1), (2, 1, "x"), Inserted),
            (Some((1, 1, "x")), Some(1), (1, 2, "x"), Tombstoned),
        ];
        for (held, tombstone, incoming, expected) in cases {
            assert_eq!(
                merge_one(held, tombstone, incoming),
                expected,
                "{held:?} {tombstone:?} {incoming:?}"
            );
        }
    }

    fn changed(map: &TelemetryMap, after: u64) -> Vec<&str> {
        map.changed_since(after)
            .expect("the journal can tell")
            .map(NodeId::as_str)
            .collect()
    }

    #[test]
    fn telemetry_journal_lists_each_changed_node_once_in_change_order() {
        let mut map = TelemetryMap::new();
        let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
        map.merge_record(record("a", 1, 1, "x"));
        map.merge_record(record("b", 1, 1, "x"));
        let seen = map.last_change();
        map.merge_record(record("a", 1, 2, "x"));
        assert_eq!(map.merge_record(record("a", 1, 1, "x")), RecordMerge::Stale);
        assert_eq!(changed(&map, 0), ["b", "a"]);
        assert_eq!(changed(&map, seen), ["a"]);
        // A removal is a change; forgetting its tombstone drops the entry,
        // and a reader from before it must walk the whole map.
        assert!(map.merge_tombstone(&b, Generation(1)).removed_record);
        assert_eq!(changed(&map, seen), ["a", "b"]);
        let removed_b = map.last_change();
        map.forget_tombstone(&b);
        assert!(map.changed_since(seen).is_none());
        assert!(changed(&map, removed_b).is_empty());
        // A node rejoining after its removal has one entry, the rejoin.
        assert!(map.merge_tombstone(&a, Generation(1)).removed_record);
        map.merge_record(record("a", 2, 1, "x"));
        assert_eq!(changed(&map, removed_b), ["a"]);
        assert_eq!(map.journal.by_change.len(), 1);
    }

    #[test]
    fn telemetry_replaced_record_reuses_its_bytes_when_unshared() {
        let mut map = TelemetryMap::new();
        let a = NodeId::new("a").unwrap();
        map.merge_record(record("a", 1, 1, "x"));
        let before = map.held(&a).unwrap().bytes().as_ptr();
        map.merge_record(record("a", 1, 2, "x"));
        let held = map.held(&a).unwrap();
        assert_eq!(
            held.bytes(),
            &crate::telemetry::wire::encode_record(held.record())[..]
        );
        assert_eq!(
            held.bytes().as_ptr(),
            before,
            "same length, unshared: reused"
        );
        // Shared (a batch in flight holds it): a new allocation.
        let in_flight = held.encoded();
        map.merge_record(record("a", 1, 3, "x"));
        assert_eq!(in_flight.version().sequence, Sequence(2));
        assert_ne!(map.held(&a).unwrap().bytes(), in_flight.bytes());
    }

    #[test]
    fn telemetry_tombstone_removes_covered_records_only() {
        let mut map = TelemetryMap::new();
        let a = NodeId::new("a").unwrap();
        map.merge_record(record("a", 2, 1, "x"));
        let outcome = map.merge_tombstone(&a, Generation(1));
        assert_eq!(
            outcome,
            TombstoneMerge {
                raised: true,
                removed_record: false
            }
        );
        assert!(map.record(&a).is_some());
        let outcome = map.merge_tombstone(&a, Generation(2));
        assert!(outcome.raised && outcome.removed_record);
        assert!(map.record(&a).is_none());
        assert!(!map.merge_tombstone(&a, Generation(1)).raised);
        assert_eq!(map.tombstone(&a), Some(Generation(2)));
    }

    #[test]
    fn telemetry_summary_tells_apart_maps_whose_versions_trade_places() {
        let map = |records: &[(&str, u64, u64)]| {
            let mut map = TelemetryMap::new();
            for &(node, generation, sequence) in records {
                map.merge_record(record(node, generation, sequence, "v"));
            }
            map
        };
        // Without the finalizer in `SummaryRow` these two summed to the
        // same value: a's sequence one up, c's one down.
        let one = map(&[("a", 1, 2), ("c", 1, 2)]);
        let other = map(&[("a", 1, 3), ("c", 1, 1)]);
        assert_ne!(one.summary(), other.summary());
        // Replaced, removed and inserted again: the summary is that of a
        // map that only ever held the result.
        let mut changed = map(&[("a", 1, 1), ("c", 1, 1)]);
        changed.merge_record(record("a", 1, 3, "v"));
        changed.merge_tombstone(&NodeId::new("c").unwrap(), Generation(1));
        assert_eq!(changed.summary(), map(&[("a", 1, 3)]).summary());
        changed.merge_record(record("c", 2, 2, "v"));
        assert_eq!(
            changed.summary(),
            map(&[("c", 2, 2), ("a", 1, 3)]).summary()
        );
        assert_eq!(TelemetryMap::new().summary(), 0);
    }
}
