//! Blobs: one chunk of file data or one tree, compressed and sealed.
//!
//! A blob's stored bytes are `seal(zstd(raw))`, or `seal(raw)` when zstd does
//! not make it smaller; the choice is recorded in the entry's flags. The sealing
//! is bound to the blob's kind and id, so a blob cannot be swapped for another.

use std::cell::RefCell;

use crate::error::{Error, FormatError};
use crate::repo::crypto::Crypto;
use crate::repo::format::{BLOB_FLAG_ZSTD, ENTRY_LEN, KNOWN_BLOB_FLAGS, Reader};
use crate::repo::id::{Id, PackId};

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
    static PROBE: RefCell<Option<(zstd::bulk::Compressor<'static>, Vec<u8>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static ENCODE_BUFFERS: RefCell<EncodeBuffers> = RefCell::new(EncodeBuffers::default());
}

/// Blobs at least this long are probed before zstd is run on all of them.
const PROBE_MIN: usize = 64 * 1024;
/// Samples taken by the probe, spread evenly over the blob.
const PROBE_SAMPLES: usize = 8;
const PROBE_LEN: usize = 4096;
/// A sample that zstd's fastest level shrinks below this fraction (in
/// 1/1024ths) means the blob is worth compressing.
const PROBE_SHRINK: usize = 973; // 95 %

/// Whether zstd is worth running on `raw`. Compressing incompressible data
/// (media, archives, encrypted files) at level 3 costs about as much CPU as
/// chunking and hashing it together; the probe costs a few percent of that.
/// It samples `PROBE_SAMPLES` pieces spread over the blob and says yes as soon
/// as one of them shrinks by 5 % at zstd's fastest level, so a blob is stored
/// raw only when every sample looked like noise. Short blobs are always tried.
fn worth_compressing(raw: &[u8]) -> bool {
    if raw.len() < PROBE_MIN {
        return true;
    }
    PROBE.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_none() {
            let Ok(c) = zstd::bulk::Compressor::new(1) else {
                return true;
            };
            *p = Some((
                c,
                Vec::with_capacity(zstd::zstd_safe::compress_bound(PROBE_LEN)),
            ));
        }
        let (c, out) = p.as_mut().expect("set above");
        let step = (raw.len() - PROBE_LEN) / (PROBE_SAMPLES - 1);
        (0..PROBE_SAMPLES).any(|i| {
            let sample = &raw[i * step..i * step + PROBE_LEN];
            out.clear();
            match c.compress_to_buffer(sample, out) {
                Ok(n) => n * 1024 < PROBE_LEN * PROBE_SHRINK,
                Err(_) => true,
            }
        })
    })
}

/// Compresses `raw` into `out` (replacing its content); false when zstd does
/// not make it smaller, or fails.
fn compress_into(level: i32, raw: &[u8], out: &mut Vec<u8>) -> bool {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            match zstd::bulk::Compressor::new(level) {
                Ok(z) => *c = Some((level, z)),
                Err(_) => return false,
            }
        }
        let (_, z) = c.as_mut().expect("set above");
        out.clear();
        // Room for zstd's worst case, so it writes straight into `out`.
        out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        matches!(z.compress_to_buffer(raw, out), Ok(n) if n < raw.len())
    })
}

/// No zstd frame expands more than this many times (an RLE block: 4
/// stored bytes for 128 KiB).
const MAX_ZSTD_RATIO: usize = 32 * 1024 + 1;

fn decompress_into(stored: &[u8], raw_len: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    decompress_append(stored, raw_len, out)
}

/// Decompresses a frame onto the end of `out`; on error `out` is as it was.
fn decompress_append(stored: &[u8], raw_len: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        // A frame longer than `raw_len` may fill the spare capacity; the
        // caller's length check turns that into an error.
        // `raw_len` comes from disk: reserve no more than the frame can
        // expand to (a zstd block of 128 KiB takes at least 4 stored bytes).
        let start = out.len();
        out.reserve(raw_len.min(stored.len().saturating_mul(MAX_ZSTD_RATIO)));
        let mut at = std::io::Cursor::new(std::mem::take(out));
        at.set_position(start as u64);
        let r = d
            .as_mut()
            .expect("set above")
            .decompress_to_buffer(stored, &mut at);
        *out = at.into_inner();
        r.map(|_| ())
    })
}

/// Per-thread output buffers of [`encode_with`], kept between blobs so that
/// storing a blob allocates (and faults in) no fresh memory.
#[derive(Default)]
struct EncodeBuffers {
    zstd: Vec<u8>,
    sealed: Vec<u8>,
}

