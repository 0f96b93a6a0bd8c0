//! Opening and creating repositories; reading blobs, trees and snapshots.
//!
//! [`Repository`] is an opened repository (config read, key unlocked).
//! [`IndexedRepository`] additionally holds the in-memory index and is what
//! backup, restore and every reader need: the type makes it impossible to read
//! a blob before the index is loaded.

pub mod audit;
pub mod catalog;
pub mod config;
pub mod crypto;
pub mod format;
mod host;
pub mod id;
pub mod keys;
pub mod lock;
pub mod policy;
pub mod snapshots;
pub mod trash;

pub use config::{
    ChunkerAlgorithm, ChunkerParams, Compression, CompressionAlgorithm, Config,
    DEFAULT_COMPRESSION_LEVEL, DEFAULT_PACK_SIZE, InitOptions, KNOWN_FEATURES,
};
pub(crate) use host::hostname;
pub use host::hostname_public;
pub use snapshots::{
    Unreadable, resolve_for, resolve_in, same_source, sort_snapshots, source_key,
    warn_unreadable_snapshots,
};

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use crate::backend::{DynBackend, ObjectKey};
use crate::cache::PackCache;
use crate::error::{BackendError, CryptoError, Error, FormatError, Result};
use crate::repo::crypto::{Crypto, Keys};
use crate::repo::format::{ObjectKind, REPO_VERSION};
use crate::repo::id::{ChunkId, Id, IndexId, KeyId, PackId, TreeId};
use crate::snapshot::Snapshot;
use crate::store::blob::{self, BlobKind};
use crate::store::index::{BlobLocation, Index, IndexBuilder, IndexFile};
use crate::tree::Tree;
use catalog::IndexMode;

/// The master key of an encrypted repository, wiped when the last holder
/// drops it.
pub(crate) type MasterKey = Arc<zeroize::Zeroizing<[u8; 32]>>;

/// Supplies the passphrase when (and only when) the repository is encrypted.
pub type PasswordFn<'a> = &'a dyn Fn() -> Result<Vec<u8>>;

/// An opened repository.
#[derive(Clone)]
pub struct Repository {
    backend: DynBackend,
    config: Arc<Config>,
    crypto: Crypto,
    /// The master key and the slot that opened it (encrypted repositories).
    master: Option<(KeyId, MasterKey)>,
    /// The gear seed sealed in the config of an encrypted repository that
    /// cuts chunks like another one ([`Config::chunker_seed_sealed`]).
    shared_seed: Option<u64>,
}

/// What the sealed chunker seed of a config is bound to.
const SEED_AAD: &[u8] = b"pvsnap chunker seed";

impl Repository {
    /// Creates a repository in an empty backend.
    pub fn init(backend: DynBackend, mut opts: InitOptions) -> Result<Repository> {
        // Wiped on every way out.
        let password = opts.password.take().map(zeroize::Zeroizing::new);
        opts.validate()?;
        if backend.exists(&ObjectKey::config())? {
            return Err(Error::AlreadyInitialized(backend.location()));
        }
        let mut opened = None;
        let wanted_seed = opts.chunker.seed;
        let (crypto, seed, encryption) = match &password {
            Some(pw) if pw.is_empty() => {
                return Err(Error::Invalid(
                    "an encrypted repository needs a non-empty password".into(),
                ));
            }
            Some(pw) => {
                let master = crate::repo::crypto::new_master_key();
                let key_id = crate::repo::keys::write_slot(&backend, &master, pw, opts.kdf)?;
                opened = Some((key_id, Arc::new(master.clone())));
                (
                    Crypto::Keyed(Box::new(Keys::from_master(&master))),
                    None,
                    "xchacha20poly1305",
                )
            }
            None => (
                Crypto::None,
                Some(wanted_seed.unwrap_or_else(rand::random::<u64>)),
                "none",
            ),
        };
        // An encrypted repository keeps a seed it is given secret: sealed.
        let shared_seed = wanted_seed.filter(|_| crypto.is_encrypted());
        let chunker_seed_sealed =
            shared_seed.map(|s| hex::encode(crypto.seal(SEED_AAD, s.to_le_bytes().to_vec())));
        let config = Config {
            version: REPO_VERSION,
            id: Id::random(),
            chunker: ChunkerParams {
                seed,
                ..opts.chunker
            },
            chunker_seed_sealed,
            compression: Compression {
                algorithm: CompressionAlgorithm::Zstd,
                level: opts.compression_level,
            },
            pack_size: opts.pack_size,
            encryption: encryption.into(),
            required_features: vec![],
            optional_features: vec![],
        };
        backend.put(&ObjectKey::config(), &config.encode())?;
        Ok(Repository {
            backend,
            config: Arc::new(config),
            crypto,
            master: opened,
            shared_seed,
        })
    }

