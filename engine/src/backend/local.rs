//! The default backend: a directory on a local or network filesystem.
//!
//! Writes are crash-safe: the bytes go to a temporary file in the target folder,
//! are fsynced, then hard-linked to their final name (which fails instead of
//! replacing an existing object), the temporary name is removed and the folder
//! is fsynced. A crash leaves at most a `.tmp-*` file, which `list` ignores
//! and [`Backend::leftovers`] reports: in the repository root (the config),
//! in each object folder and in each `data/xx` folder.
//!
//! Large objects (packs) are written with `O_DIRECT` where the filesystem
//! allows it: a pack is written once and not read again soon, so copying it
//! into the page cache only evicts pages the node's workloads use, and costs
//! a copy into freshly allocated memory for every byte. The aligned body goes
//! through a small reused buffer; the unaligned tail, and filesystems that
//! refuse `O_DIRECT`, are written normally. The fsync is the same either way.
//!
//! On a NAS share or a FAT disk some of this is missing; what the file
//! system can do is probed once, before the first write, and each missing
//! piece has a fallback that keeps the put contract (see [`share`]).
//!
//! Permissions do not depend on the umask: every file is created 0600 and
//! every folder 0700 (set explicitly after creation), or 0640 and 0750 in a
//! repository created with group access ([`Modes::GROUP`]). The choice is
//! recorded by the mode of the `config` file itself, so a later writer (any
//! user of the group) follows it without a format change.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::{Backend, Leftover, ObjectKey, check_range};

pub mod share;
use crate::error::BackendError;
use crate::repo::format::ObjectKind;
pub use share::{Abilities, Place};

pub struct LocalBackend {
    root: PathBuf,
    /// Aligned staging buffer for `O_DIRECT` writes (allocated on first use).
    direct_buf: Mutex<Vec<u8>>,
    modes: Modes,
    /// What the file system allows, probed before the first write.
    abilities: OnceLock<Abilities>,
}

/// Permission bits of the files and folders a repository is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    pub file: u32,
    pub dir: u32,
}

impl Modes {
    /// Only the owner reads and writes (the default).
    pub const PRIVATE: Modes = Modes {
        file: 0o600,
        dir: 0o700,
    };
    /// The owner's group may read too (`pvsnap init --group-access`).
    pub const GROUP: Modes = Modes {
        file: 0o640,
        dir: 0o750,
    };

    /// The modes a repository whose `config` has mode `config_mode` uses:
    /// group access when the group may read the config and others may not.
    /// A config readable by everyone was written before modes were set (umask
    /// 022 gave 0644); such a repository is taken as private from now on.
    pub fn from_config_mode(config_mode: u32) -> Modes {
        if config_mode & 0o040 != 0 && config_mode & 0o007 == 0 {
            Modes::GROUP
        } else {
            Modes::PRIVATE
        }
    }
}

/// Objects at least this large are written with `O_DIRECT`.
const DIRECT_MIN: usize = 1 << 20;
/// Alignment of `O_DIRECT` buffers, offsets and lengths: the page size, a
/// multiple of every common logical block size.
const DIRECT_ALIGN: usize = 4096;
/// Bytes staged and written per `O_DIRECT` write.
const DIRECT_PIECE: usize = 4 << 20;

const KINDS_WITH_DIRS: [ObjectKind; 8] = [
    ObjectKind::Key,
    ObjectKind::Pack,
    ObjectKind::Index,
    ObjectKind::Snapshot,
    ObjectKind::Lock,
    ObjectKind::Policy,
    ObjectKind::Audit,
    ObjectKind::Trash,
];

