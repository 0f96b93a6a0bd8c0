//! Pack files: many blobs and a trailer listing them.
//!
//! Layout: `header(8) || blob_0 || … || blob_n || trailer || trailer_len(u32 LE)`.
//! The trailer is `count(u32 LE) || entry*count` (46 bytes an entry, see
//! `FORMAT.md`), sealed with the repository key when encrypted. A pack is
//! immutable and named by the blake3 of all its bytes.

use crate::backend::{Backend, ObjectKey};
use crate::error::{Error, FormatError};
use crate::repo::crypto::Crypto;
use crate::repo::format::{HEADER_LEN, Header, NONCE_LEN, ObjectKind, Reader, TAG_LEN};
use crate::repo::id::{Id, PackId};
use crate::store::blob::BlobEntry;

const TRAILER_AAD: &[u8] = b"pvsnap pack trailer v1";

/// Accumulates blobs in memory until the pack is big enough to write.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
}

/// A finished pack, ready to be stored.
pub struct FinishedPack {
    pub id: PackId,
    pub bytes: Vec<u8>,
    pub entries: Vec<BlobEntry>,
}

impl PackBuilder {
    pub fn new(encrypted: bool, capacity: usize) -> Self {
        Self::with_buffer(encrypted, Vec::with_capacity(capacity))
    }

    /// A builder writing into `buf`, whose content is discarded and whose
    /// allocation is kept: packs built one after another reuse one buffer.
    pub fn with_buffer(encrypted: bool, mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(&Header::new(ObjectKind::Pack, encrypted).encode());
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }

    /// Reserves room for a pack of `capacity` bytes in total.
    pub fn reserve(&mut self, capacity: usize) {
        self.buf.reserve(capacity.saturating_sub(self.buf.len()));
    }

    /// Bytes so far, header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the pack takes once finished: its blobs and the trailer
    /// listing them (sealed: at most a nonce and a tag more). Small blobs make a
    /// large trailer (46 bytes an entry): a pack of 16 MiB of 100-byte
    /// blobs lists 5 MiB of them.
    pub fn len_with_trailer(&self) -> usize {
        let plain = 4 + self.entries.len() * BlobEntry::ENCODED_LEN;
        self.buf.len() + plain + NONCE_LEN + TAG_LEN + 4
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a blob's stored bytes; `entry.offset` and `stored_len` are filled in.
    pub fn add(&mut self, mut entry: BlobEntry, stored: &[u8]) {
        entry.offset = u32::try_from(self.buf.len()).expect("packs stay below 4 GiB");
        entry.stored_len = u32::try_from(stored.len()).expect("blobs stay below 4 GiB");
        self.buf.extend_from_slice(stored);
        self.entries.push(entry);
    }

    pub fn finish(mut self, crypto: &Crypto) -> FinishedPack {
        let mut trailer = Vec::with_capacity(4 + self.entries.len() * BlobEntry::ENCODED_LEN);
        trailer.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            e.encode_into(&mut trailer);
        }
        let sealed = crypto.seal(TRAILER_AAD, trailer);
        // Exactly: a buffer that has no room left would otherwise double,
        // and the doubled buffer is kept for the next packs.
        self.buf.reserve_exact(sealed.len() + 4);
        self.buf.extend_from_slice(&sealed);
        self.buf
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        FinishedPack {
            id: PackId(Id(*blake3::hash(&self.buf).as_bytes())),
            bytes: self.buf,
            entries: self.entries,
        }
    }
}

/// Decodes a trailer's plaintext.
pub fn decode_trailer(plain: &[u8], what: &str) -> Result<Vec<BlobEntry>, FormatError> {
    let mut r = Reader::new(plain, "pack trailer");
    let count = r.u32()? as usize;
    if count.checked_mul(BlobEntry::ENCODED_LEN) != Some(r.remaining()) {
        return Err(FormatError::Invalid {
            what: what.to_string(),
            detail: format!(
                "trailer claims {count} entries but has {} bytes",
                r.remaining()
            ),
        });
    }
    (0..count).map(|_| BlobEntry::decode(&mut r)).collect()
}

