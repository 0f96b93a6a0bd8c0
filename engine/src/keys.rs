//! Key slots of an encrypted repository: unlocking, listing, adding, removing.
//!
//! Every slot seals the same master key under its own passphrase, so a
//! passphrase is added or removed without touching any data.

use jiff::Timestamp;
use serde::Serialize;

use crate::backend::{DynBackend, ObjectKey};
use crate::crypto::{KdfParams, KeySlot};
use crate::error::{CryptoError, Error, FormatError, Result};
use crate::format::{ObjectKind, decode_checked, encode_checked};
use crate::id::{Id, KeyId};
use crate::repo::Repository;

/// What `pvsnap key list` shows of a slot.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: KeyId,
    pub created: String,
    pub hostname: String,
    /// Whether this slot opened the repository in this process.
    pub current: bool,
}

/// Stores a new slot sealing `master` under `password`.
pub(crate) fn write_slot(
    backend: &DynBackend,
    master: &[u8; 32],
    password: &[u8],
    kdf: KdfParams,
) -> Result<KeyId> {
    let slot = KeySlot::create(
        master,
        password,
        kdf,
        Timestamp::now().to_string(),
        crate::repo::hostname(),
    )?;
    let body = encode_checked(
        ObjectKind::Key,
        false,
        &serde_json::to_vec_pretty(&slot).expect("key slot serializes"),
    );
    let id = KeyId(Id::random());
    backend.put(&ObjectKey::new(ObjectKind::Key, id.to_hex()), &body)?;
    Ok(id)
}

fn read_slots(backend: &DynBackend) -> Result<Vec<(KeyId, KeySlot)>> {
    let mut out = Vec::new();
    for (name, _) in backend.list(ObjectKind::Key)? {
        let Ok(id) = name.parse::<KeyId>() else {
            continue;
        };
        let bytes = backend.get(&ObjectKey::new(ObjectKind::Key, &name))?;
        let (_, json) = decode_checked(&bytes, ObjectKind::Key, &|| format!("key {name}"))?;
        let slot: KeySlot = serde_json::from_slice(json).map_err(|e| FormatError::Invalid {
            what: format!("key {name}"),
            detail: e.to_string(),
        })?;
        out.push((id, slot));
    }
    Ok(out)
}

/// The master key and the slot `password` opens.
pub(crate) fn unlock(backend: &DynBackend, password: &[u8]) -> Result<(KeyId, [u8; 32])> {
    let slots = read_slots(backend)?;
    if slots.is_empty() {
        return Err(FormatError::Invalid {
            what: format!("{}/keys", backend.location()),
            detail: "encrypted repository without any key slot".into(),
        }
        .into());
    }
    for (id, slot) in slots {
        if let Some(master) = slot.open(password)? {
            return Ok((id, master));
        }
    }
    Err(CryptoError::WrongPassword.into())
}

fn encrypted(repo: &Repository) -> Result<&(KeyId, std::sync::Arc<[u8; 32]>)> {
    repo.master()
        .ok_or_else(|| Error::Invalid("this repository is not encrypted; it has no keys".into()))
}

impl Repository {
    /// Every key slot, oldest first.
    pub fn keys(&self) -> Result<Vec<KeyInfo>> {
        let (current, _) = encrypted(self)?;
        let mut keys: Vec<KeyInfo> = read_slots(self.backend())?
            .into_iter()
            .map(|(id, s)| KeyInfo {
                id,
                created: s.created,
                hostname: s.hostname,
                current: id == *current,
            })
            .collect();
        keys.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(keys)
    }

    /// Adds a slot for another passphrase.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let (_, master) = encrypted(self)?;
        write_slot(self.backend(), master, password, kdf)
    }

    /// Removes a slot; refuses the slot in use and the last one.
    pub fn remove_key(&self, id: &KeyId) -> Result<()> {
        let (current, _) = encrypted(self)?;
        let keys = self.keys()?;
        if !keys.iter().any(|k| k.id == *id) {
            return Err(Error::Invalid(format!(
                "no key {}; list them with `pvsnap key list`",
                id.short()
            )));
        }
        if id == current {
            return Err(Error::Invalid(format!(
                "key {} is the one this password opened; open the repository with another key to remove it",
                id.short()
            )));
        }
        if keys.len() < 2 {
            return Err(Error::Invalid(
                "refusing to remove the last key: the repository could never be opened again"
                    .into(),
            ));
        }
        Ok(self
            .backend()
            .delete(&ObjectKey::new(ObjectKind::Key, id.to_hex()))?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::repo::InitOptions;

    fn cheap() -> KdfParams {
        KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        }
    }

    #[test]
    fn add_open_with_new_key_and_remove_old() {
        let b: DynBackend = Arc::new(MemoryBackend::new());
        let repo = Repository::init(
            b.clone(),
            InitOptions {
                password: Some(b"first".to_vec()),
                kdf: cheap(),
                ..Default::default()
            },
        )
        .unwrap();
        let first = repo.keys().unwrap()[0].id;
        let second = repo.add_key(b"second", cheap()).unwrap();
        assert_eq!(repo.keys().unwrap().len(), 2);
        assert!(repo.remove_key(&first).is_err(), "the slot in use");
        let pw = || Ok(b"second".to_vec());
        let via_second = Repository::open(b.clone(), Some(&pw)).unwrap();
        assert!(
            via_second
                .keys()
                .unwrap()
                .iter()
                .any(|k| k.id == second && k.current)
        );
        via_second.remove_key(&first).unwrap();
        let old = || Ok(b"first".to_vec());
        assert!(matches!(
            Repository::open(b.clone(), Some(&old)),
            Err(Error::Crypto(CryptoError::WrongPassword))
        ));
        assert!(via_second.remove_key(&second).is_err(), "the last slot");
        // The same content ids either way: the master key did not change.
        assert_eq!(
            repo.crypto().content_id(b"x"),
            via_second.crypto().content_id(b"x")
        );
    }

    #[test]
    fn unencrypted_repositories_have_no_keys() {
        let b: DynBackend = Arc::new(MemoryBackend::new());
        let repo = Repository::init(b, InitOptions::default()).unwrap();
        assert!(repo.keys().is_err());
    }
}
