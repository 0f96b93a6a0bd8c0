//! Fixtures shared by the engine's tests: small in-memory repositories,
//! content and folders to snapshot, restoring a snapshot to compare its
//! files, and the rule for tests that need what a machine may lack.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, DynBackend};
use crate::backup::{self, BackupOptions, Progress};
use crate::repo::crypto::KdfParams;
use crate::repo::format::ObjectKind;
use crate::repo::lock::ExclusiveLock;
use crate::repo::{ChunkerAlgorithm, ChunkerParams, IndexedRepository, InitOptions, Repository};
use crate::restore::{self, RestoreOptions, RestoreProgress};
use crate::snapshot::{Snapshot, Source};

/// A repository in memory with tiny chunks and packs, so that a few files
/// make many blobs and several packs.
pub fn mem_repo(encrypted: bool) -> (Arc<MemoryBackend>, Repository) {
    let mem = Arc::new(MemoryBackend::new());
    let opts = InitOptions {
        password: encrypted.then(|| b"pw".to_vec()),
        chunker: ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min: 1024,
            avg: 4096,
            max: 16384,
            seed: None,
        },
        compression_level: 3,
        pack_size: 48 * 1024,
        kdf: cheap_kdf(),
    };
    let repo = Repository::init(mem.clone(), opts).expect("init");
    (mem, repo)
}

/// An unencrypted repository in memory cutting chunks of `min`/`avg`/`max`
/// bytes, with its (empty) index loaded.
pub fn indexed_repo(min: u32, avg: u32, max: u32) -> IndexedRepository {
    let opts = InitOptions {
        chunker: ChunkerParams {
            min,
            avg,
            max,
            ..ChunkerParams::default()
        },
        ..InitOptions::default()
    };
    Repository::init(Arc::new(MemoryBackend::new()), opts)
        .expect("init")
        .load_index()
        .expect("index")
}

/// Snapshots `dir` into `repo` and adds the new packs to its index, as the
/// `snapshot` command does, so the next snapshot deduplicates against them.
pub fn backup_indexed(repo: &mut IndexedRepository, dir: &Path, opts: &BackupOptions) -> Snapshot {
    backup::backup(repo, dir, opts, &Progress::default())
        .expect("backup")
        .snapshot
}

/// The same repository opened over another backend (a faulty decorator).
pub fn reopen(backend: DynBackend) -> Repository {
    let pw = || Ok(b"pw".to_vec());
    Repository::open(backend, Some(&pw)).expect("reopen")
}

/// An exclusive lock on `repo`'s backend.
pub fn exclusive(backend: &DynBackend) -> ExclusiveLock {
    ExclusiveLock::acquire(backend.clone(), "test", "test-host").expect("lock")
}

/// Deterministic incompressible bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Deterministic bytes in runs of 3000: incompressible ([`noise`]) and
/// compressible by turns.
pub fn half_compressible(seed: u64, len: usize) -> Vec<u8> {
    let random = noise(seed, len);
    (0..len)
        .map(|i| {
            if (i / 3000) % 2 == 0 {
                random[i]
            } else {
                b'a' + (i % 7) as u8
            }
        })
        .collect()
}

/// Whether a test that needs something this machine or file system may
/// lack can run: `missing` says what is missing, `None` when nothing is.
/// When something is, the test fails, unless `PVSNAP_SKIP_FS_TESTS=1` asks
/// to skip such tests: then it says `SKIPPED` on standard error and the
/// caller returns. (The same rule as the mount tests' `PVSNAP_SKIP_FUSE_TESTS`.)
pub fn can_run(test: &str, missing: Option<&str>) -> bool {
    let Some(why) = missing else { return true };
    if std::env::var("PVSNAP_SKIP_FS_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {test}: {why} (PVSNAP_SKIP_FS_TESTS=1)");
        return false;
    }
    panic!(
        "{test}: cannot run here: {why}; run it on a file system that can (ext4, XFS, btrfs), or set PVSNAP_SKIP_FS_TESTS=1 to skip it"
    );
}

/// Writes `files` (relative path → content) below `dir`, replacing what was there.
pub fn write_tree(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("clear");
    }
    for (rel, content) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
    }
}

/// Takes a snapshot of `dir` recorded at `time`, with `dir`'s contents as the
/// source key `source` (so several versions form one timeline).
pub fn snapshot(repo: &Repository, dir: &Path, source: &str, time: &str) -> Snapshot {
    let mut indexed = repo.clone().load_index().expect("index");
    // As the `snapshot` command: a damaged snapshot object is no parent.
    let (snaps, _) = repo.snapshots_lenient().expect("snapshots");
    let src = Source::Path {
        path: source.into(),
    };
    let opts = BackupOptions {
        parent: backup::find_parent(&snaps, &src),
        source: Some(src),
        time: Some(time.parse().expect("time")),
        hostname: Some("test-host".into()),
        ..BackupOptions::default()
    };
    backup::backup(&mut indexed, dir, &opts, &Progress::default())
        .expect("backup")
        .snapshot
}

