//! Restoring snapshots to a folder, and dumping single files.
//!
//! Restore runs in four phases:
//! 1. **plan**: walk the snapshot's trees, create folders, symlinks and special
//!    files, create every regular file at its final size (holes stay holes) and
//!    note which chunk goes to which file offset;
//! 2. **data** (parallel, in units of a few MiB, see [`schedule`]): read each
//!    needed range of a pack once, check and decode each blob, and write it to
//!    every place it belongs; workers are kept off files another one is
//!    writing, and one that meets a busy file leaves its bytes with the file's
//!    writer (see [`handoff`]);
//! 3. **links**: hardlinks to files restored in phase 2;
//! 4. **metadata**: owners, xattrs, modes and times; folders last, deepest first.
//!
//! In place ([`RestoreOptions::reuse_existing`], [`RestoreOptions::delete_extra`]),
//! the target ends up an exact copy of the snapshot while writing little:
//! existing regular files are kept and only chunks whose bytes differ are
//! written, and entries the snapshot does not have are deleted. See
//! [`inplace`].
//!
//! Every entry is made from a tree entry name validated on decode (no `/`,
//! `.` or `..`), and the snapshot's root must be a folder with a valid name
//! (checked here again, whatever loaded the snapshot). Nothing in the target
//! is followed: every entry is created, opened or removed relative to its
//! folder's descriptor, opened step by step from the target's without
//! following symlinks (see [`dirs`]); an existing symlink where the snapshot
//! has a folder or file is replaced, never written through, and a folder
//! swapped for a symlink during the restore makes what is below it fail with
//! an error.
//!
//! Damage costs only what it touches: a file whose chunks are damaged is
//! restored as far as it can be, a folder whose tree cannot be read is
//! restored empty, and both are listed in [`RestoreSummary::damaged`].

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::ObjectKey;
use crate::error::{BackendError, Error, Result};
use crate::fsmeta;
use crate::repo::IndexedRepository;
use crate::repo::format::ObjectKind;
use crate::repo::id::{ChunkId, PackId};
use crate::snapshot::Snapshot;
use crate::store::blob::{self, BlobEntry};
use crate::sys::dir::Dir;
use crate::tree::filter::Excludes;
use crate::tree::{Node, NodeKind};

use dirs::{Dirs, TARGET};
use plan::{Filter, Plan, PlannedFile, Walk};

mod dirs;
mod handoff;
mod inplace;
mod plan;
mod schedule;
#[cfg(test)]
mod tests;
mod zeros;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore only paths matching one of these (and what is below them).
    pub includes: Vec<String>,
    /// Skip paths matching one of these (and what is below them).
    pub excludes: Vec<String>,
    /// Delete entries in the target that the snapshot does not have, so the
    /// target becomes an exact copy. Only entries below the target are
    /// deleted and symlinks are removed, never followed. Cannot be combined
    /// with includes or excludes.
    pub delete_extra: bool,
    /// Update existing regular files in place: a chunk whose bytes are
    /// already at its offset (same content id) is neither read from the
    /// repository nor written.
    pub reuse_existing: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub specials: u64,
    pub bytes_written: u64,
    /// Existing files left as they were: every chunk was already in place.
    pub files_skipped: u64,
    /// Bytes of chunks found already in place and not written.
    pub bytes_skipped: u64,
    /// Entries deleted from the target because the snapshot does not have
    /// them (a deleted folder counts once).
    pub deleted: u64,
    /// Paths whose content could not be restored intact, with the reason:
    /// files with damaged chunks, and folders whose tree could not be read
    /// (everything below such a folder is missing).
    pub damaged: Vec<(String, String)>,
    pub duration_s: f64,
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub bytes: AtomicU64,
    pub total_bytes: AtomicU64,
}

