//! A local cache in front of a remote repository: what every command reads
//! again and again is kept on this machine's disk.
//!
//! [`Cached`] keeps index files, snapshot objects, audit entries (every
//! command that changes the repository reads the whole trail to chain its
//! entry: a year of hourly snapshots is thousands of reads) and the packs
//! that hold tree blobs (stored and read through [`Backend::put_tree_pack`]
//! and [`Backend::get_tree_pack`]; the packer never mixes trees and file
//! data in one pack), in `<cache root>/<repository id>/`, laid out as the
//! repository is (`index/<hex>`, `snapshots/<hex>`, `audit/<hex>`,
//! `data/<hh>/<hex>`). The
//! cache root is `$XDG_CACHE_HOME/pvsnap`, or `~/.cache/pvsnap` when that is
//! unset (root included). With it an unchanged re-snapshot, `ls`, `diff` and
//! the mount read no pack from the remote after the first run; file data
//! always comes from the remote.
//!
//! - **Verified on read.** Each cache file holds a small header with the
//!   body's length and blake3 hash (see `FORMAT.md`, "Local cache files"), and
//!   objects named by their content (packs, index files) must also hash to
//!   their name. A file that fails is removed and the object fetched again;
//!   damaged bytes are never served.
//! - **Bounded.** At most [`DEFAULT_LIMIT`] bytes (or the limit given); the
//!   least recently used files go first (a hit touches the file's mtime, so
//!   every process sharing the folder sees the same order).
//! - **Clean.** When the engine lists index files, snapshots or packs, cache
//!   files of objects the repository no longer lists are removed (those
//!   written after the listing began are left alone: another process may
//!   just have stored them).
//! - **Shared safely.** Files are written under a temporary name in their
//!   folder and renamed into place, so two processes sharing the folder
//!   never see each other's half-written files.
//! - **Never in the way.** A cache that cannot be created or written is
//!   skipped with one warning; the command works on the remote alone.
//!
//! Writes go through to the remote first and then fill the cache; deletes
//! drop the cached copy.

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use super::{Backend, DynBackend, Forward, ObjectKey};
use crate::error::BackendError;
use crate::repo::config::Config;
use crate::repo::format::ObjectKind;

/// Bytes a cache folder holds at most unless told otherwise: room for the
/// index and trees of repositories far larger than a node's volumes.
pub const DEFAULT_LIMIT: u64 = 1 << 30;

/// First bytes of every cache file.
const MAGIC: [u8; 4] = *b"PVSC";
const VERSION: u8 = 1;
/// magic (4), version (1), reserved (3), body length (8), blake3 (32).
const HEADER_LEN: usize = 48;
/// Temporary files of a write that was killed are removed once this old.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Where the cache lives and how large it may grow.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// The folder holding one folder per repository id.
    pub root: PathBuf,
    /// Bytes the repository's folder holds at most.
    pub limit: u64,
}

impl CacheOptions {
    /// `$XDG_CACHE_HOME/pvsnap`, or `~/.cache/pvsnap`; `None` when neither
    /// variable is set. A relative `XDG_CACHE_HOME` is ignored, as the XDG
    /// specification asks.
    pub fn default_root() -> Option<PathBuf> {
        let xdg = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute());
        let base = xdg.or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
        Some(base.join("pvsnap"))
    }

    /// The default root with [`DEFAULT_LIMIT`].
    pub fn default_options() -> Option<CacheOptions> {
        Some(CacheOptions {
            root: Self::default_root()?,
            limit: DEFAULT_LIMIT,
        })
    }
}

/// The caching decorator; see the module documentation.
pub struct Cached {
    inner: DynBackend,
    /// `<root>/<repository id>`.
    dir: PathBuf,
    limit: u64,
    /// Bytes in `dir` as last counted, plus what this process added since.
    used: AtomicU64,
    /// Set after a failed write: the cache is read, no longer filled.
    read_only: AtomicBool,
    evicting: Mutex<()>,
}

