//! The snapshot pipeline's orchestration: options, counters, the stages
//! in order ([`store`]) and the commit ([`PendingSnapshot::commit`]).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use jiff::Timestamp;

use super::seen::Seen;
use crate::error::{Error, Result};
use crate::fsmeta::{self, NameCache};
use crate::repo::IndexedRepository;
use crate::repo::id::{ChunkId, Id, IndexId, SnapshotId, TreeId};
use crate::snapshot::{PathIssue, Snapshot, Source, Summary};
use crate::store::blob::BlobKind;
use crate::store::packer::{self, Checkpoints, PackList, Packer};
use crate::tree::filter::Excludes;
use crate::tree::{Extent, NodeKind, Tree};

/// What to snapshot and how.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Overrides the source recorded in the snapshot (a PVC); default: the path.
    pub source: Option<Source>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub time: Option<Timestamp>,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub hostname: Option<String>,
    /// The parent snapshot; see [`find_parent`].
    pub parent: Option<Snapshot>,
    pub hooks: Vec<serde_json::Value>,
    /// When index checkpoints are written while packs are stored.
    pub checkpoints: Checkpoints,
    /// Asks the run to stop cleanly (SIGINT, SIGTERM): see [`Stop`].
    pub stop: Stop,
}

pub use crate::stop::Stop;

impl Stop {
    /// `Err(Interrupted)` once a stop was requested (the counts are
    /// filled in by [`store`]): the workers ask before the next entry or
    /// blob; [`store`] then stores the packs in hand, indexes every pack
    /// stored and returns [`Error::Interrupted`] without a snapshot.
    pub(super) fn check(&self) -> Result<()> {
        if self.requested() {
            return Err(Error::Interrupted { packs: 0, bytes: 0 });
        }
        Ok(())
    }
}

/// Live counters for a progress display.
///
/// `files` and `bytes` count the regular files done and their sizes (holes
/// and other names of a hardlinked file included), so once the snapshot has
/// seen everything they equal the summary's `total_files` and
/// `total_bytes` for a tree that did not change meanwhile.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Estimates from the parent snapshot (0 when unknown).
    pub total_files_hint: AtomicU64,
    pub total_bytes_hint: AtomicU64,
    /// Set before [`store`] by a display that needs the totals in advance:
    /// a size pre-scan then runs alongside the snapshot (see `scan`).
    pub want_scan: AtomicBool,
    /// The files and bytes the pre-scan has found so far.
    pub scanned_files: AtomicU64,
    pub scanned_bytes: AtomicU64,
    /// The pre-scan has seen everything: `scanned_*` are the totals.
    pub scan_done: AtomicBool,
}

/// The result of a snapshot run.
pub struct BackupOutcome {
    pub snapshot: Snapshot,
}

/// The latest snapshot of `source` (the parent of a new snapshot of it).
/// A native restore point holds no tree to compare with, and is never one.
pub fn find_parent(snaps: &[Snapshot], source: &Source) -> Option<Snapshot> {
    let key = source.key();
    snaps
        .iter()
        .rev()
        .find(|s| s.source.key() == key && !s.is_native_only())
        .cloned()
}

/// (device, inode) of a file with several names.
pub(super) type InodeKey = (u64, u64);

pub(super) struct Archiver<'a> {
    pub(super) repo: &'a IndexedRepository,
    pub(super) excludes: Excludes,
    pub(super) one_file_system: bool,
    pub(super) root_dev: u64,
    pub(super) names: NameCache,
    pub(super) seed: u64,
    /// Blobs taken to be stored (stored or on their way), for stage 4.
    pub(super) pending: Mutex<Seen>,
    /// Stages 5-6: compress, encrypt, pack and store.
    pub(super) packer: Packer<'a>,
    /// Read blocks of finished files, for the next files.
    pub(super) spare_blocks: Mutex<Vec<Vec<u8>>>,
    pub(super) issues: Mutex<Vec<PathIssue>>,
    pub(super) hardlinks: Mutex<HashMap<InodeKey, (i64, Vec<Extent>)>>,
    pub(super) files_new: AtomicU64,
    pub(super) files_changed: AtomicU64,
    pub(super) files_unmodified: AtomicU64,
    pub(super) dirs: AtomicU64,
    pub(super) bytes_read: AtomicU64,
    pub(super) data_blobs: AtomicU64,
    pub(super) tree_blobs: AtomicU64,
    pub(super) total_bytes: AtomicU64,
    pub(super) progress: &'a Progress,
    pub(super) stop: Stop,
    /// When the parent began reading (ns since the epoch): a parent's
    /// entry whose mtime or ctime is this close to it, or after, is read
    /// again even when its metadata is unchanged (see [`racy_from`]).
    pub(super) racy_from_ns: i64,
}