/// Compresses (level 0 = never) and seals `raw`, and hands the stored bytes and
/// their flags to `f`. Nothing is allocated once the calling thread has
/// encoded a blob of this size; an unencrypted blob that zstd does not shrink
/// is handed over without a copy.
pub fn encode_with<R>(
    crypto: &Crypto,
    level: i32,
    kind: BlobKind,
    id: &Id,
    raw: &[u8],
    f: impl FnOnce(&[u8], u8) -> R,
) -> R {
    // Taken out of the thread-local (not borrowed) so that `f` may encode too.
    let mut b = ENCODE_BUFFERS.take();
    let compressed = level > 0 && worth_compressing(raw) && compress_into(level, raw, &mut b.zstd);
    let (payload, flags) = if compressed {
        (&b.zstd[..], BLOB_FLAG_ZSTD)
    } else {
        (raw, 0)
    };
    let r = if crypto.is_encrypted() {
        b.sealed.clear();
        crypto.seal_into(&blob_aad(kind, id), payload, &mut b.sealed);
        f(&b.sealed, flags)
    } else {
        f(payload, flags)
    };
    ENCODE_BUFFERS.set(b);
    r
}

/// Compresses (level 0 = never) and seals `raw`; returns stored bytes and flags.
pub fn encode(crypto: &Crypto, level: i32, kind: BlobKind, id: &Id, raw: &[u8]) -> (Vec<u8>, u8) {
    encode_with(crypto, level, kind, id, raw, |stored, flags| {
        (stored.to_vec(), flags)
    })
}

/// Buffers reused by [`decode_in`] from one blob to the next.
#[derive(Default)]
pub struct DecodeBuffers {
    plain: Vec<u8>,
    raw: Vec<u8>,
}

/// Where [`decode_in`] left a blob's verified content.
enum Decoded {
    /// The stored bytes are the content (unencrypted, not compressed).
    Stored,
    /// `DecodeBuffers::plain` (encrypted, not compressed).
    Plain,
    /// `DecodeBuffers::raw` (compressed).
    Raw,
}

fn corrupt(pack: &PackId, e: &BlobEntry, detail: String) -> Error {
    Error::CorruptBlob {
        id: e.id.to_hex(),
        pack: pack.to_hex(),
        detail,
    }
}

/// Checks decoded content against the entry's length and id.
fn verify(crypto: &Crypto, pack: &PackId, e: &BlobEntry, raw: &[u8]) -> Result<(), Error> {
    if raw.len() != e.raw_len as usize {
        return Err(corrupt(
            pack,
            e,
            format!("length {} instead of {}", raw.len(), e.raw_len),
        ));
    }
    if crypto.content_id(raw) != e.id {
        return Err(corrupt(pack, e, "content does not match its id".into()));
    }
    Ok(())
}

fn decode_to(
    crypto: &Crypto,
    pack: &PackId,
    e: &BlobEntry,
    stored: &[u8],
    bufs: &mut DecodeBuffers,
) -> Result<Decoded, Error> {
    let encrypted = crypto.is_encrypted();
    if encrypted {
        crypto
            .open_into(&blob_aad(e.kind, &e.id), stored, &mut bufs.plain, &|| {
                format!("blob {} in pack {}", e.id, pack)
            })
            .map_err(|_| corrupt(pack, e, "authentication failed".into()))?;
    }
    let payload = if encrypted { &bufs.plain[..] } else { stored };
    let (raw, at) = if e.flags & BLOB_FLAG_ZSTD != 0 {
        decompress_into(payload, e.raw_len as usize, &mut bufs.raw)
            .map_err(|err| corrupt(pack, e, format!("zstd: {err}")))?;
        (&bufs.raw[..], Decoded::Raw)
    } else if encrypted {
        (payload, Decoded::Plain)
    } else {
        (payload, Decoded::Stored)
    };
    verify(crypto, pack, e, raw)?;
    Ok(at)
}

/// Where [`decode_in_place`] left a blob's verified content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// This range of the stored bytes (opened there when encrypted).
    Stored(std::ops::Range<usize>),
    /// This range of the output buffer (decompressed there).
    Out(std::ops::Range<usize>),
}

