//! The dry-run decorator: reads go through, writes are discarded.

use super::{Backend, DynBackend, Leftover, ObjectKey, forward::Forward};
use crate::error::BackendError;

/// Decorator that reads through to the inner backend and discards every write,
/// so `snapshot --dry-run` runs the whole pipeline and stores nothing.
pub struct DryRun {
    inner: DynBackend,
}

impl DryRun {
    pub fn new(inner: DynBackend) -> Self {
        DryRun { inner }
    }
}

impl Forward for DryRun {
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }
    fn location(&self) -> String {
        format!("{} (dry run)", self.inner.location())
    }
    fn put(&self, _key: &ObjectKey, _data: &[u8]) -> Result<(), BackendError> {
        Ok(())
    }
    /// Reads keep the hint, so a dry run over a cache reads trees from it.
    fn get_tree_pack(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        self.inner.get_tree_pack(key)
    }
    fn delete(&self, _key: &ObjectKey) -> Result<(), BackendError> {
        Ok(())
    }
    fn replace_damaged(&self, _key: &ObjectKey, _data: &[u8]) -> Result<(), BackendError> {
        Ok(())
    }
    fn remove_leftover(&self, _leftover: &Leftover) -> Result<(), BackendError> {
        Ok(())
    }
}