    /// Opens an existing repository, asking `password` only if it is encrypted.
    pub fn open(backend: DynBackend, password: Option<PasswordFn<'_>>) -> Result<Repository> {
        let read = || match backend.get(&ObjectKey::config()) {
            Ok(b) => Ok(b),
            Err(BackendError::NotFound { .. }) => Err(Error::NotARepository(backend.location())),
            Err(e) => Err(Error::from(e)),
        };
        let mut bytes = read()?;
        if Config::decode(&bytes, &backend.location()).is_err() {
            // Read it once more before calling it damaged: a share that
            // another node writes to at the same moment may hand a reader
            // a passing wrong answer (seen on FAT through fusefat). Damage
            // that stays is reported below as before.
            std::thread::sleep(std::time::Duration::from_millis(200));
            bytes = read()?;
        }
        let config = Config::decode(&bytes, &backend.location()).map_err(|e| match e {
            Error::Format(
                f @ (FormatError::Truncated { .. }
                | FormatError::BadMagic { .. }
                | FormatError::UnknownKind(_)
                | FormatError::WrongKind { .. }
                | FormatError::Invalid { .. }
                | FormatError::ChecksumMismatch { .. }),
            ) => Error::ConfigDamaged {
                location: backend.location(),
                detail: damage_detail(&f),
            },
            e => e,
        })?;
        let mut master = None;
        let crypto = match config.encryption.as_str() {
            "none" => Crypto::None,
            "xchacha20poly1305" => {
                let pw = zeroize::Zeroizing::new(password.ok_or(CryptoError::PasswordRequired)?()?);
                let (id, key) = crate::repo::keys::unlock(&backend, &pw)?;
                let crypto = Crypto::Keyed(Box::new(Keys::from_master(&key)));
                master = Some((id, Arc::new(key)));
                crypto
            }
            other => {
                return Err(FormatError::Invalid {
                    what: "config".into(),
                    detail: format!("unknown encryption `{other}`; upgrade pvsnap"),
                }
                .into());
            }
        };
        let shared_seed = config
            .chunker_seed_sealed
            .as_deref()
            .filter(|_| crypto.is_encrypted())
            .and_then(|sealed| {
                let seed = hex::decode(sealed).ok().and_then(|b| {
                    crypto
                        .open(SEED_AAD, &b, &|| "chunker seed".into())
                        .ok()
                        .and_then(|p| <[u8; 8]>::try_from(p.as_slice()).ok())
                });
                if seed.is_none() {
                    tracing::warn!(
                        "{}/config: the sealed chunker seed does not open; new snapshots cut chunks with the seed of this repository's key (they deduplicate less with the repository it was made from, nothing else changes)",
                        backend.location()
                    );
                }
                seed.map(u64::from_le_bytes)
            });
        Ok(Repository {
            backend,
            config: Arc::new(config),
            crypto,
            master,
            shared_seed,
        })
    }

    /// The master key and the id of the slot that opened it, if encrypted.
    pub(crate) fn master(&self) -> Option<&(KeyId, MasterKey)> {
        self.master.as_ref()
    }

