//! Cluster telemetry as a CRDT: every agent holds every node's latest record
//! and they all converge to the same map.
//!
//! Layout:
//! * [`record`]: the per-node record and its parts ([`NodeRecord`],
//!   [`HostMetrics`], [`DatabaseReport`]), with validation.
//! * [`map`]: the CRDT itself ([`TelemetryMap`]): last-writer-wins per node
//!   by `(generation, sequence)`, plus removal tombstones.
//! * [`wire`]: the versioned MessagePack envelope, broadcast deltas and their
//!   foca key ([`TelemetryKey`]), anti-entropy digests and batches.
//! * [`digest`]: the compact, node-ordered form of a digest's entries,
//!   compared with the map in one walk.
//! * [`config`]: [`TelemetryConfig`], every rate and size.
//! * this file: [`TelemetryStore`], the sans-IO state machine one agent
//!   drives — the map plus local bookkeeping (this node's sequence, when each
//!   record was last updated, tombstone expiry, counters, timers).
//!
//! No IO, no clock, no randomness: `now` is the driver's monotonic time as a
//! `Duration` since an arbitrary origin, and the driver picks anti-entropy
//! peers. Flow, as the agent drives it:
//!
//! ```text
//! sysinfo / PUT /v1/agent/telemetry ─► set_host_metrics / set_database_report
//! timer (poll_timeout) ─► handle_timeout(now) ─► [Broadcast(delta), StartAntiEntropy]
//! Broadcast(delta)      ─► foca.add_broadcast(&delta.bytes)
//!     foca's BroadcastHandler::receive_item(data, sender)
//!                       ─► store.receive_delta(now, data, DeltaSource::from(sender))
//! StartAntiEntropy      ─► pick a peer; send store.start_anti_entropy(now) (a Summary) on a stream
//! bytes from a stream   ─► store.handle_anti_entropy(now, bytes) ─► maybe reply (a new stream)
//! catalog says removed  ─► store.remove_node(now, node, generation) ─► broadcast
//! ```
//!
//! foca owns its `BroadcastHandler` and has no accessor for it, so the
//! handler reaches the store through shared state; it is this much code
//! (see `membership/tests/telemetry_foca.rs`, which runs it on real foca
//! instances):
//!
//! ```text
//! impl BroadcastHandler<Identity> for TelemetryBroadcasts {
//!     type Key = TelemetryKey;
//!     type Error = TelemetryError;
//!     fn receive_item(&mut self, data: &[u8], sender: Option<&Identity>)
//!         -> Result<Option<TelemetryKey>, TelemetryError> {
//!         self.store.borrow_mut().receive_delta(self.now.get(), data, DeltaSource::from(sender))
//!     }
//! }
//! // after handle_timeout returned Broadcast(delta):
//! foca.add_broadcast(&delta.bytes)?;
//! foca.broadcast(&mut runtime)?; // push it now rather than wait for a probe to piggyback on
//! ```

pub mod config;
pub mod digest;
mod error;
pub mod map;
pub mod record;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub use config::TelemetryConfig;
pub use digest::{DigestEntries, DigestEntry, DigestIter};
pub use error::TelemetryError;
pub use map::{HeldRecord, RecordMerge, TelemetryMap, TombstoneMerge};
pub use record::{
    AppliedPosition, DatabaseReport, DatabaseSnapshot, Epoch, HostMetrics, NodeRecord,
    SchemaVersion, Sequence, ShardId, ShardReport, ShardRole, UNREACHABLE_PEERS_MAX, Version,
};
pub use wire::{
    AntiEntropyMessage, Delta, Digest, EncodedDelta, EncodedRecord, RecordBatch, TelemetryKey,
    TelemetryKeyKind, Tombstone,
};

use crate::summary::SummaryRow;
use crate::{Generation, NodeId};
use wire::{AntiEntropyView, DeltaRef, DigestView, RecordRef};

/// Estimated encoded size of one tombstone besides its node id, bytes (array
/// header, generation and retention as MessagePack integers). Used to keep
/// anti-entropy batches within budget.
const TOMBSTONE_OVERHEAD_BYTES: usize = 24;
/// Room kept in an anti-entropy batch budget for the envelope and array
/// headers, bytes.
const BATCH_OVERHEAD_BYTES: usize = 64;

/// What one walk of a peer's digest finds this agent wants, kept to what
/// one `Reply` asks for: the records it does not hold (unless it would
/// refuse them) and those it holds an older version of, in one rotation:
/// in node order from after the cursor (where the last `Reply` or `Push`
/// that was cut short stopped), then from the start. No kind goes first,
/// so records that keep being refused here (over `record_bytes_max`, say)
/// cannot starve the others. At most `max` ids are kept on either side of
/// the cursor, whatever the digest's size.
///
/// The ids always fit in the `Reply`: each came from the peer's digest (at
/// most `digest_bytes_max` bytes), where it took more bytes than it does
/// as a MessagePack string.
struct Wants<'c> {
    cursor: Option<&'c NodeId>,
    max: usize,
    /// Node ids after the cursor, in node order.
    after: Vec<NodeId>,
    /// Node ids at or before it, in node order.
    wrapped: Vec<NodeId>,
    /// Whether a wanted id found its list full.
    left_out: bool,
}

impl<'c> Wants<'c> {
    fn new(cursor: Option<&'c NodeId>, max: usize) -> Self {
        Self {
            cursor,
            max,
            after: Vec::new(),
            wrapped: Vec::new(),
            left_out: false,
        }
    }

    /// The list `node_id` goes to, unless it is full.
    fn list(&mut self, node_id: &[u8]) -> Option<&mut Vec<NodeId>> {
        let list = if self
            .cursor
            .is_some_and(|cursor| node_id <= cursor.as_str().as_bytes())
        {
            &mut self.wrapped
        } else {
            &mut self.after
        };
        if list.len() >= self.max {
            self.left_out = true;
            return None;
        }
        Some(list)
    }

    /// A record the peer lists and `map` does not hold: wanted unless a
    /// tombstone of `map` covers it (it would be refused). The room is
    /// looked at first, so an entry past a full list costs nothing.
    fn not_held(&mut self, entry: DigestEntry<'_>, map: &TelemetryMap) {
        let Some(list) = self.list(entry.node_id_bytes()) else {
            return;
        };
        let node_id = entry.node_id();
        if map
            .tombstone(&node_id)
            .is_none_or(|removed| entry.version.generation > removed)
        {
            list.push(node_id);
        }
    }

