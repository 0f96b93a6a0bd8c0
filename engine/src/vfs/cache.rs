//! The cache of decompressed chunks that the virtual filesystem's readers and
//! read-ahead share, on the engine's byte-bounded LRU ([`crate::cache::Lru`]).
//!
//! A chunk is loaded once even when a reader and a read-ahead task want it at
//! the same time: the first asker inserts a *loading* slot and reads; everybody
//! else waits on that slot. A failed load removes the slot, so the next reader
//! tries again and sees the error itself. Read-ahead jobs run on a [`Loader`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};

use crate::cache::Lru;
use crate::error::Result;
use crate::repo::id::ChunkId;

/// One chunk in the cache: being loaded, or loaded.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Loading,
    Ready(Arc<Vec<u8>>),
    Failed,
}

/// The cache of decompressed chunks, bounded in bytes.
pub(crate) struct ChunkCache {
    lru: Mutex<Lru<ChunkId, Arc<Slot>>>,
}

impl ChunkCache {
    pub(crate) fn new(capacity: usize) -> Self {
        ChunkCache {
            lru: Mutex::new(Lru::new(capacity)),
        }
    }

    fn lru(&self) -> std::sync::MutexGuard<'_, Lru<ChunkId, Arc<Slot>>> {
        self.lru.lock().expect("chunk cache lock")
    }

    /// The chunk's bytes, from the cache or by calling `load`. `expected_len`
    /// is the chunk's size, counted against the bound while it loads.
    pub(crate) fn get(
        &self,
        id: &ChunkId,
        expected_len: usize,
        load: &dyn Fn() -> Result<Vec<u8>>,
    ) -> Result<Arc<Vec<u8>>> {
        loop {
            let (slot, owner) = {
                let mut lru = self.lru();
                match lru.get(id) {
                    Some(slot) => (slot, false),
                    None => {
                        let slot = Arc::new(Slot::default());
                        lru.insert(*id, slot.clone(), expected_len);
                        (slot, true)
                    }
                }
            };
            if owner {
                return self.fill(id, &slot, load);
            }
            let mut state = slot.state.lock().expect("chunk slot");
            while matches!(*state, SlotState::Loading) {
                state = slot.ready.wait(state).expect("chunk slot");
            }
            match &*state {
                SlotState::Ready(data) => return Ok(data.clone()),
                // The loader failed and removed the slot: try ourselves.
                _ => continue,
            }
        }
    }

    /// Starts loading `id` unless it is cached or loading; returns the slot to
    /// fill when the caller must load it.
    pub(crate) fn claim(&self, id: &ChunkId, expected_len: usize) -> Option<Claim> {
        let mut lru = self.lru();
        if lru.contains(id) {
            return None;
        }
        let slot = Arc::new(Slot::default());
        lru.insert(*id, slot.clone(), expected_len);
        Some(Claim { id: *id, slot })
    }

    /// Loads a claimed chunk (a read-ahead task calls this).
    pub(crate) fn fill_claim(
        &self,
        claim: Claim,
        load: &dyn Fn() -> Result<Vec<u8>>,
    ) -> Result<Arc<Vec<u8>>> {
        self.fill(&claim.id, &claim.slot, load)
    }

    fn fill(
        &self,
        id: &ChunkId,
        slot: &Arc<Slot>,
        load: &dyn Fn() -> Result<Vec<u8>>,
    ) -> Result<Arc<Vec<u8>>> {
        let result = load();
        let mut state = slot.state.lock().expect("chunk slot");
        let out = match result {
            Ok(data) => {
                let data = Arc::new(data);
                *state = SlotState::Ready(data.clone());
                let mut lru = self.lru();
                // Only account for the slot if it is still the cached one.
                if lru.get(id).is_some_and(|s| Arc::ptr_eq(&s, slot)) {
                    lru.set_weight(id, data.len());
                }
                Ok(data)
            }
            Err(e) => {
                *state = SlotState::Failed;
                let mut lru = self.lru();
                if lru.get(id).is_some_and(|s| Arc::ptr_eq(&s, slot)) {
                    lru.remove(id);
                }
                Err(e)
            }
        };
        drop(state);
        slot.ready.notify_all();
        out
    }
}

/// Threads that run read-ahead jobs. Idle threads block on a channel; rayon's
/// workers would spin a while first, which a busy machine pays for on every
/// chunk. The threads end when the loader is dropped.
pub(crate) struct Loader {
    tx: mpsc::Sender<Job>,
    pending: Arc<AtomicUsize>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Loader {
    pub(crate) fn new(threads: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pvsnap-readahead-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().expect("read-ahead queue").recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start a read-ahead thread: {e}");
            }
        }
        Loader {
            tx,
            pending: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Jobs queued or running.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let pending = self.pending.clone();
        pending.fetch_add(1, Ordering::Relaxed);
        let job = Box::new(move || {
            job();
            pending.fetch_sub(1, Ordering::Relaxed);
        });
        if self.tx.send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A chunk claimed for loading by [`ChunkCache::claim`].
pub(crate) struct Claim {
    id: ChunkId,
    slot: Arc<Slot>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::repo::id::Id;

    #[test]
    fn a_chunk_is_loaded_once_and_a_failure_is_retried() {
        let cache = ChunkCache::new(1 << 20);
        let id = ChunkId(Id([7; 32]));
        let loads = AtomicUsize::new(0);
        let ok = || {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(vec![1, 2, 3])
        };
        let claim = cache.claim(&id, 3).expect("not cached yet");
        assert!(
            cache.claim(&id, 3).is_none(),
            "a loading chunk is not claimed twice"
        );
        cache.fill_claim(claim, &ok).unwrap();
        assert_eq!(*cache.get(&id, 3, &ok).unwrap(), vec![1, 2, 3]);
        assert_eq!(loads.load(Ordering::SeqCst), 1);

        let other = ChunkId(Id([8; 32]));
        let fail = || Err(Error::Invalid("boom".into()));
        assert!(cache.get(&other, 3, &fail).is_err());
        assert_eq!(
            *cache.get(&other, 3, &ok).unwrap(),
            vec![1, 2, 3],
            "the failure was not cached"
        );
    }
}