    pub fn backend(&self) -> &DynBackend {
        &self.backend
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    /// The chunker seed in force (stored, sealed in the config, or derived
    /// from the key).
    pub fn chunker_seed(&self) -> u64 {
        self.shared_seed
            .or(self.crypto.chunker_seed())
            .or(self.config.chunker.seed)
            .unwrap_or(0)
    }

    /// Loads the index: the repository can now read blobs. An index file
    /// that cannot be read is skipped with a warning (see
    /// [`IndexMode::Lenient`]): what the others describe stays readable.
    pub fn load_index(self) -> Result<IndexedRepository> {
        // File by file into the index: the decoded files are never all
        // held beside it (their entries are about as large).
        let mut builder = IndexBuilder::default();
        let catalog = self.catalog_each(IndexMode::Lenient, |id, f| builder.add(id, &f))?;
        for u in &catalog.unreadable {
            tracing::warn!("{u}");
        }
        let (index, set_aside) = usable_index(builder, &catalog.packs);
        Ok(IndexedRepository {
            repo: self,
            index,
            set_aside,
            rescued: std::sync::OnceLock::new(),
            tree_packs: PackCache::new(TREE_PACK_CACHE),
            behind: Vec::new(),
        })
    }
}

/// What is wrong with a damaged config object, without the name the
/// message of [`Error::ConfigDamaged`] already gives.
fn damage_detail(e: &FormatError) -> String {
    match e {
        FormatError::Truncated { have, .. } => format!("only {have} bytes, truncated"),
        FormatError::BadMagic { .. } => "not a pvsnap object: bad magic".into(),
        FormatError::ChecksumMismatch { .. } => "checksum mismatch".into(),
        FormatError::Invalid { detail, .. } => detail.clone(),
        e => e.to_string(),
    }
}

/// The index of `files` without entries whose pack is missing or too short
/// to hold them (`sizes`: the packs present). A snapshot deduplicates
/// against the index: an entry in a truncated or lost pack would make it
/// reference data that is not there, exit 0 and be damaged from the start.
/// Left out, the chunk is stored again. The catalog lists packs after
/// reading the index files, so every pack those files name was written
/// before the listing.
fn usable_index(files: IndexBuilder, sizes: &HashMap<PackId, u64>) -> (Index, SetAside) {
    let unusable = std::sync::Mutex::new(HashMap::<Id, PackId>::new());
    // A pack's entries come one after another: its size is looked up once
    // (not hashed ten million times).
    let last = std::cell::Cell::new(None::<(PackId, Option<u64>)>);
    let index = files.finish(|pack, e| {
        let size = match last.get() {
            Some((p, size)) if p == *pack => size,
            _ => {
                let size = sizes.get(pack).copied();
                last.set(Some((*pack, size)));
                size
            }
        };
        let fits = size.is_some_and(|size| e.offset as u64 + e.stored_len as u64 <= size);
        if !fits {
            unusable.lock().expect("unusable").insert(e.id, *pack);
        }
        fits
    });
    let mut per_pack = std::collections::BTreeMap::<PackId, usize>::new();
    let mut set_aside = HashMap::new();
    for (id, pack) in unusable.into_inner().expect("unusable") {
        *per_pack.entry(pack).or_default() += 1;
        // A blob also stored whole elsewhere is readable: not set aside.
        if index.get(&id).is_none() {
            set_aside.insert(id, pack);
        }
    }
    for (pack, n) in per_pack {
        tracing::warn!(
            "pack {pack} {}: {n} blob(s) listed in it are not used (a snapshot stores them again); run `pvsnap check`, then `pvsnap repair index`",
            pack_damage(sizes, &pack)
        );
    }
    let set_aside = set_aside
        .into_iter()
        .map(|(id, pack)| (id, (pack, pack_damage(sizes, &pack))))
        .collect();
    (index, set_aside)
}

impl Repository {
    /// Pairs the repository with an index built by the caller (maintenance
    /// code that has read and judged the index files itself).
    pub fn with_index(self, index: Index) -> IndexedRepository {
        IndexedRepository {
            repo: self,
            index,
            set_aside: HashMap::new(),
            rescued: std::sync::OnceLock::new(),
            tree_packs: PackCache::new(TREE_PACK_CACHE),
            behind: Vec::new(),
        }
    }

