//! A decorator that fails on command, for crash and fault tests.

use std::sync::atomic::{AtomicI64, Ordering};

use super::{Backend, DynBackend, Leftover, ObjectKey};
use crate::error::BackendError;
use crate::repo::format::ObjectKind;

/// Passes calls through to `inner` until `fail_puts_after` puts have succeeded,
/// then fails every later put (as a crash would stop them). Negative: never fail.
/// Deletes can be made to fail the same way with [`FaultyBackend::fail_deletes_after`].
pub struct FaultyBackend {
    inner: DynBackend,
    puts_left: AtomicI64,
    deletes_left: AtomicI64,
}

impl FaultyBackend {
    pub fn new(inner: DynBackend, fail_puts_after: i64) -> Self {
        FaultyBackend {
            inner,
            puts_left: AtomicI64::new(fail_puts_after),
            deletes_left: AtomicI64::new(-1),
        }
    }

    /// Also fails every delete after `n` deletes have succeeded (negative: never).
    pub fn fail_deletes_after(self, n: i64) -> Self {
        self.deletes_left.store(n, Ordering::SeqCst);
        self
    }
}

/// Takes one from a budget; false once it is spent (negative budgets never
/// are). Atomic, so parallel puts cannot both take the last one.
fn spend(left: &AtomicI64) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
        0 => None,
        n if n > 0 => Some(n - 1),
        n => Some(n),
    })
    .is_ok()
}

impl Backend for FaultyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        if !spend(&self.puts_left) {
            return Err(BackendError::Injected(format!("put {key}")));
        }
        self.inner.put(key, data)
    }
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        self.inner.get_range(key, offset, len)
    }
    fn get_range_into(
        &self,
        key: &ObjectKey,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.inner.get_range_into(key, offset, len, buf)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>, BackendError> {
        self.inner.list(kind)
    }
    fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        if !spend(&self.deletes_left) {
            return Err(BackendError::Injected(format!("delete {key}")));
        }
        self.inner.delete(key)
    }
    fn modified(&self, key: &ObjectKey) -> Result<Option<jiff::Timestamp>, BackendError> {
        self.inner.modified(key)
    }
    fn exists(&self, key: &ObjectKey) -> Result<bool, BackendError> {
        self.inner.exists(key)
    }
    fn leftovers(&self) -> Result<Vec<Leftover>, BackendError> {
        self.inner.leftovers()
    }
    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), BackendError> {
        if !spend(&self.deletes_left) {
            return Err(BackendError::Injected(format!("remove {}", leftover.path)));
        }
        self.inner.remove_leftover(leftover)
    }
}
