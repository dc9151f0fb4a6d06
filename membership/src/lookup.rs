//! A hash map that cannot be walked, for the membership core's per-packet
//! lookups.
//!
//! The cores iterate only ordered collections, so that no hash order can
//! leak into bytes or decisions (`clippy.toml` forbids `HashMap`). Some maps
//! are only ever looked up, for every packet: at 1,000 members a B-tree
//! lookup there (about ten comparisons, each a likely cache miss) was 6 % of
//! a cluster's boot (the lookup was that of a repeat filter since removed;
//! the maps left are when each member was last heard and the active index). [`LookupMap`] is a hash map with no way to walk it in
//! hash order: lookups, updates, an order-free `retain`, and a sorted view.

use std::collections::BTreeMap;
use std::hash::Hash;

/// A map keyed by hash, with no iteration in hash order.
#[derive(Clone, Debug)]
pub(crate) struct LookupMap<K, V>(fnv::FnvHashMap<K, V>);

impl<K, V> Default for LookupMap<K, V> {
    fn default() -> Self {
        Self(fnv::FnvHashMap::default())
    }
}

impl<K: Eq + Hash, V> LookupMap<K, V> {
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.0.get(key)
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.0.contains_key(key)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.0.insert(key, value)
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.0.remove(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Keeps the entries `keep` accepts. `keep` sees them in hash order, so
    /// it must decide each entry on its own, with no side effect.
    pub(crate) fn retain(&mut self, keep: impl Fn(&K, &V) -> bool) {
        self.0.retain(|key, value| keep(key, value));
    }

    /// Every entry, in key order.
    pub(crate) fn sorted(&self) -> BTreeMap<&K, &V>
    where
        K: Ord,
    {
        self.0.iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_map_is_seen_whole_only_in_key_order() {
        let mut map = LookupMap::default();
        for key in [7u32, 3, 9, 1, 5] {
            assert_eq!(map.insert(key, key * 10), None);
        }
        assert_eq!(map.insert(3, 31), Some(30));
        assert_eq!(map.get(&3), Some(&31));
        assert_eq!(map.remove(&1), Some(10));
        assert!(!map.contains_key(&1));
        map.retain(|key, _| *key != 5);
        assert_eq!(map.len(), 3);
        let sorted: Vec<(u32, u32)> = map.sorted().into_iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(sorted, [(3, 31), (7, 70), (9, 90)]);
    }
}