/// How far before a parent snapshot's start an entry's mtime or ctime may
/// lie and still be "racy". Timestamps are coarse: whole seconds on
/// zfs-fuse and ext3, two seconds on FAT, and a kernel tick (a few
/// milliseconds) where they have nanoseconds. A file changed in the same
/// tick after the parent read it keeps the mtime, size, ctime and inode the
/// parent recorded, and only its bytes differ.
pub(super) const RACY_WHOLE_SECONDS_NS: i64 = 2_000_000_000;
/// The margin for times with a fraction of a second (see above).
pub(super) const RACY_FINE_NS: i64 = 50_000_000;

/// Where `parent` began reading (its time less its duration), in ns since
/// the epoch; `i64::MAX` without a parent. An entry whose times lie within
/// the racy margin before it, or after it, is read again once; by the next
/// snapshot its times lie well before its parent's start.
fn racy_from(parent: Option<&Snapshot>) -> i64 {
    parent.map_or(i64::MAX, |p| {
        let end = i64::try_from(p.time.as_nanosecond()).unwrap_or(i64::MAX);
        let took = (p.summary.duration_s.max(0.0) * 1e9) as i64;
        // Read through a native snapshot, the parent saw the volume as of
        // the snapshot's making, before its read began (the snapshot made,
        // a view opened: a clone mounted on zfs-fuse takes seconds).
        let frozen_earlier = match &p.source_snapshot {
            Some(n) => ((n.create_s.max(0.0) * 1e9) as i64).saturating_add(NATIVE_OPEN_NS),
            None => 0,
        };
        end.saturating_sub(took).saturating_sub(frozen_earlier)
    })
}

/// How long opening a native snapshot for reading may take at most, for
/// [`racy_from`]: a generous bound, since it only widens what is read again
/// once.
const NATIVE_OPEN_NS: i64 = 30_000_000_000;