/// Reads and checks the trailer of pack `id` whose size is `size` bytes,
/// fetching only the tail of the pack.
pub fn read_trailer(
    backend: &dyn Backend,
    crypto: &Crypto,
    id: &PackId,
    size: u64,
) -> Result<Vec<BlobEntry>, Error> {
    let key = ObjectKey::new(ObjectKind::Pack, id.to_hex());
    let what = format!("pack {id}");
    if size < (HEADER_LEN + 4) as u64 {
        return Err(FormatError::Invalid {
            what,
            detail: format!("only {size} bytes"),
        }
        .into());
    }
    let head = backend.get_range(&key, 0, HEADER_LEN as u64)?;
    let header = Header::decode(&head, ObjectKind::Pack)?;
    if header.encrypted() != crypto.is_encrypted() {
        return Err(FormatError::Invalid {
            what,
            detail: "encryption flag does not match the repository".into(),
        }
        .into());
    }
    let len_bytes = backend.get_range(&key, size - 4, 4)?;
    let tlen = u32::from_le_bytes(len_bytes[..4].try_into().expect("4 bytes")) as u64;
    if tlen + 4 + HEADER_LEN as u64 > size {
        return Err(FormatError::Invalid {
            what,
            detail: format!("trailer length {tlen} exceeds the pack"),
        }
        .into());
    }
    let sealed = backend.get_range(&key, size - 4 - tlen, tlen)?;
    let plain = crypto.open(TRAILER_AAD, &sealed, &|| format!("trailer of pack {id}"))?;
    let entries = decode_trailer(&plain, &what)?;
    let data_end = size - 4 - tlen;
    for e in &entries {
        if e.offset as u64 + e.stored_len as u64 > data_end || (e.offset as usize) < HEADER_LEN {
            return Err(FormatError::Invalid {
                what,
                detail: format!("blob {} lies outside the pack's data", e.id),
            }
            .into());
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::repo::crypto::Keys;
    use crate::store::blob::{self, BlobKind};

    #[test]
    fn pack_round_trip_plain_and_encrypted() {
        for crypto in [
            Crypto::None,
            Crypto::Keyed(Box::new(Keys::from_master(&[9; 32]))),
        ] {
            let mut pb = PackBuilder::new(crypto.is_encrypted(), 1024);
            let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + i as usize]).collect();
            for b in &blobs {
                let id = crypto.content_id(b);
                let (stored, flags) = blob::encode(&crypto, 3, BlobKind::Data, &id, b);
                pb.add(
                    BlobEntry {
                        kind: BlobKind::Data,
                        flags,
                        id,
                        offset: 0,
                        stored_len: 0,
                        raw_len: b.len() as u32,
                    },
                    &stored,
                );
            }
            let predicted = pb.len_with_trailer();
            let fp = pb.finish(&crypto);
            // What the packer counts toward full is the pack's length, or
            // a nonce and a tag more where the trailer is not sealed.
            let unsealed = if crypto.is_encrypted() {
                0
            } else {
                NONCE_LEN + TAG_LEN
            };
            assert_eq!(fp.bytes.len() + unsealed, predicted);
            let mem = MemoryBackend::new();
            let key = ObjectKey::new(ObjectKind::Pack, fp.id.to_hex());
            mem.put(&key, &fp.bytes).unwrap();
            let entries = read_trailer(&mem, &crypto, &fp.id, fp.bytes.len() as u64).unwrap();
            assert_eq!(entries, fp.entries);
            for (e, b) in entries.iter().zip(&blobs) {
                let stored = mem
                    .get_range(&key, e.offset as u64, e.stored_len as u64)
                    .unwrap();
                assert_eq!(&blob::decode(&crypto, &fp.id, e, &stored).unwrap(), b);
            }
        }
    }

    #[test]
    fn damaged_trailer_is_an_error_not_a_panic() {
        let crypto = Crypto::None;
        let mut pb = PackBuilder::new(false, 64);
        pb.add(
            BlobEntry {
                kind: BlobKind::Data,
                flags: 0,
                id: crypto.content_id(b"x"),
                offset: 0,
                stored_len: 0,
                raw_len: 1,
            },
            b"x",
        );
        let fp = pb.finish(&crypto);
        let mem = MemoryBackend::new();
        let key = ObjectKey::new(ObjectKind::Pack, fp.id.to_hex());
        let mut bytes = fp.bytes.clone();
        let n = bytes.len();
        bytes[n - 4] = 0xff; // absurd trailer length
        mem.put(&key, &bytes).unwrap();
        assert!(read_trailer(&mem, &crypto, &fp.id, n as u64).is_err());
    }
}
