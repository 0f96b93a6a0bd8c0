//! One way for a decorator to pass calls on to the backend it wraps.
//!
//! A decorator implements [`Forward`]: it names its inner backend and
//! overrides only the methods it changes; every other method of
//! [`Backend`] goes to the inner backend unchanged, through the blanket
//! `impl Backend for T: Forward`. A method added to [`Backend`] is added
//! here once, and every decorator forwards it.

use super::{Backend, Leftover, ObjectKey};
use crate::error::BackendError;
use crate::repo::format::ObjectKind;

/// A [`Backend`] that wraps another; each method defaults to the inner
/// backend's. See the module documentation.
pub trait Forward: Send + Sync {
    /// The backend calls are passed on to.
    fn inner(&self) -> &dyn Backend;

    fn location(&self) -> String {
        self.inner().location()
    }
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        self.inner().put(key, data)
    }
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        self.inner().get(key)
    }
    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        self.inner().get_range(key, offset, len)
    }
    fn get_range_into(
        &self,
        key: &ObjectKey,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.inner().get_range_into(key, offset, len, buf)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>, BackendError> {
        self.inner().list(kind)
    }
    fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        self.inner().delete(key)
    }
    fn modified(&self, key: &ObjectKey) -> Result<Option<jiff::Timestamp>, BackendError> {
        self.inner().modified(key)
    }
    /// To this decorator's own `put`: a decorator that changes writes
    /// (dry run, faults) changes these too. One that caches overrides it.
    fn put_tree_pack(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        Forward::put(self, key, data)
    }
    /// To this decorator's own `get`, like [`Forward::put_tree_pack`].
    fn get_tree_pack(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        Forward::get(self, key)
    }
    fn exists(&self, key: &ObjectKey) -> Result<bool, BackendError> {
        self.inner().exists(key)
    }
    fn replace_damaged(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        self.inner().replace_damaged(key, data)
    }
    fn parallel_puts(&self) -> usize {
        self.inner().parallel_puts()
    }
    fn parallel_gets(&self) -> usize {
        self.inner().parallel_gets()
    }
    fn leftovers(&self) -> Result<Vec<Leftover>, BackendError> {
        self.inner().leftovers()
    }
    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), BackendError> {
        self.inner().remove_leftover(leftover)
    }
    fn now(&self) -> Result<jiff::Timestamp, BackendError> {
        self.inner().now()
    }
}

impl<T: Forward> Backend for T {
    fn location(&self) -> String {
        Forward::location(self)
    }
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        Forward::put(self, key, data)
    }
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        Forward::get(self, key)
    }
    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        Forward::get_range(self, key, offset, len)
    }
    fn get_range_into(
        &self,
        key: &ObjectKey,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        Forward::get_range_into(self, key, offset, len, buf)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>, BackendError> {
        Forward::list(self, kind)
    }
    fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        Forward::delete(self, key)
    }
    fn modified(&self, key: &ObjectKey) -> Result<Option<jiff::Timestamp>, BackendError> {
        Forward::modified(self, key)
    }
    fn put_tree_pack(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        Forward::put_tree_pack(self, key, data)
    }
    fn get_tree_pack(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        Forward::get_tree_pack(self, key)
    }
    fn exists(&self, key: &ObjectKey) -> Result<bool, BackendError> {
        Forward::exists(self, key)
    }
    fn replace_damaged(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        Forward::replace_damaged(self, key, data)
    }
    fn parallel_puts(&self) -> usize {
        Forward::parallel_puts(self)
    }
    fn parallel_gets(&self) -> usize {
        Forward::parallel_gets(self)
    }
    fn leftovers(&self) -> Result<Vec<Leftover>, BackendError> {
        Forward::leftovers(self)
    }
    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), BackendError> {
        Forward::remove_leftover(self, leftover)
    }
    fn now(&self) -> Result<jiff::Timestamp, BackendError> {
        Forward::now(self)
    }
}