/// Restores `snap` and returns (files by relative path, damaged paths).
pub fn restore_files(
    repo: &Repository,
    snap: &Snapshot,
) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let indexed = repo.clone().load_index().expect("index");
    let target = tempfile::tempdir().expect("tempdir");
    let summary = restore::restore(
        &indexed,
        snap,
        None,
        target.path(),
        &RestoreOptions::default(),
        &RestoreProgress::default(),
    )
    .expect("restore");
    let mut files = BTreeMap::new();
    let mut stack = vec![target.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(target.path())
                    .expect("below")
                    .to_string_lossy()
                    .into_owned();
                files.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    let damaged = summary
        .damaged
        .into_iter()
        .map(|(p, _)| {
            Path::new(&p)
                .strip_prefix(target.path())
                .expect("below")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    (files, damaged)
}

/// Bytes stored in packs, index files and snapshots: the repository's size
/// as far as prune can change it.
pub fn stored_bytes(b: &dyn Backend) -> u64 {
    [ObjectKind::Pack, ObjectKind::Index, ObjectKind::Snapshot]
        .into_iter()
        .flat_map(|k| b.list(k).expect("list"))
        .map(|(_, n)| n)
        .sum()
}

/// Bytes of packs and index files: what prune reports on.
pub fn pack_and_index_bytes(b: &dyn Backend) -> u64 {
    [ObjectKind::Pack, ObjectKind::Index]
        .into_iter()
        .flat_map(|k| b.list(k).expect("list"))
        .map(|(_, n)| n)
        .sum()
}

/// A set of files: `n` files of `size` bytes each, contents from `seed`.
pub fn files(seed: u64, n: usize, size: usize) -> BTreeMap<String, Vec<u8>> {
    (0..n)
        .map(|i| {
            (
                format!("d{}/f{i:02}", i % 3),
                noise(seed * 1000 + i as u64, size),
            )
        })
        .collect()
}

/// Argon2 costs low enough for tests (64 KiB, one pass).
pub fn cheap_kdf() -> KdfParams {
    KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    }
}

/// A FAT file system, mounted for a test through FUSE (`fusefat`: the
/// kernel here may lack the vfat driver), unmounted when dropped. FAT has
/// no hard links, no rename without replace through FUSE, no permission
/// bits, and folds case: a NAS share at its most limited.
pub struct FatMount {
    pub point: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl FatMount {
    /// Mounts a fresh 128 MiB FAT32 image, or says loudly why it cannot and
    /// returns `None`: not root, or `mkfs.vfat`/`fusefat` missing (then
    /// `PVSNAP_REQUIRE_LOOP=1`, as `scripts/test` sets for root, makes it a
    /// failure instead).
    pub fn new(test: &str) -> Option<FatMount> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (img, point) = (dir.path().join("fat.img"), dir.path().join("mnt"));
        let why = if !crate::fsmeta::is_root() {
            Some("not running as root (a loop or FUSE mount needs it)".to_string())
        } else {
            let run = |cmd: &mut std::process::Command| match cmd.output() {
                Ok(o) if o.status.success() => None,
                Ok(o) => Some(format!("{cmd:?}: {}", String::from_utf8_lossy(&o.stderr))),
                Err(e) => Some(format!("{cmd:?} cannot run: {e}")),
            };
            std::fs::File::create(&img)
                .and_then(|f| f.set_len(128 << 20))
                .expect("image");
            std::fs::create_dir(&point).expect("mount point");
            run(std::process::Command::new("mkfs.vfat")
                .args(["-F", "32"])
                .arg(&img))
            .or_else(|| {
                run(std::process::Command::new("fusefat")
                    .args(["-o", "rw+"])
                    .arg(&img)
                    .arg(&point))
            })
        };
        if let Some(why) = why {
            if crate::fsmeta::is_root()
                && std::env::var("PVSNAP_REQUIRE_LOOP").as_deref() == Ok("1")
            {
                panic!(
                    "{test}: PVSNAP_REQUIRE_LOOP=1 but no FAT file system can be mounted: {why}"
                );
            }
            eprintln!("\n*** SKIPPED {test}: {why} ***\n");
            return None;
        }
        Some(FatMount { point, _dir: dir })
    }
}

impl Drop for FatMount {
    fn drop(&mut self) {
        let ok = std::process::Command::new("fusermount")
            .arg("-u")
            .arg(&self.point)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.point)
                .status();
        }
    }
}