/// Takes a snapshot of the folder `path` into `repo`: [`store`] then
/// [`PendingSnapshot::commit`]; after it, `repo`'s index holds the new packs.
pub fn backup(
    repo: &mut IndexedRepository,
    path: &Path,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupOutcome> {
    repo.load_written_index();
    let outcome = store(repo, path, opts, progress)?.commit(repo)?;
    repo.load_written_index();
    Ok(outcome)
}

/// A snapshot whose data is stored (stages 1-7: packs and index files are
/// written) but whose snapshot object (stage 8) is not. Until
/// [`PendingSnapshot::commit`] nothing references the new data, so dropping
/// it leaves only unreferenced packs that `prune` removes. This is the
/// window for records that only exist once the data has been read, such as
/// the outcomes of post-snapshot hooks.
#[must_use = "the snapshot exists only once commit() is called"]
pub struct PendingSnapshot {
    snapshot: Snapshot,
    /// The packs no checkpoint named, with their blobs.
    pub(super) new_packs: PackList,
    /// The index files of the checkpoints, which name the other packs.
    pub(super) checkpoint_files: Vec<IndexId>,
    bytes_added: u64,
    started: Instant,
}

impl PendingSnapshot {
    /// The snapshot as it will be written (summary sizes are final at commit).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Appends records (hook outcomes) to [`Snapshot::hooks`].
    pub fn add_hooks(&mut self, hooks: impl IntoIterator<Item = serde_json::Value>) {
        self.snapshot.hooks.extend(hooks);
    }

    /// Records the native snapshot the data was read from (or, for a native
    /// restore point, the one it stands for).
    pub fn record_source_snapshot(&mut self, native: crate::snapshot::SourceSnapshot) {
        self.snapshot.source_snapshot = Some(native);
    }

    /// Stage 8: writes the snapshot object, the commit point, then adds the
    /// packs of the last index file(s) to `repo`'s index and notes the
    /// checkpoints' files ([`IndexedRepository::note_written_index`]): a
    /// next snapshot in the same run loads them first and deduplicates
    /// against them all.
    pub fn commit(self, repo: &mut IndexedRepository) -> Result<BackupOutcome> {
        let mut snapshot = self.snapshot;
        let snapshot_len = repo.encode_snapshot(&snapshot).len() as u64;
        snapshot.summary.bytes_added = self.bytes_added + snapshot_len;
        snapshot.summary.duration_s =
            (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        repo.save_snapshot(&snapshot)?;
        repo.index_mut().extend(self.new_packs);
        repo.note_written_index(self.checkpoint_files);
        Ok(BackupOutcome { snapshot })
    }
}

/// Stages 1-7 of a snapshot of the folder `path`: reads it and stores its
/// data and trees; the snapshot object is written by [`PendingSnapshot::commit`].
pub fn store(
    repo: &IndexedRepository,
    path: &Path,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<PendingSnapshot> {
    let started = Instant::now();
    let root_meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, "read", e))?;
    if !root_meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: not a folder; pvsnap snapshots folders (give the folder that holds the file)",
            path.display()
        )));
    }
    let abs = std::fs::canonicalize(path).map_err(|e| Error::io(path, "resolve", e))?;
    let source = opts.source.clone().unwrap_or_else(|| Source::Path {
        path: abs.to_string_lossy().into_owned(),
    });
    if let Some(p) = &opts.parent {
        progress
            .total_files_hint
            .store(p.summary.total_files, Ordering::Relaxed);
        progress
            .total_bytes_hint
            .store(p.summary.total_bytes, Ordering::Relaxed);
    }
    let a = Archiver {
        repo,
        excludes: Excludes::for_root(&opts.excludes, &abs)?,
        one_file_system: opts.one_file_system,
        root_dev: root_meta.dev(),
        names: NameCache::default(),
        seed: repo.chunker_seed(),
        pending: Mutex::new(Seen::new()),
        packer: Packer::new(repo).checkpointing(opts.checkpoints),
        spare_blocks: Mutex::new(Vec::new()),
        issues: Mutex::new(Vec::new()),
        hardlinks: Mutex::new(HashMap::new()),
        files_new: AtomicU64::new(0),
        files_changed: AtomicU64::new(0),
        files_unmodified: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        data_blobs: AtomicU64::new(0),
        tree_blobs: AtomicU64::new(0),
        total_bytes: AtomicU64::new(0),
        progress,
        stop: opts.stop.clone(),
        racy_from_ns: racy_from(opts.parent.as_ref()),
    };

    match &opts.parent {
        Some(p) => tracing::info!(
            "reading {}; files unchanged since snapshot {} are not read again",
            abs.display(),
            p.short_id()
        ),
        None => tracing::info!(
            "reading {}; no earlier snapshot of this source, every file is read",
            abs.display()
        ),
    }
    // Stages 1-6, in parallel, folder by folder.
    let parent_tree = match &opts.parent {
        Some(p) => a.load_parent_tree(&p.tree),
        None => None,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .stack_size(16 * 1024 * 1024)
        .thread_name(|i| format!("pvsnap-backup-{i}"))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start worker threads: {e}")))?;
    // Packs are stored by a thread of their own, so workers keep chunking and
    // compressing while a pack is written and fsynced.
    // The size pre-scan, on a thread of its own, when a display wants it.
    let scan_stop = AtomicBool::new(false);
    let walked = std::thread::scope(|s| {
        if progress.want_scan.load(Ordering::Relaxed) {
            s.spawn(|| {
                super::scan::scan(
                    &abs,
                    &a.excludes,
                    a.one_file_system,
                    a.root_dev,
                    progress,
                    &scan_stop,
                )
            });
        }
        let r = a.packer.with_writer(|| {
            a.stop.check()?;
            pool.install(|| a.folder(&abs, Path::new(""), parent_tree.as_ref()))
        });
        scan_stop.store(true, Ordering::Relaxed);
        r
    });
    let walked = match walked {
        Ok(t) => Some(t),
        // What is stored is indexed first, then the packs in hand are.
        Err(Error::Interrupted { .. }) => {
            a.packer.checkpoint_now()?;
            None
        }
        Err(e) => return Err(e),
    };
    // Everything is read: a scan that had not finished is overtaken, and
    // the totals are what was done.
    if walked.is_some()
        && progress.want_scan.load(Ordering::Relaxed)
        && !progress.scan_done.load(Ordering::Acquire)
    {
        let (files, bytes) = (&progress.files, &progress.bytes);
        (progress.scanned_files).store(files.load(Ordering::Relaxed), Ordering::Relaxed);
        (progress.scanned_bytes).store(bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        progress.scan_done.store(true, Ordering::Release);
    }

    // Stage 7: index files for every pack written that no checkpoint named.
    // A stopped run does this too (the packs in hand are stored first), so
    // what it stored stays indexed for the next run.
    let mut stored = a.packer.finish()?;
    let (_, final_bytes) = packer::write_index(repo, &stored.packs[stored.indexed..], &[])?;
    let index_bytes = stored.index_bytes + final_bytes;
    tracing::info!(
        "stored {} pack(s) of {} bytes and their index ({index_bytes} bytes, {} checkpoint file(s))",
        stored.packs.len(),
        stored.bytes,
        stored.index_ids.len()
    );
    {
        let seen = a.pending.lock().expect("pending");
        tracing::debug!(
            "new blobs: {} taken, {} of them in the spill file; {} KiB of memory",
            seen.len(),
            seen.spilled(),
            seen.heap_bytes() / 1024
        );
    }
    let Some(tree_id) = walked else {
        return Err(Error::Interrupted {
            packs: stored.packs.len(),
            bytes: stored.bytes + index_bytes,
        });
    };

    // Stage 8 is prepared here and done by `PendingSnapshot::commit`.
    let mut issues = std::mem::take(&mut *a.issues.lock().expect("issues"));
    issues.sort_by(|x, y| x.path.cmp(&y.path));
    let root = fsmeta::node_from_meta(
        OsStr::new(""),
        &root_meta,
        NodeKind::Dir { subtree: tree_id },
        &a.names,
        fsmeta::read_xattrs(&abs).unwrap_or_default(),
    );
    let files = a.files_new.load(Ordering::Relaxed)
        + a.files_changed.load(Ordering::Relaxed)
        + a.files_unmodified.load(Ordering::Relaxed);
    let snapshot = Snapshot {
        id: SnapshotId(Id::random()),
        time: opts.time.unwrap_or_else(Timestamp::now),
        hostname: opts.hostname.clone().unwrap_or_else(crate::repo::hostname),
        source,
        tags: opts.tags.clone(),
        labels: opts.labels.clone(),
        parent: opts.parent.as_ref().map(|p| p.id),
        root,
        tree: tree_id,
        summary: Summary {
            files_new: a.files_new.load(Ordering::Relaxed),
            files_changed: a.files_changed.load(Ordering::Relaxed),
            files_unmodified: a.files_unmodified.load(Ordering::Relaxed),
            dirs: a.dirs.load(Ordering::Relaxed),
            bytes_read: a.bytes_read.load(Ordering::Relaxed),
            bytes_added: 0,
            data_blobs_added: a.data_blobs.load(Ordering::Relaxed),
            tree_blobs_added: a.tree_blobs.load(Ordering::Relaxed),
            total_files: files,
            total_bytes: a.total_bytes.load(Ordering::Relaxed),
            duration_s: 0.0,
        },
        errors: issues,
        hooks: opts.hooks.clone(),
        program_version: concat!("pvsnap ", env!("CARGO_PKG_VERSION")).to_string(),
        original: None,
        source_snapshot: None,
    };
    Ok(PendingSnapshot {
        snapshot,
        new_packs: stored.packs.split_off(stored.indexed),
        checkpoint_files: stored.index_ids,
        bytes_added: stored.bytes + index_bytes,
        started,
    })
}

pub(super) fn ns(sec: i64, nsec: i64) -> i64 {
    sec * 1_000_000_000 + nsec
}

impl Archiver<'_> {
    pub(super) fn issue(&self, kind: &str, path: &Path, message: impl std::fmt::Display) {
        tracing::warn!("{}: {message}", path.display());
        self.issues.lock().expect("issues").push(PathIssue {
            kind: kind.into(),
            path: path.to_string_lossy().into_owned(),
            message: message.to_string(),
        });
    }

    /// The value, or `None` after recording why `path` could not be read.
    pub(super) fn readable<T>(&self, path: &Path, r: std::io::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.issue("vanished", path, "vanished before it was read");
                None
            }
            Err(e) => {
                self.issue("unreadable", path, e);
                None
            }
        }
    }

    pub(super) fn load_parent_tree(&self, id: &TreeId) -> Option<Tree> {
        match self.repo.read_tree(id) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("parent tree {id} unreadable, reading files afresh: {e}");
                None
            }
        }
    }

    pub(super) fn store_chunk(&self, data: &[u8]) -> Result<ChunkId> {
        let id = self.repo.crypto().content_id(data);
        self.store_blob(BlobKind::Data, id, data)?;
        Ok(ChunkId(id))
    }

    pub(super) fn store_tree(&self, tree: &Tree) -> Result<TreeId> {
        let bytes = tree.encode();
        let id = self.repo.crypto().content_id(&bytes);
        self.store_blob(BlobKind::Tree, id, &bytes)?;
        Ok(TreeId(id))
    }

    /// Stage 4 for one blob; the packer does stages 5-6.
    pub(super) fn store_blob(&self, kind: BlobKind, id: Id, raw: &[u8]) -> Result<()> {
        self.stop.check()?;
        if self.repo.index().contains(&id) || !self.pending.lock().expect("pending").insert(&id)? {
            return Ok(());
        }
        let counter = match kind {
            BlobKind::Data => &self.data_blobs,
            BlobKind::Tree => &self.tree_blobs,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.packer.add(kind, id, raw)
    }
}