/// Refuses a root entry that could lead a restore out of its target. The
/// snapshot's own root (`whole`) must be a folder without a name, as
/// `Snapshot::validate_root` demands when a snapshot is loaded; a node found
/// below the root by path may be of any kind, with a valid name. Checked
/// here again, whatever loaded the snapshot, before anything is touched.
fn check_root(snap: &Snapshot, root: &Node, whole: bool) -> Result<()> {
    let bad = |detail: String| Error::Unsafe {
        path: format!("snapshot {}", snap.id.short()),
        detail: format!(
            "{detail}; nothing was restored. Run `pvsnap check`; the snapshot object may be damaged or crafted"
        ),
    };
    if whole && !root.name.is_empty() {
        return Err(bad(format!(
            "its root entry is named {:?}, but a root has no name",
            root.name_lossy()
        )));
    }
    if !whole {
        crate::tree::validate_name(&root.name).map_err(|_| {
            bad(format!(
                "its root entry has the invalid name {:?}",
                root.name_lossy()
            ))
        })?;
    }
    if whole && !root.is_dir() {
        return Err(bad(format!(
            "its root entry is a {}, not a folder",
            root.kind.name()
        )));
    }
    Ok(())
}

/// Restores the snapshot's root content (or `subpath` below it) into `target`.
pub fn restore(
    repo: &IndexedRepository,
    snap: &Snapshot,
    subpath: Option<&str>,
    target: &Path,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreSummary> {
    let started = std::time::Instant::now();
    let whole = subpath
        .map(|p| p.split('/').all(|c| c.is_empty() || c == "."))
        .unwrap_or(true);
    check_root(snap, &snap.root, true)?;
    let root = match subpath {
        Some(p) => repo.find_node(snap, p)?,
        None => snap.root.clone(),
    };
    check_root(snap, &root, whole)?;
    if opts.delete_extra && !(opts.includes.is_empty() && opts.excludes.is_empty()) {
        return Err(Error::Invalid(
            "deleting extra entries cannot be combined with --include or --exclude: the target would lose what the filter left out".into(),
        ));
    }
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, "create target folder", e))?;
    let dirs = Dirs::new(target)?;
    // A new or empty target needs no check for what stands in the way.
    let fresh = dirs
        .open(TARGET)?
        .names()
        .map_err(|e| Error::io(target, "read target folder", e))?
        .is_empty();
    let filter = Filter {
        includes: if opts.includes.is_empty() {
            None
        } else {
            Some(Excludes::new(&opts.includes)?)
        },
        excludes: Excludes::new(&opts.excludes)?,
    };
    let set_owner = fsmeta::is_root();
    let mut walk = Walk {
        repo,
        filter: &filter,
        plan: Plan {
            files: vec![],
            hardlinks: vec![],
            others: vec![],
            dirs: vec![],
            targets: HashMap::new(),
            lost: vec![],
            unread: Default::default(),
        },
        dirs,
        seen: HashMap::new(),
    };
    let mut summary = RestoreSummary::default();

    // Phase 1: plan; folders, symlinks and special files are made here.
    match &root.kind {
        NodeKind::Dir { subtree } => {
            walk.dir(subtree, TARGET, Path::new(""), 1, filter.includes.is_none())?;
            walk.plan.dirs.push((TARGET, root.clone(), 0));
        }
        _ => walk.entry(&root, TARGET)?,
    }
    let Walk { mut plan, dirs, .. } = walk;
    if !fresh {
        if opts.delete_extra {
            summary.deleted = inplace::delete_extra(repo, &dirs, &plan.dirs, &plan.unread)?;
        }
        if opts.reuse_existing {
            let existing: Vec<Option<bool>> = plan
                .files
                .par_iter()
                .map(|f| inplace::prepare_existing(&dirs, f))
                .collect::<Result<_>>()?;
            for (f, resized) in plan.files.iter_mut().zip(existing) {
                f.reuse = resized.is_some();
                f.resized = resized.unwrap_or(false);
            }
            let kept = inplace::keep_matching(repo, &dirs, &plan.files, &mut plan.targets)?;
            summary.files_skipped = kept.files;
            summary.bytes_skipped = kept.bytes;
        }
        plan.files
            .par_iter()
            .filter(|f| !f.reuse)
            .try_for_each(|f| dirs::remove_existing(&*dirs.open(f.dir)?, &f.node.name, &f.path))?;
    }
    let total: u64 = plan
        .files
        .iter()
        .fold(0u64, |t, f| t.saturating_add(f.node.size));
    progress.total_bytes.store(
        total.saturating_sub(summary.bytes_skipped),
        Ordering::Relaxed,
    );
    // Writes still owed to each file; the writer that brings it to zero sets
    // the file's metadata through the open descriptor.
    let remaining: Vec<AtomicU64> = (0..plan.files.len()).map(|_| AtomicU64::new(0)).collect();
    for targets in plan.targets.values() {
        for (fi, _) in targets {
            remaining[*fi].fetch_add(1, Ordering::Relaxed);
        }
    }
    // Whether some worker has given the file its final size already.
    let sized: Vec<AtomicBool> = (0..plan.files.len())
        .map(|_| AtomicBool::new(false))
        .collect();
    let open_file = |fi: usize, set_size: bool| -> Result<File> {
        let f = &plan.files[fi];
        let file = dirs
            .open(f.dir)?
            .open_file(
                OsStr::from_bytes(&f.node.name),
                libc::O_WRONLY | libc::O_CREAT,
                0o600,
            )
            .map_err(|e| Error::io(&f.path, "create", e))?;
        // The final size up front: holes stay holes, and the file is whole
        // whatever order its chunks arrive in.
        if set_size && !single_chunk(&f.node) {
            file.set_len(f.node.size)
                .map_err(|e| Error::io(&f.path, "set size", e))?;
        }
        Ok(file)
    };
    let finish_file = |fi: usize, file: &File| -> Result<()> {
        let f = &plan.files[fi];
        if f.reuse {
            inplace::remove_extra_xattrs(file, &f.path, &f.node)
                .map_err(|e| Error::io(&f.path, "set metadata", e))?;
        }
        fsmeta::apply_metadata_fd(file, &f.node, set_owner)
            .map_err(|e| Error::io(&f.path, "set metadata", e))
    };
    // Files without stored content (empty, or only holes).
    (0..plan.files.len())
        .into_par_iter()
        .filter(|fi| remaining[*fi].load(Ordering::Relaxed) == 0)
        .try_for_each(|fi| finish_file(fi, &open_file(fi, true)?))?;

    // Phase 2: data, in units of a few MiB (see `schedule`).
    let mut by_pack: HashMap<PackId, Vec<(BlobEntry, ChunkId)>> = HashMap::new();
    let mut missing: Vec<ChunkId> = Vec::new();
    for chunk in plan.targets.keys() {
        match repo.locate(&chunk.0) {
            Some(loc) => by_pack
                .entry(loc.pack)
                .or_default()
                .push((loc.entry, *chunk)),
            None => missing.push(*chunk),
        }
    }
    let damaged: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let mark_damaged = |chunk: &ChunkId, why: String| {
        let mut d = damaged.lock().expect("damaged");
        for (fi, _) in &plan.targets[chunk] {
            d.push((*fi, why.clone()));
        }
    };
    for c in &missing {
        mark_damaged(
            c,
            format!("chunk {}: {}", c.short(), repo.why_unlocated(&c.0)),
        );
    }
    let written = AtomicU64::new(0);
    let units = schedule::units(by_pack, &plan.targets);
    let scheduler = schedule::Scheduler::new(&units);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let pool: Mutex<Vec<UnitData>> = Mutex::new(Vec::new());
    let handoff = handoff::Handoff::new(schedule::UNIT_BYTES);
    let writer = zeros::ZeroWriter::new();
    // Writes `job`'s pieces into file `fi` through the worker's descriptor;
    // the write that completes the file sets its metadata.
    let write_job = |fi: usize, job: Job, open: &mut HashMap<usize, File>| -> Result<()> {
        let file = match open.entry(fi) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(open_file(fi, !sized[fi].swap(true, Ordering::AcqRel))?)
            }
        };
        for &(off, blob) in &job.pieces {
            let raw = job.data.content(blob);
            writer
                .write_at(file, raw, off)
                .map_err(|e| Error::io(&plan.files[fi].path, "write", e))?;
            written.fetch_add(raw.len() as u64, Ordering::Relaxed);
            progress
                .bytes
                .fetch_add(raw.len() as u64, Ordering::Relaxed);
            if remaining[fi].fetch_sub(1, Ordering::AcqRel) == 1 {
                let file = open.remove(&fi).expect("just used");
                return finish_file(fi, &file);
            }
        }
        Ok(())
    };
    // One unit of work: read its range of the pack, check and decode each
    // blob, then hand each file its pieces (see `handoff`). `open` keeps the
    // worker's files open from one unit to the next.
    let run_unit = |unit: &schedule::Unit, open: &mut HashMap<usize, File>| -> Result<()> {
        open.retain(|fi, _| unit.files.binary_search(fi).is_ok());
        let mut data = pool.lock().expect("pool").pop().unwrap_or_default();
        let pack = &unit.pack;
        let first = unit.blobs[0].0.offset as u64;
        // The furthest end of any blob (a damaged index may list a blob that
        // reaches past the last one's end).
        let end = unit
            .blobs
            .iter()
            .map(|(e, _)| e.offset as u64 + e.stored_len as u64)
            .max()
            .unwrap_or(first);
        let key = ObjectKey::new(ObjectKind::Pack, pack.to_hex());
        let read = match repo
            .backend()
            .get_range_into(&key, first, end - first, &mut data.bytes)
        {
            // A truncated pack: the blobs before its end are still whole.
            Err(BackendError::OutOfRange { size, .. }) if size > first => repo
                .backend()
                .get_range_into(&key, first, size - first, &mut data.bytes),
            r => r,
        };
        if let Err(e) = read {
            for (_, c) in &unit.blobs {
                mark_damaged(c, format!("pack {}: {e}", pack.short()));
            }
            pool.lock().expect("pool").push(data);
            return Ok(());
        }
        data.out.clear();
        data.at.clear();
        // Each file's pieces, in the order of `unit.files`.
        let mut pieces: Vec<Vec<(u64, usize)>> = vec![Vec::new(); unit.files.len()];
        for (i, (entry, chunk)) in unit.blobs.iter().enumerate() {
            let start = (entry.offset as u64 - first) as usize;
            let Some(stored) = data.bytes.get_mut(start..start + entry.stored_len as usize) else {
                data.at.push(Piece::Damaged);
                mark_damaged(
                    chunk,
                    format!(
                        "pack {} is truncated or the index is wrong: chunk {} lay past what could be read; run `pvsnap check --read-data`",
                        pack.short(),
                        chunk.short()
                    ),
                );
                continue;
            };
            match blob::decode_in_place(repo.crypto(), pack, entry, stored, &mut data.out) {
                Ok(blob::Content::Stored(r)) => {
                    data.at.push(Piece::Bytes(start + r.start..start + r.end));
                }
                Ok(blob::Content::Out(r)) => data.at.push(Piece::Out(r)),
                Err(e) => {
                    data.at.push(Piece::Damaged);
                    mark_damaged(chunk, e.to_string());
                    continue;
                }
            }
            for (fi, off) in &plan.targets[chunk] {
                let k = unit.files.binary_search(fi).expect("unit lists its files");
                pieces[k].push((*off, i));
            }
        }
        let data = std::sync::Arc::new(Pooled {
            data: Some(data),
            pool: &pool,
        });
        for (k, p) in pieces.into_iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let fi = unit.files[k];
            let bytes: u64 = p.iter().map(|(_, b)| data.content(*b).len() as u64).sum();
            let job = Job {
                data: data.clone(),
                pieces: p,
            };
            handoff.submit(fi, job, bytes, |job| write_job(fi, job, open))?;
        }
        Ok(())
    };
    let workers = rayon::current_num_threads().clamp(1, units.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut open = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let Some(i) = scheduler.next() else { break };
                    let r = run_unit(&units[i], &mut open);
                    scheduler.done(i);
                    if let Err(e) = r {
                        stop.store(true, Ordering::Relaxed);
                        failed.lock().expect("failed").get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().expect("failed") {
        return Err(e);
    }

    // Files left incomplete by damage still get their metadata.
    let mut dmg = damaged.into_inner().expect("damaged");
    dmg.sort();
    dmg.dedup_by(|a, b| a.0 == b.0);
    // (They may never have been opened: create them at their size.)
    for (fi, _) in &dmg {
        finish_file(*fi, &open_file(*fi, true)?)?;
    }

    // Phase 3: hardlinks.
    for ((dir, path, node), first) in &plan.hardlinks {
        let d = dirs.open(*dir)?;
        dirs::remove_existing(&d, &node.name, path)?;
        let f = &plan.files[*first];
        d.hard_link(
            OsStr::from_bytes(&node.name),
            &*dirs.open(f.dir)?,
            OsStr::from_bytes(&f.node.name),
        )
        .map_err(|e| Error::io(path, "create hardlink", e))?;
        summary.links += 1;
    }

    // Phase 4: metadata of symlinks, special files and folders (deepest first).
    let meta_err = |p: &Path, e: std::io::Error| Error::io(p, "set metadata", e);
    for (dir, path, node) in &plan.others {
        apply_metadata_at(&*dirs.open(*dir)?, path, node, set_owner)
            .map_err(|e| meta_err(path, e))?;
    }
    plan.dirs.sort_by_key(|d| std::cmp::Reverse(d.2));
    for (dir, node, _) in &plan.dirs {
        let path = dirs.path(*dir);
        let d = dirs.open(*dir)?;
        if opts.delete_extra {
            inplace::remove_extra_xattrs(d.as_file(), path, node).map_err(|e| meta_err(path, e))?;
        }
        fsmeta::apply_metadata_fd(d.as_file(), node, set_owner).map_err(|e| meta_err(path, e))?;
    }

    summary.files = plan.files.len() as u64;
    summary.dirs = plan.dirs.len() as u64;
    summary.specials = plan.others.len() as u64;
    summary.bytes_written = written.load(Ordering::Relaxed);
    summary.damaged = plan.lost;
    summary.damaged.extend(
        dmg.into_iter()
            .map(|(fi, why)| (plan.files[fi].path.to_string_lossy().into_owned(), why)),
    );
    summary.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Sets the metadata of a symlink or special file `node` in folder `dir`,
/// never following it: owner and times through the folder's descriptor,
/// the mode with `fchmodat(AT_SYMLINK_NOFOLLOW)`, extended attributes of a
/// special file through `/proc/self/fd` of the folder (by `path` where
/// `/proc` is not mounted).
fn apply_metadata_at(dir: &Dir, path: &Path, node: &Node, set_owner: bool) -> std::io::Result<()> {
    let name = OsStr::from_bytes(&node.name);
    if set_owner {
        dir.chown(name, node.uid, node.gid)?;
    }
    if !matches!(node.kind, NodeKind::Symlink { .. }) {
        let at = if Path::new("/proc/self/fd").is_dir() {
            dir.proc_path(name)
        } else {
            path.to_path_buf()
        };
        for x in &node.xattrs {
            let xname = OsStr::from_bytes(&x.name);
            if let Err(e) = xattr::set(&at, xname, &x.value) {
                if !matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP)) {
                    return Err(e);
                }
                tracing::warn!(
                    "{}: could not set xattr {}: {e}",
                    path.display(),
                    xname.to_string_lossy()
                );
            }
        }
        dir.chmod(name, node.mode)?;
    }
    dir.set_times(name, node.mtime_ns)
}