/// Opens, decompresses and verifies a blob without copying it: an encrypted
/// blob is opened where it lies in `stored`, and a compressed one is
/// decompressed onto the end of `out`. The content is where the returned
/// [`Content`] says. On error `stored` may have changed, `out` has not.
pub fn decode_in_place(
    crypto: &Crypto,
    pack: &PackId,
    e: &BlobEntry,
    stored: &mut [u8],
    out: &mut Vec<u8>,
) -> Result<Content, Error> {
    let payload = crypto
        .open_in_place(&blob_aad(e.kind, &e.id), stored, &|| {
            format!("blob {} in pack {}", e.id, pack)
        })
        .map_err(|_| corrupt(pack, e, "authentication failed".into()))?;
    if e.flags & BLOB_FLAG_ZSTD == 0 {
        verify(crypto, pack, e, &stored[payload.clone()])?;
        return Ok(Content::Stored(payload));
    }
    let start = out.len();
    decompress_append(&stored[payload], e.raw_len as usize, out)
        .map_err(|err| corrupt(pack, e, format!("zstd: {err}")))?;
    if let Err(err) = verify(crypto, pack, e, &out[start..]) {
        out.truncate(start);
        return Err(err);
    }
    Ok(Content::Out(start..out.len()))
}

/// Opens, decompresses and verifies a blob read from pack `pack`, using
/// `bufs` for whatever must be written out; the content of an unencrypted,
/// uncompressed blob is `stored` itself, verified, not copied.
pub fn decode_in<'a>(
    crypto: &Crypto,
    pack: &PackId,
    e: &BlobEntry,
    stored: &'a [u8],
    bufs: &'a mut DecodeBuffers,
) -> Result<&'a [u8], Error> {
    Ok(match decode_to(crypto, pack, e, stored, bufs)? {
        Decoded::Stored => stored,
        Decoded::Plain => &bufs.plain,
        Decoded::Raw => &bufs.raw,
    })
}

