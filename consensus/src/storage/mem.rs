//! The in-memory log store for tests and the simulator, with simulated crashes.
//!
//! It keeps two copies of the store's contents: `live` (every write, what reads
//! see) and `durable` (what [`LogStore::sync`] made durable), plus the journal of
//! writes since the last sync. In background mode a sync's job carries its part of
//! the journal and makes it durable only when it runs. [`MemStorage::crash`] throws `live` and the journal
//! away and restarts from `durable`, which is exactly what a power loss does to
//! unsynced writes.
//!
//! The store is a cheap handle (`Clone` shares the contents), so a test harness can
//! keep a handle, drop the node that used it, crash it and build a new node on it.

use std::sync::{Arc, Mutex, MutexGuard};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

use super::{LogState, LogStore, SyncJob, WriteOp, impl_raft_storage, log_store_writes};
use crate::error::Error;

/// Most writes journaled between two syncs; a node syncs after every `Ready`, so
/// reaching it means the store is misused.
pub const MEM_UNSYNCED_WRITES_MAX: usize = 1 << 20;

#[derive(Debug, Default)]
struct MemInner {
    live: LogState,
    durable: LogState,
    unsynced: Vec<WriteOp>,
    snapshot_requested: bool,
    /// Syncs are jobs the node hands out ([`LogStore::syncs_in_background`]).
    background: bool,
    /// Crashes so far: a sync job started before a crash makes nothing durable.
    crashes: u64,
}

/// An in-memory [`LogStore`] that can lose unsynced writes on [`MemStorage::crash`].
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    inner: Arc<Mutex<MemInner>>,
}

impl MemStorage {
    /// An empty store.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemInner> {
        // A poisoned lock means a panic while a write was half applied; the contents
        // cannot be trusted, so propagating the panic is the only safe choice.
        self.inner
            .lock()
            .expect("mem storage lock poisoned by an earlier panic")
    }

    /// Makes the node hand its syncs out as jobs, as the agent's sled store does; a
    /// write is then durable only once the job that covers it ran.
    pub fn sync_in_background(self, background: bool) -> MemStorage {
        self.lock().background = background;
        self
    }

    /// Simulates a power loss: every write since the last sync is lost.
    pub fn crash(&self) {
        let mut inner = self.lock();
        inner.live = inner.durable.clone();
        inner.unsynced.clear();
        inner.crashes += 1;
    }

    /// How many writes would be lost by a crash now.
    pub fn unsynced_writes(&self) -> usize {
        self.lock().unsynced.len()
    }

    pub(crate) fn write(&self, op: WriteOp) -> Result<(), Error> {
        let mut inner = self.lock();
        inner.live.check(&op)?;
        if inner.unsynced.len() >= MEM_UNSYNCED_WRITES_MAX {
            return Err(Error::storage("too many unsynced writes"));
        }
        inner.live.apply(&op);
        inner.unsynced.push(op);
        Ok(())
    }

    fn note_snapshot_request(&self) {
        self.lock().snapshot_requested = true;
    }

    #[cfg(test)]
    #[allow(dead_code)]
    pub(crate) fn live_state(&self) -> LogState {
        self.lock().live.clone()
    }
}

impl_raft_storage!(MemStorage, |this| this.lock().live, note_snapshot_request);

impl LogStore for MemStorage {
    log_store_writes!();

    fn start_sync(&mut self) -> Result<SyncJob, Error> {
        let (journal, crashes, background) = {
            let mut inner = self.lock();
            (
                std::mem::take(&mut inner.unsynced),
                inner.crashes,
                inner.background,
            )
        };
        let store = self.clone();
        let job = SyncJob::new(move || {
            let mut inner = store.lock();
            if inner.crashes != crashes {
                return Err(Error::storage("the store crashed during the sync"));
            }
            for op in &journal {
                inner.durable.apply(op);
            }
            Ok(())
        });
        if background {
            return Ok(job);
        }
        job.run()?;
        let inner = self.lock();
        debug_assert_eq!(
            inner.durable, inner.live,
            "after a sync, durable equals live"
        );
        Ok(SyncJob::done())
    }

    fn syncs_in_background(&self) -> bool {
        self.lock().background
    }

    fn last_snapshot(&self) -> Snapshot {
        self.lock().live.snapshot.clone()
    }

    fn take_snapshot_request(&mut self) -> bool {
        std::mem::take(&mut self.lock().snapshot_requested)
    }
}