    /// Writes an index file; returns its id.
    pub fn write_index(&self, file: &IndexFile) -> Result<(IndexId, u64)> {
        let (id, bytes) = file.encode(&self.crypto);
        self.backend
            .put(&ObjectKey::new(ObjectKind::Index, id.to_hex()), &bytes)?;
        Ok((id, bytes.len() as u64))
    }
}

/// A repository with its index loaded.
pub struct IndexedRepository {
    repo: Repository,
    index: Index,
    /// Blobs the index files list only in a pack that is missing or too
    /// short: left out of `index`, kept to say why a read fails.
    set_aside: SetAside,
    /// Blobs found in the trailers of packs no index file names, read on the
    /// first lookup the index cannot answer (see [`IndexedRepository::locate`]).
    rescued: std::sync::OnceLock<HashMap<Id, BlobLocation>>,
    tree_packs: PackCache,
    /// Index files of snapshots committed through this value whose blobs
    /// `index` does not hold yet (see [`IndexedRepository::load_written_index`]).
    behind: Vec<IndexId>,
}

/// Bytes of tree packs kept in memory (see [`crate::cache`]).
const TREE_PACK_CACHE: usize = 128 * 1024 * 1024;

impl std::ops::Deref for IndexedRepository {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        &self.repo
    }
}

impl IndexedRepository {
    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn index_mut(&mut self) -> &mut Index {
        &mut self.index
    }

    /// Notes index files a committed snapshot wrote whose blobs are not
    /// added to the index now: a first snapshot of millions of files ends
    /// without building an index of them all in memory. A next snapshot
    /// through this value calls [`IndexedRepository::load_written_index`]
    /// first, so it deduplicates against them.
    pub fn note_written_index(&mut self, files: Vec<IndexId>) {
        self.behind.extend(files);
    }

    /// Adds the blobs of the index files noted by
    /// [`IndexedRepository::note_written_index`] to the index. A file that
    /// cannot be read back is warned about and left out: its blobs are
    /// stored again by a next snapshot, never referenced unstored.
    pub fn load_written_index(&mut self) {
        if self.behind.is_empty() {
            return;
        }
        let mut packs = Vec::new();
        for id in std::mem::take(&mut self.behind) {
            match self.repo.read_index_file(&id.to_hex()) {
                Ok((_, file, _)) => packs.extend(file.packs),
                Err(e) => tracing::warn!(
                    "index file {id} that this run wrote cannot be read back ({e}); a next snapshot stores its blobs again"
                ),
            }
        }
        self.index.extend(packs);
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Where blob `id` can be read: from the index, or else from the trailer
    /// of a pack that no readable index file names (an index file lost or
    /// damaged). Every blob read is verified against its id, so a trailer is
    /// trusted no further than an index file. Only readers use this: a
    /// snapshot deduplicates against [`IndexedRepository::index`] alone, as
    /// a blob no index file lists may be in a pack prune is about to delete.
    pub fn locate(&self, id: &Id) -> Option<BlobLocation> {
        self.index
            .get(id)
            .or_else(|| self.rescued().get(id).copied())
    }

    /// The blobs of packs that no index entry names, read from their
    /// trailers once.
    fn rescued(&self) -> &HashMap<Id, BlobLocation> {
        self.rescued.get_or_init(|| {
            let found = match self.read_unindexed_trailers() {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!("could not look for blobs outside the index: {e}");
                    return HashMap::new();
                }
            };
            let packs: std::collections::HashSet<PackId> =
                found.values().map(|l| l.pack).collect();
            if !found.is_empty() {
                tracing::warn!(
                    "{} blob(s) the index does not list were found in {} pack(s) that no readable index file names; run `pvsnap repair index`",
                    found.len(),
                    packs.len()
                );
            }
            found
        })
    }

    fn read_unindexed_trailers(&self) -> Result<HashMap<Id, BlobLocation>> {
        let indexed: std::collections::HashSet<PackId> = self.index.pack_ids().collect();
        let unindexed: Vec<(PackId, u64)> = self
            .backend()
            .list(ObjectKind::Pack)?
            .into_iter()
            .filter_map(|(n, size)| n.parse::<PackId>().ok().map(|p| (p, size)))
            .filter(|(p, _)| !indexed.contains(p))
            .collect();
        let trailers: Vec<(PackId, Vec<crate::store::blob::BlobEntry>)> = unindexed
            .par_iter()
            .filter_map(|(p, size)| {
                crate::store::pack::read_trailer(self.backend().as_ref(), self.crypto(), p, *size)
                    .ok()
                    .map(|e| (*p, e))
            })
            .collect();
        let mut found = HashMap::new();
        for (pack, entries) in trailers {
            for entry in entries {
                found
                    .entry(entry.id)
                    .or_insert(BlobLocation { pack, entry });
            }
        }
        Ok(found)
    }