/// Opens, decompresses and verifies a blob read from pack `pack`.
pub fn decode(
    crypto: &Crypto,
    pack: &PackId,
    e: &BlobEntry,
    stored: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut bufs = DecodeBuffers::default();
    Ok(match decode_to(crypto, pack, e, stored, &mut bufs)? {
        Decoded::Stored => stored.to_vec(),
        Decoded::Plain => bufs.plain,
        Decoded::Raw => bufs.raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::Keys;

    #[test]
    fn compressible_blobs_shrink_and_random_ones_are_stored_raw() {
        let c = Crypto::None;
        let text = b"abcabcabc".repeat(1000);
        let id = c.content_id(&text);
        let (stored, flags) = encode(&c, 3, BlobKind::Data, &id, &text);
        assert_eq!(flags, BLOB_FLAG_ZSTD);
        assert!(stored.len() < text.len() / 10);
        let e = entry_for(id, flags, &stored, &text);
        assert_eq!(decode(&c, &PackId::default(), &e, &stored).unwrap(), text);

        let noise = noise(b"seed", 4096);
        let (stored, flags) = encode(&c, 3, BlobKind::Data, &c.content_id(&noise), &noise);
        assert_eq!(
            flags & BLOB_FLAG_ZSTD,
            0,
            "incompressible data is stored raw"
        );
        assert_eq!(stored, noise);
    }

    fn noise(seed: &[u8], len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        blake3::Hasher::new()
            .update(seed)
            .finalize_xof()
            .fill(&mut v);
        v
    }

    fn entry_for(id: Id, flags: u8, stored: &[u8], raw: &[u8]) -> BlobEntry {
        BlobEntry {
            kind: BlobKind::Data,
            flags,
            id,
            offset: 0,
            stored_len: stored.len() as u32,
            raw_len: raw.len() as u32,
        }
    }

    #[test]
    fn the_probe_stores_noise_raw_and_compresses_anything_a_sample_shrinks() {
        let c = Crypto::None;
        let big_noise = noise(b"media", 1 << 20);
        let (stored, flags) = encode(&c, 3, BlobKind::Data, &c.content_id(&big_noise), &big_noise);
        assert_eq!(flags, 0);
        assert_eq!(stored, big_noise);
        assert!(!worth_compressing(&big_noise));

        // Noise with a compressible region where only one sample falls.
        let mut mixed = big_noise.clone();
        let n = mixed.len();
        mixed[n - 64 * 1024..].copy_from_slice(&b"row 17, status ok; ".repeat(4000)[..64 * 1024]);
        assert!(worth_compressing(&mixed));
        let (stored, flags) = encode(&c, 3, BlobKind::Data, &c.content_id(&mixed), &mixed);
        assert_eq!(flags, BLOB_FLAG_ZSTD);
        assert!(stored.len() < mixed.len());
        let e = entry_for(c.content_id(&mixed), flags, &stored, &mixed);
        assert_eq!(decode(&c, &PackId::default(), &e, &stored).unwrap(), mixed);

        // Short blobs are always tried.
        assert!(worth_compressing(&big_noise[..PROBE_MIN - 1]));
    }

    #[test]
    fn decoding_with_reused_buffers_never_leaks_an_earlier_blob() {
        for c in [
            Crypto::None,
            Crypto::Keyed(Box::new(Keys::from_master(&[5; 32]))),
        ] {
            let blobs = [
                b"long text long text ".repeat(20_000),
                noise(b"a", 300_000),
                b"short".to_vec(),
                noise(b"b", 10),
                b"abc".repeat(100),
            ];
            let mut bufs = DecodeBuffers::default();
            for raw in &blobs {
                let id = c.content_id(raw);
                let (stored, flags) = encode(&c, 3, BlobKind::Data, &id, raw);
                let e = entry_for(id, flags, &stored, raw);
                let got = decode_in(&c, &PackId::default(), &e, &stored, &mut bufs).unwrap();
                assert_eq!(got, &raw[..]);
                if !c.is_encrypted() && flags == 0 {
                    assert_eq!(got.as_ptr(), stored.as_ptr(), "raw blobs are not copied");
                }
                // A damaged copy fails and the next blob still decodes.
                let mut bad = stored.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                assert!(decode_in(&c, &PackId::default(), &e, &bad, &mut bufs).is_err());
            }
        }
    }

    #[test]
    fn decoding_in_place_appends_each_blob_and_leaves_damage_out() {
        for c in [
            Crypto::None,
            Crypto::Keyed(Box::new(Keys::from_master(&[6; 32]))),
        ] {
            let blobs = [
                b"long text long text ".repeat(20_000),
                noise(b"a", 300_000),
                b"abc".repeat(100),
                noise(b"b", 10),
                b"more text ".repeat(5_000),
            ];
            let mut out = b"earlier".to_vec();
            let mut placed = Vec::new();
            for raw in &blobs {
                let id = c.content_id(raw);
                let (stored, flags) = encode(&c, 3, BlobKind::Data, &id, raw);
                let e = entry_for(id, flags, &stored, raw);
                // A damaged copy fails and leaves `out` as it was.
                let mut bad = stored.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                let before = out.clone();
                assert!(decode_in_place(&c, &PackId::default(), &e, &mut bad, &mut out).is_err());
                assert_eq!(out, before);
                let mut held = stored.clone();
                match decode_in_place(&c, &PackId::default(), &e, &mut held, &mut out).unwrap() {
                    Content::Stored(r) => {
                        assert_eq!(flags, 0, "only uncompressed blobs stay where they are");
                        assert_eq!(&held[r], &raw[..]);
                    }
                    Content::Out(r) => {
                        assert_eq!(flags, BLOB_FLAG_ZSTD);
                        placed.push((r, raw));
                    }
                }
            }
            assert_eq!(&out[..7], b"earlier");
            assert_eq!(placed.len(), 3);
            for (r, raw) in placed {
                assert_eq!(&out[r], &raw[..]);
            }
        }
    }

    #[test]
    fn a_frame_longer_than_its_entry_says_is_corrupt() {
        let c = Crypto::None;
        let raw = b"0123456789".repeat(1000);
        let id = c.content_id(&raw);
        let (stored, flags) = encode(&c, 3, BlobKind::Data, &id, &raw);
        assert_eq!(flags, BLOB_FLAG_ZSTD);
        let mut e = entry_for(id, flags, &stored, &raw);
        e.raw_len -= 1;
        let mut bufs = DecodeBuffers::default();
        // A larger buffer from an earlier blob must not let the frame through.
        bufs.raw.reserve(1 << 20);
        assert!(matches!(
            decode_in(&c, &PackId::default(), &e, &stored, &mut bufs),
            Err(Error::CorruptBlob { .. })
        ));
        let mut out = Vec::with_capacity(1 << 20);
        let mut held = stored.clone();
        assert!(matches!(
            decode_in_place(&c, &PackId::default(), &e, &mut held, &mut out),
            Err(Error::CorruptBlob { .. })
        ));
        assert!(out.is_empty());
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
            let e = entry_for(id, flags, &stored, &raw);
            let n = stored.len() - 1;
            stored[n] ^= 0x20;
            assert!(matches!(
                decode(&c, &PackId::default(), &e, &stored),
                Err(Error::CorruptBlob { .. })
            ));
        }
    }
}
