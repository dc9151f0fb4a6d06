//! Where a Raft node keeps its log, hard state, configuration and snapshot.
//!
//! [`LogStore`] extends raft-rs's read-only [`raft::Storage`] with the writes a
//! [`crate::RaftNode`] makes while handling a `Ready`, and with [`LogStore::sync`],
//! which makes every earlier write durable. The node calls `sync` before it sends any
//! message or applies any entry that depends on those writes.
//!
//! Two implementations share one in-memory representation ([`LogState`]) for reads:
//! * [`MemStorage`] — for tests and the simulator. It keeps what was written and what
//!   was synced apart, so [`MemStorage::crash`] can drop unsynced writes as a power
//!   loss would.
//! * [`SledStorage`] — for the agent. Writes go to sled as one atomic batch each and
//!   `sync` flushes sled; reopening loads the synced state.
//!
//! Both must behave identically; a model test checks this on random operation
//! sequences.

mod mem;
pub mod sled_store;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{RaftState, StorageError};
use serde::{Deserialize, Serialize};

pub use mem::{MEM_UNSYNCED_WRITES_MAX, MemStorage};
pub use sled_store::SledStorage;

use crate::error::Error;

/// A Raft log store: raft-rs's read interface plus the writes a node makes.
///
/// Every write is visible to reads at once; it is durable only after [`LogStore::sync`].
/// An error from any method is fatal for the node that owns the store.
pub trait LogStore: raft::Storage {
    /// Appends `entries` (consecutive, starting at most one past the last index),
    /// first discarding any entries at or after `entries[0].index`.
    fn append(&mut self, entries: &[Entry]) -> Result<(), Error>;
    /// Replaces the hard state (term, vote, commit).
    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), Error>;
    /// Replaces the configuration state (voters, learners).
    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), Error>;
    /// Installs a snapshot received from the leader: the log is replaced by the
    /// snapshot, the commit index moves to it, the configuration becomes its own.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), Error>;
    /// Records a snapshot the node made of its own applied state and discards log
    /// entries below `compact_index` (which must not exceed `snapshot index + 1`).
    fn save_snapshot(&mut self, snapshot: &Snapshot, compact_index: u64) -> Result<(), Error>;
    /// Starts making every earlier write durable: the returned job does the slow
    /// part (flushing, `fdatasync`) and may run on another thread while the store
    /// takes further writes. Those are not covered by this job.
    fn start_sync(&mut self) -> Result<SyncJob, Error>;
    /// Makes every earlier write durable, on this thread.
    fn sync(&mut self) -> Result<(), Error> {
        self.start_sync()?.run()
    }
    /// Whether the node should hand its syncs to the caller
    /// ([`crate::RaftNode::take_sync`]) instead of running them itself. The agent's
    /// sled store does, so the event loop keeps running while the disk syncs.
    fn syncs_in_background(&self) -> bool {
        false
    }
    /// The last saved or installed snapshot, with its data (an empty snapshot at index
    /// 0 if there is none).
    fn last_snapshot(&self) -> Snapshot;
    /// Whether raft asked for a snapshot the store could not give (too old, or not
    /// naming the receiving peer) since the last call. The node then saves a fresh one.
    fn take_snapshot_request(&mut self) -> bool;
}

/// The slow part of a sync ([`LogStore::start_sync`]): runs once, on any thread.
pub struct SyncJob(Box<dyn FnOnce() -> Result<(), Error> + Send>);

impl SyncJob {
    /// A job that does `work`.
    pub fn new(work: impl FnOnce() -> Result<(), Error> + Send + 'static) -> SyncJob {
        SyncJob(Box::new(work))
    }

    /// A job with nothing left to do (the store made its writes durable at the start).
    pub fn done() -> SyncJob {
        SyncJob::new(|| Ok(()))
    }

    /// Runs the job.
    pub fn run(self) -> Result<(), Error> {
        (self.0)()
    }
}

impl std::fmt::Debug for SyncJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncJob")
    }
}

/// One write to a log store; the unit [`MemStorage`] journals until sync and the
/// model tests generate.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum WriteOp {
    Append(Vec<Entry>),
    SetHardState(HardState),
    SetConfState(ConfState),
    InstallSnapshot(Snapshot),
    SaveSnapshot(Snapshot, u64),
}

/// A snapshot's metadata and the last compacted entry: what a store's metadata says
/// about where its log starts.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Compaction {
    pub(crate) snapshot: SnapshotMetadata,
    pub(crate) truncated_index: u64,
    pub(crate) truncated_term: u64,
}

/// The contents of a log store, in memory. Reads of both stores are served from here.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LogState {
    pub(crate) hard_state: HardState,
    pub(crate) conf_state: ConfState,
    pub(crate) snapshot: Snapshot,
    /// The index and term of the entry just before `entries[0]` (or before the next
    /// appended entry): the last compacted entry.
    pub(crate) truncated_index: u64,
    pub(crate) truncated_term: u64,
    pub(crate) entries: Vec<Entry>,
}

