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
//! Into a new or empty target, phases 1 to 3 run a batch of at most
//! [`plan::BATCH`] entries at a time (see [`flush`]), so memory does not grow
//! with the number of files; only the folders wait for the end.
//!
//! Over existing content ([`Overwrite`], [`RestoreOptions::delete_extra`]),
//! the target can end up an exact copy of the snapshot while writing little:
//! existing regular files are kept and only chunks whose bytes differ are
//! written, and entries the snapshot does not have are deleted. See
//! [`inplace`]. With [`RestoreOptions::dry_run`] the same plan is made
//! without touching the target, and [`RestoreSummary::preview`] says what
//! would be written, deleted and kept.
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
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsmeta;
use crate::repo::IndexedRepository;
use crate::snapshot::Snapshot;
use crate::stop::Stop;
use crate::sys::dir::Dir;
use crate::tree::filter::Excludes;
use crate::tree::{Node, NodeKind};

use dirs::{Dirs, TARGET};
use plan::{Filter, Mode, Placed, Plan, PlannedFile, Walk};
use writer::Restorer;

mod dirs;
mod dump;
mod handoff;
mod inplace;
mod plan;
mod schedule;
#[cfg(test)]
mod tests;
pub mod verify;
mod writer;
mod zeros;

pub use dump::dump;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore only paths matching one of these (and what is below them).
    pub includes: Vec<String>,
    /// Skip paths matching one of these (and what is below them).
    pub excludes: Vec<String>,
    /// Delete entries in the target that the snapshot does not have, so the
    /// target becomes an exact copy. Only entries below the target are
    /// deleted and symlinks are removed, never followed. With includes or
    /// excludes, only extras inside the selection are deleted: in folders
    /// the selection takes whole, and never an entry an exclude matches.
    pub delete_extra: bool,
    /// What happens to an entry that exists where the snapshot has one.
    pub overwrite: Overwrite,
    /// Change nothing: plan, compare with the target, and report what would
    /// be done in [`RestoreSummary::preview`].
    pub dry_run: bool,
    /// Asks the restore to stop (SIGINT, SIGTERM): the writers finish the
    /// unit in hand and the restore returns [`Error::RestoreInterrupted`]
    /// with the target holding part of the snapshot.
    pub stop: Stop,
}

/// What a restore does with an entry that already exists in the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it, writing every byte again.
    Always,
    /// Update an existing regular file in place: a chunk whose bytes are
    /// already at its offset (same content id) is neither read from the
    /// repository nor written. Other entries are replaced.
    #[default]
    IfChanged,
    /// Keep an existing file, symlink or special file as it is (folders
    /// are still entered and restored into).
    Never,
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
    /// Entries that existed and were kept as they are (`Overwrite::Never`).
    pub kept: u64,
    /// What a dry run would do; `None` when the restore ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
    /// Paths whose content could not be restored intact, with the reason:
    /// files with damaged chunks, and folders whose tree could not be read
    /// (everything below such a folder is missing).
    pub damaged: Vec<(String, String)>,
    pub duration_s: f64,
}

/// What a dry run found: every path below the target that would be
/// written (with the bytes to write) or deleted, and what would be kept.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Preview {
    /// Files, symlinks and special files that would be created or changed,
    /// with the bytes that would be written into each.
    pub write: Vec<(String, u64)>,
    /// Entries that would be deleted (a folder with all it holds).
    pub delete: Vec<String>,
    /// Existing entries that would be kept as they are (`Overwrite::Never`).
    pub kept: Vec<String>,
}

