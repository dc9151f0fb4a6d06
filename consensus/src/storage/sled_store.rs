//! The sled-backed log store the agent uses: the only module of this crate that
//! does IO.
//!
//! Layout, in one sled tree so that every [`LogStore`] write is one atomic
//! [`sled::Batch`]:
//! * `m` — metadata: hard state, conf state, snapshot metadata (protobuf inside
//!   rmp-serde), and the index/term of the last compacted entry;
//! * `l` + big-endian index — one log entry (protobuf).
//!
//! The snapshot's data (the encoded catalog, megabytes) lives in its own file,
//! `snapshot-INDEX-TERM.bin` in the snapshot directory, written to a temporary
//! name, synced and renamed before the metadata that points at it is written.
//! Kept in sled it would sit in the same page as `m` and be rewritten with every
//! page consolidation (a fresh multi-megabyte file every few writes).
//!
//! Durability: sled 0.34's `flush` ends in `sync_file_range`, which neither flushes
//! the disk's write cache nor file metadata, and sled never syncs its blob files
//! (values over ~128 KiB). A sync therefore also `fdatasync`s sled's data file, and
//! the blob files when a large entry was written since the last sync. Only then is a
//! write acknowledged. The sync's work is a [`SyncJob`] that runs on any thread (sled
//! is thread-safe): with [`SledStorage::sync_in_background`] the node hands it to the
//! agent, which runs it on its own thread while the event loop goes on.
//!
//! Reads are served from an in-memory mirror ([`LogState`]) loaded at open, so raft's
//! frequent reads never touch disk. Writes update the mirror and collect in one
//! pending [`sled::Batch`] (and the snapshot files to write); the sync job writes
//! the snapshot files, applies the batch, flushes and `fdatasync`s. So sled sees one
//! atomic batch per sync however many writes it covers, and none of that work runs
//! on the caller's thread when the job runs elsewhere. A crash keeps exactly what
//! the last finished sync covered.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

use super::{
    Compaction, LogState, LogStore, SyncJob, WriteOp, impl_raft_storage, log_store_writes,
};
use crate::error::Error;

const META_KEY: &[u8] = b"m";
/// Entries larger than this may be stored by sled as separate blob files.
const BLOB_THRESHOLD_BYTES: usize = 64 * 1024;
const LOG_PREFIX: u8 = b'l';
const TREE_NAME: &[u8] = b"shoal-raft";

fn log_key(index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = LOG_PREFIX;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// A snapshot the node saved, whose file a thread is writing. Until the file is
/// durable, sled keeps the previous snapshot's metadata and the entries the new
/// one compacts away; a sync after it finished records the new one.
#[derive(Debug)]
struct SnapshotSave {
    writer: std::thread::JoinHandle<Result<(), Error>>,
    compaction: Compaction,
    /// Log entries it compacts away: `first..end`.
    compacted: std::ops::Range<u64>,
    path: PathBuf,
}

/// What the next sync writes.
#[derive(Default)]
struct Pending {
    /// Snapshot files, written durably before the batch whose metadata names them.
    snapshot_files: Vec<(PathBuf, Snapshot)>,
    batch: sled::Batch,
    /// A large entry is in the batch: sync sled's blob files too.
    blobs: bool,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("snapshot_files", &self.snapshot_files.len())
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
}

/// A [`LogStore`] persisted in sled, with snapshots in their own files.
#[derive(Debug)]
pub struct SledStorage {
    db: sled::Db,
    tree: sled::Tree,
    live: LogState,
    snapshot_requested: std::cell::Cell<bool>,
    /// sled's directory: its data file is `db`, its blobs are in `blobs/`.
    sled_dir: PathBuf,
    /// Where snapshot files live.
    snapshot_dir: PathBuf,
    /// Writes since the last sync started, for the next sync job.
    pending: Pending,
    /// Snapshot files superseded by a newer one, deleted after the next sync.
    stale_snapshots: Vec<PathBuf>,
    /// Where sled's metadata says the log starts: behind `live` while the file of
    /// the newest saved snapshot is still being written.
    stored: Compaction,
    /// The node's own newest snapshot, being written to its file by its own thread.
    saving: Option<SnapshotSave>,
    /// sled's data file, kept open for `fdatasync`.
    data_file: Arc<File>,
    /// Hand syncs to the caller ([`LogStore::syncs_in_background`]).
    background: bool,
}

fn snapshot_file(dir: &Path, index: u64, term: u64) -> PathBuf {
    dir.join(format!("snapshot-{index:020}-{term:020}.bin"))
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> Error {
    Error::storage(format!("{what} {}: {err}", path.display()))
}

/// Writes `data` to `path` durably: a temporary file, synced, renamed, and the
/// directory synced.
fn write_durably(path: &Path, data: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|err| io_error("create", &tmp, err))?;
    file.write_all(data)
        .map_err(|err| io_error("write", &tmp, err))?;
    file.sync_all().map_err(|err| io_error("sync", &tmp, err))?;
    std::fs::rename(&tmp, path).map_err(|err| io_error("rename", path, err))?;
    sync_dir(path.parent().expect("snapshot files live in a directory"))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|dir_file| dir_file.sync_all())
        .map_err(|err| io_error("sync directory", dir, err))
}