impl Cached {
    /// `inner` behind a cache under `opts.root`, or `inner` itself when the
    /// cache cannot be used: no repository there yet (`init`), a config
    /// that cannot be read (opening the repository then says why), or a
    /// cache folder that cannot be created (one warning).
    pub fn wrap(inner: DynBackend, opts: &CacheOptions) -> DynBackend {
        let Ok(config) = inner.get(&ObjectKey::config()) else {
            return inner;
        };
        let Ok(parsed) = Config::decode(&config, &inner.location()) else {
            return inner;
        };
        let dir = opts.root.join(parsed.id.to_hex());
        if let Err(e) = fs::create_dir_all(&dir) {
            tracing::warn!(
                "cache folder {}: cannot create it ({e}); going on without a cache (give XDG_CACHE_HOME a writable folder, or pass --no-cache)",
                dir.display()
            );
            return inner;
        }
        let used = scan(&dir).iter().map(|f| f.size).sum();
        tracing::debug!("cache {}: {used} bytes", dir.display());
        std::sync::Arc::new(Cached {
            inner,
            dir,
            limit: opts.limit,
            used: AtomicU64::new(used),
            read_only: AtomicBool::new(false),
            evicting: Mutex::new(()),
        })
    }

    /// The folder this repository's objects are cached in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.dir.join(key.path())
    }

    /// The cached copy of `key`, if there is a sound one. A damaged copy is
    /// removed.
    fn lookup(&self, key: &ObjectKey) -> Option<Vec<u8>> {
        let path = self.path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("cache file {}: cannot read it: {e}", path.display());
                return None;
            }
        };
        match unwrap_checked(key, bytes) {
            Ok(body) => {
                // Marks it as recently used, for every process.
                if let Ok(f) = fs::File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(body)
            }
            Err(why) => {
                tracing::warn!(
                    "cache file {} is damaged ({why}); removed, the object is read from the repository",
                    path.display()
                );
                self.forget(key);
                None
            }
        }
    }

    /// Keeps a copy of `data` under `key`; failures only cost speed.
    fn store(&self, key: &ObjectKey, data: &[u8]) {
        let size = (HEADER_LEN + data.len()) as u64;
        if size > self.limit || self.read_only.load(Ordering::Relaxed) {
            return;
        }
        let path = self.path(key);
        let written = (|| -> std::io::Result<()> {
            let dir = path.parent().expect("cache paths have a parent");
            fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".tmp-{}", crate::repo::id::Id::random().short()));
            let mut file = Vec::with_capacity(size as usize);
            file.extend_from_slice(&header(data));
            file.extend_from_slice(data);
            let r = fs::write(&tmp, &file).and_then(|()| fs::rename(&tmp, &path));
            if r.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            r
        })();
        match written {
            Ok(()) => {
                if self.used.fetch_add(size, Ordering::Relaxed) + size > self.limit {
                    self.evict();
                }
            }
            Err(e) => {
                if !self.read_only.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "cache file {}: cannot write it ({e}); the cache is only read from now on",
                        path.display()
                    );
                }
            }
        }
    }

    fn forget(&self, key: &ObjectKey) {
        let path = self.path(key);
        if let Ok(m) = fs::metadata(&path)
            && fs::remove_file(&path).is_ok()
        {
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(m.len()))
                });
        }
    }

    /// Removes the least recently used files until the folder holds at most
    /// nine tenths of the limit (so the next few writes do not scan again).
    fn evict(&self) {
        let Ok(_one) = self.evicting.try_lock() else {
            return; // another thread of ours is at it
        };
        let mut files = scan(&self.dir);
        let mut total: u64 = files.iter().map(|f| f.size).sum();
        files.sort_by_key(|f| f.modified);
        let target = self.limit / 10 * 9;
        for f in files {
            if total <= target {
                break;
            }
            if fs::remove_file(&f.path).is_ok() {
                total -= f.size;
            }
        }
        self.used.store(total, Ordering::Relaxed);
    }

    /// Removes cache files of `kind` whose objects `listed` no longer has
    /// and that were written before `since` (the start of the listing).
    fn sweep(&self, kind: ObjectKind, listed: &[(String, u64)], since: SystemTime) {
        let names: HashSet<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        let folder = self.dir.join(kind.name());
        for f in scan(&folder) {
            if f.temporary || f.modified >= since {
                continue;
            }
            let name = f.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !names.contains(name) && fs::remove_file(&f.path).is_ok() {
                let _ = self
                    .used
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                        Some(u.saturating_sub(f.size))
                    });
            }
        }
    }
}

