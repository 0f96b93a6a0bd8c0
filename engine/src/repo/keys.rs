//! Key slots of an encrypted repository: unlocking, listing, adding, removing.
//!
//! Every slot seals the same master key under its own passphrase, so a
//! passphrase is added or removed without touching any data.

use jiff::Timestamp;
use serde::Serialize;

use crate::backend::{DynBackend, ObjectKey};
use crate::error::{CryptoError, Error, FormatError, Result};
use crate::repo::Repository;
use crate::repo::crypto::{KdfParams, KeySlot};
use crate::repo::format::{ObjectKind, decode_checked, encode_checked};
use crate::repo::id::{Id, KeyId};

/// What `pvsnap key list` shows of a slot.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: KeyId,
    pub created: String,
    pub hostname: String,
    /// Whether this slot opened the repository in this process.
    pub current: bool,
    /// Why the slot cannot be used, when it is damaged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
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

/// Key slots as read: the intact ones, and the damaged ones with the reason.
struct Slots {
    intact: Vec<(KeyId, KeySlot)>,
    damaged: Vec<(String, String)>,
}

/// Largest Argon2 parameters a slot may ask for: far above what pvsnap
/// writes, low enough that a crafted slot cannot take all memory or hours.
const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 64;
/// `nonce (24) || sealed 32-byte master key || tag (16)`.
const SEALED_MASTER_LEN: usize = 24 + 32 + 16;

/// Why a parsed slot cannot be a slot pvsnap wrote, if it cannot.
fn slot_damage(slot: &KeySlot) -> Option<String> {
    let p = slot.params;
    if slot.kdf != "argon2id" {
        return Some(format!("unknown key derivation `{}`", slot.kdf));
    }
    if !(8..=64).contains(&slot.salt.len()) {
        return Some(format!(
            "salt of {} bytes (8 to 64 expected)",
            slot.salt.len()
        ));
    }
    if slot.sealed_master.len() != SEALED_MASTER_LEN {
        return Some(format!(
            "sealed master key of {} bytes ({SEALED_MASTER_LEN} expected)",
            slot.sealed_master.len()
        ));
    }
    if p.m_cost > MAX_M_COST_KIB || p.t_cost > MAX_T_COST || p.p_cost > MAX_P_COST {
        return Some(format!(
            "key derivation parameters m_cost {} t_cost {} p_cost {} are beyond any pvsnap writes",
            p.m_cost, p.t_cost, p.p_cost
        ));
    }
    if let Err(e) = argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32)) {
        return Some(format!(
            "key derivation parameters m_cost {} t_cost {} p_cost {}: {e}",
            p.m_cost, p.t_cost, p.p_cost
        ));
    }
    None
}

/// Reads every slot; bytes that are not a slot pvsnap wrote (header, JSON,
/// sizes, parameters, a checksum) make that slot damaged, not the read fail.
fn read_slots(backend: &DynBackend) -> Result<Slots> {
    let mut slots = Slots {
        intact: Vec::new(),
        damaged: Vec::new(),
    };
    for (name, _) in backend.list(ObjectKind::Key)? {
        let Ok(id) = name.parse::<KeyId>() else {
            continue;
        };
        let bytes = backend.get(&ObjectKey::new(ObjectKind::Key, &name))?;
        match decode_slot(&name, &bytes) {
            Ok(slot) => match slot_damage(&slot) {
                None => slots.intact.push((id, slot)),
                Some(why) => slots.damaged.push((name, why)),
            },
            Err(e) => slots.damaged.push((name, e.to_string())),
        }
    }
    Ok(slots)
}

fn decode_slot(name: &str, bytes: &[u8]) -> Result<KeySlot> {
    let (_, json) = decode_checked(bytes, ObjectKind::Key, &|| format!("key {name}"))?;
    Ok(
        serde_json::from_slice(json).map_err(|e| FormatError::Invalid {
            what: format!("key {name}"),
            detail: e.to_string(),
        })?,
    )
}

