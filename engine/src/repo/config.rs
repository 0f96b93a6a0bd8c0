//! The repository's config object and the choices made at `pvsnap init`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, FormatError, Result};
use crate::repo::crypto::KdfParams;
use crate::repo::format::{ObjectKind, REPO_VERSION, decode_checked, encode_checked};
use crate::repo::id::Id;

/// Features this build understands; a repository requiring another is refused.
pub const KNOWN_FEATURES: &[&str] = &[];

/// Content-defined chunking parameters (FastCDC 2020, `fastcdc` 3.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub algorithm: ChunkerAlgorithm,
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    /// Gear seed; `None` in encrypted repositories, where it is derived from the key.
    pub seed: Option<u64>,
}

/// The chunking algorithm; one today, named so that others can be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkerAlgorithm {
    #[serde(rename = "fastcdc-v2020")]
    FastCdc2020,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
            seed: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    pub id: Id,
    pub chunker: ChunkerParams,
    /// An encrypted repository made to cut chunks like another one
    /// (`init --copy-chunker-params-from`): that repository's gear seed,
    /// sealed with this one's data key, in hex. It replaces the seed derived
    /// from the key. A reader that ignores it cuts with the derived seed:
    /// less deduplication with the other repository, nothing wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunker_seed_sealed: Option<String>,
    pub compression: Compression,
    /// Target size of pack files in bytes.
    pub pack_size: u32,
    /// `none` or `xchacha20poly1305`.
    pub encryption: String,
    #[serde(default)]
    pub required_features: Vec<String>,
    #[serde(default)]
    pub optional_features: Vec<String>,
}

impl Config {
    /// The stored bytes: a checked object (see
    /// [`crate::repo::format::encode_checked`]) around the JSON, never encrypted.
    pub fn encode(&self) -> Vec<u8> {
        encode_checked(
            ObjectKind::Config,
            false,
            &serde_json::to_vec_pretty(self).expect("config serializes"),
        )
    }

    /// Decodes and validates the config object of the repository at
    /// `location` (named in errors).
    pub fn decode(bytes: &[u8], location: &str) -> Result<Config> {
        let what = || format!("{location}/config");
        let (_, json) = decode_checked(bytes, ObjectKind::Config, &what)?;
        let config: Config = serde_json::from_slice(json).map_err(|e| FormatError::Invalid {
            what: what(),
            detail: e.to_string(),
        })?;
        if config.version > REPO_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: "repository",
                found: config.version,
                supported: REPO_VERSION,
            }
            .into());
        }
        if config.version == 0 {
            return Err(FormatError::Invalid {
                what: what(),
                detail: "repository version 0 does not exist: the config is damaged".into(),
            }
            .into());
        }
        if let Some(f) = config
            .required_features
            .iter()
            .find(|f| !KNOWN_FEATURES.contains(&f.as_str()))
        {
            return Err(FormatError::UnknownFeature(f.clone()).into());
        }
        validate_chunker(&config.chunker)?;
        Ok(config)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Compression {
    pub algorithm: CompressionAlgorithm,
    /// zstd level; 0 stores blobs uncompressed.
    pub level: i32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum CompressionAlgorithm {
    #[serde(rename = "zstd")]
    Zstd,
}

/// Choices made at `pvsnap init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub password: Option<Vec<u8>>,
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_size: u32,
    pub kdf: KdfParams,
}

/// Default zstd level; see `ARCHITECTURE.md` for the measurement behind it.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;
/// Default pack size; see `ARCHITECTURE.md`.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            password: None,
            chunker: ChunkerParams::default(),
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            pack_size: DEFAULT_PACK_SIZE,
            kdf: KdfParams::default(),
        }
    }
}

impl InitOptions {
    /// Refuses options a repository cannot be created with, so a caller can
    /// check them before it creates anything.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020 as f;
        let c = &self.chunker;
        if validate_chunker(c).is_err() {
            return Err(Error::Invalid(format!(
                "chunk sizes min {} avg {} max {} bytes are out of range: min {}..={}, avg {}..={}, max {}..={} bytes, and min <= avg <= max",
                c.min,
                c.avg,
                c.max,
                f::MINIMUM_MIN,
                f::MINIMUM_MAX,
                f::AVERAGE_MIN,
                f::AVERAGE_MAX,
                f::MAXIMUM_MIN,
                f::MAXIMUM_MAX
            )));
        }
        if !(0..=22).contains(&self.compression_level) {
            return Err(Error::Invalid(format!(
                "compression level {} is out of range: 0 (none) to 22",
                self.compression_level
            )));
        }
        if self.pack_size == 0 {
            return Err(Error::Invalid("pack size 0: give at least 1 MiB".into()));
        }
        let k = self.kdf;
        argon2::Params::new(k.m_cost, k.t_cost, k.p_cost, Some(32)).map_err(|e| {
            Error::Invalid(format!(
                "key derivation parameters m_cost {} t_cost {} p_cost {}: {e}",
                k.m_cost, k.t_cost, k.p_cost
            ))
        })?;
        Ok(())
    }
}

fn validate_chunker(c: &ChunkerParams) -> Result<()> {
    use fastcdc::v2020 as f;
    let ok = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&c.min)
        && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&c.avg)
        && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&c.max)
        && c.min <= c.avg
        && c.avg <= c.max;
    if ok {
        Ok(())
    } else {
        Err(FormatError::Invalid {
            what: "config".into(),
            detail: format!(
                "chunker sizes min {} avg {} max {} are out of range",
                c.min, c.avg, c.max
            ),
        }
        .into())
    }
}