    /// A node whose record the peer holds newer.
    fn held_older(&mut self, node_id: &NodeId) {
        if let Some(list) = self.list(node_id.as_str().as_bytes()) {
            list.push(node_id.clone());
        }
    }

    /// The ids to ask for, at most `max`, and whether some were left out.
    fn finish(self) -> (Vec<NodeId>, bool) {
        let mut ids = self.after;
        let room = self.max - ids.len();
        let left_out = self.left_out || self.wrapped.len() > room;
        ids.extend(self.wrapped.into_iter().take(room));
        (ids, left_out)
    }
}

/// One walk of a peer's digest against the map: what the peer lacks, and
/// what this agent wants from it.
struct Comparison {
    batch: RecordBatch,
    wants: Vec<NodeId>,
    /// Whether some wanted records could not be asked for.
    wants_left_out: bool,
}

/// Local bookkeeping about one node's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    /// When this agent last stored a newer version of the record (local
    /// monotonic time). `now - updated_at` is the "telemetry age" of the node.
    pub updated_at: Duration,
    /// Encoded size of the record held, bytes.
    pub encoded_bytes: usize,
}

/// Monotonic counters for the agent's metrics (`/metrics`). Each only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TelemetryCounters {
    /// Local records written (refreshes that succeeded).
    pub local_versions: u64,
    /// Deltas handed out for broadcast.
    pub deltas_sent: u64,
    /// Deltas not produced because they exceed `delta_bytes_max`.
    pub deltas_dropped_for_size: u64,
    /// Records put into anti-entropy batches for peers.
    pub versions_sent: u64,
    /// Newer records accepted from peers (deltas and anti-entropy).
    pub versions_received: u64,
    /// Records received that were older than or identical to the one held.
    pub stale_received: u64,
    /// Refreshes that published nothing because nothing changed materially.
    pub refreshes_unchanged: u64,
    /// Merges where a held record and a different incoming one met and one
    /// of them won.
    pub merge_conflicts_resolved: u64,
    /// Of those, conflicts between different records of the *same* version
    /// (a writer reused a version), settled by the tie-break.
    pub same_version_conflicts: u64,
    /// Records refused because their generation was removed.
    pub tombstoned_refused: u64,
    /// Tombstones that raised a node's removal watermark here.
    pub tombstones_received: u64,
    /// Records deleted by a tombstone.
    pub records_removed: u64,
    /// Tombstones garbage-collected after their retention (or at `tombstones_max`).
    pub tombstones_expired: u64,
    /// Incoming deltas or anti-entropy messages that failed to decode or
    /// validate, or were over their size limit.
    pub decode_errors: u64,
    /// Records of new nodes dropped at `nodes_max`.
    pub nodes_max_refused: u64,
    /// Anti-entropy messages handled.
    pub anti_entropy_messages: u64,
    /// Anti-entropy batches cut by the budget.
    pub anti_entropy_truncated: u64,
    /// Anti-entropy exchanges this agent answered as in sync: the opener's
    /// summary was its own, so no digest was sent.
    pub anti_entropy_in_sync: u64,
    /// Records of this very node, newer than its own, received from peers
    /// (a reused generation, or another agent running with this node id).
    pub own_record_conflicts: u64,
}

/// Where a delta handed to [`TelemetryStore::receive_delta`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaSource {
    /// This agent's own `foca.add_broadcast` (foca's `sender` is `None`):
    /// the key is returned whenever the delta is what the map holds, so foca
    /// broadcasts it.
    Local,
    /// A peer's broadcast: the key is returned only if the delta was news,
    /// so foca stops spreading what everyone has.
    Peer,
}

impl<T> From<Option<&T>> for DeltaSource {
    fn from(sender: Option<&T>) -> Self {
        match sender {
            None => DeltaSource::Local,
            Some(_) => DeltaSource::Peer,
        }
    }
}

/// Whether a refresh publishes a new local version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Publish {
    /// Nothing material changed and the heartbeat is not due.
    No,
    /// The first record, or a material change: publish and broadcast.
    Change,
    /// Only the heartbeat: publish; anti-entropy spreads it.
    Heartbeat,
}

/// What the driver must do after [`TelemetryStore::handle_timeout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TelemetryAction {
    /// Hand `delta.bytes` to `foca.add_broadcast`.
    Broadcast(EncodedDelta),
    /// Pick a random live peer and send it [`TelemetryStore::start_anti_entropy`].
    StartAntiEntropy,
}

/// What merging a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeSummary {
    /// Records inserted or replaced.
    pub records_changed: usize,
    /// Tombstones that raised a removal watermark.
    pub tombstones_raised: usize,
    /// Records refused (invalid, oversized, tombstoned or over `nodes_max`).
    pub records_refused: usize,
}

/// One agent's telemetry state machine: the merged map of every node's
/// record plus everything local. See the module docs for the flow.
#[derive(Clone, Debug)]
pub struct TelemetryStore {
    config: TelemetryConfig,
    node_id: NodeId,
    generation: Generation,
    agent_version: String,
    /// Sequence of the last local record written (0: none yet). The next
    /// refresh writes `sequence + 1`.
    sequence: Sequence,
    host: Option<HostMetrics>,
    /// The last database report and when it arrived.
    database: Option<(DatabaseReport, Duration)>,
    unreachable_peers: BTreeSet<NodeId>,
    /// The merged map; each record in it carries when this store stored it
    /// ([`HeldRecord::stored_at`], this store's `now`).
    map: TelemetryMap,
    /// Exactly one entry per tombstone in `map`.
    tombstone_expires_at: BTreeMap<NodeId, Duration>,
    counters: TelemetryCounters,
    refresh_at: Duration,
    anti_entropy_at: Duration,
    /// While catching up after a join: the interval before the round after
    /// the next one (it doubles up to `anti_entropy_interval`); see
    /// [`TelemetryStore::anti_entropy_soon`].
    anti_entropy_ramp: Option<Duration>,
    /// When the last local version was published.
    published_at: Option<Duration>,
    /// The last node whose record went into a truncated anti-entropy batch;
    /// the next batch starts after it so no node starves.
    anti_entropy_cursor: Option<NodeId>,
    /// The last node whose record was asked for, or received, when a
    /// `Reply` could not ask for everything wanted, or the `Push` answering
    /// it was truncated; the next `Reply` asks from after it (see `Wants`).
    /// Like `anti_entropy_cursor`, shared by every peer and only ever moved.
    wants_cursor: Option<NodeId>,
    /// The ids the last `Reply` asked for, until a `Push` answers it: only
    /// a `Push` whose last record is one of them moves `wants_cursor`.
    wants_asked: Vec<NodeId>,
}