/// A unit's pack range and decoded blobs, kept for whichever worker writes
/// them and reused from one unit to the next.
#[derive(Default)]
struct UnitData {
    /// The unit's range of its pack; uncompressed blobs are written from
    /// here (opened in place when encrypted).
    bytes: Vec<u8>,
    /// The compressed blobs' content, back to back.
    out: Vec<u8>,
    /// Where each blob of the unit is, in the unit's order.
    at: Vec<Piece>,
}

enum Piece {
    Bytes(std::ops::Range<usize>),
    Out(std::ops::Range<usize>),
    /// Failed its check; nothing of it is written.
    Damaged,
}

/// A [`UnitData`] that goes back to the pool when the last writer is done
/// with it, so restoring allocates (and faults in) no fresh buffers.
struct Pooled<'a> {
    data: Option<UnitData>,
    pool: &'a Mutex<Vec<UnitData>>,
}

impl Pooled<'_> {
    fn content(&self, blob: usize) -> &[u8] {
        let d = self.data.as_ref().expect("until dropped");
        match &d.at[blob] {
            Piece::Bytes(r) => &d.bytes[r.clone()],
            Piece::Out(r) => &d.out[r.clone()],
            Piece::Damaged => unreachable!("damaged blobs get no pieces"),
        }
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let (Some(d), Ok(mut pool)) = (self.data.take(), self.pool.lock()) {
            pool.push(d);
        }
    }
}

