//! The engine's one cache: a least-recently-used map bounded in bytes, and
//! on it the cache of whole tree packs.
//!
//! [`Lru`] holds what is expensive to fetch again and never goes stale
//! (objects are immutable): whole tree packs here ([`PackCache`]), the
//! mount's decompressed chunks (`vfs::cache`), and ranges read from a remote
//! backend next.
//!
//! Tree blobs are small and read in bursts (a backup reads its parent's trees,
//! a restore or diff walks every tree), and they live in their own packs. Reading
//! a tree pack once and serving its blobs from memory turns thousands of ranged
//! reads into a few whole-object reads.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::repo::id::PackId;

/// A least-recently-used map bounded by the sum of its entries' weights (bytes).
/// The newest entry is always kept, even when it alone exceeds the bound.
pub(crate) struct Lru<K, V> {
    map: HashMap<K, Entry<V>>,
    order: BTreeMap<u64, K>,
    tick: u64,
    weight: usize,
    capacity: usize,
}

struct Entry<V> {
    value: V,
    weight: usize,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            weight: 0,
            capacity,
        }
    }

    /// The value under `key`, marked as just used.
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let e = self.map.get_mut(key)?;
        self.order.remove(&e.tick);
        e.tick = self.tick;
        self.order.insert(self.tick, key.clone());
        Some(e.value.clone())
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Inserts or replaces `key`, then evicts the least recently used entries
    /// until the total weight fits.
    pub(crate) fn insert(&mut self, key: K, value: V, weight: usize) {
        self.remove(&key);
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.map.insert(
            key,
            Entry {
                value,
                weight,
                tick: self.tick,
            },
        );
        self.weight += weight;
        self.evict();
    }

    /// Changes the weight of `key` if it is still present.
    pub(crate) fn set_weight(&mut self, key: &K, weight: usize) {
        if let Some(e) = self.map.get_mut(key) {
            self.weight = self.weight - e.weight + weight;
            e.weight = weight;
            self.evict();
        }
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let e = self.map.remove(key)?;
        self.order.remove(&e.tick);
        self.weight -= e.weight;
        Some(e.value)
    }

    fn evict(&mut self) {
        while self.weight > self.capacity && self.map.len() > 1 {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.map.remove(&key) {
                self.weight -= e.weight;
            }
        }
    }

    /// The sum of the entries' weights.
    pub(crate) fn weight(&self) -> usize {
        self.weight
    }
}

/// Whole tree packs, bounded in bytes; a pack larger than the bound is
/// returned but not kept.
pub struct PackCache {
    lru: Mutex<Lru<PackId, Arc<Vec<u8>>>>,
    capacity: usize,
}

impl PackCache {
    /// A cache holding at most `capacity` bytes of packs.
    pub fn new(capacity: usize) -> Self {
        PackCache {
            lru: Mutex::new(Lru::new(capacity)),
            capacity,
        }
    }

    /// The cached pack, or `load()`'s result, cached if it fits. Loading runs
    /// outside the lock; two threads may load the same pack once each.
    pub fn get_or_load<E>(
        &self,
        id: &PackId,
        load: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Arc<Vec<u8>>, E> {
        if let Some(p) = self.lru.lock().expect("pack cache").get(id) {
            return Ok(p);
        }
        let bytes = Arc::new(load()?);
        if bytes.len() <= self.capacity {
            let mut lru = self.lru.lock().expect("pack cache");
            if !lru.contains(id) {
                lru.insert(*id, bytes.clone(), bytes.len());
            }
        }
        Ok(bytes)
    }

    pub fn cached_bytes(&self) -> usize {
        self.lru.lock().expect("pack cache").weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;

    #[test]
    fn lru_evicts_least_recently_used_by_weight() {
        let mut l: Lru<u32, u32> = Lru::new(10);
        l.insert(1, 1, 4);
        l.insert(2, 2, 4);
        assert_eq!(l.get(&1), Some(1)); // 2 is now the oldest
        l.insert(3, 3, 4);
        assert!(!l.contains(&2), "the least recently used entry goes first");
        assert!(l.contains(&1) && l.contains(&3));
        assert_eq!(l.weight(), 8);
        l.insert(4, 4, 100);
        assert!(
            l.contains(&4),
            "an entry larger than the bound is still kept"
        );
        assert_eq!(l.weight(), 100);
        l.set_weight(&4, 2);
        l.insert(5, 5, 2);
        assert_eq!(l.weight(), 4);
        assert_eq!(l.remove(&4), Some(4));
        assert_eq!(l.weight(), 2);
    }

    #[test]
    fn holds_at_most_its_capacity_and_serves_hits_without_loading() {
        let c = PackCache::new(100);
        let id = |b: u8| PackId(Id([b; 32]));
        let mut loads = 0;
        for round in 0..2 {
            let got = c
                .get_or_load(&id(1), || -> Result<_, ()> {
                    loads += 1;
                    Ok(vec![1u8; 60])
                })
                .unwrap();
            assert_eq!(got.len(), 60, "round {round}");
        }
        assert_eq!(loads, 1);
        c.get_or_load(&id(2), || -> Result<_, ()> { Ok(vec![2u8; 60]) })
            .unwrap();
        assert_eq!(c.cached_bytes(), 60, "evicted the least recently used");
        // Too big to cache: returned, not kept.
        c.get_or_load(&id(3), || -> Result<_, ()> { Ok(vec![3u8; 500]) })
            .unwrap();
        assert_eq!(c.cached_bytes(), 60);
        assert!(c.get_or_load(&id(4), || Err("boom")).is_err());
    }
}