impl TelemetryStore {
    /// A store for the agent of `node_id` running as `generation`. The first
    /// refresh is due at once, the first anti-entropy round one interval
    /// from `now`.
    pub fn new(
        config: TelemetryConfig,
        node_id: NodeId,
        generation: Generation,
        agent_version: impl Into<String>,
        now: Duration,
    ) -> Result<Self, TelemetryError> {
        config.validate()?;
        let agent_version = agent_version.into();
        if agent_version.len() > record::AGENT_VERSION_LEN_MAX {
            return Err(TelemetryError::InvalidConfig {
                field: "agent_version",
                reason: format!("at most {} bytes", record::AGENT_VERSION_LEN_MAX),
            });
        }
        let anti_entropy_at = now + config.anti_entropy_interval;
        Ok(Self {
            config,
            node_id,
            generation,
            agent_version,
            sequence: Sequence(0),
            host: None,
            database: None,
            unreachable_peers: BTreeSet::new(),
            map: TelemetryMap::new(),
            tombstone_expires_at: BTreeMap::new(),
            counters: TelemetryCounters::default(),
            refresh_at: now,
            anti_entropy_at,
            anti_entropy_ramp: None,
            published_at: None,
            anti_entropy_cursor: None,
            wants_cursor: None,
            wants_asked: Vec::new(),
        })
    }

    /// This agent's node.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// This agent's running generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The configuration in force.
    pub fn config(&self) -> &TelemetryConfig {
        &self.config
    }

    /// The merged map (what `GET /v1/telemetry` shows and alerts evaluate).
    pub fn map(&self) -> &TelemetryMap {
        &self.map
    }

    /// The counters for `/metrics`.
    pub fn counters(&self) -> &TelemetryCounters {
        &self.counters
    }

    /// The newest record of `node_id`.
    pub fn record(&self, node_id: &NodeId) -> Option<&NodeRecord> {
        self.map.record(node_id)
    }

    /// Local bookkeeping about `node_id`'s record.
    pub fn meta(&self, node_id: &NodeId) -> Option<RecordMeta> {
        self.map.held(node_id).map(|held| RecordMeta {
            updated_at: held.stored_at(),
            encoded_bytes: held.bytes().len(),
        })
    }

    /// The version of the local record, if one was written.
    pub fn local_version(&self) -> Option<Version> {
        (self.sequence.0 > 0).then_some(Version {
            generation: self.generation,
            sequence: self.sequence,
        })
    }