/// The kinds a plain `get` or `put` caches; packs only through the tree
/// methods.
fn cached_kind(kind: ObjectKind) -> bool {
    matches!(
        kind,
        ObjectKind::Index | ObjectKind::Snapshot | ObjectKind::Audit
    )
}

/// The header of a cache file holding `body`.
fn header(body: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
    h[16..].copy_from_slice(blake3::hash(body).as_bytes());
    h
}

/// The body of a cache file for `key`, or why it cannot be trusted.
fn unwrap_checked(key: &ObjectKey, mut bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than its header", bytes.len()));
    }
    if bytes[..4] != MAGIC || bytes[4] != VERSION {
        return Err("not a pvsnap cache file of this version".into());
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let have = (bytes.len() - HEADER_LEN) as u64;
    if len != have {
        return Err(format!("{have} bytes where its header says {len}"));
    }
    let hash = blake3::hash(&bytes[HEADER_LEN..]);
    if hash.as_bytes()[..] != bytes[16..HEADER_LEN] {
        return Err("its bytes do not match their hash".into());
    }
    let named_by_content = matches!(
        key.kind,
        ObjectKind::Pack | ObjectKind::Index | ObjectKind::Audit
    );
    if named_by_content && hash.to_hex().as_str() != key.name {
        return Err("its bytes do not hash to its name".into());
    }
    bytes.drain(..HEADER_LEN);
    Ok(bytes)
}

struct CacheFile {
    path: PathBuf,
    size: u64,
    modified: SystemTime,
    temporary: bool,
}

/// Every file below `dir`. Temporary files of killed writes that are old
/// enough are removed on the way; younger ones are listed as temporary.
fn scan(dir: &Path) -> Vec<CacheFile> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for ent in rd.flatten() {
            let Ok(meta) = ent.metadata() else { continue };
            if meta.is_dir() {
                stack.push(ent.path());
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let temporary = ent.file_name().to_string_lossy().starts_with(".tmp-");
            let stale = SystemTime::now()
                .duration_since(modified)
                .is_ok_and(|age| age > STALE_TMP);
            if temporary && stale && fs::remove_file(ent.path()).is_ok() {
                continue;
            }
            out.push(CacheFile {
                path: ent.path(),
                size: meta.len(),
                modified,
                temporary,
            });
        }
    }
    out
}

impl Forward for Cached {
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        self.inner.put(key, data)?;
        if cached_kind(key.kind) {
            self.store(key, data);
        }
        Ok(())
    }
    fn put_tree_pack(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        self.inner.put_tree_pack(key, data)?;
        self.store(key, data);
        Ok(())
    }
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        if !cached_kind(key.kind) && key.kind != ObjectKind::Pack {
            return self.inner.get(key);
        }
        if let Some(b) = self.lookup(key) {
            return Ok(b);
        }
        let b = self.inner.get(key)?;
        if cached_kind(key.kind) {
            self.store(key, &b);
        }
        Ok(b)
    }
    fn get_tree_pack(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        if let Some(b) = self.lookup(key) {
            return Ok(b);
        }
        let b = self.inner.get_tree_pack(key)?;
        self.store(key, &b);
        Ok(b)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>, BackendError> {
        let since = SystemTime::now();
        let listed = self.inner.list(kind)?;
        if cached_kind(kind) || kind == ObjectKind::Pack {
            self.sweep(kind, &listed, since);
        }
        Ok(listed)
    }
    fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        self.forget(key);
        self.inner.delete(key)
    }
    fn replace_damaged(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        self.forget(key);
        self.inner.replace_damaged(key, data)
    }
}

#[cfg(test)]
mod tests;
