//! Keys, content ids and authenticated encryption.
//!
//! An encrypted repository has one random 32-byte master key. Every key slot
//! (`keys/<id>`) holds that master key sealed with a key-encryption key derived
//! from a passphrase by Argon2id, so passphrases can be added and removed without
//! rewriting data. From the master key, blake3's key derivation gives three
//! independent secrets: the XChaCha20-Poly1305 data key, the keyed-blake3 key for
//! content ids (stored names reveal nothing about content), and the chunker seed
//! (cut points reveal nothing about content either).

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::error::CryptoError;
use crate::repo::format::{NONCE_LEN, TAG_LEN};
use crate::repo::id::Id;

const CTX_DATA: &str = "pvsnap 2026-11 data encryption key";
const CTX_ID: &str = "pvsnap 2026-11 content id key";
const CTX_SEED: &str = "pvsnap 2026-11 chunker seed";

/// The secrets derived from a master key.
#[derive(Clone)]
pub struct Keys {
    cipher: XChaCha20Poly1305,
    id_key: [u8; 32],
    chunker_seed: u64,
}

impl Keys {
    pub fn from_master(master: &[u8; 32]) -> Self {
        let data = Zeroizing::new(blake3::derive_key(CTX_DATA, master));
        let seed = Zeroizing::new(blake3::derive_key(CTX_SEED, master));
        Keys {
            cipher: XChaCha20Poly1305::new((&*data).into()),
            id_key: blake3::derive_key(CTX_ID, master),
            chunker_seed: u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")),
        }
    }
}

/// Key material is wiped when it is dropped (the cipher wipes its own key).
impl Drop for Keys {
    fn drop(&mut self) {
        self.id_key.zeroize();
        self.chunker_seed.zeroize();
    }
}

/// How a repository names and protects its bytes.
#[derive(Clone)]
pub enum Crypto {
    /// Plain blake3 ids, no encryption.
    None,
    /// Keyed blake3 ids and XChaCha20-Poly1305.
    Keyed(Box<Keys>),
}

impl Crypto {
    pub fn is_encrypted(&self) -> bool {
        matches!(self, Crypto::Keyed(_))
    }

    /// The content id of plaintext `data`.
    pub fn content_id(&self, data: &[u8]) -> Id {
        match self {
            Crypto::None => Id(*blake3::hash(data).as_bytes()),
            Crypto::Keyed(k) => Id(*blake3::keyed_hash(&k.id_key, data).as_bytes()),
        }
    }

    /// The chunker seed derived from the key, if encrypted.
    pub fn chunker_seed(&self) -> Option<u64> {
        match self {
            Crypto::None => None,
            Crypto::Keyed(k) => Some(k.chunker_seed),
        }
    }

    /// Seals `plain` bound to `aad`: `nonce || ciphertext || tag`. Without a key,
    /// returns `plain` unchanged.
    pub fn seal(&self, aad: &[u8], plain: Vec<u8>) -> Vec<u8> {
        match self {
            Crypto::None => plain,
            Crypto::Keyed(k) => seal_with(&k.cipher, aad, &plain),
        }
    }