impl LocalBackend {
    /// The repository at `root`; its permission modes follow those of its
    /// `config` ([`Modes::PRIVATE`] when there is none yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let modes = fs::metadata(root.join("config"))
            .map(|m| Modes::from_config_mode(m.permissions().mode()))
            .unwrap_or(Modes::PRIVATE);
        LocalBackend {
            root,
            direct_buf: Mutex::new(Vec::new()),
            modes,
            abilities: OnceLock::new(),
        }
    }

    /// What the repository's file system allows: probed in the root once,
    /// on the first call that finds the root writable, and logged when
    /// something is missing. Until then, everything is assumed.
    pub fn abilities(&self) -> Abilities {
        if let Some(a) = self.abilities.get() {
            return *a;
        }
        let Some(a) = Abilities::probe(&self.root, self.modes.file) else {
            return Abilities::FULL;
        };
        if self.abilities.set(a).is_ok()
            && let Some(missing) = a.missing()
        {
            tracing::info!(
                "{}: the file system lacks {missing}; using the fallbacks",
                self.root.display()
            );
        }
        a
    }

    /// Uses `abilities` instead of probing (tests of each fallback on a
    /// file system that has everything).
    #[cfg(test)]
    pub(crate) fn with_abilities(self, abilities: Abilities) -> Self {
        let _ = self.abilities.set(abilities);
        self
    }

    /// Fsyncs `dir` where folders can be synced.
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        if self.abilities().dir_sync {
            sync_dir(dir)
        } else {
            Ok(())
        }
    }

    /// Sets the mode of `path` where the file system keeps modes.
    fn set_mode(&self, path: &Path, mode: u32) -> std::io::Result<()> {
        if self.abilities().chmod {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
        } else {
            Ok(())
        }
    }

    /// Sets the modes of what this backend creates (for `init`).
    pub fn with_modes(mut self, modes: Modes) -> Self {
        self.modes = modes;
        self
    }

    pub fn modes(&self) -> Modes {
        self.modes
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the folder layout (idempotent), the root folder included; the
    /// root gets the folder mode even when it existed (empty) before.
    pub fn create_layout(&self) -> Result<(), BackendError> {
        let at = |d: &Path| d.display().to_string();
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| io(&at(parent), "create folder", e))?;
        }
        match fs::DirBuilder::new()
            .mode(self.modes.dir)
            .create(&self.root)
        {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists && self.root.is_dir() => {}
            Err(e) => return Err(io(&at(&self.root), "create folder", e)),
        }
        self.set_mode(&self.root, self.modes.dir)
            .map_err(|e| io(&at(&self.root), "set permissions", e))?;
        for kind in KINDS_WITH_DIRS {
            let d = self.root.join(kind.name());
            self.make_dirs(&d)
                .map_err(|e| io(&at(&d), "create folder", e))?;
        }
        for i in 0..=255u8 {
            let d = self.root.join("data").join(format!("{i:02x}"));
            self.make_dirs(&d)
                .map_err(|e| io(&at(&d), "create folder", e))?;
        }
        self.sync_dir(&self.root)
            .map_err(|e| io(&at(&self.root), "fsync", e))?;
        Ok(())
    }

    /// Creates `dir` (inside the root) and the missing folders between, each
    /// with the folder mode whatever the umask.
    fn make_dirs(&self, dir: &Path) -> std::io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir
            .parent()
            .filter(|p| *p != self.root && p.starts_with(&self.root))
        {
            self.make_dirs(parent)?;
        }
        match fs::DirBuilder::new().mode(self.modes.dir).create(dir) {
            Ok(()) => self.set_mode(dir, self.modes.dir),
            // Another writer made it meanwhile (with the same mode).
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.path())
    }

    /// The folders objects are written in, relative to the root ("" is the
    /// root itself, where the config lives).
    fn object_folders(&self) -> Vec<String> {
        let mut out = vec![String::new()];
        out.extend(
            KINDS_WITH_DIRS
                .iter()
                .filter(|k| **k != ObjectKind::Pack)
                .map(|k| k.name().to_string()),
        );
        out.extend((0..=255u8).map(|i| format!("data/{i:02x}")));
        out
    }

    /// Turns a full file system into an error that says what to do.
    fn full(&self, e: BackendError) -> BackendError {
        match e {
            BackendError::Io { key, op, source }
                if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) =>
            {
                BackendError::NoSpace {
                    key,
                    op,
                    location: self.location(),
                }
            }
            e => e,
        }
    }
}

/// Whether `name` is what [`LocalBackend::put`] names its temporary files.
fn is_temporary(name: &str) -> bool {
    name.starts_with(TMP_PREFIX) && !name.contains('/')
}

/// Prefix of temporary files; the rest is random.
const TMP_PREFIX: &str = ".tmp-";

