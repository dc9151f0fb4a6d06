//! The agent's own durable state in sled: today the node generation.
//!
//! One sled database per data dir (sled locks it, so two agents can never
//! share a data dir by mistake). Later the Raft log and catalog live in
//! other trees of the same database.

use std::path::Path;

use anyhow::{Context, Result, bail};
use shoal_membership::Generation;

const GENERATION_KEY: &[u8] = b"generation";
/// The sled directory inside the data dir.
pub const SLED_DIR: &str = "db";

/// The agent's sled database.
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens (or creates) the database under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("data_dir: create {}", data_dir.display()))?;
        let path = data_dir.join(SLED_DIR);
        let db = sled::Config::new().path(&path).open().with_context(|| {
            format!(
                "data_dir: open {} (is another agent using it?)",
                path.display()
            )
        })?;
        Ok(Self { db })
    }

    /// The database, for the Raft log store (its own trees).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Reads the last generation, adds one, and makes it durable before
    /// returning it: no two starts ever share a generation.
    pub fn bump_generation(&self) -> Result<Generation> {
        let agent = self.db.open_tree("agent").context("open tree agent")?;
        let previous = match agent.get(GENERATION_KEY).context("read generation")? {
            Some(bytes) => {
                let Ok(bytes) = <[u8; 8]>::try_from(bytes.as_ref()) else {
                    bail!(
                        "data_dir: stored generation is corrupt ({} bytes)",
                        bytes.len()
                    );
                };
                u64::from_be_bytes(bytes)
            }
            None => 0,
        };
        let next = previous.checked_add(1).context("generation overflow")?;
        agent
            .insert(GENERATION_KEY, &next.to_be_bytes())
            .context("write generation")?;
        agent.flush().context("flush generation")?;
        Ok(Generation(next))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Opens `data_dir` once the previous handle's file lock is gone. sled
    /// releases it from its background flusher thread, a moment after the
    /// last `Db` handle is dropped (spacejam/sled#1234): an agent opens its
    /// data dir once per process, but a test that reopens it in the same
    /// process must wait for the lock, within a deadline.
    fn reopen(data_dir: &Path) -> Store {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Store::open(data_dir) {
                Ok(store) => return store,
                Err(error)
                    if format!("{error:#}").contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => panic!("{error:#}"),
            }
        }
    }

    #[test]
    fn generation_is_bumped_on_every_open() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap().bump_generation().unwrap();
        let second = reopen(dir.path()).bump_generation().unwrap();
        let third = reopen(dir.path()).bump_generation().unwrap();
        assert_eq!(first, Generation(1));
        assert_eq!(second, Generation(2));
        assert_eq!(third, Generation(3));
    }

    /// While an agent holds the data dir, another open is refused with a
    /// message that names it.
    #[test]
    fn a_data_dir_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path()).unwrap();
        let error = Store::open(dir.path()).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("is another agent using it?"), "{message}");
    }
}