/// Live counters for a progress display. The totals are set from the plan
/// before any data is written: `bytes` counts data written (holes and data
/// already in place are not in `total_bytes`), `files` the regular files
/// finished (kept in place ones included), up to `total_files`. Into a new
/// or empty target the totals come from a walk that only counts, before the
/// batches are written (see [`flush`]).
#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub bytes: AtomicU64,
    pub total_bytes: AtomicU64,
    pub files: AtomicU64,
    pub total_files: AtomicU64,
    /// The plan is made: the totals are set.
    pub planned: AtomicBool,
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
    if opts.delete_extra && opts.overwrite == Overwrite::Never {
        return Err(Error::Invalid(
            "deleting extra entries makes the target exactly the snapshot, and keeping existing entries (--overwrite never) would leave it otherwise: choose one of the two".into(),
        ));
    }
    let filter = Filter {
        includes: if opts.includes.is_empty() {
            None
        } else {
            Some(Excludes::new(&opts.includes)?)
        },
        excludes: Excludes::new(&opts.excludes)?,
    };
    // What a walk without writing found: (files, stored bytes to write).
    let mut counted = None;
    // An include that matches nothing is said before anything is touched.
    if filter.includes.is_some() && !opts.dry_run {
        let dry = Mode {
            dry: true,
            keep_existing: false,
        };
        // Only which patterns matched is kept, and how much there is: the
        // entries are dropped in batches.
        let only_hits = Some(Batch::new(false, progress, opts.stop.clone()));
        let (checked, _, done) = plan(repo, &root, Dirs::absent(target), &filter, dry, only_hits)?;
        check_includes(snap, subpath, &opts.includes, &checked)?;
        counted = done.map(|d| (d.files, d.bytes));
    }
    let dirs = if opts.dry_run {
        match std::fs::symlink_metadata(target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Dirs::absent(target),
            _ => Dirs::new(target)?,
        }
    } else {
        std::fs::create_dir_all(target)
            .map_err(|e| Error::io(target, "create target folder", e))?;
        Dirs::new(target)?
    };
    // A new or empty target needs no check for what stands in the way.
    let fresh = match dirs.open(TARGET) {
        Ok(d) => d
            .names()
            .map_err(|e| Error::io(target, "read target folder", e))?
            .is_empty(),
        Err(_) => true,
    };
    let mode = Mode {
        dry: opts.dry_run,
        keep_existing: opts.overwrite == Overwrite::Never && !fresh,
    };
    let set_owner = fsmeta::is_root();
    let mut summary = RestoreSummary::default();

    // Phase 1: plan; folders, symlinks and special files are made here.
    // Into a new or empty target, phases 1 to 3 run a batch at a time (see
    // `flush`): nothing in place needs the whole plan.
    // The progress totals come from a walk that only counts, so they are
    // known before anything is written and never change.
    let batch = if fresh && !opts.dry_run {
        let (files, bytes) = match counted {
            Some(c) => c,
            None => {
                let dry = Mode {
                    dry: true,
                    keep_existing: false,
                };
                let counter = Some(Batch::new(false, progress, opts.stop.clone()));
                let (_, _, done) = plan(repo, &root, Dirs::absent(target), &filter, dry, counter)?;
                done.map_or((0, 0), |d| (d.files, d.bytes))
            }
        };
        progress.total_files.store(files, Ordering::Relaxed);
        progress.total_bytes.store(bytes, Ordering::Relaxed);
        progress.planned.store(true, Ordering::Release);
        Some(Batch::new(set_owner, progress, opts.stop.clone()))
    } else {
        None
    };
    let (mut plan, dirs, batch) = plan(repo, &root, dirs, &filter, mode, batch)?;
    check_includes(snap, subpath, &opts.includes, &plan)?;
    if let Some(done) = batch {
        progress.planned.store(true, Ordering::Release);
        // Phase 4 for the folders (the rest was set batch by batch).
        set_metadata(&dirs, &mut plan, opts.delete_extra, set_owner)?;
        summary.files = done.files;
        summary.dirs = plan.dirs.len() as u64;
        summary.specials = done.specials;
        summary.links = done.links;
        summary.bytes_written = done.bytes;
        summary.damaged = plan.lost;
        summary.damaged.extend(done.damaged);
        summary.duration_s = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    summary.kept = plan.kept.len() as u64;
    if opts.dry_run {
        summary.preview = Some(preview(repo, &dirs, &plan, opts, &filter, fresh)?);
        summary.files = plan.files.len() as u64;
        summary.dirs = plan.dirs.len() as u64;
        summary.specials = plan.others.len() as u64;
        summary.links = plan.hardlinks.len() as u64;
        summary.duration_s = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    if !fresh {
        prepare_target(repo, &dirs, &mut plan, opts, &filter, &mut summary)?;
    }
    // What phase 2 writes: stored data, not holes.
    let total = stored_bytes(&plan);
    progress
        .total_files
        .store(plan.files.len() as u64, Ordering::Relaxed);
    progress.total_bytes.store(
        total.saturating_sub(summary.bytes_skipped),
        Ordering::Relaxed,
    );
    progress.planned.store(true, Ordering::Release);

    // Phase 2: data, in units of a few MiB (see `schedule` and `writer`).
    let written = Restorer::new(repo, &plan, &dirs, set_owner, progress)
        .stopped_by(opts.stop.clone())
        .run()?;

    // Phase 3: hardlinks.
    summary.links = hardlinks(&dirs, &plan)?;

    // Phase 4: metadata of symlinks, special files and folders (deepest first).
    set_metadata(&dirs, &mut plan, opts.delete_extra, set_owner)?;

    summary.files = plan.files.len() as u64;
    summary.dirs = plan.dirs.len() as u64;
    summary.specials = plan.others.len() as u64;
    summary.bytes_written = written.bytes;
    summary.damaged = plan.lost;
    summary.damaged.extend(
        written
            .damaged
            .into_iter()
            .map(|(fi, why)| (plan.files[fi].path.to_string_lossy().into_owned(), why)),
    );
    summary.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Phase 1: walks the trees below `root` into a plan, making folders,
/// symlinks and special files on the way (unless `mode.dry`).
/// With `batch`, the planned entries are handed on every [`plan::BATCH`]
/// entries and at the end (see [`flush`]), and what was done is returned.
fn plan<'a>(
    repo: &'a IndexedRepository,
    root: &Node,
    dirs: Dirs,
    filter: &'a Filter,
    mode: Mode,
    batch: Option<Batch<'a>>,
) -> Result<(Plan, Dirs, Option<Batch<'a>>)> {
    let mut walk = Walk {
        repo,
        filter,
        plan: Plan {
            include_hits: vec![false; filter.includes.as_ref().map_or(0, Excludes::len)],
            ..Plan::default()
        },
        dirs,
        seen: HashMap::new(),
        mode,
        batch,
        flushed: 0,
    };
    match &root.kind {
        NodeKind::Dir { subtree } => {
            walk.dir(subtree, TARGET, Path::new(""), 1, filter.includes.is_none())?;
            walk.plan.dirs.push((TARGET, root.clone(), 0));
            if filter.includes.is_some() {
                walk.plan.partial.insert(TARGET);
            }
        }
        _ => {
            if !walk.keep(TARGET, root, false)? {
                walk.entry(root, TARGET)?;
            }
        }
    }
    if walk.batch.is_some() {
        flush(&mut walk)?;
    }
    Ok((walk.plan, walk.dirs, walk.batch))
}

/// What a restore into a new or empty target did batch by batch (see
/// [`flush`]), and what each batch needs.
struct Batch<'a> {
    set_owner: bool,
    progress: &'a RestoreProgress,
    stop: Stop,
    files: u64,
    specials: u64,
    links: u64,
    bytes: u64,
    damaged: Vec<(String, String)>,
}