impl LogState {
    pub(crate) fn first_index(&self) -> u64 {
        self.truncated_index + 1
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.truncated_index + self.entries.len() as u64
    }

    /// Checks that an op is acceptable, without changing anything. Keeping validation
    /// apart from application lets both stores refuse a bad write before touching disk.
    pub(crate) fn check(&self, op: &WriteOp) -> Result<(), Error> {
        match op {
            WriteOp::Append(entries) => {
                let Some(first) = entries.first() else {
                    return Ok(());
                };
                if first.index <= self.truncated_index {
                    return Err(Error::storage(format!(
                        "append at {} overwrites compacted entries (compacted to {})",
                        first.index, self.truncated_index
                    )));
                }
                if first.index > self.last_index() + 1 {
                    return Err(Error::storage(format!(
                        "append at {} leaves a gap after {}",
                        first.index,
                        self.last_index()
                    )));
                }
                let consecutive = entries
                    .windows(2)
                    .all(|pair| pair[1].index == pair[0].index + 1);
                if !consecutive {
                    return Err(Error::storage("appended entries are not consecutive"));
                }
                Ok(())
            }
            WriteOp::SetHardState(_) | WriteOp::SetConfState(_) | WriteOp::InstallSnapshot(_) => {
                Ok(())
            }
            WriteOp::SaveSnapshot(snapshot, compact_index) => {
                let index = snapshot.get_metadata().index;
                if *compact_index > index + 1 || index > self.last_index() {
                    return Err(Error::storage(format!(
                        "snapshot at {index} compacting to {compact_index} is beyond the log (last {})",
                        self.last_index()
                    )));
                }
                Ok(())
            }
        }
    }

    /// Applies a checked op.
    pub(crate) fn apply(&mut self, op: &WriteOp) {
        match op {
            WriteOp::Append(entries) => {
                let Some(first) = entries.first() else { return };
                let keep = (first.index - self.first_index()) as usize;
                self.entries.truncate(keep);
                self.entries.extend_from_slice(entries);
            }
            WriteOp::SetHardState(hard_state) => self.hard_state = hard_state.clone(),
            WriteOp::SetConfState(conf_state) => self.conf_state = conf_state.clone(),
            WriteOp::InstallSnapshot(snapshot) => {
                let metadata = snapshot.get_metadata();
                self.snapshot = snapshot.clone();
                self.truncated_index = metadata.index;
                self.truncated_term = metadata.term;
                self.entries.clear();
                self.hard_state.term = self.hard_state.term.max(metadata.term);
                self.hard_state.commit = self.hard_state.commit.max(metadata.index);
                self.conf_state = metadata.get_conf_state().clone();
            }
            WriteOp::SaveSnapshot(snapshot, compact_index) => {
                self.snapshot = snapshot.clone();
                if *compact_index > self.first_index() {
                    let n_dropped = (*compact_index - self.first_index()) as usize;
                    let last_dropped = &self.entries[n_dropped - 1];
                    self.truncated_index = last_dropped.index;
                    self.truncated_term = last_dropped.term;
                    self.entries.drain(..n_dropped);
                }
            }
        }
        debug_assert!(
            self.entries
                .iter()
                .enumerate()
                .all(|(offset, entry)| entry.index == self.truncated_index + 1 + offset as u64),
            "log entries are consecutive after the truncation point"
        );
    }

    pub(crate) fn raft_state(&self) -> RaftState {
        RaftState::new(self.hard_state.clone(), self.conf_state.clone())
    }