    /// Telemetry age of every node: how long since this agent last stored a
    /// newer version of its record. Ordered by node id.
    pub fn ages(&self, now: Duration) -> impl Iterator<Item = (&NodeId, Duration)> + '_ {
        self.map
            .held_records()
            .map(move |held| (&held.record().node_id, now.saturating_sub(held.stored_at())))
    }

    /// Sets the latest host sample; it goes into the next refresh. Refused
    /// (nothing changed) if it does not validate.
    pub fn set_host_metrics(&mut self, host: HostMetrics) -> Result<(), TelemetryError> {
        host.validate()?;
        self.host = Some(host);
        Ok(())
    }

    /// Sets the database's latest report, received at `now`; it goes into
    /// the next refresh. Refused (the previous report stays) if it does not
    /// validate; the error names the field.
    pub fn set_database_report(
        &mut self,
        now: Duration,
        report: DatabaseReport,
    ) -> Result<(), TelemetryError> {
        report.validate()?;
        self.database = Some((report, now));
        Ok(())
    }

    /// Sets the peers this agent currently finds unreachable (its own failed
    /// probes, as the membership core tracks them); it goes into the next
    /// refresh. The node itself is ignored.
    pub fn set_unreachable_peers(&mut self, peers: impl IntoIterator<Item = NodeId>) {
        self.unreachable_peers = peers
            .into_iter()
            .filter(|peer| *peer != self.node_id)
            .collect();
    }

    /// Writes a new local record from the latest inputs (sequence + 1) and
    /// stores it. Call [`Self::local_delta`] next to broadcast it; or let
    /// [`Self::handle_timeout`] do both on schedule.
    pub fn refresh(&mut self, now: Duration) -> Result<Version, TelemetryError> {
        if self
            .map
            .tombstone(&self.node_id)
            .is_some_and(|tombstone| tombstone >= self.generation)
        {
            return Err(TelemetryError::LocalNodeRemoved {
                node_id: self.node_id.to_string(),
                generation: self.generation.0,
            });
        }
        let sequence = Sequence(
            self.sequence
                .0
                .checked_add(1)
                .expect("a u64 sequence bumped at most every 100ms never overflows"),
        );
        let version = Version {
            generation: self.generation,
            sequence,
        };
        let record = self.build_record(version, now);
        self.publish(record, now)
    }

    /// The local record as the latest inputs describe it, at `version`.
    fn build_record(&self, version: Version, now: Duration) -> NodeRecord {
        let unreachable_peers_total =
            u32::try_from(self.unreachable_peers.len()).unwrap_or(u32::MAX);
        NodeRecord {
            node_id: self.node_id.clone(),
            version,
            agent_version: self.agent_version.clone(),
            host: self.host.clone().map(Box::new),
            database: self.database.as_ref().map(|(report, received_at)| {
                Box::new(DatabaseSnapshot {
                    report_age_ms: duration_ms(now.saturating_sub(*received_at)),
                    report: report.clone(),
                })
            }),
            unreachable_peers: self
                .unreachable_peers
                .iter()
                .take(UNREACHABLE_PEERS_MAX)
                .cloned()
                .collect(),
            unreachable_peers_total,
        }
    }

    /// Stores `record` as this node's newest version.
    fn publish(&mut self, record: NodeRecord, now: Duration) -> Result<Version, TelemetryError> {
        let version = record.version;
        let sequence = version.sequence;
        // Every input was validated when set; check the whole again (pair
        // assertion with the check on receipt at every peer).
        record.validate()?;
        let encoded = EncodedRecord::encode(&record);
        let encoded_bytes = encoded.size_bytes();
        if encoded_bytes > self.config.record_bytes_max {
            return Err(TelemetryError::RecordTooLarge {
                size_bytes: encoded_bytes,
                max_bytes: self.config.record_bytes_max,
            });
        }
        let Ok(outcome) = self.map.merge_encoded(&encoded.as_ref(), now, |_| {
            Ok::<_, std::convert::Infallible>(record)
        });
        assert!(
            outcome.changed(),
            "a fresh local version always wins, got {outcome:?}"
        );
        self.sequence = sequence;
        self.counters.local_versions += 1;
        self.published_at = Some(now);
        self.refresh_at = now + self.config.refresh_interval;
        self.check_invariants();
        tracing::trace!(node = %self.node_id, %version, encoded_bytes, "telemetry refreshed");
        Ok(version)
    }

    /// The local record as a delta to broadcast, or
    /// [`TelemetryError::DeltaTooLarge`] if it does not fit in
    /// `delta_bytes_max` (then don't broadcast: anti-entropy carries it).
    pub fn local_delta(&mut self, now: Duration) -> Result<EncodedDelta, TelemetryError> {
        let node_id = self.node_id.clone();
        self.delta_for(now, &node_id)
    }

    /// The record (or, for a removed node, the tombstone) held for `node_id`
    /// as a delta to broadcast; [`TelemetryError::DeltaTooLarge`] if it does
    /// not fit, [`TelemetryError::UnknownNode`] if nothing is held.
    pub fn delta_for(
        &mut self,
        now: Duration,
        node_id: &NodeId,
    ) -> Result<EncodedDelta, TelemetryError> {
        let encoded = if let Some(held) = self.map.held(node_id) {
            wire::encode_record_delta(&held.encoded(), self.config.delta_bytes_max)
        } else if let Some(tombstone) = self.tombstone_wire(now, node_id) {
            wire::encode_delta(&Delta::Tombstone(tombstone), self.config.delta_bytes_max)
        } else {
            return Err(TelemetryError::UnknownNode {
                node_id: node_id.to_string(),
            });
        };
        match encoded {
            Ok(encoded) => {
                self.counters.deltas_sent += 1;
                Ok(encoded)
            }
            Err(error) => {
                if matches!(error, TelemetryError::DeltaTooLarge { .. }) {
                    self.counters.deltas_dropped_for_size += 1;
                }
                Err(error)
            }
        }
    }

    /// Removes `node_id` up to and including `generation` (the catalog said
    /// it was removed): its record is deleted here at once and refused from
    /// now on; a newer generation (a rejoin) is still accepted. Returns the
    /// tombstone as a delta to broadcast. Idempotent: the agent may call it
    /// again for every node the catalog lists as removed.
    pub fn remove_node(
        &mut self,
        now: Duration,
        node_id: &NodeId,
        generation: Generation,
    ) -> Result<EncodedDelta, TelemetryError> {
        if *node_id == self.node_id && generation >= self.generation {
            return Err(TelemetryError::RemoveSelf {
                node_id: node_id.to_string(),
                generation: generation.0,
            });
        }
        self.merge_tombstone(
            now,
            &Tombstone {
                node_id: node_id.clone(),
                generation,
                retention_ms: duration_ms(self.config.tombstone_retention),
            },
        );
        self.delta_for(now, node_id)
    }

    /// Decodes a delta from foca's `BroadcastHandler::receive_item` and
    /// merges it. Returns the key foca should keep disseminating, or `None`
    /// when the delta is no news (see [`DeltaSource`]). Errors (malformed,
    /// oversized, invalid) change nothing but the `decode_errors` counter;
    /// returning them to foca is fine (it only reports them). A record
    /// that is no news is recognised from its head (node and version, and
    /// its bytes if the version is the one held) and never decoded.
    pub fn receive_delta(
        &mut self,
        now: Duration,
        data: &[u8],
        source: DeltaSource,
    ) -> Result<Option<TelemetryKey>, TelemetryError> {
        let delta = match wire::decode_delta_ref(data, self.config.delta_bytes_max) {
            Ok(delta) => delta,
            Err(error) => {
                self.counters.decode_errors += 1;
                tracing::debug!(%error, "telemetry delta dropped");
                return Err(error);
            }
        };
        let key = delta.key();
        // Our own `add_broadcast` of what the map already holds: keep it,
        // without counting it as a received (stale) version.
        if source == DeltaSource::Local {
            let held_already = match &delta {
                DeltaRef::Record(record) => self
                    .map
                    .record(&record.node_id)
                    .is_some_and(|held| held.version == record.version),
                DeltaRef::Tombstone(tombstone) => {
                    self.map.tombstone(&tombstone.node_id) == Some(tombstone.generation)
                }
            };
            if held_already {
                return Ok(Some(key));
            }
        }
        let keep = match delta {
            DeltaRef::Record(record) => self.merge_encoded(now, &record, None)?.changed(),
            DeltaRef::Tombstone(tombstone) => self.merge_tombstone(now, &tombstone).raised,
        };
        Ok(keep.then_some(key))
    }

    /// Validates and merges one decoded record received from a peer (or
    /// the simulator), updating its metadata and the counters. Its wire form
    /// is this agent's encoding of it.
    pub fn merge_record(
        &mut self,
        now: Duration,
        record: NodeRecord,
    ) -> Result<RecordMerge, TelemetryError> {
        if let Err(error) = record.validate() {
            self.counters.decode_errors += 1;
            return Err(error);
        }
        let encoded = EncodedRecord::encode(&record);
        self.merge_encoded(now, &encoded.as_ref(), Some(record))
    }

    /// Merges one record in wire form (`decoded`, if given, is its decoded,
    /// validated form; otherwise it is decoded only if the map needs it, see
    /// [`TelemetryMap::merge_encoded`]). Refused: a record over
    /// `record_bytes_max`, and a new node's record at `nodes_max` (unless
    /// it would be refused anyway as tombstoned). One map lookup settles a
    /// stale or duplicate record.
    fn merge_encoded(
        &mut self,
        now: Duration,
        incoming: &RecordRef<'_>,
        decoded: Option<NodeRecord>,
    ) -> Result<RecordMerge, TelemetryError> {
        let encoded_bytes = incoming.bytes.len();
        if encoded_bytes > self.config.record_bytes_max {
            self.counters.decode_errors += 1;
            return Err(TelemetryError::RecordTooLarge {
                size_bytes: encoded_bytes,
                max_bytes: self.config.record_bytes_max,
            });
        }
        let node_id = &incoming.node_id;
        let version = incoming.version;
        let full = self.map.len() >= self.config.nodes_max;
        let nodes_max = self.config.nodes_max;
        let merged = self.map.merge_encoded(incoming, now, |new_node| {
            if new_node && full {
                return Err(TelemetryError::TooManyNodes {
                    node_id: node_id.to_string(),
                    nodes_max,
                });
            }
            match decoded {
                Some(record) => Ok(record),
                None => incoming.decode(),
            }
        });
        let outcome = match merged {
            Ok(outcome) => outcome,
            Err(error @ TelemetryError::TooManyNodes { .. }) => {
                self.counters.nodes_max_refused += 1;
                return Err(error);
            }
            Err(error) => {
                self.counters.decode_errors += 1;
                tracing::debug!(node = %node_id, %version, %error, "telemetry record dropped");
                return Err(error);
            }
        };
        if *node_id == self.node_id {
            self.notice_own_record(now, version);
        }
        if outcome.resolved_conflict() {
            self.counters.merge_conflicts_resolved += 1;
        }
        match outcome {
            RecordMerge::Inserted | RecordMerge::Replaced | RecordMerge::TieBrokeIncoming => {
                self.counters.versions_received += 1;
            }
            RecordMerge::Duplicate | RecordMerge::Stale => self.counters.stale_received += 1,
            RecordMerge::TieBrokeKnown => {}
            RecordMerge::Tombstoned => self.counters.tombstoned_refused += 1,
        }
        if matches!(
            outcome,
            RecordMerge::TieBrokeIncoming | RecordMerge::TieBrokeKnown
        ) {
            self.counters.same_version_conflicts += 1;
            tracing::warn!(node = %node_id, %version, "two different telemetry records with the same version; tie-broken");
        }
        self.check_invariants();
        Ok(outcome)
    }

    /// A peer holds a record of this very node. If it is newer than ours in
    /// our own generation (our sequence restarted, e.g. a data dir restored
    /// from a backup), jump past it and refresh at once so our next record
    /// wins everywhere. A newer generation means another agent runs under
    /// our node id: we can only log it.
    fn notice_own_record(&mut self, now: Duration, theirs: Version) {
        let ours = Version {
            generation: self.generation,
            sequence: self.sequence,
        };
        if theirs <= ours {
            return;
        }
        self.counters.own_record_conflicts += 1;
        if theirs.generation == self.generation {
            tracing::warn!(node = %self.node_id, %theirs, %ours, "peers hold a newer record of this node; skipping ahead");
            self.sequence = theirs.sequence;
            self.refresh_at = now;
            // Publish even if our content is the same: ours must overtake.
            self.published_at = None;
        } else {
            tracing::warn!(node = %self.node_id, %theirs, %ours, "a newer generation of this node id is running elsewhere");
        }
    }

    /// Merges one tombstone (from a delta, a digest or a batch). A new one
    /// (or a raised generation) is kept for `min(tombstone_retention,
    /// tombstone.retention_ms)`; a copy of one already held can only shorten
    /// its expiry, so copies across the cluster expire together. One whose
    /// remaining retention is under one anti-entropy interval deletes what it
    /// covers but is not kept (it would bounce back from peers that already
    /// dropped theirs).
    pub fn merge_tombstone(&mut self, now: Duration, tombstone: &Tombstone) -> TombstoneMerge {
        let retention = self
            .config
            .tombstone_retention
            .min(Duration::from_millis(tombstone.retention_ms));
        let expires_at = now + retention;
        let before = self.map.tombstone(&tombstone.node_id);
        let outcome = self
            .map
            .merge_tombstone(&tombstone.node_id, tombstone.generation);
        if outcome.removed_record {
            self.counters.records_removed += 1;
        }
        if outcome.raised {
            self.counters.tombstones_received += 1;
            tracing::debug!(node = %tombstone.node_id, generation = %tombstone.generation, "telemetry tombstone");
            if retention < self.config.anti_entropy_interval {
                // Too close to expiry to keep: fall back to the older
                // watermark we held (with its own expiry), if any.
                self.map.forget_tombstone(&tombstone.node_id);
                if let Some(generation) = before {
                    self.map.merge_tombstone(&tombstone.node_id, generation);
                }
            } else {
                self.tombstone_expires_at
                    .insert(tombstone.node_id.clone(), expires_at);
                self.enforce_tombstones_max();
            }
        } else if before == Some(tombstone.generation)
            && let Some(known) = self.tombstone_expires_at.get_mut(&tombstone.node_id)
        {
            *known = (*known).min(expires_at);
        }
        self.check_invariants();
        outcome
    }

    fn enforce_tombstones_max(&mut self) {
        while self.tombstone_expires_at.len() > self.config.tombstones_max {
            let (node_id, _) = self
                .tombstone_expires_at
                .iter()
                .min_by_key(|(node_id, expires_at)| (**expires_at, (*node_id).clone()))
                .map(|(node_id, expires_at)| (node_id.clone(), *expires_at))
                .expect("over the limit means not empty");
            self.forget_tombstone(&node_id);
        }
    }

    fn forget_tombstone(&mut self, node_id: &NodeId) {
        self.tombstone_expires_at.remove(node_id);
        self.map.forget_tombstone(node_id);
        self.counters.tombstones_expired += 1;
    }

    /// Garbage-collects tombstones whose retention has passed.
    pub fn expire_tombstones(&mut self, now: Duration) {
        let expired: Vec<NodeId> = self
            .tombstone_expires_at
            .iter()
            .filter(|(_, expires_at)| **expires_at <= now)
            .map(|(node_id, _)| node_id.clone())
            .collect();
        for node_id in expired {
            tracing::debug!(node = %node_id, "telemetry tombstone expired");
            self.forget_tombstone(&node_id);
        }
        self.check_invariants();
    }

    fn tombstone_wire(&self, now: Duration, node_id: &NodeId) -> Option<Tombstone> {
        let generation = self.map.tombstone(node_id)?;
        let expires_at = self.tombstone_expires_at.get(node_id)?;
        Some(Tombstone {
            node_id: node_id.clone(),
            generation,
            retention_ms: duration_ms(expires_at.saturating_sub(now)),
        })
    }

    /// The anti-entropy digest: the version of every record held and every
    /// tombstone.
    pub fn digest(&self, now: Duration) -> Digest {
        Digest::from_sorted(
            self.map
                .versions()
                .map(|(node_id, version, _)| (node_id, version)),
            self.wire_tombstones(now).collect(),
        )
    }

    /// Every tombstone a digest lists (those still kept, with the
    /// retention left), in node order; a `Summary` hashes the same ones.
    fn wire_tombstones(&self, now: Duration) -> impl Iterator<Item = Tombstone> + '_ {
        self.map
            .tombstones()
            .filter_map(move |(node_id, _)| self.tombstone_wire(now, node_id))
    }

    /// What a peer with `peer` digest lacks: tombstones it does not hold,
    /// then the records it does not hold or holds older versions of, in
    /// node order starting after the last truncated batch (no kind first,
    /// so records the peer keeps refusing cannot starve the others) —
    /// within `anti_entropy_bytes_max` and `anti_entropy_records_max`.
    /// Records the peer's tombstones cover are skipped (it would refuse
    /// them).
    pub fn missing_for(&mut self, now: Duration, peer: &Digest) -> RecordBatch {
        self.compare_with(now, peer.records(), &peer.tombstones)
            .batch
    }

    /// What a peer with `peer` digest lacks (see [`Self::missing_for`]),
    /// and the nodes whose records this agent wants from it, as a `Reply`
    /// asks for them: those the peer lists that this agent does not hold or
    /// holds an older version of, in node order starting after where the
    /// last `Reply` or `Push` that was cut short stopped; at most
    /// `anti_entropy_records_max` (and [`wire::WANTS_MAX`]) of them.
    /// Records this agent would refuse are not wanted: those its tombstones
    /// cover, and new nodes' once it holds `nodes_max` records. Both come
    /// from one walk of the digest.
    pub fn wants_from(&mut self, now: Duration, peer: &Digest) -> (RecordBatch, Vec<NodeId>) {
        let comparison = self.compare_with(now, peer.records(), &peer.tombstones);
        (comparison.batch, comparison.wants)
    }

    fn compare_with(
        &mut self,
        now: Duration,
        peer_records: DigestEntries<'_>,
        peer_tombstones: &[Tombstone],
    ) -> Comparison {
        let peer_tombstones: BTreeMap<&NodeId, Generation> = peer_tombstones
            .iter()
            .map(|tombstone| (&tombstone.node_id, tombstone.generation))
            .collect();
        let budget_bytes = self
            .config
            .anti_entropy_bytes_max
            .saturating_sub(BATCH_OVERHEAD_BYTES);
        let mut used_bytes = 0;
        let mut batch = RecordBatch::default();

        for (node_id, generation) in self.map.tombstones() {
            if peer_tombstones
                .get(node_id)
                .is_some_and(|theirs| *theirs >= generation)
            {
                continue;
            }
            let cost = node_id.as_str().len() + TOMBSTONE_OVERHEAD_BYTES;
            if used_bytes + cost > budget_bytes {
                batch.truncated = true;
                break;
            }
            if let Some(tombstone) = self.tombstone_wire(now, node_id) {
                used_bytes += cost;
                batch.tombstones.push(tombstone);
            }
        }

        // (wraps around the cursor?, record): the order records are offered
        // in, one rotation with no kind first (see `Wants`). The peer's
        // entries are walked in step with the map, both in node order, so
        // the candidates come out in node order and a stable sort on the
        // flag finishes the job.
        let mut theirs = peer_records.iter().peekable();
        let mut candidates: Vec<(bool, &HeldRecord)> = Vec::new();
        let takes_new_nodes = self.map.len() < self.config.nodes_max;
        let mut wants = Wants::new(
            self.wants_cursor.as_ref(),
            self.config.anti_entropy_records_max.min(wire::WANTS_MAX),
        );
        for (node_id, version, held) in self.map.versions() {
            let mut their_version = None;
            while let Some(entry) = theirs.peek() {
                match entry.cmp_node(node_id) {
                    std::cmp::Ordering::Less => {
                        if takes_new_nodes {
                            wants.not_held(*entry, &self.map);
                        }
                        theirs.next();
                    }
                    std::cmp::Ordering::Equal => {
                        their_version = Some(entry.version);
                        if entry.version > version {
                            wants.held_older(node_id);
                        }
                        theirs.next();
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            let newer = their_version.is_none_or(|theirs| theirs < version);
            let refused = peer_tombstones
                .get(node_id)
                .is_some_and(|theirs| version.generation <= *theirs);
            if newer && !refused {
                let wrapped = self
                    .anti_entropy_cursor
                    .as_ref()
                    .is_some_and(|cursor| node_id <= cursor);
                candidates.push((wrapped, held));
            }
        }
        if takes_new_nodes {
            for entry in theirs {
                wants.not_held(entry, &self.map);
            }
        }
        let (wants, wants_left_out) = wants.finish();
        candidates.sort_by_key(|(wrapped, _)| *wrapped);

        let mut last_sent = None;
        for (_, held) in candidates {
            let cost = held.bytes().len();
            if batch.truncated
                || batch.records.len() >= self.config.anti_entropy_records_max
                || used_bytes + cost > budget_bytes
            {
                batch.truncated = true;
                break;
            }
            used_bytes += cost;
            last_sent = Some(&held.record().node_id);
            batch.records.push(held.encoded());
        }
        // The cursor is shared by every peer, and only ever moved: after a
        // batch that carried everything, where the next one starts matters
        // to no one.
        if batch.truncated {
            self.counters.anti_entropy_truncated += 1;
            if let Some(last_sent) = last_sent {
                self.anti_entropy_cursor = Some(last_sent.clone());
            }
        }
        self.counters.versions_sent += batch.records.len() as u64;
        debug_assert!(batch.records.len() <= self.config.anti_entropy_records_max);
        debug_assert!(used_bytes <= budget_bytes);
        Comparison {
            batch,
            wants,
            wants_left_out,
        }
    }

    /// The records a peer asked for in a `Reply`, in the order asked,
    /// within `anti_entropy_bytes_max` and `anti_entropy_records_max`.
    /// Only the first `anti_entropy_records_max` ids are looked at; ids
    /// not held are skipped. Whatever is left out the peer asks for again
    /// in a later exchange.
    fn wanted(&mut self, wants: &[NodeId]) -> RecordBatch {
        let budget_bytes = self
            .config
            .anti_entropy_bytes_max
            .saturating_sub(BATCH_OVERHEAD_BYTES);
        let mut used_bytes = 0;
        let mut batch = RecordBatch {
            truncated: wants.len() > self.config.anti_entropy_records_max,
            ..RecordBatch::default()
        };
        for node_id in wants.iter().take(self.config.anti_entropy_records_max) {
            let Some(held) = self.map.held(node_id) else {
                continue;
            };
            let cost = held.bytes().len();
            if used_bytes + cost > budget_bytes {
                batch.truncated = true;
                break;
            }
            used_bytes += cost;
            batch.records.push(held.encoded());
        }
        if batch.truncated {
            self.counters.anti_entropy_truncated += 1;
        }
        self.counters.versions_sent += batch.records.len() as u64;
        debug_assert!(batch.records.len() <= self.config.anti_entropy_records_max);
        debug_assert!(used_bytes <= budget_bytes);
        batch
    }

    /// Merges a batch from a peer: tombstones first, then records. Invalid
    /// records are skipped and counted, the rest still merge. Records that
    /// are no news are not decoded.
    pub fn merge_batch(&mut self, now: Duration, batch: RecordBatch) -> MergeSummary {
        self.merge_batch_parts(
            now,
            &batch.tombstones,
            batch.records.iter().map(EncodedRecord::as_ref),
        )
    }

    fn merge_batch_parts<'a>(
        &mut self,
        now: Duration,
        tombstones: &[Tombstone],
        records: impl IntoIterator<Item = RecordRef<'a>>,
    ) -> MergeSummary {
        let mut summary = MergeSummary::default();
        for tombstone in tombstones {
            if self.merge_tombstone(now, tombstone).raised {
                summary.tombstones_raised += 1;
            }
        }
        for record in records {
            match self.merge_encoded(now, &record, None) {
                Ok(outcome) if outcome.changed() => summary.records_changed += 1,
                Ok(RecordMerge::Tombstoned) | Err(_) => summary.records_refused += 1,
                Ok(_) => {}
            }
        }
        summary
    }

    /// Opens an anti-entropy exchange: the bytes of a `Summary` of our
    /// map, for the driver to send to one random peer, which answers with a
    /// `Request` only if its own summary differs (see
    /// [`AntiEntropyMessage`]).
    pub fn start_anti_entropy(&self, now: Duration) -> Result<Vec<u8>, TelemetryError> {
        let (records, summary) = self.anti_entropy_summary(now);
        let message = AntiEntropyMessage::Summary { records, summary };
        wire::encode_anti_entropy(&message, self.config.anti_entropy_message_bytes_max())
    }

    /// The record count and summary a `Summary` carries: the map's summary
    /// of every record's version plus a hash of every tombstone the digest
    /// would list, so equal summaries mean equal digests.
    fn anti_entropy_summary(&self, now: Duration) -> (u64, u64) {
        let tombstones = self
            .wire_tombstones(now)
            .map(|tombstone| {
                SummaryRow::default()
                    .field(b"tombstone")
                    .field(tombstone.node_id.as_str().as_bytes())
                    .number(tombstone.generation.0)
                    .finish()
            })
            .fold(0, u64::wrapping_add);
        (
            self.map.len() as u64,
            self.map.summary().wrapping_add(tombstones),
        )
    }

    /// The bytes of a `Request` carrying our digest: the full exchange,
    /// which a `Summary` that differs from ours is answered with.
    pub fn anti_entropy_request(&self, now: Duration) -> Result<Vec<u8>, TelemetryError> {
        let message = AntiEntropyMessage::Request {
            digest: self.digest(now),
        };
        wire::encode_anti_entropy(
            &message,
            self.config.digest_bytes_max + BATCH_OVERHEAD_BYTES,
        )
    }

    /// Handles one anti-entropy message from a peer and returns the reply to
    /// send back, if any: `Summary` → `Request` (only if the summaries
    /// differ), `Request` → `Reply` (only if either side lacks something),
    /// `Reply` (or an older agent's `Response`) → `Push` (only if the peer
    /// lacks something), `Push` → none.
    /// Malformed or oversized input (a digest out of node order or over
    /// `digest_bytes_max`, a record whose head cannot be read) changes
    /// nothing but `decode_errors`. A record in a batch that
    /// is news but fails to decode or validate (or is over its limits) is
    /// skipped and counted; the rest still merge. Records that are no news
    /// are not decoded.
    pub fn handle_anti_entropy(
        &mut self,
        now: Duration,
        bytes: &[u8],
    ) -> Result<Option<Vec<u8>>, TelemetryError> {
        let message_bytes_max = self.config.anti_entropy_message_bytes_max();
        let message = match wire::decode_anti_entropy_view(
            bytes,
            message_bytes_max,
            self.config.digest_bytes_max,
        ) {
            Ok(message) => message,
            Err(error) => {
                self.counters.decode_errors += 1;
                tracing::debug!(%error, "telemetry anti-entropy message dropped");
                return Err(error);
            }
        };
        self.counters.anti_entropy_messages += 1;
        let reply = match message {
            AntiEntropyView::Summary { records, summary } => {
                if (records, summary) == self.anti_entropy_summary(now) {
                    self.counters.anti_entropy_in_sync += 1;
                    return Ok(None);
                }
                return self.anti_entropy_request(now).map(Some);
            }
            AntiEntropyView::Request { digest } => {
                self.merge_digest_tombstones(now, &digest);
                let Comparison {
                    batch,
                    wants,
                    wants_left_out,
                } = self.compare_with(now, digest.records, &digest.tombstones);
                if wants_left_out {
                    self.wants_cursor = wants.last().cloned();
                }
                self.wants_asked.clone_from(&wants);
                (!batch.is_empty() || !wants.is_empty())
                    .then_some(AntiEntropyMessage::Reply { batch, wants })
            }
            AntiEntropyView::Reply { batch, wants } => {
                self.merge_batch_parts(now, &batch.tombstones, batch.records);
                let batch = self.wanted(&wants);
                (!batch.is_empty()).then_some(AntiEntropyMessage::Push { batch })
            }
            AntiEntropyView::Response { digest, batch } => {
                self.merge_batch_parts(now, &batch.tombstones, batch.records);
                self.merge_digest_tombstones(now, &digest);
                let batch = self
                    .compare_with(now, digest.records, &digest.tombstones)
                    .batch;
                (!batch.is_empty()).then_some(AntiEntropyMessage::Push { batch })
            }
            AntiEntropyView::Push { batch } => {
                // The answer to our last `Reply`, in the order asked: if it
                // was cut short, the next `Reply` asks from after its last
                // record (one we asked for: no other push moves the cursor).
                let asked = std::mem::take(&mut self.wants_asked);
                if batch.truncated
                    && let Some(last) = batch.records.last()
                    && asked.contains(&last.node_id)
                {
                    self.wants_cursor = Some(last.node_id.clone());
                }
                self.merge_batch_parts(now, &batch.tombstones, batch.records);
                None
            }
        };
        reply
            .map(|reply| wire::encode_anti_entropy(&reply, message_bytes_max))
            .transpose()
    }

    fn merge_digest_tombstones(&mut self, now: Duration, digest: &DigestView<'_>) {
        for tombstone in &digest.tombstones {
            self.merge_tombstone(now, tombstone);
        }
    }

    /// When [`Self::handle_timeout`] next has work: the earliest of the next
    /// refresh, the next anti-entropy round and the next tombstone expiry.
    pub fn poll_timeout(&self) -> Duration {
        let next_expiry = self.tombstone_expires_at.values().min().copied();
        [
            Some(self.refresh_at),
            Some(self.anti_entropy_at),
            next_expiry,
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("the refresh deadline is always set")
    }

    /// Does whatever is due at `now`: expires tombstones, refreshes the local
    /// record (returning its delta to broadcast if it fits), and asks for an
    /// anti-entropy round. A refresh that fails (record too large, node
    /// removed) is logged and retried one interval later. A refresh with
    /// nothing material to say publishes nothing (see `worth_publishing`).
    pub fn handle_timeout(&mut self, now: Duration) -> Vec<TelemetryAction> {
        let mut actions = Vec::new();
        self.expire_tombstones(now);
        let publish = if now >= self.refresh_at {
            self.worth_publishing(now)
        } else {
            Publish::No
        };
        if publish == Publish::No && now >= self.refresh_at {
            self.counters.refreshes_unchanged += 1;
            self.refresh_at = now + self.config.refresh_interval;
        }
        if publish != Publish::No {
            match self.refresh(now) {
                // A heartbeat only refreshes ages and positions: it spreads by
                // anti-entropy, so a steady cluster costs no gossip at all.
                Ok(_) if publish == Publish::Heartbeat => {}
                Ok(_) => match self.local_delta(now) {
                    Ok(delta) => actions.push(TelemetryAction::Broadcast(delta)),
                    Err(error) => {
                        tracing::debug!(%error, "local telemetry delta not broadcast");
                    }
                },
                Err(error) => {
                    tracing::warn!(node = %self.node_id, %error, "telemetry refresh failed");
                    self.refresh_at = now + self.config.refresh_interval;
                }
            }
        }
        if now >= self.anti_entropy_at {
            actions.push(TelemetryAction::StartAntiEntropy);
            let regular = self.config.anti_entropy_interval;
            let interval = match self.anti_entropy_ramp.take() {
                Some(ramp) if ramp < regular => {
                    self.anti_entropy_ramp = Some(ramp * 2);
                    ramp
                }
                _ => regular,
            };
            self.anti_entropy_at = now + interval;
        }
        debug_assert!(self.poll_timeout() > now, "nothing is left due");
        actions
    }

    /// Whether a refresh now should publish a new version, and how: the
    /// first one and material changes are broadcast; a heartbeat is not.
    fn worth_publishing(&self, now: Duration) -> Publish {
        let (Some(published_at), Some(current)) =
            (self.published_at, self.map.record(&self.node_id))
        else {
            return Publish::Change;
        };
        if self
            .build_record(current.version, now)
            .differs_materially(current)
        {
            Publish::Change
        } else if now.saturating_sub(published_at) >= self.config.heartbeat_for(self.map.len()) {
            Publish::Heartbeat
        } else {
            Publish::No
        }
    }

    /// Catches up after this node joined (or rejoined) the cluster: an
    /// anti-entropy round `first` from `now`, then rounds at doubling
    /// intervals until they reach `anti_entropy_interval`. Records
    /// published before the join were gossiped to the members of the time
    /// only, and a joiner would otherwise wait a whole interval, then pick a
    /// peer that may lack them too (a clean boot of 10 agents missed its
    /// 15 s convergence bound this way in 1 seed of 200).
    pub fn anti_entropy_soon(&mut self, now: Duration, first: Duration) {
        self.anti_entropy_at = self.anti_entropy_at.min(now + first);
        self.anti_entropy_ramp = Some(first * 2);
    }

    /// Publishes a new version at the next timer even if nothing changed
    /// (the node just joined: its peers have never seen its record).
    pub fn publish_soon(&mut self, now: Duration) {
        self.published_at = None;
        self.refresh_at = self.refresh_at.min(now);
    }

    /// Shifts this store's timers by `offset` (less than one interval), so
    /// agents started together do not refresh and exchange in step. The
    /// driver draws `offset` from its seeded RNG.
    pub fn set_phase(&mut self, offset: Duration) {
        self.refresh_at += offset.min(self.config.refresh_interval);
        self.anti_entropy_at += offset.min(self.config.anti_entropy_interval);
    }

    fn check_invariants(&self) {
        debug_assert_eq!(
            self.tombstone_expires_at.len(),
            self.map.tombstones().len(),
            "one expiry per tombstone"
        );
        debug_assert!(self.tombstone_expires_at.len() <= self.config.tombstones_max);
    }
}

/// A duration in whole milliseconds, saturating.
fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
