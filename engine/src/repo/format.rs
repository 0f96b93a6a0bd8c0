//! Byte-level constants of the repository format, mirrored from `FORMAT.md`.
//!
//! Every object file starts with an 8-byte header: the magic `PVSN`, one byte of
//! object kind, one byte of format version for that kind, and two bytes of flags
//! (little-endian). Readers refuse unknown kinds, versions and flags with a
//! [`FormatError`]; they never panic on foreign bytes.

use crate::error::FormatError;

/// First four bytes of every repository object.
pub const MAGIC: [u8; 4] = *b"PVSN";
/// Length of the common object header.
pub const HEADER_LEN: usize = 8;

/// Version of the repository layout as a whole (the `version` field of the config).
pub const REPO_VERSION: u32 = 1;

/// Flag bit: the object's body is sealed with the repository key.
pub const FLAG_ENCRYPTED: u16 = 0x0001;
/// All flags this version understands.
pub const KNOWN_FLAGS: u16 = FLAG_ENCRYPTED;

/// Blob flag bit (pack trailer and index entries): the stored bytes are a zstd frame.
pub const BLOB_FLAG_ZSTD: u8 = 0x01;
pub const KNOWN_BLOB_FLAGS: u8 = BLOB_FLAG_ZSTD;

/// Size of one blob entry in a pack trailer or an index file.
pub const ENTRY_LEN: usize = 1 + 1 + 32 + 4 + 4 + 4;

/// Version byte at the start of every tree blob's plaintext.
pub const TREE_VERSION: u8 = 1;

/// XChaCha20-Poly1305 nonce and tag lengths.
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

/// The kind of a repository object; the byte after the magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ObjectKind {
    Config = 1,
    Key = 2,
    Pack = 3,
    Index = 4,
    Snapshot = 5,
    Lock = 6,
    Policy = 7,
    Audit = 8,
    /// Snapshots `forget` removed, until prune expires them (see `repo::trash`).
    Trash = 9,
}

impl ObjectKind {
    /// The newest version this build writes. Every version from 1 up to it
    /// is read (older decoders are kept, frozen, beside the new ones).
    pub const fn current_version(self) -> u8 {
        match self {
            // Version 2 of the JSON objects adds a checksum (see
            // [`encode_checked`]); version 2 of index files adds a random part
            // so that no two writes ever give one name (see `index`).
            Self::Config | Self::Key | Self::Index | Self::Snapshot | Self::Lock | Self::Policy => {
                2
            }
            // Audit entries were added after the checksum: they start at 2.
            Self::Audit => 2,
            // Trash entries hold snapshot objects' bytes unchanged: their
            // header says `Snapshot`, never `Trash`.
            Self::Trash => 2,
            Self::Pack => 1,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Config,
            2 => Self::Key,
            3 => Self::Pack,
            4 => Self::Index,
            5 => Self::Snapshot,
            6 => Self::Lock,
            7 => Self::Policy,
            8 => Self::Audit,
            9 => Self::Trash,
            _ => return None,
        })
    }

    /// Name used in messages and as the directory (prefix) holding such objects.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Key => "keys",
            Self::Pack => "data",
            Self::Index => "index",
            Self::Snapshot => "snapshots",
            Self::Lock => "locks",
            Self::Policy => "policies",
            Self::Audit => "audit",
            Self::Trash => "trash",
        }
    }
}

/// The decoded common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: ObjectKind,
    pub version: u8,
    pub flags: u16,
}

impl Header {
    pub fn new(kind: ObjectKind, encrypted: bool) -> Self {
        Header {
            kind,
            version: kind.current_version(),
            flags: if encrypted { FLAG_ENCRYPTED } else { 0 },
        }
    }

    pub fn encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4] = self.kind as u8;
        h[5] = self.version;
        h[6..8].copy_from_slice(&self.flags.to_le_bytes());
        h
    }

    /// Parses and validates the header of an object that must be of `expect` kind.
    pub fn decode(bytes: &[u8], expect: ObjectKind) -> Result<Header, FormatError> {
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::Truncated {
                what: expect.name(),
                need: HEADER_LEN,
                have: bytes.len(),
            });
        }
        if bytes[..4] != MAGIC {
            return Err(FormatError::BadMagic {
                what: expect.name(),
            });
        }
        let kind = ObjectKind::from_byte(bytes[4]).ok_or(FormatError::UnknownKind(bytes[4]))?;
        if kind != expect {
            return Err(FormatError::WrongKind {
                expected: expect.name(),
                found: kind.name(),
            });
        }
        let version = bytes[5];
        if version == 0 {
            return Err(FormatError::Invalid {
                what: kind.name().to_string(),
                detail: "format version 0 does not exist: the object is damaged".into(),
            });
        }
        if version > kind.current_version() {
            return Err(FormatError::UnsupportedVersion {
                what: kind.name(),
                found: version as u32,
                supported: kind.current_version() as u32,
            });
        }
        let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FormatError::UnknownFlags {
                what: kind.name(),
                flags,
            });
        }
        Ok(Header {
            kind,
            version,
            flags,
        })
    }
}