impl<'a> Batch<'a> {
    fn new(set_owner: bool, progress: &'a RestoreProgress, stop: Stop) -> Self {
        Batch {
            set_owner,
            progress,
            stop,
            files: 0,
            specials: 0,
            links: 0,
            bytes: 0,
            damaged: Vec::new(),
        }
    }
}

/// Phases 2 and 3, and phase 4 for symlinks and special files, for the
/// entries planned since the last batch; then forgets them, so a restore
/// holds at most [`plan::BATCH`] planned entries whatever the snapshot
/// holds. A dry walk only forgets them. Hardlinks to a file of an earlier
/// batch find it by its folder and name ([`Walk::seen`]).
fn flush(walk: &mut Walk) -> Result<()> {
    let Some(batch) = walk.batch.as_mut() else {
        return Ok(());
    };
    let plan = &mut walk.plan;
    walk.flushed += plan.files.len() + plan.others.len() + plan.hardlinks.len();
    if walk.mode.dry {
        // A walk that only counts (see `restore`).
        batch.files += plan.files.len() as u64;
        batch.bytes += stored_bytes(plan);
    } else {
        let progress = batch.progress;
        let written = Restorer::new(walk.repo, plan, &walk.dirs, batch.set_owner, progress)
            .stopped_by(batch.stop.clone())
            .run()?;
        batch.bytes += written.bytes;
        batch.damaged.extend(
            written
                .damaged
                .into_iter()
                .map(|(fi, why)| (plan.files[fi].path.to_string_lossy().into_owned(), why)),
        );
        batch.links += hardlinks(&walk.dirs, plan)?;
        set_others_metadata(&walk.dirs, &plan.others, batch.set_owner)?;
        batch.files += plan.files.len() as u64;
        batch.specials += plan.others.len() as u64;
    }
    plan.files.clear();
    plan.targets.clear();
    plan.hardlinks.clear();
    plan.others.clear();
    Ok(())
}