    /// Why blob `id` cannot be located, for a message: its pack is missing
    /// or short, or no index file lists it.
    pub fn why_unlocated(&self, id: &Id) -> String {
        match self.set_aside.get(id) {
            Some((pack, why)) => format!("its pack {} {why}", pack.short()),
            None => "it is not in the index".into(),
        }
    }

    /// Reads, checks and returns one blob's plaintext.
    pub fn read_blob(&self, kind: BlobKind, id: &Id) -> Result<Vec<u8>> {
        let loc = self
            .locate(id)
            .ok_or_else(|| match self.set_aside.get(id) {
                Some((pack, why)) => Error::CorruptBlob {
                    id: id.to_hex(),
                    pack: pack.to_hex(),
                    detail: format!("the pack {why}"),
                },
                None => Error::BlobNotInIndex {
                    id: id.to_hex(),
                    kind: kind.name(),
                },
            })?;
        if loc.entry.kind != kind {
            return Err(Error::CorruptBlob {
                id: id.to_hex(),
                pack: loc.pack.to_hex(),
                detail: format!(
                    "the index lists a {} blob where a {} blob was expected",
                    loc.entry.kind.name(),
                    kind.name()
                ),
            });
        }
        let key = ObjectKey::new(ObjectKind::Pack, loc.pack.to_hex());
        let missing = |e: BackendError| match e {
            BackendError::NotFound { .. } => Error::CorruptBlob {
                id: id.to_hex(),
                pack: loc.pack.to_hex(),
                detail: "the pack is missing; run `pvsnap check`".into(),
            },
            e => e.into(),
        };
        let (start, len) = (loc.entry.offset as usize, loc.entry.stored_len as usize);
        if loc.entry.kind == BlobKind::Tree {
            let pack = self
                .tree_packs
                .get_or_load(&loc.pack, || self.backend().get_tree_pack(&key))
                .map_err(missing)?;
            let stored = pack
                .get(start..start + len)
                .ok_or_else(|| Error::CorruptBlob {
                    id: id.to_hex(),
                    pack: loc.pack.to_hex(),
                    detail: "the pack is shorter than the index says".into(),
                })?;
            return blob::decode(self.crypto(), &loc.pack, &loc.entry, stored);
        }
        let stored = self
            .backend()
            .get_range(&key, start as u64, len as u64)
            .map_err(missing)?;
        blob::decode(self.crypto(), &loc.pack, &loc.entry, &stored)
    }

    pub fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.read_blob(BlobKind::Data, &id.0)
    }

    pub fn read_tree(&self, id: &TreeId) -> Result<Tree> {
        let bytes = self.read_blob(BlobKind::Tree, &id.0)?;
        Ok(Tree::decode(&bytes, id)?)
    }

    /// Finds the node at `path` (relative, `/`-separated) below `root`.
    /// An empty path (or `/`) is the root node itself.
    pub fn find_node(&self, snap: &Snapshot, path: &str) -> Result<crate::tree::Node> {
        let mut node = snap.root.clone();
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            let crate::tree::NodeKind::Dir { subtree } = &node.kind else {
                return Err(Error::PathNotInSnapshot {
                    snapshot: snap.id.short(),
                    path: path.into(),
                });
            };
            let tree = self.read_tree(subtree)?;
            node = tree
                .find(part.as_bytes())
                .cloned()
                .ok_or_else(|| Error::PathNotInSnapshot {
                    snapshot: snap.id.short(),
                    path: path.into(),
                })?;
        }
        Ok(node)
    }
}

/// Blobs set aside by [`Repository::load_index`]: the pack each was listed
/// in and what is wrong with that pack.
type SetAside = HashMap<Id, (PackId, &'static str)>;

/// Why a pack cannot hold what the index lists in it.
fn pack_damage(sizes: &HashMap<PackId, u64>, pack: &PackId) -> &'static str {
    if sizes.contains_key(pack) {
        "is shorter than the index says"
    } else {
        "is missing"
    }
}