/// The master key and the slot `password` opens. When none opens and some
/// slots are damaged, the error names them: the password may be one of theirs.
pub(crate) fn unlock(
    backend: &DynBackend,
    password: &[u8],
) -> Result<(KeyId, zeroize::Zeroizing<[u8; 32]>)> {
    let slots = read_slots(backend)?;
    if slots.intact.is_empty() && slots.damaged.is_empty() {
        return Err(FormatError::Invalid {
            what: format!("{}/keys", backend.location()),
            detail: "encrypted repository without any key slot".into(),
        }
        .into());
    }
    for (id, slot) in slots.intact {
        if let Some(master) = slot.open(password)? {
            return Ok((id, master));
        }
    }
    if slots.damaged.is_empty() {
        return Err(CryptoError::WrongPassword.into());
    }
    for (name, why) in &slots.damaged {
        tracing::warn!("key slot keys/{name} is damaged: {why}");
    }
    Err(CryptoError::DamagedSlots {
        damaged: slots
            .damaged
            .iter()
            .map(|(name, _)| name.get(..8).unwrap_or(name).to_string())
            .collect(),
    }
    .into())
}

fn refuse_empty(password: &[u8]) -> Result<()> {
    if password.is_empty() {
        return Err(Error::Invalid(
            "the new password is empty; give a non-empty one (PVSNAP_NEW_PASSWORD, --new-password-file or the prompt); no key was changed".into(),
        ));
    }
    Ok(())
}

fn encrypted(repo: &Repository) -> Result<&(KeyId, crate::repo::MasterKey)> {
    repo.master()
        .ok_or_else(|| Error::Invalid("this repository is not encrypted; it has no keys".into()))
}

impl Repository {
    /// Every key slot, oldest first.
    pub fn keys(&self) -> Result<Vec<KeyInfo>> {
        let (current, _) = encrypted(self)?;
        let slots = read_slots(self.backend())?;
        let mut keys: Vec<KeyInfo> = slots
            .intact
            .into_iter()
            .map(|(id, s)| KeyInfo {
                id,
                created: s.created,
                hostname: s.hostname,
                current: id == *current,
                damaged: None,
            })
            .collect();
        keys.extend(slots.damaged.into_iter().filter_map(|(name, why)| {
            Some(KeyInfo {
                id: name.parse().ok()?,
                created: String::new(),
                hostname: String::new(),
                current: false,
                damaged: Some(why),
            })
        }));
        keys.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(keys)
    }