/// What phase 2 writes of `plan`'s files: stored data, not holes.
fn stored_bytes(plan: &Plan) -> u64 {
    plan.files
        .iter()
        .flat_map(|f| match &f.node.kind {
            NodeKind::File { content } => content.as_slice(),
            _ => &[],
        })
        .filter(|e| e.chunk.is_some())
        .fold(0u64, |t, e| t.saturating_add(e.len))
}

/// Fails, naming them, when include patterns matched nothing.
fn check_includes(
    snap: &Snapshot,
    subpath: Option<&str>,
    includes: &[String],
    plan: &Plan,
) -> Result<()> {
    let missed: Vec<String> = includes
        .iter()
        .zip(&plan.include_hits)
        .filter(|(_, hit)| !**hit)
        .map(|(p, _)| format!("'{p}'"))
        .collect();
    if missed.is_empty() {
        return Ok(());
    }
    Err(Error::IncludeMatchesNothing {
        patterns: missed.join(", --include "),
        snapshot: snap.id.short(),
        below: subpath.map(|p| format!(" below {p}")).unwrap_or_default(),
    })
}

/// A dry run's findings: what would be written, deleted and kept. `fresh`:
/// the target is new or empty.
fn preview(
    repo: &IndexedRepository,
    dirs: &Dirs,
    plan: &Plan,
    opts: &RestoreOptions,
    filter: &Filter,
    fresh: bool,
) -> Result<Preview> {
    let show = |p: &Path| p.display().to_string();
    let delete = if opts.delete_extra && !fresh {
        inplace::delete_extra(repo, dirs, plan, &filter.excludes, true)?
    } else {
        Vec::new()
    };
    let files: Vec<Option<(String, u64)>> = plan
        .files
        .par_iter()
        .map(|f| {
            let bytes = match opts.overwrite {
                Overwrite::IfChanged if !fresh => inplace::preview_file(repo, dirs, f)?,
                _ => Some(f.node.size),
            };
            Ok(bytes.map(|b| (show(&f.path), b)))
        })
        .collect::<Result<_>>()?;
    let mut write: Vec<(String, u64)> = files.into_iter().flatten().collect();
    for (_, path, node) in &plan.others {
        let same = match &node.kind {
            NodeKind::Symlink { target } => std::fs::read_link(path)
                .is_ok_and(|t| t.as_os_str().as_bytes() == target.as_slice()),
            _ => false,
        };
        if !same || opts.overwrite == Overwrite::Always {
            write.push((show(path), 0));
        }
    }
    for ((_, path, _), _) in &plan.hardlinks {
        write.push((show(path), 0));
    }
    Ok(Preview {
        write,
        delete: delete.iter().map(|p| show(p)).collect(),
        kept: plan.kept.iter().map(|p| show(p)).collect(),
    })
}

