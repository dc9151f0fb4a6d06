//! The keys of the catalog's dedup window, and how the window is encoded.
//!
//! The window is searched once for every applied command, on the seeds and on
//! every agent's catalog copy, and it holds up to
//! [`super::REQUESTS_REMEMBERED_MAX`] ids that often share long prefixes
//! (`register.db-17.1`, `activate.db-17.1`). Keyed by the id alone, each step
//! of a search follows the id's pointer and compares its bytes. A
//! [`WindowKey`] puts a 64-bit hash of the id in front: almost every step
//! compares two numbers held in the B-tree's node, and the id's bytes are read
//! only when the hashes are equal.
//!
//! The window is encoded as before, a map from request id to record in id
//! order, so catalog snapshots are byte for byte what they were.

use std::collections::BTreeMap;
use std::hash::Hasher;

use serde::{Deserialize, Deserializer, Serializer};

use super::RequestRecord;
use crate::ids::RequestId;

/// A request id behind a hash of it; ordered by the hash, then the id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct WindowKey {
    /// FNV-1a of the id's bytes: fixed, so every process orders alike.
    hash: u64,
    id: RequestId,
}

impl WindowKey {
    pub(super) fn new(id: RequestId) -> Self {
        let mut hasher = fnv::FnvHasher::default();
        hasher.write(id.as_str().as_bytes());
        Self {
            hash: hasher.finish(),
            id,
        }
    }
}

/// `#[serde(with)]` for the window: a map from id to record, in id order.
pub(super) fn serialize<S: Serializer>(
    window: &BTreeMap<WindowKey, RequestRecord>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut entries: Vec<(&RequestId, &RequestRecord)> = window
        .iter()
        .map(|(key, record)| (&key.id, record))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    serializer.collect_map(entries)
}

/// `#[serde(with)]` for the window (see [`serialize`]).
pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<WindowKey, RequestRecord>, D::Error> {
    let by_id = BTreeMap::<RequestId, RequestRecord>::deserialize(deserializer)?;
    Ok(by_id
        .into_iter()
        .map(|(id, record)| (WindowKey::new(id), record))
        .collect())
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::ids::CatalogIndex;

    /// The window as the catalog encodes it.
    #[derive(Serialize)]
    struct Encoded<'a>(
        #[serde(serialize_with = "serialize")] &'a BTreeMap<WindowKey, RequestRecord>,
    );

    fn record(index: u64) -> RequestRecord {
        RequestRecord {
            index: CatalogIndex(index),
            op_sha256: crate::catalog::Digest([index as u8; 32]),
            result: Ok(crate::catalog::Outcome::Done),
        }
    }

    /// The window encodes exactly as the map by id it replaced, and decodes
    /// back to the same window.
    #[test]
    fn the_window_encodes_as_a_map_by_id() {
        let ids = [
            "w9",
            "register.db-17.1",
            "activate.db-17.1",
            "w10",
            "a",
            "z-last",
        ];
        let by_id: BTreeMap<RequestId, RequestRecord> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (RequestId::new(*id).unwrap(), record(i as u64)))
            .collect();
        let window: BTreeMap<WindowKey, RequestRecord> = by_id
            .iter()
            .map(|(id, record)| (WindowKey::new(id.clone()), record.clone()))
            .collect();
        let encoded = rmp_serde::to_vec_named(&Encoded(&window)).unwrap();
        assert_eq!(encoded, rmp_serde::to_vec_named(&by_id).unwrap());
        let mut decoder = rmp_serde::Deserializer::from_read_ref(&encoded);
        assert_eq!(deserialize(&mut decoder).unwrap(), window);
    }

    /// Keys are found by id whatever the hash order, and equal ids make
    /// equal keys.
    #[test]
    fn keys_find_their_ids() {
        let window: BTreeMap<WindowKey, u64> = (0..1_000u64)
            .map(|i| {
                (
                    WindowKey::new(RequestId::new(format!("req-{i}")).unwrap()),
                    i,
                )
            })
            .collect();
        for i in 0..1_000u64 {
            let key = WindowKey::new(RequestId::new(format!("req-{i}")).unwrap());
            assert_eq!(window.get(&key), Some(&i));
        }
        let absent = WindowKey::new(RequestId::new("req-1000").unwrap());
        assert_eq!(window.get(&absent), None);
    }
}
