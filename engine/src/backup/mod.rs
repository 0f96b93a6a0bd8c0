//! The snapshot pipeline.
//!
//! [`backup`] is the whole pipeline in one place, as named stages:
//!
//! 1. **walk**: read each folder, sort its entries by name, drop excluded ones;
//! 2. **compare with parent**: a file whose size, mtime, ctime and inode equal
//!    the parent snapshot's entry (and whose chunks are all indexed) keeps its
//!    chunk list and is not read;
//! 3. **read / chunk / hash** (parallel): other files are read in large blocks,
//!    holes skipped, cut by FastCDC and hashed with blake3;
//! 4. **dedup**: chunks already in the index, or being stored by another
//!    thread, are skipped;
//! 5. **compress / encrypt**: zstd, then XChaCha20-Poly1305 when encrypted;
//! 6. **pack**: blobs are appended to an in-memory pack (data and trees in
//!    separate packs); a full pack is written by the thread that filled it;
//! 7. **index**: after all packs, index files describing them are written;
//! 8. **commit**: the snapshot object is written last.
//!
//! [`store`] runs stages 1-7 and returns a [`PendingSnapshot`]; its
//! [`commit`](PendingSnapshot::commit) is stage 8. [`backup`] does both.
//!
//! Folders and files are processed in parallel by a rayon pool; each folder's
//! tree is written once all its children are done, so trees are written after
//! the blobs they reference.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use globset::{GlobSet, GlobSetBuilder};
use jiff::Timestamp;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fsmeta::{self, NameCache, SourceKind};
use crate::repo::IndexedRepository;
use crate::repo::id::{ChunkId, Id, SnapshotId, TreeId};
use crate::snapshot::{PathIssue, Snapshot, Source, Summary};
use crate::store::blob::BlobKind;
use crate::store::packer::{self, PackList, Packer};
use crate::tree::{Extent, Node, NodeKind, Tree};

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
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Estimates from the parent snapshot (0 when unknown).
    pub total_files_hint: AtomicU64,
    pub total_bytes_hint: AtomicU64,
}

/// The result of a snapshot run.
pub struct BackupOutcome {
    pub snapshot: Snapshot,
}

/// The latest snapshot of `source` (the parent of a new snapshot of it).
pub fn find_parent(snaps: &[Snapshot], source: &Source) -> Option<Snapshot> {
    let key = source.key();
    snaps.iter().rev().find(|s| s.source.key() == key).cloned()
}

/// Exclude patterns: a pattern without `/` matches an entry's name anywhere; one
/// with `/` matches the path relative to the snapshot root (a leading `/`
/// anchors it there explicitly).
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let (set, pat) = match p.strip_prefix('/') {
                Some(rest) => (&mut paths, rest),
                None if p.contains('/') => (&mut paths, p.as_str()),
                None => (&mut names, p.as_str()),
            };
            let glob = globset::GlobBuilder::new(pat.trim_end_matches('/'))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Pattern {
                    pattern: p.clone(),
                    detail: e.kind().to_string(),
                })?;
            set.add(glob);
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| Error::Pattern {
                pattern: patterns.join(" "),
                detail: e.to_string(),
            })
        };
        Ok(Excludes {
            names: build(names)?,
            paths: build(paths)?,
        })
    }

    pub fn matches(&self, rel: &Path, name: &OsStr) -> bool {
        self.names.is_match(Path::new(name)) || self.paths.is_match(rel)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.paths.is_empty()
    }
}

/// Read block for file content: one and a half times the largest chunk, so
/// every block yields at least one final cut. A large file holds two blocks
/// (12 MiB with default chunks), and two workers reading large files 24 MiB.
fn read_block(max_chunk: u32) -> usize {
    max_chunk as usize * 3 / 2
}

/// Read blocks kept for reuse (about one per worker thread).
const SPARE_BLOCKS: usize = 4;

/// (device, inode) of a file with several names.
type InodeKey = (u64, u64);

struct Archiver<'a> {
    repo: &'a IndexedRepository,
    excludes: Excludes,
    one_file_system: bool,
    root_dev: u64,
    names: NameCache,
    seed: u64,
    pending: Mutex<HashSet<Id>>,
    /// Stages 5-6: compress, encrypt, pack and store.
    packer: Packer<'a>,
    /// Read blocks of finished files, for the next files.
    spare_blocks: Mutex<Vec<Vec<u8>>>,
    issues: Mutex<Vec<PathIssue>>,
    hardlinks: Mutex<HashMap<InodeKey, (i64, Vec<Extent>)>>,
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs: AtomicU64,
    bytes_read: AtomicU64,
    data_blobs: AtomicU64,
    tree_blobs: AtomicU64,
    total_bytes: AtomicU64,
    progress: &'a Progress,
}