    /// Appends `seal(plain)` to `out`: the same bytes as [`Crypto::seal`],
    /// without allocating when `out` has room.
    pub fn seal_into(&self, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        match self {
            Crypto::None => out.extend_from_slice(plain),
            Crypto::Keyed(k) => {
                let mut nonce = [0u8; NONCE_LEN];
                rand::rngs::OsRng.fill_bytes(&mut nonce);
                out.extend_from_slice(&nonce);
                let start = out.len();
                out.extend_from_slice(plain);
                let tag = k
                    .cipher
                    .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[start..])
                    .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
                out.extend_from_slice(&tag);
            }
        }
    }

    /// Opens sealed bytes of an encrypted repository into `out` (replacing its
    /// content), reusing its allocation. Without a key there is nothing to open
    /// and the bytes are copied.
    pub fn open_into(
        &self,
        aad: &[u8],
        sealed: &[u8],
        out: &mut Vec<u8>,
        what: &dyn Fn() -> String,
    ) -> Result<(), CryptoError> {
        out.clear();
        match self {
            Crypto::None => {
                out.extend_from_slice(sealed);
                Ok(())
            }
            Crypto::Keyed(k) => {
                let fail = || CryptoError::Authentication { what: what() };
                if sealed.len() < NONCE_LEN + TAG_LEN {
                    return Err(fail());
                }
                let (nonce, rest) = sealed.split_at(NONCE_LEN);
                let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
                out.extend_from_slice(ct);
                if open_detached(&k.cipher, aad, nonce, out, tag) {
                    Ok(())
                } else {
                    out.clear();
                    Err(fail())
                }
            }
        }
    }

    /// Opens sealed bytes where they lie and returns where in `sealed` the
    /// plaintext now is. On failure the bytes are left undefined. Without a
    /// key the plaintext is all of `sealed`.
    pub fn open_in_place(
        &self,
        aad: &[u8],
        sealed: &mut [u8],
        what: &dyn Fn() -> String,
    ) -> Result<std::ops::Range<usize>, CryptoError> {
        match self {
            Crypto::None => Ok(0..sealed.len()),
            Crypto::Keyed(k) => {
                let fail = || CryptoError::Authentication { what: what() };
                let len = sealed.len();
                if len < NONCE_LEN + TAG_LEN {
                    return Err(fail());
                }
                let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
                let (ct, tag) = rest.split_at_mut(len - NONCE_LEN - TAG_LEN);
                if !open_detached(&k.cipher, aad, nonce, ct, tag) {
                    return Err(fail());
                }
                Ok(NONCE_LEN..len - TAG_LEN)
            }
        }
    }

    /// Opens what [`Crypto::seal`] produced; `what` names the object in errors.
    pub fn open(
        &self,
        aad: &[u8],
        sealed: &[u8],
        what: &dyn Fn() -> String,
    ) -> Result<Vec<u8>, CryptoError> {
        Ok(self.open_borrowed(aad, sealed, what)?.into_owned())
    }

    /// Like [`Crypto::open`], without copying when there is no key.
    pub fn open_borrowed<'a>(
        &self,
        aad: &[u8],
        sealed: &'a [u8],
        what: &dyn Fn() -> String,
    ) -> Result<std::borrow::Cow<'a, [u8]>, CryptoError> {
        match self {
            Crypto::None => Ok(std::borrow::Cow::Borrowed(sealed)),
            Crypto::Keyed(k) => open_with(&k.cipher, aad, sealed)
                .map(std::borrow::Cow::Owned)
                .ok_or_else(|| CryptoError::Authentication { what: what() }),
        }
    }

    /// Bytes added by sealing.
    pub fn overhead(&self) -> usize {
        match self {
            Crypto::None => 0,
            Crypto::Keyed(_) => NONCE_LEN + TAG_LEN,
        }
    }
}

fn seal_with(cipher: &XChaCha20Poly1305, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Checks `tag` over `ct` and `aad`, then decrypts `ct` where it lies.
fn open_detached(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    nonce: &[u8],
    ct: &mut [u8],
    tag: &[u8],
) -> bool {
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, ct, Tag::from_slice(tag))
        .is_ok()
}

fn open_with(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

/// Argon2id cost parameters, stored in each key slot.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        // About a quarter of a second on a small server core.
        KdfParams {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// One passphrase's sealed copy of the master key (JSON body of `keys/<id>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySlot {
    pub kdf: String,
    pub params: KdfParams,
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    /// `nonce || ciphertext || tag` of the 32-byte master key.
    #[serde(with = "hex_bytes")]
    pub sealed_master: Vec<u8>,
    pub created: String,
    pub hostname: String,
}

const KEY_SLOT_AAD: &[u8] = b"pvsnap key slot v1";

/// Largest Argon2 memory cost (KiB) a key slot may ask for: 1 GiB, sixteen
/// times the default. A slot is read before anything can be verified, so its
/// costs are bounded here rather than trusted.
pub const MAX_KDF_M_COST: u32 = 1024 * 1024;
/// Largest Argon2 time cost a key slot may ask for.
pub const MAX_KDF_T_COST: u32 = 64;
/// Largest Argon2 parallelism a key slot may ask for.
pub const MAX_KDF_P_COST: u32 = 64;

fn kek(password: &[u8], salt: &[u8], p: KdfParams) -> Result<XChaCha20Poly1305, CryptoError> {
    if p.m_cost > MAX_KDF_M_COST || p.t_cost > MAX_KDF_T_COST || p.p_cost > MAX_KDF_P_COST {
        return Err(CryptoError::Kdf(format!(
            "key slot asks for Argon2 costs m={} KiB, t={}, p={}, above the limits \
             m={MAX_KDF_M_COST} KiB, t={MAX_KDF_T_COST}, p={MAX_KDF_P_COST}; the slot is \
             damaged or crafted: remove it with `pvsnap key remove` and use another key",
            p.m_cost, p.t_cost, p.p_cost
        )));
    }
    let params = argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password, salt, &mut *out)
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(XChaCha20Poly1305::new((&*out).into()))
}

/// A fresh random master key.
pub fn new_master_key() -> Zeroizing<[u8; 32]> {
    let mut m = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut *m);
    m
}

impl KeySlot {
    pub fn create(
        master: &[u8; 32],
        password: &[u8],
        params: KdfParams,
        created: String,
        hostname: String,
    ) -> Result<Self, CryptoError> {
        let mut salt = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let cipher = kek(password, &salt, params)?;
        Ok(KeySlot {
            kdf: "argon2id".into(),
            params,
            salt,
            sealed_master: seal_with(&cipher, KEY_SLOT_AAD, master),
            created,
            hostname,
        })
    }

