//! Blobs: one chunk of file data or one tree, compressed and sealed.
//!
//! A blob's stored bytes are `seal(zstd(raw))`, or `seal(raw)` when zstd does
//! not make it smaller; the choice is recorded in the entry's flags. The sealing
//! is bound to the blob's kind and id, so a blob cannot be swapped for another.

use std::cell::RefCell;

use crate::crypto::Crypto;
use crate::error::{Error, FormatError};
use crate::format::{BLOB_FLAG_ZSTD, ENTRY_LEN, KNOWN_BLOB_FLAGS, Reader};
use crate::id::{Id, PackId};

/// What a blob holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[repr(u8)]
pub enum BlobKind {
    Data = 0,
    Tree = 1,
}

impl BlobKind {
    pub fn from_byte(b: u8) -> Result<Self, FormatError> {
        match b {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::Tree),
            _ => Err(FormatError::Invalid {
                what: "blob entry".into(),
                detail: format!("unknown blob kind {b}"),
            }),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
        }
    }
}

/// Where a blob sits inside its pack; the unit of pack trailers and index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    pub kind: BlobKind,
    pub flags: u8,
    pub id: Id,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
}

impl BlobEntry {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.push(self.flags);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let kind = BlobKind::from_byte(r.u8()?)?;
        let flags = r.u8()?;
        if flags & !KNOWN_BLOB_FLAGS != 0 {
            return Err(FormatError::Invalid {
                what: "blob entry".into(),
                detail: format!("unknown blob flags {flags:#04x}; written by a newer pvsnap"),
            });
        }
        Ok(BlobEntry {
            kind,
            flags,
            id: Id(r.id()?),
            offset: r.u32()?,
            stored_len: r.u32()?,
            raw_len: r.u32()?,
        })
    }

    pub const ENCODED_LEN: usize = ENTRY_LEN;
}

/// Associated data binding a sealed blob to its kind and id.
fn blob_aad(kind: BlobKind, id: &Id) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[0] = kind as u8;
    a[1..].copy_from_slice(&id.0);
    a
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn compress(level: i32, raw: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        c.as_mut()?.1.compress(raw).ok()
    })
}

fn decompress(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut().expect("set above").decompress(stored, raw_len)
    })
}

/// Compresses (level 0 = never) and seals `raw`; returns stored bytes and flags.
pub fn encode(crypto: &Crypto, level: i32, kind: BlobKind, id: &Id, raw: &[u8]) -> (Vec<u8>, u8) {
    let (payload, flags) = match (level > 0).then(|| compress(level, raw)).flatten() {
        Some(z) if z.len() < raw.len() => (z, BLOB_FLAG_ZSTD),
        _ => (raw.to_vec(), 0),
    };
    (crypto.seal(&blob_aad(kind, id), payload), flags)
}

/// Opens, decompresses and verifies a blob read from pack `pack`.
pub fn decode(
    crypto: &Crypto,
    pack: &PackId,
    e: &BlobEntry,
    stored: &[u8],
) -> Result<Vec<u8>, Error> {
    let corrupt = |detail: String| Error::CorruptBlob {
        id: e.id.to_hex(),
        pack: pack.to_hex(),
        detail,
    };
    let payload = crypto
        .open_borrowed(&blob_aad(e.kind, &e.id), stored, &|| {
            format!("blob {} in pack {}", e.id, pack)
        })
        .map_err(|_| corrupt("authentication failed".into()))?;
    let raw = if e.flags & BLOB_FLAG_ZSTD != 0 {
        decompress(&payload, e.raw_len as usize).map_err(|err| corrupt(format!("zstd: {err}")))?
    } else {
        payload.into_owned()
    };
    if raw.len() != e.raw_len as usize {
        return Err(corrupt(format!(
            "length {} instead of {}",
            raw.len(),
            e.raw_len
        )));
    }
    if crypto.content_id(&raw) != e.id {
        return Err(corrupt("content does not match its id".into()));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keys;

    #[test]
    fn compressible_blobs_shrink_and_random_ones_are_stored_raw() {
        let c = Crypto::None;
        let text = b"abcabcabc".repeat(1000);
        let id = c.content_id(&text);
        let (stored, flags) = encode(&c, 3, BlobKind::Data, &id, &text);
        assert_eq!(flags, BLOB_FLAG_ZSTD);
        assert!(stored.len() < text.len() / 10);
        let e = BlobEntry {
            kind: BlobKind::Data,
            flags,
            id,
            offset: 0,
            stored_len: stored.len() as u32,
            raw_len: text.len() as u32,
        };
        assert_eq!(decode(&c, &PackId::default(), &e, &stored).unwrap(), text);

        let mut noise = vec![0u8; 4096];
        blake3::Hasher::new()
            .update(b"seed")
            .finalize_xof()
            .fill(&mut noise);
        let (stored, flags) = encode(&c, 3, BlobKind::Data, &c.content_id(&noise), &noise);
        assert_eq!(
            flags & BLOB_FLAG_ZSTD,
            0,
            "incompressible data is stored raw"
        );
        assert_eq!(stored, noise);
    }

    #[test]
    fn a_flipped_byte_is_detected() {
        for c in [
            Crypto::None,
            Crypto::Keyed(Box::new(Keys::from_master(&[3; 32]))),
        ] {
            let raw = b"hello hello hello hello".to_vec();
            let id = c.content_id(&raw);
            let (mut stored, flags) = encode(&c, 0, BlobKind::Data, &id, &raw);
            let e = BlobEntry {
                kind: BlobKind::Data,
                flags,
                id,
                offset: 0,
                stored_len: stored.len() as u32,
                raw_len: raw.len() as u32,
            };
            let n = stored.len() - 1;
            stored[n] ^= 0x20;
            assert!(matches!(
                decode(&c, &PackId::default(), &e, &stored),
                Err(Error::CorruptBlob { .. })
            ));
        }
    }
}