impl LocalBackend {
    /// [`Backend::put`], before a full file system is explained.
    fn put_inner(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        let path = self.path(key);
        let dir = path.parent().expect("object paths have a parent");
        if path.exists() {
            return match same_content(&path, data) {
                Ok(true) => Ok(()),
                Ok(false) => Err(BackendError::Conflict { key: key.path() }),
                Err(e) => Err(io(&key.path(), "compare", e)),
            };
        }
        if !dir.exists() {
            self.make_dirs(dir)
                .map_err(|e| io(&key.path(), "create folder", e))?;
        }
        let how = self.abilities().place;
        self.through_temp(key, dir, data, |tmp| match share::place(how, tmp, &path) {
            Ok(true) => Ok(()),
            Ok(false) => {
                // Another writer won the race; fine when it wrote the same bytes.
                if same_content(&path, data).map_err(|e| io(&key.path(), "compare", e))? {
                    Ok(())
                } else {
                    Err(BackendError::Conflict { key: key.path() })
                }
            }
            Err(e) => Err(io(&key.path(), "put into place", e)),
        })
    }

    /// Writes `data` to a new temporary file in `dir` and syncs it, lets
    /// `place` put it at the object's name, removes the temporary name and
    /// syncs the folder.
    fn through_temp(
        &self,
        key: &ObjectKey,
        dir: &Path,
        data: &[u8],
        place: impl FnOnce(&Path) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}",
            crate::repo::id::Id::random().short()
        ));
        let result = (|| -> Result<(), BackendError> {
            let f = self
                .write_new(&tmp, data)
                .map_err(|(op, e)| io(&key.path(), op, e))?;
            f.sync_all().map_err(|e| io(&key.path(), "fsync", e))?;
            drop(f);
            place(&tmp)
        })();
        let _ = fs::remove_file(&tmp);
        result?;
        self.sync_dir(dir)
            .map_err(|e| io(&key.path(), "fsync folder", e))
    }
}

impl LocalBackend {
    /// Creates `path` (which must not exist) holding `data`, not yet synced.
    fn write_new(&self, path: &Path, data: &[u8]) -> Result<File, (&'static str, std::io::Error)> {
        let create = |direct: bool| {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.modes.file)
                .custom_flags(if direct { libc::O_DIRECT } else { 0 })
                .open(path)
                .map_err(|e| ("create temporary file", e))?;
            // The umask may have taken bits the repository wants (group read).
            if self.abilities().chmod {
                f.set_permissions(fs::Permissions::from_mode(self.modes.file))
                    .map_err(|e| ("set permissions", e))?;
            }
            Ok(f)
        };
        let aligned = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
        if data.len() >= DIRECT_MIN && self.abilities().direct {
            match create(true) {
                Ok(f) => {
                    let done = self.write_direct(&f, &data[..aligned]);
                    // Whatever O_DIRECT did not write (all of it when the
                    // filesystem refuses the alignment) is written normally.
                    crate::sys::io::clear_direct(&f).map_err(|e| ("write", e))?;
                    f.write_all_at(&data[done..], done as u64)
                        .map_err(|e| ("write", e))?;
                    return Ok(f);
                }
                // Filesystems without O_DIRECT refuse the open, possibly
                // after creating the file (the name is ours alone).
                Err((_, e)) if e.raw_os_error() == Some(libc::EINVAL) => {
                    let _ = fs::remove_file(path);
                }
                Err(e) => return Err(e),
            }
        }
        let mut f = create(false)?;
        f.write_all(data).map_err(|e| ("write", e))?;
        Ok(f)
    }

    /// Writes `body` (a multiple of [`DIRECT_ALIGN`] long) at offset 0 of `f`,
    /// opened with `O_DIRECT`, staging it through the aligned buffer. Returns
    /// how many bytes were written; fewer than `body.len()` when a write
    /// failed, and the caller writes the rest without `O_DIRECT` (a real I/O
    /// error then shows there).
    fn write_direct(&self, f: &File, body: &[u8]) -> usize {
        let mut buf = self.direct_buf.lock().unwrap_or_else(|e| e.into_inner());
        if buf.len() < DIRECT_PIECE + DIRECT_ALIGN {
            buf.resize(DIRECT_PIECE + DIRECT_ALIGN, 0);
        }
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let stage = &mut buf[start..start + DIRECT_PIECE];
        let mut done = 0;
        for piece in body.chunks(DIRECT_PIECE) {
            let staged = &mut stage[..piece.len()];
            staged.copy_from_slice(piece);
            if f.write_all_at(staged, done as u64).is_err() {
                break;
            }
            done += piece.len();
        }
        done
    }
}