/// Before phase 2 in a target that was not empty: deletes what the snapshot
/// does not have and keeps what is in place (as `opts` asks; see
/// [`inplace`]), and removes whatever stands where a file is created afresh.
fn prepare_target(
    repo: &IndexedRepository,
    dirs: &Dirs,
    plan: &mut Plan,
    opts: &RestoreOptions,
    filter: &Filter,
    summary: &mut RestoreSummary,
) -> Result<()> {
    if opts.delete_extra {
        summary.deleted =
            inplace::delete_extra(repo, dirs, plan, &filter.excludes, false)?.len() as u64;
    }
    if opts.overwrite == Overwrite::IfChanged {
        let existing: Vec<Option<bool>> = plan
            .files
            .par_iter()
            .map(|f| inplace::prepare_existing(dirs, f))
            .collect::<Result<_>>()?;
        for (f, resized) in plan.files.iter_mut().zip(existing) {
            f.reuse = resized.is_some();
            f.resized = resized.unwrap_or(false);
        }
        let kept = inplace::keep_matching(repo, dirs, &plan.files, &mut plan.targets)?;
        summary.files_skipped = kept.files;
        summary.bytes_skipped = kept.bytes;
    }
    plan.files
        .par_iter()
        .filter(|f| !f.reuse)
        .try_for_each(|f| dirs::remove_existing(&*dirs.open(f.dir)?, &f.node.name, &f.path))
}

/// Phase 3: hardlinks to the files restored in phase 2; returns how many.
fn hardlinks(dirs: &Dirs, plan: &Plan) -> Result<u64> {
    for ((dir, path, node), first) in &plan.hardlinks {
        let d = dirs.open(*dir)?;
        dirs::remove_existing(&d, &node.name, path)?;
        let (first_dir, first_name) = first;
        d.hard_link(
            OsStr::from_bytes(&node.name),
            &*dirs.open(*first_dir)?,
            OsStr::from_bytes(first_name),
        )
        .map_err(|e| Error::io(path, "create hardlink", e))?;
    }
    Ok(plan.hardlinks.len() as u64)
}

/// Phase 4: metadata of symlinks, special files and folders, deepest
/// folders first (setting a folder's times after everything in it is made).
/// `delete_extra`: folders also lose xattrs the snapshot does not have.
fn set_metadata(dirs: &Dirs, plan: &mut Plan, delete_extra: bool, set_owner: bool) -> Result<()> {
    let meta_err = |p: &Path, e: std::io::Error| Error::io(p, "set metadata", e);
    set_others_metadata(dirs, &plan.others, set_owner)?;
    plan.dirs.sort_by_key(|d| std::cmp::Reverse(d.2));
    for (dir, node, _) in &plan.dirs {
        let path = dirs.path(*dir);
        let d = dirs.open(*dir)?;
        if delete_extra {
            inplace::remove_extra_xattrs(d.as_file(), path, node).map_err(|e| meta_err(path, e))?;
        }
        fsmeta::apply_metadata_fd(d.as_file(), node, set_owner).map_err(|e| meta_err(path, e))?;
    }
    Ok(())
}

/// Phase 4 for symlinks and special files.
fn set_others_metadata(dirs: &Dirs, others: &[Placed], set_owner: bool) -> Result<()> {
    for (dir, path, node) in others {
        apply_metadata_at(&*dirs.open(*dir)?, path, node, set_owner)
            .map_err(|e| Error::io(path, "set metadata", e))?;
    }
    Ok(())
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