/// Takes a snapshot of the folder `path` into `repo`: [`store`] then
/// [`PendingSnapshot::commit`], which adds the new packs to `repo`'s index.
pub fn backup(
    repo: &mut IndexedRepository,
    path: &Path,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupOutcome> {
    store(repo, path, opts, progress)?.commit(repo)
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
    new_packs: PackList,
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

    /// Stage 8: writes the snapshot object, the commit point, then adds the
    /// packs stored to `repo`'s index, so that a next snapshot in the same
    /// run deduplicates against them.
    pub fn commit(self, repo: &mut IndexedRepository) -> Result<BackupOutcome> {
        let mut snapshot = self.snapshot;
        let snapshot_len = repo.encode_snapshot(&snapshot).len() as u64;
        snapshot.summary.bytes_added = self.bytes_added + snapshot_len;
        snapshot.summary.duration_s =
            (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        repo.save_snapshot(&snapshot)?;
        repo.index_mut().extend(&self.new_packs);
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
        excludes: Excludes::new(&opts.excludes)?,
        one_file_system: opts.one_file_system,
        root_dev: root_meta.dev(),
        names: NameCache::default(),
        seed: repo.chunker_seed(),
        pending: Mutex::new(HashSet::new()),
        packer: Packer::new(repo),
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
    };

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
    let tree_id = a
        .packer
        .with_writer(|| pool.install(|| a.folder(&abs, Path::new(""), parent_tree.as_ref())))?;

    // Stage 7: index files for every pack written.
    let stored = a.packer.finish()?;
    let (_, index_bytes) = packer::write_index(repo, &stored.packs, &[])?;

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
    };
    Ok(PendingSnapshot {
        snapshot,
        new_packs: stored.packs,
        bytes_added: stored.bytes + index_bytes,
        started,
    })
}

fn ns(sec: i64, nsec: i64) -> i64 {
    sec * 1_000_000_000 + nsec
}

impl Archiver<'_> {
    fn issue(&self, kind: &str, path: &Path, message: impl std::fmt::Display) {
        tracing::warn!("{}: {message}", path.display());
        self.issues.lock().expect("issues").push(PathIssue {
            kind: kind.into(),
            path: path.to_string_lossy().into_owned(),
            message: message.to_string(),
        });
    }

    /// The value, or `None` after recording why `path` could not be read.
    fn readable<T>(&self, path: &Path, r: std::io::Result<T>) -> Option<T> {
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

    fn load_parent_tree(&self, id: &TreeId) -> Option<Tree> {
        match self.repo.read_tree(id) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("parent tree {id} unreadable, reading files afresh: {e}");
                None
            }
        }
    }

    /// Stages 1-6 for one folder; returns its tree id once written.
    fn folder(&self, path: &Path, rel: &Path, parent: Option<&Tree>) -> Result<TreeId> {
        self.dirs.fetch_add(1, Ordering::Relaxed);
        let mut names: Vec<OsString> = Vec::new();
        match std::fs::read_dir(path) {
            Ok(rd) => {
                for ent in rd {
                    match ent {
                        Ok(e) => names.push(e.file_name()),
                        Err(e) => self.issue("unreadable", path, format!("listing failed: {e}")),
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.issue("vanished", path, "folder vanished")
            }
            Err(e) => self.issue("unreadable", path, format!("cannot list folder: {e}")),
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let nodes: Vec<Option<Node>> = names
            .par_iter()
            .map(|name| {
                let child_rel = rel.join(name);
                if !self.excludes.is_empty() && self.excludes.matches(&child_rel, name) {
                    return Ok(None);
                }
                let prev = parent.and_then(|t| t.find(name.as_bytes()));
                self.entry(&path.join(name), &child_rel, name, prev)
            })
            .collect::<Result<_>>()?;
        let tree = Tree {
            nodes: nodes.into_iter().flatten().collect(),
        };
        self.store_tree(&tree)
    }

    /// One entry: Ok(None) when it is skipped (excluded, vanished, unreadable).
    fn entry(
        &self,
        path: &Path,
        rel: &Path,
        name: &OsStr,
        prev: Option<&Node>,
    ) -> Result<Option<Node>> {
        let Some(meta) = self.readable(path, std::fs::symlink_metadata(path)) else {
            return Ok(None);
        };
        // Setting an xattr changes ctime: with ctime and inode unchanged, the
        // parent's xattrs are still true and need not be read again.
        let xattrs = match prev {
            Some(p)
                if p.ctime_ns == ns(meta.ctime(), meta.ctime_nsec()) && p.inode == meta.ino() =>
            {
                p.xattrs.clone()
            }
            _ => match fsmeta::read_xattrs(path) {
                Ok(x) => x,
                Err(e) => {
                    self.issue("unreadable", path, format!("extended attributes: {e}"));
                    vec![]
                }
            },
        };
        let kind = match fsmeta::source_kind(&meta) {
            SourceKind::Dir => {
                if self.one_file_system && meta.dev() != self.root_dev {
                    NodeKind::Dir {
                        subtree: self.store_tree(&Tree::default())?,
                    }
                } else {
                    let prev_tree = match prev.map(|p| &p.kind) {
                        Some(NodeKind::Dir { subtree }) => self.load_parent_tree(subtree),
                        _ => None,
                    };
                    NodeKind::Dir {
                        subtree: self.folder(path, rel, prev_tree.as_ref())?,
                    }
                }
            }
            SourceKind::File => return self.file(path, name, &meta, prev, xattrs),
            SourceKind::Symlink => match std::fs::read_link(path) {
                Ok(t) => NodeKind::Symlink {
                    target: t.as_os_str().as_bytes().to_vec(),
                },
                Err(e) => {
                    self.issue("unreadable", path, e);
                    return Ok(None);
                }
            },
            SourceKind::Fifo => NodeKind::Fifo,
            SourceKind::Char(rdev) => NodeKind::CharDevice { rdev },
            SourceKind::Block(rdev) => NodeKind::BlockDevice { rdev },
            SourceKind::Socket => {
                self.issue(
                    "skipped",
                    path,
                    "socket skipped (sockets cannot be restored)",
                );
                return Ok(None);
            }
        };
        Ok(Some(fsmeta::node_from_meta(
            name,
            &meta,
            kind,
            &self.names,
            xattrs,
        )))
    }

    fn file(
        &self,
        path: &Path,
        name: &OsStr,
        meta: &Metadata,
        prev: Option<&Node>,
        xattrs: Vec<crate::tree::Xattr>,
    ) -> Result<Option<Node>> {
        self.total_bytes.fetch_add(meta.len(), Ordering::Relaxed);
        let done = |node: Node| {
            self.progress.files.fetch_add(1, Ordering::Relaxed);
            Ok(Some(node))
        };
        // Stage 2: unchanged since the parent?
        if let Some(p) = prev {
            let same = matches!(p.kind, NodeKind::File { .. })
                && p.size == meta.len()
                && p.mtime_ns == ns(meta.mtime(), meta.mtime_nsec())
                && p.ctime_ns == ns(meta.ctime(), meta.ctime_nsec())
                && p.inode == meta.ino()
                && p.chunks().all(|c| self.repo.index().contains(&c.0));
            if same {
                self.files_unmodified.fetch_add(1, Ordering::Relaxed);
                self.progress.bytes.fetch_add(meta.len(), Ordering::Relaxed);
                let mut node =
                    fsmeta::node_from_meta(name, meta, p.kind.clone(), &self.names, xattrs);
                node.size = p.size;
                return done(node);
            }
        }
        let counter = if prev.is_some() {
            &self.files_changed
        } else {
            &self.files_new
        };
        // Another name of an inode already read in this run?
        let link_key = (meta.dev(), meta.ino());
        if meta.nlink() > 1 {
            let mtime = ns(meta.mtime(), meta.mtime_nsec());
            if let Some((m, content)) = self.hardlinks.lock().expect("hardlinks").get(&link_key)
                && *m == mtime
            {
                counter.fetch_add(1, Ordering::Relaxed);
                let mut node = fsmeta::node_from_meta(
                    name,
                    meta,
                    NodeKind::File {
                        content: content.clone(),
                    },
                    &self.names,
                    xattrs,
                );
                // The size of what was read, not of what the inode is now.
                node.size = content.iter().map(|e| e.len).sum();
                return done(node);
            }
        }
        // Stages 3-6.
        let (content, opened_meta) = match self.read_content(path) {
            Ok(Some(x)) => x,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if opened_meta.nlink() > 1 {
            self.hardlinks.lock().expect("hardlinks").insert(
                link_key,
                (
                    ns(opened_meta.mtime(), opened_meta.mtime_nsec()),
                    content.clone(),
                ),
            );
        }
        let mut node = fsmeta::node_from_meta(
            name,
            &opened_meta,
            NodeKind::File { content },
            &self.names,
            xattrs,
        );
        node.size = match &node.kind {
            NodeKind::File { content } => content.iter().map(|e| e.len).sum(),
            _ => 0,
        };
        done(node)
    }

    /// Reads a file's content into extents. Ok(None): the file could not be
    /// read and the issue is recorded. Err: the repository failed.
    fn read_content(&self, path: &Path) -> Result<Option<(Vec<Extent>, Metadata)>> {
        let Some(file) = self.readable(path, open_for_read(path)) else {
            return Ok(None);
        };
        let before = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.issue("unreadable", path, e);
                return Ok(None);
            }
        };
        let mut extents = Vec::new();
        let mut pos = 0u64;
        let mut short = false;
        for (off, len) in fsmeta::data_segments(&file, &before) {
            if off > pos {
                extents.push(Extent {
                    chunk: None,
                    len: off - pos,
                });
            }
            let got = match self.chunk_segment(&file, off, len, &mut extents) {
                Ok(n) => n,
                Err(SegmentError::Io(e)) => {
                    self.issue("unreadable", path, format!("read failed: {e}"));
                    return Ok(None);
                }
                Err(SegmentError::Repo(e)) => return Err(e),
            };
            pos = off + got;
            if got < len {
                short = true;
                break;
            }
        }
        if !short && pos < before.len() {
            extents.push(Extent {
                chunk: None,
                len: before.len() - pos,
            });
        }
        let after = file.metadata().ok();
        let changed = short
            || after.is_none_or(|a| {
                a.len() != before.len()
                    || ns(a.mtime(), a.mtime_nsec()) != ns(before.mtime(), before.mtime_nsec())
                    || ns(a.ctime(), a.ctime_nsec()) != ns(before.ctime(), before.ctime_nsec())
            });
        if changed {
            self.issue(
                "changed",
                path,
                "changed while it was read; the snapshot holds the content as read",
            );
        }
        Ok(Some((extents, before)))
    }

    /// Chunks `len` bytes at `off`; returns how many bytes were read (fewer
    /// than `len` if the file shrank meanwhile).
    ///
    /// A segment longer than one read block is processed with two blocks:
    /// while the chunks of one are hashed, compressed and packed, the next is
    /// read and cut on another worker, so a single large file keeps both
    /// stages busy.
    fn chunk_segment(
        &self,
        file: &File,
        off: u64,
        len: u64,
        out: &mut Vec<Extent>,
    ) -> std::result::Result<u64, SegmentError> {
        let c = self.repo.config().chunker;
        let block = read_block(c.max).min(usize::try_from(len).unwrap_or(usize::MAX));
        let take = || {
            let mut b = self
                .spare_blocks
                .lock()
                .expect("blocks")
                .pop()
                .unwrap_or_default();
            if b.len() < block {
                b.resize(block, 0);
            }
            b
        };
        let mut a = take();
        let mut b = if (block as u64) < len {
            take()
        } else {
            Vec::new()
        };
        // Both blocks have the same length (the second is empty for a short segment).
        let second = block.min(b.len());
        let r = self.chunk_blocks(file, off, len, [&mut a[..block], &mut b[..second]], out);
        let mut spare = self.spare_blocks.lock().expect("blocks");
        for buf in [a, b] {
            if spare.len() < SPARE_BLOCKS && !buf.is_empty() {
                spare.push(buf);
            }
        }
        r
    }

    /// Fills `buf[have..]` from the file at `*pos` (not beyond `end`); returns
    /// the bytes now in `buf` and whether the segment (or the file) ended.
    fn fill(
        &self,
        file: &File,
        buf: &mut [u8],
        mut have: usize,
        pos: &mut u64,
        end: u64,
    ) -> std::result::Result<(usize, bool), SegmentError> {
        while have < buf.len() && *pos < end {
            let want = (buf.len() - have).min((end - *pos) as usize);
            let n =
                read_at_full(file, &mut buf[have..have + want], *pos).map_err(SegmentError::Io)?;
            have += n;
            *pos += n as u64;
            self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
            self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
            if n < want {
                return Ok((have, true));
            }
        }
        Ok((have, *pos >= end))
    }

    /// FastCDC cut points of `data`; unless `last`, the final cut (where the
    /// block ended, not where the content says) is left for the next block.
    fn cut(&self, data: &[u8], last: bool) -> Vec<(usize, usize)> {
        let c = self.repo.config().chunker;
        let mut cuts: Vec<(usize, usize)> = fastcdc::v2020::FastCDC::with_level_and_seed(
            data,
            c.min,
            c.avg,
            c.max,
            fastcdc::v2020::Normalization::Level1,
            self.seed,
        )
        .map(|ch| (ch.offset, ch.length))
        .collect();
        if !last && cuts.len() > 1 {
            cuts.pop();
        }
        cuts
    }

    /// [`Self::chunk_segment`] over two read blocks of equal length (the
    /// second empty when the segment fits in the first).
    fn chunk_blocks(
        &self,
        file: &File,
        off: u64,
        len: u64,
        [mut cur, mut next]: [&mut [u8]; 2],
        out: &mut Vec<Extent>,
    ) -> std::result::Result<u64, SegmentError> {
        let end = off + len;
        let mut pos = off;
        let (mut have, mut eof) = self.fill(file, cur, 0, &mut pos, end)?;
        let mut cuts = self.cut(&cur[..have], eof);
        let mut total = 0u64;
        while have > 0 {
            let consumed: usize = cuts.iter().map(|c| c.1).sum();
            let more = !eof || consumed < have;
            let data = &cur[..have];
            let (ids, following) = rayon::join(
                || -> Result<Vec<ChunkId>> {
                    if cuts.len() > 1 {
                        cuts.par_iter()
                            .map(|&(o, l)| self.store_chunk(&data[o..o + l]))
                            .collect()
                    } else {
                        cuts.iter()
                            .map(|&(o, l)| self.store_chunk(&data[o..o + l]))
                            .collect()
                    }
                },
                || -> std::result::Result<_, SegmentError> {
                    if !more {
                        return Ok(None);
                    }
                    let tail = have - consumed;
                    next[..tail].copy_from_slice(&data[consumed..]);
                    let (n, eof) = self.fill(file, next, tail, &mut pos, end)?;
                    Ok(Some((n, eof, self.cut(&next[..n], eof))))
                },
            );
            for (id, (_, l)) in ids.map_err(SegmentError::Repo)?.into_iter().zip(&cuts) {
                out.push(Extent {
                    chunk: Some(id),
                    len: *l as u64,
                });
            }
            total += consumed as u64;
            match following? {
                Some((n, e, c)) => {
                    std::mem::swap(&mut cur, &mut next);
                    (have, eof, cuts) = (n, e, c);
                }
                None => break,
            }
        }
        Ok(total)
    }

    fn store_chunk(&self, data: &[u8]) -> Result<ChunkId> {
        let id = self.repo.crypto().content_id(data);
        self.store_blob(BlobKind::Data, id, data)?;
        Ok(ChunkId(id))
    }

    fn store_tree(&self, tree: &Tree) -> Result<TreeId> {
        let bytes = tree.encode();
        let id = self.repo.crypto().content_id(&bytes);
        self.store_blob(BlobKind::Tree, id, &bytes)?;
        Ok(TreeId(id))
    }

    /// Stage 4 for one blob; the packer does stages 5-6.
    fn store_blob(&self, kind: BlobKind, id: Id, raw: &[u8]) -> Result<()> {
        if self.repo.index().contains(&id) || !self.pending.lock().expect("pending").insert(id) {
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

enum SegmentError {
    Io(std::io::Error),
    Repo(Error),
}

/// Reads until `buf` is full or the file ends; returns bytes read.
pub(crate) fn read_at_full(file: &File, buf: &mut [u8], mut pos: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                pos += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Opens without following symlinks and, where allowed, without touching atime.
fn open_for_read(path: &Path) -> std::io::Result<File> {
    let open = |flags: i32| {
        OpenOptions::new()
            .read(true)
            .custom_flags(flags | libc::O_NOFOLLOW)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicI64;

    use super::*;
    use crate::backend::{Backend, DynBackend, ObjectKey};
    use crate::error::BackendError;
    use crate::repo::format::ObjectKind;
    use crate::testutil;

    /// Fails the n-th pack put (and every later one); other objects pass, so
    /// the snapshot could commit if a lost pack went unnoticed.
    struct FailPack {
        inner: DynBackend,
        packs_left: AtomicI64,
    }

    impl Backend for FailPack {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
            if key.kind == ObjectKind::Pack && self.packs_left.fetch_sub(1, Ordering::SeqCst) <= 0 {
                return Err(BackendError::Injected(format!("put {key}")));
            }
            self.inner.put(key, data)
        }
        fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
            self.inner.get(key)
        }
        fn get_range(
            &self,
            key: &ObjectKey,
            offset: u64,
            len: u64,
        ) -> Result<Vec<u8>, BackendError> {
            self.inner.get_range(key, offset, len)
        }
        fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>, BackendError> {
            self.inner.list(kind)
        }
        fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
            self.inner.delete(key)
        }
    }

    #[test]
    fn cuts_do_not_depend_on_read_blocks_and_content_survives() {
        // mem_repo chunks at 1/4/16 KiB, so read blocks are 32 KiB and these
        // files cross dozens of block boundaries, in both buffers.
        let dir = tempfile::tempdir().unwrap();
        let mut text = Vec::new();
        while text.len() < 300_000 {
            text.extend_from_slice(format!("line {} of a log\n", text.len()).as_bytes());
        }
        let mut mixed = testutil::noise(1, 200_000);
        mixed.extend_from_slice(&text);
        mixed.extend_from_slice(&testutil::noise(2, 77_777));
        let files: Vec<(String, Vec<u8>)> = vec![
            ("mixed".to_string(), mixed),
            ("one-block".to_string(), testutil::noise(3, 32 * 1024)),
            (
                "block-and-a-byte".to_string(),
                testutil::noise(4, 32 * 1024 + 1),
            ),
            ("two-blocks".to_string(), testutil::noise(5, 64 * 1024)),
        ];
        let files: std::collections::BTreeMap<_, _> = files.into_iter().collect();
        testutil::write_tree(dir.path(), &files);
        for encrypted in [false, true] {
            let (_, repo) = testutil::mem_repo(encrypted);
            let snap = testutil::snapshot(&repo, dir.path(), "/data", "2026-01-01T00:00:00Z");
            let indexed = repo.clone().load_index().unwrap();
            let tree = indexed.read_tree(&snap.tree).unwrap();
            let c = repo.config().chunker;
            for node in &tree.nodes {
                let name = String::from_utf8(node.name.clone()).unwrap();
                let content = &files[&name];
                let whole: Vec<(ChunkId, u64)> = fastcdc::v2020::FastCDC::with_level_and_seed(
                    content,
                    c.min,
                    c.avg,
                    c.max,
                    fastcdc::v2020::Normalization::Level1,
                    repo.chunker_seed(),
                )
                .map(|ch| {
                    let data = &content[ch.offset..ch.offset + ch.length];
                    (ChunkId(repo.crypto().content_id(data)), ch.length as u64)
                })
                .collect();
                let NodeKind::File { content: extents } = &node.kind else {
                    panic!("{name} is not a file");
                };
                let stored: Vec<(ChunkId, u64)> = extents
                    .iter()
                    .map(|e| (e.chunk.expect("no holes"), e.len))
                    .collect();
                assert_eq!(stored, whole, "{name} (encrypted: {encrypted})");
            }
            let (restored, damaged) = testutil::restore_files(&repo, &snap);
            assert!(damaged.is_empty());
            assert_eq!(restored, files);
        }
    }

    #[test]
    fn a_failing_pack_store_fails_the_snapshot_and_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // mem_repo's 48 KiB packs: these files make dozens of packs.
        testutil::write_tree(dir.path(), &testutil::files(9, 40, 64 * 1024));
        for fail_at in [0, 1, 5, 20] {
            let (mem, _) = testutil::mem_repo(false);
            let inner: DynBackend = mem.clone();
            let failing: DynBackend = Arc::new(FailPack {
                inner,
                packs_left: AtomicI64::new(fail_at),
            });
            let mut indexed = testutil::reopen(failing).load_index().unwrap();
            let r = backup(
                &mut indexed,
                dir.path(),
                &BackupOptions::default(),
                &Progress::default(),
            );
            let listed = mem.list(ObjectKind::Snapshot).unwrap();
            match r {
                Err(_) => assert!(
                    listed.is_empty(),
                    "pack {fail_at}: no snapshot object after a failure"
                ),
                Ok(o) => panic!(
                    "pack {fail_at}: snapshot {} committed though a pack was lost",
                    o.snapshot.id
                ),
            }
        }
    }
}
