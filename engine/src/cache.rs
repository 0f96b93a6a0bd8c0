//! A bounded in-memory cache of whole pack files.
//!
//! Tree blobs are small and read in bursts (a backup reads its parent's trees,
//! a restore or diff walks every tree), and they live in their own packs. Reading
//! a tree pack once and serving its blobs from memory turns thousands of ranged
//! reads into a few whole-object reads. Packs are immutable, so cached bytes
//! never go stale.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::repo::id::PackId;

pub struct PackCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    packs: HashMap<PackId, Arc<Vec<u8>>>,
    order: VecDeque<PackId>,
    bytes: usize,
}

impl PackCache {
    /// A cache holding at most `capacity` bytes of packs.
    pub fn new(capacity: usize) -> Self {
        PackCache {
            inner: Mutex::new(Inner::default()),
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
        if let Some(p) = self.inner.lock().expect("pack cache").packs.get(id) {
            return Ok(p.clone());
        }
        let bytes = Arc::new(load()?);
        if bytes.len() <= self.capacity {
            let mut g = self.inner.lock().expect("pack cache");
            if !g.packs.contains_key(id) {
                while g.bytes + bytes.len() > self.capacity {
                    let Some(old) = g.order.pop_front() else {
                        break;
                    };
                    if let Some(b) = g.packs.remove(&old) {
                        g.bytes -= b.len();
                    }
                }
                g.bytes += bytes.len();
                g.order.push_back(*id);
                g.packs.insert(*id, bytes.clone());
            }
        }
        Ok(bytes)
    }

    pub fn cached_bytes(&self) -> usize {
        self.inner.lock().expect("pack cache").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;

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
        assert!(c.cached_bytes() <= 100, "evicted the oldest");
        // Too big to cache: returned, not kept.
        c.get_or_load(&id(3), || -> Result<_, ()> { Ok(vec![3u8; 500]) })
            .unwrap();
        assert!(c.cached_bytes() <= 100);
        assert!(c.get_or_load(&id(4), || Err("boom")).is_err());
    }
}