/// What one file gets from one unit: (file offset, blob index) pieces.
struct Job<'a> {
    data: std::sync::Arc<Pooled<'a>>,
    pieces: Vec<(u64, usize)>,
}

/// Whether a file's content is exactly one chunk (its write sets the size).
fn single_chunk(node: &Node) -> bool {
    matches!(&node.kind, NodeKind::File { content } if content.len() == 1 && content[0].chunk.is_some())
}

/// Writes one file's content to `out` (holes as zeros).
pub fn dump(repo: &IndexedRepository, node: &Node, out: &mut dyn Write) -> Result<u64> {
    let NodeKind::File { content } = &node.kind else {
        return Err(Error::Invalid(format!(
            "{}: is a {}, not a file; use `pvsnap ls` or `pvsnap restore`",
            node.name_lossy(),
            node.kind.name()
        )));
    };
    // Lengths past what a file can hold are damage, not a stream of zeros
    // that never ends.
    let total = content
        .iter()
        .try_fold(0u64, |t, e| t.checked_add(e.len))
        .filter(|t| *t <= i64::MAX as u64);
    if total.is_none() {
        return Err(Error::Invalid(format!(
            "{}: its extents add up to more than a file can hold; the snapshot is damaged or crafted, run `pvsnap check`",
            node.name_lossy()
        )));
    }
    let zeros = vec![0u8; 1024 * 1024];
    let mut n = 0;
    let io = |e: std::io::Error| Error::io("standard output", "write", e);
    for e in content {
        match e.chunk {
            Some(c) => {
                let data = repo.read_chunk(&c)?;
                if data.len() as u64 != e.len {
                    return Err(Error::Invalid(format!(
                        "{}: chunk {} holds {} bytes where the file's extent says {}; run `pvsnap check`",
                        node.name_lossy(),
                        c.short(),
                        data.len(),
                        e.len
                    )));
                }
                out.write_all(&data).map_err(io)?
            }
            None => {
                let mut left = e.len;
                while left > 0 {
                    let k = left.min(zeros.len() as u64) as usize;
                    out.write_all(&zeros[..k]).map_err(io)?;
                    left -= k as u64;
                }
            }
        }
        n += e.len;
    }
    Ok(n)
}