    /// The master key, or `None` when `password` does not open this slot.
    pub fn open(&self, password: &[u8]) -> Result<Option<Zeroizing<[u8; 32]>>, CryptoError> {
        if self.kdf != "argon2id" {
            return Err(CryptoError::Kdf(format!(
                "unknown key derivation `{}`",
                self.kdf
            )));
        }
        let cipher = kek(password, &self.salt, self.params)?;
        Ok(open_with(&cipher, KEY_SLOT_AAD, &self.sealed_master)
            .map(Zeroizing::new)
            .and_then(|m| <[u8; 32]>::try_from(m.as_slice()).ok().map(Zeroizing::new)))
    }
}

/// Serde helper: bytes as lowercase hex strings.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::cheap_kdf as cheap;

    #[test]
    fn buffer_variants_agree_with_the_allocating_ones() {
        for c in [
            Crypto::None,
            Crypto::Keyed(Box::new(Keys::from_master(&[9u8; 32]))),
        ] {
            let what = || "x".to_string();
            // seal_into appends after what the buffer holds.
            let mut out = b"prefix".to_vec();
            c.seal_into(b"aad", b"payload bytes", &mut out);
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(out.len(), 6 + 13 + c.overhead());
            assert_eq!(c.open(b"aad", &out[6..], &what).unwrap(), b"payload bytes");
            // open_into replaces the buffer's content.
            let sealed = c.seal(b"aad", b"other payload".to_vec());
            let mut plain = b"stale content that must go".to_vec();
            c.open_into(b"aad", &sealed, &mut plain, &what).unwrap();
            assert_eq!(plain, b"other payload");
            if c.is_encrypted() {
                let mut bad = sealed.clone();
                bad[NONCE_LEN] ^= 1;
                assert!(matches!(
                    c.open_into(b"aad", &bad, &mut plain, &what),
                    Err(CryptoError::Authentication { .. })
                ));
                assert!(plain.is_empty(), "nothing unauthenticated is left behind");
                assert!(
                    c.open_into(b"aad", &sealed[..20], &mut plain, &what)
                        .is_err()
                );
                assert!(c.open_into(b"bad", &sealed, &mut plain, &what).is_err());
            }
            // open_in_place leaves the plaintext inside the sealed bytes.
            let mut buf = sealed.clone();
            let at = c.open_in_place(b"aad", &mut buf, &what).unwrap();
            assert_eq!(&buf[at], b"other payload");
            if c.is_encrypted() {
                for (i, aad) in [
                    (NONCE_LEN, &b"aad"[..]),
                    (sealed.len() - 1, b"aad"),
                    (0, b"bad"),
                ] {
                    let mut bad = sealed.clone();
                    if aad == b"aad" {
                        bad[i] ^= 1;
                    }
                    assert!(matches!(
                        c.open_in_place(aad, &mut bad, &what),
                        Err(CryptoError::Authentication { .. })
                    ));
                }
                let mut short = sealed[..NONCE_LEN + TAG_LEN - 1].to_vec();
                assert!(c.open_in_place(b"aad", &mut short, &what).is_err());
            }
        }
    }

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let c = Crypto::Keyed(Box::new(Keys::from_master(&[7u8; 32])));
        let sealed = c.seal(b"aad", b"secret data".to_vec());
        assert_eq!(sealed.len(), 11 + c.overhead());
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            c.open(b"aad", &sealed, &|| "x".into()).unwrap(),
            b"secret data"
        );
        assert!(c.open(b"other aad", &sealed, &|| "x".into()).is_err());
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(matches!(
            c.open(b"aad", &bad, &|| "x".into()),
            Err(CryptoError::Authentication { .. })
        ));
    }

    #[test]
    fn keyed_ids_differ_from_plain_ids() {
        let plain = Crypto::None;
        let keyed = Crypto::Keyed(Box::new(Keys::from_master(&[1u8; 32])));
        assert_eq!(plain.content_id(b"abc").0, *blake3::hash(b"abc").as_bytes());
        assert_ne!(plain.content_id(b"abc"), keyed.content_id(b"abc"));
        assert!(keyed.chunker_seed().is_some());
    }

    #[test]
    fn key_slot_opens_only_with_its_password() {
        let master = new_master_key();
        let slot = KeySlot::create(&master, b"pw", cheap(), "t".into(), "h".into()).unwrap();
        assert_eq!(slot.open(b"pw").unwrap(), Some(master.clone()));
        assert_eq!(slot.open(b"wrong").unwrap(), None);
        let json = serde_json::to_string(&slot).unwrap();
        let back: KeySlot = serde_json::from_str(&json).unwrap();
        assert_eq!(back.open(b"pw").unwrap(), Some(master));
    }
}
