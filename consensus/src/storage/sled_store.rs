//! The sled-backed log store the agent uses: the only module of this crate that
//! does IO.
//!
//! Layout, in one sled tree so that every [`LogStore`] write is one atomic
//! [`sled::Batch`]:
//! * `m` — metadata: hard state, conf state, snapshot metadata (protobuf inside
//!   rmp-serde), and the index/term of the last compacted entry;
//! * `s` — the last snapshot's data (the encoded catalog);
//! * `l` + big-endian index — one log entry (protobuf).
//!
//! Reads are served from an in-memory mirror ([`LogState`]) loaded at open, so raft's
//! frequent reads never touch disk. Writes go to the mirror and to sled;
//! [`LogStore::sync`] calls `sled::Db::flush`, after which they survive a crash.

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

use super::{LogState, LogStore, WriteOp, impl_raft_storage};
use crate::error::Error;

const META_KEY: &[u8] = b"m";
const SNAPSHOT_DATA_KEY: &[u8] = b"s";
const LOG_PREFIX: u8 = b'l';
const TREE_NAME: &[u8] = b"shoal-raft";

fn log_key(index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = LOG_PREFIX;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// A [`LogStore`] persisted in sled.
#[derive(Debug)]
pub struct SledStorage {
    db: sled::Db,
    tree: sled::Tree,
    live: LogState,
    snapshot_requested: std::cell::Cell<bool>,
}

impl SledStorage {
    /// Opens (or creates) the store in an open sled database, loading what it holds.
    /// The agent shares one database for the Raft store and its own keys; this store
    /// uses only its own tree.
    pub fn open(db: sled::Db) -> Result<SledStorage, Error> {
        let tree = db.open_tree(TREE_NAME).map_err(Error::storage)?;
        let live = match tree.get(META_KEY).map_err(Error::storage)? {
            None => LogState::default(),
            Some(meta) => {
                let snapshot_data = tree
                    .get(SNAPSHOT_DATA_KEY)
                    .map_err(Error::storage)?
                    .map(|data| data.to_vec())
                    .unwrap_or_default();
                let mut entries = Vec::new();
                for item in tree.scan_prefix([LOG_PREFIX]) {
                    let (_, value) = item.map_err(Error::storage)?;
                    let entry = Entry::parse_from_bytes(&value).map_err(|err| Error::Corrupt {
                        reason: format!("stored log entry does not decode: {err}"),
                    })?;
                    entries.push(entry);
                }
                LogState::decode_meta(&meta, snapshot_data, entries)?
            }
        };
        Ok(SledStorage {
            db,
            tree,
            live,
            snapshot_requested: std::cell::Cell::new(false),
        })
    }

    /// Opens (or creates) a sled database at `path` and the store in it.
    pub fn open_path(path: &std::path::Path) -> Result<SledStorage, Error> {
        let db = sled::open(path).map_err(Error::storage)?;
        SledStorage::open(db)
    }

    fn write(&mut self, op: WriteOp) -> Result<(), Error> {
        self.live.check(&op)?;
        let before_first = self.live.first_index();
        let before_last = self.live.last_index();
        self.live.apply(&op);
        let mut batch = sled::Batch::default();
        match &op {
            WriteOp::Append(entries) => {
                if let Some(first) = entries.first() {
                    for index in first.index..=before_last {
                        batch.remove(&log_key(index));
                    }
                    for entry in entries {
                        let bytes = entry.write_to_bytes().map_err(Error::storage)?;
                        batch.insert(&log_key(entry.index), bytes);
                    }
                }
            }
            WriteOp::SetHardState(_) | WriteOp::SetConfState(_) => {}
            WriteOp::InstallSnapshot(snapshot) => {
                for index in before_first..=before_last {
                    batch.remove(&log_key(index));
                }
                batch.insert(SNAPSHOT_DATA_KEY, snapshot.data.to_vec());
            }
            WriteOp::SaveSnapshot(snapshot, _) => {
                for index in before_first..self.live.first_index() {
                    batch.remove(&log_key(index));
                }
                batch.insert(SNAPSHOT_DATA_KEY, snapshot.data.to_vec());
            }
        }
        batch.insert(META_KEY, self.live.encode_meta()?);
        self.tree.apply_batch(batch).map_err(Error::storage)
    }

    fn note_snapshot_request(&self) {
        self.snapshot_requested.set(true);
    }

    #[cfg(test)]
    #[allow(dead_code)]
    pub(crate) fn live_state(&self) -> LogState {
        self.live.clone()
    }
}

impl_raft_storage!(SledStorage, |this| this.live, note_snapshot_request);

impl LogStore for SledStorage {
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

    fn sync(&mut self) -> Result<(), Error> {
        self.db.flush().map_err(Error::storage)?;
        Ok(())
    }

    fn last_snapshot(&self) -> Snapshot {
        self.live.snapshot.clone()
    }

    fn take_snapshot_request(&mut self) -> bool {
        self.snapshot_requested.take()
    }
}