    pub(crate) fn entries(
        &self,
        low: u64,
        high: u64,
        max_size_bytes: Option<u64>,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = self.first_index();
        let mut entries = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size_bytes);
        Ok(entries)
    }

    pub(crate) fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if index < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(index - self.first_index()) as usize].term)
    }

    /// The stored snapshot, if it is recent enough for `request_index` and includes
    /// the peer `to` in its configuration (raft-rs refuses a snapshot that does not
    /// name the receiver). Otherwise the store must produce a fresh one: the caller
    /// records the request (see [`LogStore::take_snapshot_request`]) and raft retries.
    pub(crate) fn snapshot_for(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let metadata = self.snapshot.get_metadata();
        let conf_state = metadata.get_conf_state();
        let names_peer = conf_state
            .voters
            .iter()
            .chain(&conf_state.learners)
            .chain(&conf_state.voters_outgoing)
            .chain(&conf_state.learners_next)
            .any(|id| *id == to);
        if metadata.index < request_index.max(1) || !names_peer {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }

    /// The snapshot and compaction point this state is at.
    pub(crate) fn compaction(&self) -> Compaction {
        Compaction {
            snapshot: self.snapshot.get_metadata().clone(),
            truncated_index: self.truncated_index,
            truncated_term: self.truncated_term,
        }
    }

    /// Encodes the metadata with the snapshot and compaction point `at` instead of
    /// this state's own (a store whose newest snapshot file is still being written).
    pub(crate) fn encode_meta_as(&self, at: &Compaction) -> Result<Vec<u8>, Error> {
        let meta = StoredMeta {
            hard_state: self.hard_state.write_to_bytes().map_err(Error::storage)?,
            conf_state: self.conf_state.write_to_bytes().map_err(Error::storage)?,
            snapshot_metadata: at.snapshot.write_to_bytes().map_err(Error::storage)?,
            truncated_index: at.truncated_index,
            truncated_term: at.truncated_term,
        };
        rmp_serde::to_vec_named(&meta).map_err(Error::storage)
    }

    pub(crate) fn decode_meta(
        meta_bytes: &[u8],
        snapshot_data: Vec<u8>,
        entries: Vec<Entry>,
    ) -> Result<LogState, Error> {
        let corrupt = |what: &str, err: &dyn std::fmt::Display| Error::Corrupt {
            reason: format!("stored {what} does not decode: {err}"),
        };
        let meta: StoredMeta =
            rmp_serde::from_slice(meta_bytes).map_err(|err| corrupt("metadata", &err))?;
        let mut snapshot = Snapshot::default();
        let metadata = SnapshotMetadata::parse_from_bytes(&meta.snapshot_metadata)
            .map_err(|err| corrupt("snapshot metadata", &err))?;
        // An unset protobuf field and a default one compare unequal; keep "no
        // snapshot" exactly as it was written.
        if metadata != SnapshotMetadata::default() {
            snapshot.set_metadata(metadata);
        }
        snapshot.data = snapshot_data.into();
        let state = LogState {
            hard_state: HardState::parse_from_bytes(&meta.hard_state)
                .map_err(|err| corrupt("hard state", &err))?,
            conf_state: ConfState::parse_from_bytes(&meta.conf_state)
                .map_err(|err| corrupt("conf state", &err))?,
            snapshot,
            truncated_index: meta.truncated_index,
            truncated_term: meta.truncated_term,
            entries,
        };
        let consecutive = state
            .entries
            .iter()
            .enumerate()
            .all(|(offset, entry)| entry.index == state.truncated_index + 1 + offset as u64);
        if !consecutive {
            return Err(Error::Corrupt {
                reason: "stored log entries are not consecutive".to_owned(),
            });
        }
        Ok(state)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredMeta {
    hard_state: Vec<u8>,
    conf_state: Vec<u8>,
    snapshot_metadata: Vec<u8>,
    truncated_index: u64,
    truncated_term: u64,
}

/// Adapts [`LogState`] reads to raft-rs's [`raft::Storage`] for a store type whose
/// reads go through `$read` (a closure-like expression giving `&LogState`).
macro_rules! impl_raft_storage {
    ($store:ty, |$this:ident| $read:expr, $request:ident) => {
        impl raft::Storage for $store {
            fn initial_state(&self) -> raft::Result<raft::RaftState> {
                let $this = self;
                Ok($read.raft_state())
            }

            fn entries(
                &self,
                low: u64,
                high: u64,
                max_size: impl Into<Option<u64>>,
                _context: raft::GetEntriesContext,
            ) -> raft::Result<Vec<raft::eraftpb::Entry>> {
                let $this = self;
                $read.entries(low, high, max_size.into())
            }

            fn term(&self, index: u64) -> raft::Result<u64> {
                let $this = self;
                $read.term(index)
            }

            fn first_index(&self) -> raft::Result<u64> {
                let $this = self;
                Ok($read.first_index())
            }

            fn last_index(&self) -> raft::Result<u64> {
                let $this = self;
                Ok($read.last_index())
            }

            fn snapshot(
                &self,
                request_index: u64,
                to: u64,
            ) -> raft::Result<raft::eraftpb::Snapshot> {
                let $this = self;
                let result = $read.snapshot_for(request_index, to);
                if result.is_err() {
                    self.$request();
                }
                result
            }
        }
    };
}
pub(crate) use impl_raft_storage;

/// The [`LogStore`] writes of a store that funnels every write through its own
/// `fn write(&mut self, op: WriteOp) -> Result<(), Error>` (both stores do; they
/// differ only in where `write` puts the change and in `sync`).
macro_rules! log_store_writes {
    () => {
        fn append(&mut self, entries: &[Entry]) -> Result<(), Error> {
            self.write(WriteOp::Append(entries.to_vec()))
        }

        fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), Error> {
            self.write(WriteOp::SetHardState(hard_state.clone()))
        }

        fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), Error> {
            self.write(WriteOp::SetConfState(conf_state.clone()))
        }

        fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), Error> {
            self.write(WriteOp::InstallSnapshot(snapshot.clone()))
        }

        fn save_snapshot(&mut self, snapshot: &Snapshot, compact_index: u64) -> Result<(), Error> {
            self.write(WriteOp::SaveSnapshot(snapshot.clone(), compact_index))
        }
    };
}

pub(crate) use log_store_writes;

#[cfg(test)]
mod tests;
