//! A decorator that fails on command, for crash and fault tests.

use std::sync::atomic::{AtomicI64, Ordering};

use super::{Backend, DynBackend, ObjectKey};
use crate::error::BackendError;
use crate::format::ObjectKind;

/// Passes calls through to `inner` until `fail_puts_after` puts have succeeded,
/// then fails every later put (as a crash would stop them). Negative: never fail.
pub struct FaultyBackend {
    inner: DynBackend,
    puts_left: AtomicI64,
}

impl FaultyBackend {
    pub fn new(inner: DynBackend, fail_puts_after: i64) -> Self {
        FaultyBackend {
            inner,
            puts_left: AtomicI64::new(fail_puts_after),
        }
    }
}

impl Backend for FaultyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        let left = self.puts_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(BackendError::Injected(format!("put {key}")));
        }
        if left > 0 {
            self.puts_left.fetch_sub(1, Ordering::SeqCst);
        }
        self.inner.put(key, data)
    }
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        self.inner.get_range(key, offset, len)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>, BackendError> {
        self.inner.list(kind)
    }
    fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        self.inner.delete(key)
    }
    fn exists(&self, key: &ObjectKey) -> Result<bool, BackendError> {
        self.inner.exists(key)
    }
}