impl SledStorage {
    /// Opens (or creates) the store in an open sled database whose files are in
    /// `sled_dir`, with snapshot files in `snapshot_dir`, loading what they hold.
    /// The agent shares one database for the Raft store and its own keys; this
    /// store uses only its own tree.
    pub fn open(db: sled::Db, sled_dir: &Path, snapshot_dir: &Path) -> Result<SledStorage, Error> {
        std::fs::create_dir_all(snapshot_dir)
            .map_err(|err| io_error("create", snapshot_dir, err))?;
        let tree = db.open_tree(TREE_NAME).map_err(Error::storage)?;
        let live = match tree.get(META_KEY).map_err(Error::storage)? {
            None => LogState::default(),
            Some(meta) => {
                let mut entries = Vec::new();
                for item in tree.scan_prefix([LOG_PREFIX]) {
                    let (_, value) = item.map_err(Error::storage)?;
                    let entry = Entry::parse_from_bytes(&value).map_err(|err| Error::Corrupt {
                        reason: format!("stored log entry does not decode: {err}"),
                    })?;
                    entries.push(entry);
                }
                let mut live = LogState::decode_meta(&meta, Vec::new(), entries)?;
                let metadata = live.snapshot.get_metadata();
                let path = snapshot_file(snapshot_dir, metadata.index, metadata.term);
                match std::fs::read(&path) {
                    Ok(data) => live.snapshot.data = data.into(),
                    // No snapshot has been stored (index 0 with no data).
                    Err(err)
                        if err.kind() == std::io::ErrorKind::NotFound && metadata.index == 0 => {}
                    Err(err) => {
                        return Err(Error::Corrupt {
                            reason: format!("snapshot file {}: {err}", path.display()),
                        });
                    }
                }
                live
            }
        };
        // Leftovers of a crash between writing a snapshot file and its metadata.
        let current = live.snapshot.get_metadata();
        let keep = snapshot_file(snapshot_dir, current.index, current.term);
        let stale_snapshots = std::fs::read_dir(snapshot_dir)
            .map_err(|err| io_error("list", snapshot_dir, err))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| *path != keep)
            .collect();
        let data_path = sled_dir.join("db");
        let data_file = File::open(&data_path).map_err(|err| io_error("open", &data_path, err))?;
        let stored = live.compaction();
        Ok(SledStorage {
            db,
            tree,
            live,
            snapshot_requested: std::cell::Cell::new(false),
            sled_dir: sled_dir.to_path_buf(),
            snapshot_dir: snapshot_dir.to_path_buf(),
            pending: Pending::default(),
            stale_snapshots,
            stored,
            saving: None,
            data_file: Arc::new(data_file),
            background: false,
        })
    }

    /// Makes the node hand its syncs to the caller, to run on another thread
    /// ([`crate::RaftNode::take_sync`]); by default the node syncs inline.
    pub fn sync_in_background(mut self, background: bool) -> SledStorage {
        self.background = background;
        self
    }

    /// Opens (or creates) a store under `path`: sled in `path/sled`, snapshots
    /// in `path/raft-snapshots`.
    pub fn open_path(path: &Path) -> Result<SledStorage, Error> {
        let sled_dir = path.join("sled");
        let db = sled::open(&sled_dir).map_err(Error::storage)?;
        SledStorage::open(db, &sled_dir, &path.join("raft-snapshots"))
    }

    fn snapshot_path(&self, metadata: &raft::eraftpb::SnapshotMetadata) -> PathBuf {
        snapshot_file(&self.snapshot_dir, metadata.index, metadata.term)
    }

    /// Marks the file of the snapshot sled's metadata names now as stale: it goes
    /// after the sync that makes the metadata naming its successor durable.
    fn retire_stored_snapshot(&mut self, successor: &Path) {
        if self.stored.snapshot.index > 0 {
            let old = self.snapshot_path(&self.stored.snapshot);
            if old != successor {
                self.stale_snapshots.push(old);
            }
        }
    }

    /// Records the saved snapshot whose file is written (waiting for the writer
    /// if `wait`): the next sync's batch compacts the log and names the new file.
    fn settle_saving(&mut self, wait: bool) -> Result<(), Error> {
        if !wait
            && self
                .saving
                .as_ref()
                .is_some_and(|save| !save.writer.is_finished())
        {
            return Ok(());
        }
        let Some(save) = self.saving.take() else {
            return Ok(());
        };
        save.writer
            .join()
            .map_err(|_| Error::storage("the snapshot writer panicked"))??;
        for index in save.compacted {
            self.pending.batch.remove(&log_key(index));
        }
        self.retire_stored_snapshot(&save.path);
        self.stored = save.compaction;
        Ok(())
    }

    fn write(&mut self, op: WriteOp) -> Result<(), Error> {
        self.live.check(&op)?;
        if let WriteOp::Append(entries) = &op
            && entries
                .iter()
                .any(|entry| entry.data.len() >= BLOB_THRESHOLD_BYTES)
        {
            self.pending.blobs = true;
        }
        if matches!(op, WriteOp::InstallSnapshot(_) | WriteOp::SaveSnapshot(..)) {
            // One snapshot file in flight at a time; a received snapshot replaces
            // everything the saved one would have recorded.
            self.settle_saving(true)?;
        }
        let before_first = self.live.first_index();
        let before_last = self.live.last_index();
        self.live.apply(&op);
        match &op {
            WriteOp::Append(entries) => {
                if let Some(first) = entries.first() {
                    for index in first.index..=before_last {
                        self.pending.batch.remove(&log_key(index));
                    }
                    for entry in entries {
                        let bytes = entry.write_to_bytes().map_err(Error::storage)?;
                        self.pending.batch.insert(&log_key(entry.index), bytes);
                    }
                }
            }
            WriteOp::SetHardState(_) | WriteOp::SetConfState(_) => {}
            WriteOp::InstallSnapshot(snapshot) => {
                // Rare (a follower far behind), and nothing is acknowledged before
                // it is durable: written by the next sync, before its metadata.
                let path = self.snapshot_path(snapshot.get_metadata());
                self.pending
                    .snapshot_files
                    .push((path.clone(), snapshot.clone()));
                self.stale_snapshots.retain(|stale| *stale != path);
                for index in before_first..=before_last {
                    self.pending.batch.remove(&log_key(index));
                }
                self.retire_stored_snapshot(&path);
                self.stored = self.live.compaction();
            }
            WriteOp::SaveSnapshot(snapshot, _) => {
                // The node's own snapshot: its file (megabytes) is written by its
                // own thread, so no sync waits for it.
                let path = self.snapshot_path(snapshot.get_metadata());
                self.stale_snapshots.retain(|stale| *stale != path);
                // A queued file of the same name is older: this one replaces it.
                self.pending
                    .snapshot_files
                    .retain(|(queued, _)| *queued != path);
                let data = snapshot.clone();
                let file = path.clone();
                let writer = std::thread::Builder::new()
                    .name("raft-snapshot".into())
                    .spawn(move || write_durably(&file, &data.data))
                    .map_err(|err| Error::storage(format!("start the snapshot writer: {err}")))?;
                self.saving = Some(SnapshotSave {
                    writer,
                    compaction: self.live.compaction(),
                    compacted: before_first..self.live.first_index(),
                    path,
                });
            }
        }
        Ok(())
    }

    fn note_snapshot_request(&self) {
        self.snapshot_requested.set(true);
    }

    #[cfg(test)]
    #[allow(dead_code)]
    pub(crate) fn live_state(&self) -> LogState {
        self.live.clone()
    }

    /// Opens the store at `path` again in the same process, for tests. sled
    /// 0.34 releases its file lock only when its background flusher thread
    /// exits, a moment after the last handle is dropped (spacejam/sled#1234),
    /// so an immediate reopen can find the lock still held: wait for its
    /// release, with a deadline. (An agent reopens its store in a new process,
    /// whose start the old one's exit precedes.)
    #[cfg(test)]
    #[allow(
        clippy::disallowed_methods,
        reason = "a test waiting for sled's file lock, not core logic"
    )]
    pub(crate) fn reopen_path(path: &Path) -> Result<SledStorage, Error> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match SledStorage::open_path(path) {
                Err(error)
                    if error.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                opened => return opened,
            }
        }
    }
}