fn io(key: &str, op: &'static str, source: std::io::Error) -> BackendError {
    BackendError::Io {
        key: key.to_string(),
        op,
        source,
    }
}

fn not_found_or(key: &ObjectKey, op: &'static str, e: std::io::Error) -> BackendError {
    if e.kind() == ErrorKind::NotFound {
        BackendError::NotFound { key: key.path() }
    } else {
        io(&key.path(), op, e)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn same_content(path: &Path, data: &[u8]) -> std::io::Result<bool> {
    let meta = fs::metadata(path)?;
    if meta.len() != data.len() as u64 {
        return Ok(false);
    }
    Ok(fs::read(path)? == data)
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        self.put_inner(key, data).map_err(|e| self.full(e))
    }

    /// Written beside the damaged copy, synced, then renamed over it.
    fn replace_damaged(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        let path = self.path(key);
        let dir = path.parent().expect("object paths have a parent");
        self.through_temp(key, dir, data, |tmp| {
            fs::rename(tmp, &path).map_err(|e| io(&key.path(), "rename into place", e))
        })
        .map_err(|e| self.full(e))
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        fs::read(self.path(key)).map_err(|e| not_found_or(key, "read", e))
    }

    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        let mut buf = Vec::new();
        self.get_range_into(key, offset, len, &mut buf)?;
        Ok(buf)
    }

    fn get_range_into(
        &self,
        key: &ObjectKey,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        let f = File::open(self.path(key)).map_err(|e| not_found_or(key, "open", e))?;
        // Read without zero-filling the buffer or asking the size first; the
        // size is looked up only to explain a short read.
        buf.clear();
        let mut at = offset;
        while buf.len() < len as usize {
            let want = len as usize - buf.len();
            let n = crate::sys::io::read_at_append(&f, buf, want, at)
                .map_err(|e| io(&key.path(), "read", e))?;
            if n == 0 {
                buf.clear();
                let size = f.metadata().map_err(|e| io(&key.path(), "stat", e))?.len();
                check_range(key, offset, len, size)?;
                return Err(io(&key.path(), "read", ErrorKind::UnexpectedEof.into()));
            }
            at += n as u64;
        }
        Ok(())
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>, BackendError> {
        let mut out = Vec::new();
        let mut scan = |dir: &Path| -> Result<(), BackendError> {
            let rd = match fs::read_dir(dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io(&dir.display().to_string(), "list", e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| io(&dir.display().to_string(), "list", e))?;
                let name = ent.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let meta = ent.metadata().map_err(|e| io(&name, "stat", e))?;
                if meta.is_file() {
                    out.push((name, meta.len()));
                }
            }
            Ok(())
        };
        match kind {
            ObjectKind::Config => {
                if let Ok(m) = fs::metadata(self.root.join("config")) {
                    out.push(("config".to_string(), m.len()));
                }
            }
            ObjectKind::Pack => {
                let data = self.root.join("data");
                let rd = match fs::read_dir(&data) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(io("data", "list", e)),
                };
                for sub in rd {
                    let sub = sub.map_err(|e| io("data", "list", e))?;
                    if sub.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        scan(&sub.path())?;
                    }
                }
            }
            k => scan(&self.root.join(k.name()))?,
        }
        Ok(out)
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&key.path(), "delete", e)),
        }
        if let Some(dir) = path.parent() {
            self.sync_dir(dir)
                .map_err(|e| io(&key.path(), "fsync folder", e))?;
        }
        Ok(())
    }

    fn modified(&self, key: &ObjectKey) -> Result<Option<jiff::Timestamp>, BackendError> {
        let meta = fs::metadata(self.path(key)).map_err(|e| not_found_or(key, "stat", e))?;
        let Ok(mtime) = meta.modified() else {
            return Ok(None);
        };
        Ok(jiff::Timestamp::try_from(mtime).ok())
    }

    fn exists(&self, key: &ObjectKey) -> Result<bool, BackendError> {
        Ok(self.path(key).exists())
    }

    fn leftovers(&self) -> Result<Vec<Leftover>, BackendError> {
        let mut out = Vec::new();
        for folder in self.object_folders() {
            let dir = self.root.join(&folder);
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&dir.display().to_string(), "list", e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| io(&dir.display().to_string(), "list", e))?;
                let name = ent.file_name().to_string_lossy().into_owned();
                if !is_temporary(&name) {
                    continue;
                }
                let path = if folder.is_empty() {
                    name
                } else {
                    format!("{folder}/{name}")
                };
                let meta = match ent.metadata() {
                    Ok(m) => m,
                    // Removed meanwhile (its write finished or failed).
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(&path, "stat", e)),
                };
                if !meta.is_file() {
                    continue;
                }
                out.push(Leftover {
                    size: meta.len(),
                    modified: meta
                        .modified()
                        .ok()
                        .and_then(|t| jiff::Timestamp::try_from(t).ok()),
                    path,
                });
            }
        }
        Ok(out)
    }

    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), BackendError> {
        let refuse = || BackendError::NotALeftover {
            path: leftover.path.clone(),
        };
        let (folder, name) = match leftover.path.rsplit_once('/') {
            Some((folder, name)) => (folder, name),
            None => ("", leftover.path.as_str()),
        };
        if !is_temporary(name) || !self.object_folders().iter().any(|f| f == folder) {
            return Err(refuse());
        }
        let path = self.root.join(&leftover.path);
        match fs::symlink_metadata(&path) {
            Ok(m) if !m.is_file() => return Err(refuse()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&leftover.path, "stat", e)),
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&leftover.path, "delete", e)),
        }
        if let Some(dir) = path.parent() {
            self.sync_dir(dir)
                .map_err(|e| io(&leftover.path, "fsync folder", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_backend_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create_layout().unwrap();
        super::super::contract_tests::run(&b);
    }

    #[test]
    fn every_fallback_keeps_the_contract_and_a_racing_second_writer_out() {
        for place in [Place::Link, Place::RenameNoReplace, Place::Claim] {
            let dir = tempfile::tempdir().unwrap();
            let lacking = Abilities {
                place,
                direct: false,
                dir_sync: false,
                chmod: false,
            };
            let b = LocalBackend::new(dir.path()).with_abilities(lacking);
            b.create_layout().unwrap();
            super::super::contract_tests::run(&b);
            share::tests::racing_writers(&|| LocalBackend::new(dir.path()).with_abilities(lacking));
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn objects_and_folders_get_the_repository_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::new(&root).with_modes(Modes::GROUP);
        b.create_layout().unwrap();
        b.put(&ObjectKey::config(), b"config").unwrap();
        // A fresh backend on the same folder follows the config's mode.
        let b: crate::backend::DynBackend = std::sync::Arc::new(LocalBackend::new(&root));
        fs::remove_dir(root.join("data/ab")).unwrap();
        b.put(&ObjectKey::new(ObjectKind::Pack, "ab".repeat(32)), b"pack")
            .unwrap();
        let lock = crate::repo::lock::LockGuard::acquire(b.clone(), false, "test", "h").unwrap();
        let locks: Vec<_> = fs::read_dir(root.join("locks")).unwrap().collect();
        assert_eq!(locks.len(), 1);
        assert_eq!(mode(&locks[0].as_ref().unwrap().path()), 0o640);
        drop(lock);
        assert_eq!(mode(&root), 0o750);
        assert_eq!(mode(&root.join("data/ab")), 0o750);
        assert_eq!(mode(&root.join("data/00")), 0o750);
        assert_eq!(mode(&root.join("data/ab").join("ab".repeat(32))), 0o640);
        assert_eq!(mode(&root.join("config")), 0o640);

        let root = dir.path().join("private");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
        let b = LocalBackend::new(&root);
        assert_eq!(b.modes(), Modes::PRIVATE);
        b.create_layout().unwrap();
        b.put(&ObjectKey::config(), b"config").unwrap();
        assert_eq!(
            mode(&root),
            0o700,
            "an existing empty folder is made private"
        );
        assert_eq!(mode(&root.join("keys")), 0o700);
        assert_eq!(mode(&root.join("config")), 0o600);
        assert_eq!(LocalBackend::new(&root).modes(), Modes::PRIVATE);
        // A repository written before modes were set: config 0644 (umask 022)
        // or 0664 (umask 002) is not a choice of group access.
        for (old, want) in [
            (0o644, Modes::PRIVATE),
            (0o664, Modes::PRIVATE),
            (0o640, Modes::GROUP),
            (0o600, Modes::PRIVATE),
        ] {
            assert_eq!(Modes::from_config_mode(old), want, "{old:o}");
        }
    }

    #[test]
    fn leftover_temporary_files_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create_layout().unwrap();
        fs::write(dir.path().join("index/.tmp-deadbeef"), b"partial").unwrap();
        assert!(b.list(ObjectKind::Index).unwrap().is_empty());
    }

    #[test]
    fn a_full_file_system_is_named_with_the_command_that_frees_space() {
        let b = LocalBackend::new("/srv/repo");
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = b.full(io(
                "data/ab/abab",
                "write",
                std::io::Error::from_raw_os_error(errno),
            ));
            assert!(matches!(e, BackendError::NoSpace { .. }), "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains("data/ab/abab")
                    && msg.contains("no space left")
                    && msg.contains("`pvsnap --repo /srv/repo prune --grace 0`"),
                "{msg}"
            );
        }
        let other = b.full(io(
            "data/ab/abab",
            "write",
            std::io::Error::from_raw_os_error(libc::EIO),
        ));
        assert!(matches!(other, BackendError::Io { .. }), "{other}");
    }

    #[test]
    fn leftovers_are_listed_in_every_object_folder_and_only_they_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create_layout().unwrap();
        let pack = ObjectKey::new(ObjectKind::Pack, "ab".repeat(32));
        b.put(&pack, b"a whole pack").unwrap();
        b.put(&ObjectKey::config(), b"c").unwrap();
        let planted = [
            ("data/ab/.tmp-00000001", 5usize),
            ("index/.tmp-00000002", 7),
            ("snapshots/.tmp-00000003", 11),
            ("keys/.tmp-00000004", 13),
            (".tmp-00000005", 17),
        ];
        for (p, n) in planted {
            fs::write(dir.path().join(p), vec![0u8; n]).unwrap();
        }
        // Not temporary files of ours: left alone.
        fs::write(dir.path().join("index/.hidden"), b"x").unwrap();
        fs::create_dir(dir.path().join("locks/.tmp-dir")).unwrap();
        let mut got: Vec<(String, u64)> = b
            .leftovers()
            .unwrap()
            .into_iter()
            .map(|l| {
                assert!(l.modified.is_some(), "{} has no time", l.path);
                (l.path, l.size)
            })
            .collect();
        got.sort();
        let mut want: Vec<(String, u64)> = planted
            .iter()
            .map(|(p, n)| (p.to_string(), *n as u64))
            .collect();
        want.sort();
        assert_eq!(got, want);
        for l in b.leftovers().unwrap() {
            b.remove_leftover(&l).unwrap();
            b.remove_leftover(&l).unwrap();
        }
        assert!(b.leftovers().unwrap().is_empty());
        assert!(dir.path().join("index/.hidden").exists());
        assert_eq!(b.get(&pack).unwrap(), b"a whole pack");
        for path in [
            "config",
            "data/ab/abab",
            "index/.hidden",
            "../.tmp-00000001",
            "data/ab/../../.tmp-x/.tmp-1",
            "locks/.tmp-dir",
        ] {
            let l = Leftover {
                path: path.into(),
                size: 0,
                modified: None,
            };
            assert!(
                matches!(
                    b.remove_leftover(&l),
                    Err(BackendError::NotALeftover { .. })
                ),
                "{path} was not refused"
            );
        }
        assert!(dir.path().join("config").exists());
        assert!(dir.path().join("locks/.tmp-dir").is_dir());
    }
}
