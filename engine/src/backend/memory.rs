//! An in-memory backend for tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use jiff::Timestamp;

use super::{Backend, ObjectKey, check_range};
use crate::error::BackendError;
use crate::repo::format::ObjectKind;

#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<ObjectKey, (Vec<u8>, Timestamp)>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces an object's bytes behind the contract's back (for corruption tests).
    pub fn tamper(&self, key: &ObjectKey, f: impl FnOnce(&mut Vec<u8>)) {
        let mut g = self.objects.lock().expect("lock");
        if let Some((v, _)) = g.get_mut(key) {
            f(v)
        }
    }

    /// Back-dates (or forward-dates) an object's write time, for tests of
    /// age-based rules without waiting.
    pub fn set_modified(&self, key: &ObjectKey, time: Timestamp) {
        if let Some((_, t)) = self.objects.lock().expect("lock").get_mut(key) {
            *t = time;
        }
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        let mut g = self.objects.lock().expect("lock");
        match g.get(key) {
            Some((old, _)) if old.as_slice() == data => Ok(()),
            Some(_) => Err(BackendError::Conflict { key: key.path() }),
            None => {
                g.insert(key.clone(), (data.to_vec(), Timestamp::now()));
                Ok(())
            }
        }
    }
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        let g = self.objects.lock().expect("lock");
        g.get(key)
            .map(|(v, _)| v.clone())
            .ok_or_else(|| BackendError::NotFound { key: key.path() })
    }
    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        let g = self.objects.lock().expect("lock");
        let (v, _) = g
            .get(key)
            .ok_or_else(|| BackendError::NotFound { key: key.path() })?;
        check_range(key, offset, len, v.len() as u64)?;
        Ok(v[offset as usize..(offset + len) as usize].to_vec())
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>, BackendError> {
        let g = self.objects.lock().expect("lock");
        Ok(g.iter()
            .filter(|(k, _)| k.kind == kind)
            .map(|(k, (v, _))| (k.name.clone(), v.len() as u64))
            .collect())
    }
    fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        self.objects.lock().expect("lock").remove(key);
        Ok(())
    }
    fn modified(&self, key: &ObjectKey) -> Result<Option<Timestamp>, BackendError> {
        let g = self.objects.lock().expect("lock");
        g.get(key)
            .map(|(_, t)| Some(*t))
            .ok_or_else(|| BackendError::NotFound { key: key.path() })
    }
    fn exists(&self, key: &ObjectKey) -> Result<bool, BackendError> {
        Ok(self.objects.lock().expect("lock").contains_key(key))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_backend_keeps_the_contract() {
        super::super::contract_tests::run(&super::MemoryBackend::new());
    }
}