impl_raft_storage!(SledStorage, |this| this.live, note_snapshot_request);

impl LogStore for SledStorage {
    log_store_writes!();

    fn start_sync(&mut self) -> Result<SyncJob, Error> {
        self.settle_saving(false)?;
        let meta = self.live.encode_meta_as(&self.stored)?;
        self.pending.batch.insert(META_KEY, meta);
        let db = self.db.clone();
        let tree = self.tree.clone();
        let data_file = self.data_file.clone();
        let data_path = self.sled_dir.join("db");
        let pending = std::mem::take(&mut self.pending);
        let blobs = pending.blobs.then(|| self.sled_dir.join("blobs"));
        // Superseded snapshot files go once the metadata naming their successor is
        // durable: after this job's flush. No later write can bring one back while
        // the job runs: a new snapshot's index is above every earlier one's.
        let current = self.snapshot_path(&self.stored.snapshot);
        let mut stale = std::mem::take(&mut self.stale_snapshots);
        stale.retain(|path| *path != current);
        Ok(SyncJob::new(move || {
            for (path, snapshot) in &pending.snapshot_files {
                write_durably(path, &snapshot.data)?;
            }
            tree.apply_batch(pending.batch).map_err(Error::storage)?;
            db.flush().map_err(Error::storage)?;
            // sled's flush ends in sync_file_range; make it a real fdatasync.
            data_file
                .sync_data()
                .map_err(|err| io_error("sync", &data_path, err))?;
            if let Some(blobs) = blobs
                && let Ok(listing) = std::fs::read_dir(&blobs)
            {
                for entry in listing.filter_map(Result::ok) {
                    File::open(entry.path())
                        .and_then(|file| file.sync_data())
                        .map_err(|err| io_error("sync", &entry.path(), err))?;
                }
                sync_dir(&blobs)?;
            }
            for path in stale {
                if let Err(err) = std::fs::remove_file(&path) {
                    tracing::debug!(path = %path.display(), %err, "stale snapshot not removed");
                }
            }
            Ok(())
        }))
    }