/// Length of the checksum that follows the header of a checked object.
pub const CHECKSUM_LEN: usize = 32;

/// Encodes an object whose body is protected by a checksum: the header at
/// the kind's current version, then `blake3(header || body)`, then `body`.
/// Used for the objects that are not named by their hash (config, key
/// slots, snapshots, locks, policies), so that a flipped byte in any of them
/// is found when it is read, also in unencrypted repositories.
pub fn encode_checked(kind: ObjectKind, encrypted: bool, body: &[u8]) -> Vec<u8> {
    let header = Header::new(kind, encrypted).encode();
    let mut h = blake3::Hasher::new();
    h.update(&header);
    h.update(body);
    let mut out = Vec::with_capacity(HEADER_LEN + CHECKSUM_LEN + body.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(h.finalize().as_bytes());
    out.extend_from_slice(body);
    out
}

/// Decodes an object written by [`encode_checked`] (version 2 and later) or
/// by an older pvsnap (version 1, no checksum), returning its header and
/// body. `what` names the object in the error.
pub fn decode_checked<'a>(
    bytes: &'a [u8],
    kind: ObjectKind,
    what: &dyn Fn() -> String,
) -> Result<(Header, &'a [u8]), FormatError> {
    let header = Header::decode(bytes, kind)?;
    if header.version < 2 {
        return Ok((header, &bytes[HEADER_LEN..]));
    }
    let Some(body) = bytes.get(HEADER_LEN + CHECKSUM_LEN..) else {
        return Err(FormatError::Truncated {
            what: kind.name(),
            need: HEADER_LEN + CHECKSUM_LEN,
            have: bytes.len(),
        });
    };
    let mut h = blake3::Hasher::new();
    h.update(&bytes[..HEADER_LEN]);
    h.update(body);
    if h.finalize().as_bytes() != &bytes[HEADER_LEN..HEADER_LEN + CHECKSUM_LEN] {
        return Err(FormatError::ChecksumMismatch { what: what() });
    }
    Ok((header, body))
}

/// Little-endian cursor used by the hand-written decoders (packs, indexes).
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.buf.len() - self.pos < n {
            return Err(FormatError::Truncated {
                what: self.what,
                need: self.pos + n,
                have: self.buf.len(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn id(&mut self) -> Result<[u8; 32], FormatError> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_refusals() {
        let h = Header::new(ObjectKind::Pack, true);
        let b = h.encode();
        assert_eq!(&b[..4], b"PVSN");
        assert_eq!(Header::decode(&b, ObjectKind::Pack).unwrap(), h);

        assert!(matches!(
            Header::decode(&b, ObjectKind::Index),
            Err(FormatError::WrongKind { .. })
        ));
        let mut newer = b;
        newer[5] = 2;
        let err = Header::decode(&newer, ObjectKind::Pack).unwrap_err();
        assert!(matches!(
            err,
            FormatError::UnsupportedVersion { found: 2, .. }
        ));
        assert!(err.to_string().contains("newer"), "{err}");
        let mut zero = b;
        zero[5] = 0;
        let err = Header::decode(&zero, ObjectKind::Pack).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        assert!(!err.to_string().contains("upgrade"), "{err}");
        let mut flags = b;
        flags[6] = 0x80;
        assert!(matches!(
            Header::decode(&flags, ObjectKind::Pack),
            Err(FormatError::UnknownFlags { .. })
        ));
        assert!(matches!(
            Header::decode(b"PVS", ObjectKind::Pack),
            Err(FormatError::Truncated { .. })
        ));
        assert!(matches!(
            Header::decode(b"XXXXXXXX", ObjectKind::Pack),
            Err(FormatError::BadMagic { .. })
        ));
    }

    #[test]
    fn checked_objects_find_every_flipped_byte_and_old_versions_still_read() {
        let body = br#"{"hello":"world"}"#;
        let bytes = encode_checked(ObjectKind::Snapshot, false, body);
        let what = || "snapshot x".to_string();
        let (h, got) = decode_checked(&bytes, ObjectKind::Snapshot, &what).unwrap();
        assert_eq!((h.version, got), (2, &body[..]));
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(
                    decode_checked(&bad, ObjectKind::Snapshot, &what).is_err(),
                    "flip of bit {bit:#x} at byte {i} was not noticed"
                );
            }
        }
        for cut in 0..bytes.len() {
            assert!(decode_checked(&bytes[..cut], ObjectKind::Snapshot, &what).is_err());
        }
        // Version 1: header and body, no checksum.
        let mut v1 = Header::new(ObjectKind::Snapshot, false).encode();
        v1[5] = 1;
        let old = [&v1[..], body].concat();
        let (h, got) = decode_checked(&old, ObjectKind::Snapshot, &what).unwrap();
        assert_eq!((h.version, got), (1, &body[..]));
    }
}