    /// Adds a slot for another passphrase; refuses an empty one, which
    /// anybody could type.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let (_, master) = encrypted(self)?;
        refuse_empty(password)?;
        write_slot(self.backend(), master, password, kdf)
    }

    /// Replaces the passphrase that opened this repository, returning the
    /// old slot's id and the new one's. The new slot is written and read
    /// back from storage, and must open the same master key, before the old
    /// slot is removed: a failure or a crash at any point leaves the old
    /// passphrase working, at worst with the new one working too.
    pub fn change_password(&self, password: &[u8], kdf: KdfParams) -> Result<(KeyId, KeyId)> {
        let (old, master) = encrypted(self)?;
        refuse_empty(password)?;
        let new = write_slot(self.backend(), master, password, kdf)?;
        let key = ObjectKey::new(ObjectKind::Key, new.to_hex());
        let opens = decode_slot(&new.to_hex(), &self.backend().get(&key)?)?
            .open(password)?
            .is_some_and(|m| *m == ***master);
        if !opens {
            // Leave nothing half-made behind: the old slot still works.
            let _ = self.backend().delete(&key);
            return Err(Error::Invalid(format!(
                "the new key slot {} did not open the repository when read back; the old password still works and nothing was changed",
                new.short()
            )));
        }
        self.backend()
            .delete(&ObjectKey::new(ObjectKind::Key, old.to_hex()))?;
        Ok((*old, new))
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

    use crate::testutil::cheap_kdf as cheap;

    /// A repository in memory whose one key slot opens with `first`.
    fn with_first_key() -> (DynBackend, Repository) {
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
        (b, repo)
    }

    #[test]
    fn add_open_with_new_key_and_remove_old() {
        let (b, repo) = with_first_key();
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

    /// Opens `b` with `pw`; `Err` when the password opens no slot.
    fn opens(b: &DynBackend, pw: &'static [u8]) -> bool {
        let f = || Ok(pw.to_vec());
        Repository::open(b.clone(), Some(&f)).is_ok()
    }

    #[test]
    fn change_password_never_leaves_the_repository_without_a_working_slot() {
        use crate::backend::faulty::FaultyBackend;
        // The new slot cannot be written: the old password still works.
        let (b, _) = with_first_key();
        let faulty: DynBackend = Arc::new(FaultyBackend::new(b.clone(), 0));
        let f = || Ok(b"first".to_vec());
        let repo = Repository::open(faulty, Some(&f)).unwrap();
        assert!(repo.change_password(b"next", cheap()).is_err());
        assert!(opens(&b, b"first") && !opens(&b, b"next"));
        // The old slot cannot be removed: both work, nothing is lost.
        let faulty: DynBackend = Arc::new(FaultyBackend::new(b.clone(), -1).fail_deletes_after(0));
        let repo = Repository::open(faulty, Some(&f)).unwrap();
        assert!(repo.change_password(b"next", cheap()).is_err());
        assert!(opens(&b, b"first") && opens(&b, b"next"));
        // Empty: refused before anything is written.
        let (b, repo) = with_first_key();
        assert!(repo.change_password(b"", cheap()).is_err());
        assert!(repo.add_key(b"", cheap()).is_err());
        assert_eq!(repo.keys().unwrap().len(), 1);
        // Normal: the old one is gone only after the new one works.
        let (old, new) = repo.change_password(b"next", cheap()).unwrap();
        assert_ne!(old, new);
        assert!(!opens(&b, b"first") && opens(&b, b"next"));
    }

    #[test]
    fn a_damaged_slot_is_named_not_taken_for_a_wrong_password() {
        let (b, repo) = with_first_key();
        let second = repo.add_key(b"second", cheap()).unwrap();
        let key = ObjectKey::new(ObjectKind::Key, second.to_hex());
        let good = b.get(&key).unwrap();
        let (_, json) = decode_checked(&good, ObjectKind::Key, &String::new).unwrap();
        let slot: serde_json::Value = serde_json::from_slice(json).unwrap();
        // Version 1 slots (no checksum), so the fields themselves are judged.
        let with = |field: &str, value: serde_json::Value| {
            let mut v = slot.clone();
            v[field] = value;
            let mut bytes = b"PVSN\x02\x01\x00\x00".to_vec();
            bytes.extend_from_slice(&serde_json::to_vec(&v).unwrap());
            bytes
        };
        // An intact version 1 slot still opens.
        b.delete(&key).unwrap();
        b.put(&key, &with("kdf", "argon2id".into())).unwrap();
        let open = || Ok(b"second".to_vec());
        Repository::open(b.clone(), Some(&open)).expect("a version 1 slot opens");
        let mut flipped = good.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 1;
        let damages: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() / 2].to_vec()),
            ("checksum", flipped),
            ("empty", Vec::new()),
            ("salt", with("salt", "00".into())),
            ("sealed", with("sealed_master", "00".repeat(40).into())),
            (
                "params",
                with(
                    "params",
                    serde_json::json!({"m_cost": u32::MAX, "t_cost": 1, "p_cost": 1}),
                ),
            ),
            (
                "zero",
                with(
                    "params",
                    serde_json::json!({"m_cost": 64, "t_cost": 0, "p_cost": 1}),
                ),
            ),
            ("kdf", with("kdf", "scrypt".into())),
        ];
        for (what, bytes) in damages {
            b.delete(&key).unwrap();
            b.put(&key, &bytes).unwrap();
            for pw in [&b"second"[..], b"third"] {
                let open = || Ok(pw.to_vec());
                match Repository::open(b.clone(), Some(&open)) {
                    Err(Error::Crypto(CryptoError::DamagedSlots { damaged })) => {
                        assert_eq!(damaged, vec![second.to_hex()[..8].to_string()], "{what}");
                    }
                    Err(e) => panic!("{what}: {e}"),
                    Ok(_) => panic!("{what}: opened"),
                }
            }
            let open = || Ok(b"first".to_vec());
            let repo = Repository::open(b.clone(), Some(&open)).unwrap();
            let keys = repo.keys().unwrap();
            assert_eq!(keys.len(), 2, "{what}");
            assert!(
                keys.iter().any(|k| k.id == second && k.damaged.is_some()),
                "{what}: key list names the damaged slot"
            );
        }
        // Only intact slots and a password none opens: a wrong password.
        b.delete(&key).unwrap();
        let open = || Ok(b"third".to_vec());
        assert!(matches!(
            Repository::open(b.clone(), Some(&open)),
            Err(Error::Crypto(CryptoError::WrongPassword))
        ));
    }

    #[test]
    fn unencrypted_repositories_have_no_keys() {
        let b: DynBackend = Arc::new(MemoryBackend::new());
        let repo = Repository::init(b, InitOptions::default()).unwrap();
        assert!(repo.keys().is_err());
    }
}