    /// Waits for a snapshot file still being written, so that a sync on this
    /// thread covers every earlier write, the snapshot included.
    fn sync(&mut self) -> Result<(), Error> {
        self.settle_saving(true)?;
        self.start_sync()?.run()
    }

    fn syncs_in_background(&self) -> bool {
        self.background
    }

    fn last_snapshot(&self) -> Snapshot {
        self.live.snapshot.clone()
    }

    fn take_snapshot_request(&mut self) -> bool {
        self.snapshot_requested.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(index: u64, term: u64, data_bytes: usize) -> Snapshot {
        let mut snapshot = Snapshot {
            data: vec![7u8; data_bytes].into(),
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.mut_conf_state().voters = vec![1];
        snapshot
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|listing| {
                listing
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn snapshots_live_in_their_own_files_and_old_ones_go_after_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStorage::open_path(dir.path()).unwrap();
        store.install_snapshot(&snapshot(5, 2, 3 << 20)).unwrap();
        store.sync().unwrap();
        store.install_snapshot(&snapshot(9, 3, 3 << 20)).unwrap();
        // Nothing is written before the sync: the old file is still the only one.
        assert_eq!(
            files(&dir.path().join("raft-snapshots")),
            [format!("snapshot-{:020}-{:020}.bin", 5, 2)]
        );
        store.sync().unwrap();
        assert_eq!(
            files(&dir.path().join("raft-snapshots")),
            [format!("snapshot-{:020}-{:020}.bin", 9, 3)]
        );
        // sled holds no multi-megabyte value, so it writes no blob files.
        assert!(files(&dir.path().join("sled").join("blobs")).is_empty());
        drop(store);
        let reopened = SledStorage::reopen_path(dir.path()).unwrap();
        assert_eq!(reopened.last_snapshot(), snapshot(9, 3, 3 << 20));
    }

    #[test]
    fn a_missing_snapshot_file_is_reported_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStorage::open_path(dir.path()).unwrap();
        store.install_snapshot(&snapshot(5, 2, 10)).unwrap();
        store.sync().unwrap();
        drop(store);
        std::fs::remove_file(snapshot_file(&dir.path().join("raft-snapshots"), 5, 2)).unwrap();
        assert!(matches!(
            SledStorage::reopen_path(dir.path()),
            Err(Error::Corrupt { .. })
        ));
    }
}
