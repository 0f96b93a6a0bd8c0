//! Typed 32-byte identifiers.
//!
//! Every object and blob in a repository is named by 32 bytes. Raw arrays never
//! flow through the engine: each kind of name has its own type, stamped out by
//! [`typed_id!`], so a pack id cannot be passed where a chunk id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length in bytes of every id.
pub const ID_LEN: usize = 32;

/// Characters of hex shown by `Display` in short form and by `short()`.
pub const SHORT_ID_HEX: usize = 8;

/// Error returned when text is not a 64-digit hex id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a 64-digit hexadecimal id")]
pub struct ParseIdError(pub String);

/// The untyped 32 bytes behind every typed id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; ID_LEN]);

impl Id {
    /// A fresh random id (used for snapshots, locks and key slots, whose names
    /// are not derived from content).
    pub fn random() -> Self {
        let mut b = [0u8; ID_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        Id(b)
    }

    /// Full lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first [`SHORT_ID_HEX`] hex digits.
    pub fn short(&self) -> String {
        self.to_hex()[..SHORT_ID_HEX].to_string()
    }

    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Id {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut b = [0u8; ID_LEN];
        hex::decode_to_slice(s, &mut b).map_err(|_| ParseIdError(s.to_string()))?;
        Ok(Id(b))
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let b: serde_bytes_array::Bytes32 = Deserialize::deserialize(d)?;
            Ok(Id(b.0))
        }
    }
}

mod serde_bytes_array {
    //! Deserializes exactly 32 bytes from a compact (postcard) encoding.
    use serde::Deserialize;
    pub struct Bytes32(pub [u8; 32]);
    impl<'de> Deserialize<'de> for Bytes32 {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Bytes32;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("32 bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes32, E> {
                    let a: [u8; 32] = v
                        .try_into()
                        .map_err(|_| E::invalid_length(v.len(), &self))?;
                    Ok(Bytes32(a))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

/// Stamps out a newtype over [`Id`] with hex `Display`, parsing and serde.
macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl $name {
            pub fn to_hex(&self) -> String { self.0.to_hex() }
            pub fn short(&self) -> String { self.0.short() }
            pub fn id(&self) -> Id { self.0 }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.short())
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Display::fmt(&self.0, f) }
        }
        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> { Ok(Self(s.parse()?)) }
        }
        impl From<Id> for $name {
            fn from(id: Id) -> Self { Self(id) }
        }
    };
}

typed_id!(
    /// Content id of a data chunk: blake3 of its plaintext (keyed in encrypted repositories).
    ChunkId
);
typed_id!(
    /// Content id of a tree blob (one directory's metadata).
    TreeId
);
typed_id!(
    /// Name of a pack file: blake3 of the pack file's bytes as stored.
    PackId
);
typed_id!(
    /// Name of an index file: blake3 of the index file's bytes as stored.
    IndexId
);
typed_id!(
    /// Random name of a snapshot object.
    SnapshotId
);
typed_id!(
    /// Random name of a key slot.
    KeyId
);
typed_id!(
    /// Random name of a lock object.
    LockId
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_round_trip(bytes in any::<[u8; 32]>()) {
            let id = ChunkId(Id(bytes));
            let back: ChunkId = id.to_hex().parse().unwrap();
            prop_assert_eq!(id, back);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<ChunkId>(&json).unwrap(), id);
            let bin = postcard::to_stdvec(&id).unwrap();
            prop_assert_eq!(postcard::from_bytes::<ChunkId>(&bin).unwrap(), id);
        }
    }

    #[test]
    fn rejects_bad_hex() {
        assert!("abc".parse::<Id>().is_err());
        assert!("zz".repeat(32).parse::<Id>().is_err());
    }
}
