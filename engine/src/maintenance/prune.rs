//! `prune`: removing what no snapshot needs any more.
//!
//! 1. **read**: every index file (prune refuses to run on an index it cannot
//!    read: a pack described only by a damaged index file would look unused);
//! 2. **mark**: walk the trees of every snapshot; every tree and data chunk
//!    met is needed, and each needed blob is assigned one existing pack;
//! 3. **sort packs**: a pack with nothing needed is deleted; a pack whose
//!    unneeded blobs exceed `max_unused_percent` of its bytes is repacked; the
//!    rest are kept. A pack that no index names is deleted once it is older
//!    than the grace period (it may belong to a snapshot still running);
//! 4. **repack**: the needed blobs of repacked packs are copied, as stored
//!    (not recompressed, not re-encrypted, but checked), into new packs;
//! 5. **index**: the new index is written as one or more files; the last one
//!    written supersedes every old index file;
//! 6. **delete**: old index files, then obsolete packs.
//!
//! Before stage 4, temporary files that interrupted writes left (see
//! [`crate::backend::Backend::leftovers`]) are removed when older than the
//! grace period: nothing reads them, and after a full disk they are what a
//! user needs back first.
//!
//! Prune refuses to run (and changes nothing) while a snapshot object or an
//! index file cannot be read: it could not know what they reference.
//!
//! Nothing is deleted before everything written is durable, so an interruption
//! leaves either the old index (with every pack it names) or the new one (with
//! every pack it names) in force, plus garbage that the next prune removes.
//! See `ARCHITECTURE.md`, "Prune and concurrent snapshots".

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::{Leftover, ObjectKey};
use crate::error::{Error, MaintenanceError, Result};
use crate::maintenance::steps::{Steps, Unit};
use crate::repo::Repository;
use crate::repo::catalog::{InForce, IndexMode};
use crate::repo::format::ObjectKind;
use crate::repo::id::{Id, IndexId, PackId, SnapshotId, TreeId};
use crate::repo::lock::Access;
use crate::repo::trash::TrashEntry;
use crate::store::blob::{self, BlobEntry, BlobKind};
use crate::store::packer::{self, Packer};
use crate::tree::NodeKind;

/// Default share of a pack's bytes that may be unneeded before it is repacked.
pub const DEFAULT_MAX_UNUSED_PERCENT: f64 = 10.0;

/// Default time a forgotten snapshot stays in the trash, its data kept.
pub const DEFAULT_KEEP_DELETED: Duration = Duration::from_secs(7 * 24 * 3600);

/// Default age below which a pack no index names is left alone.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack a pack when more than this percentage of its bytes is unneeded.
    pub max_unused_percent: f64,
    /// Packs that no index names are deleted only when older than this.
    pub grace: Duration,
    /// Snapshots in the trash keep their data this long after `forget`
    /// removed them; older trash entries are removed (zero: all of them).
    pub keep_deleted: Duration,
    /// Snapshots to treat as already removed; only in a dry run (what
    /// `forget --dry-run --prune` would free).
    pub assume_removed: Vec<SnapshotId>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: DEFAULT_MAX_UNUSED_PERCENT,
            grace: DEFAULT_GRACE,
            keep_deleted: DEFAULT_KEEP_DELETED,
            assume_removed: Vec::new(),
        }
    }
}

/// What prune did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    /// Snapshots in the trash younger than `--keep-deleted`: their data is
    /// kept.
    pub trash_kept: usize,
    /// Trash entries removed: expired ones, and leftovers of an interrupted
    /// forget or undelete whose snapshot is live.
    pub trash_removed: usize,
    pub packs_before: usize,
    pub packs_after: usize,
    /// Packs removed because nothing in them is needed (including packs no
    /// index named, older than the grace period).
    pub packs_deleted: usize,
    /// Packs whose needed blobs were copied into new packs, then removed.
    pub packs_repacked: usize,
    pub packs_written: usize,
    /// Of `packs_deleted`: packs that no index named.
    pub unreferenced_packs_deleted: usize,
    /// Packs no index names that are younger than the grace period (or whose
    /// age the backend cannot tell), left for a later prune.
    pub unreferenced_packs_kept: usize,
    /// Packs the index named that do not exist and held nothing needed; they
    /// are left out of the new index.
    pub missing_packs_forgotten: usize,
    pub blobs_needed: usize,
    /// Blobs no longer in the index: those of deleted packs and the unneeded
    /// ones of repacked packs.
    pub blobs_removed: usize,
    pub blobs_repacked: usize,
    pub index_files_written: usize,
    pub index_files_deleted: usize,
    /// Bytes of packs and index files before and after (after: an estimate in
    /// a dry run).
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub bytes_freed: u64,
    /// Bytes of blobs copied by repacking.
    pub bytes_repacked: u64,
    /// Temporary files of interrupted writes removed (older than the grace
    /// period), and their bytes.
    pub leftovers_removed: usize,
    pub leftover_bytes_removed: u64,
    /// Temporary files younger than the grace period, left alone.
    pub leftovers_kept: usize,
    pub duration_s: f64,
}

/// The decisions of stages 1-3.
struct Plan {
    /// Every index file present, with its size.
    old_index: Vec<(IndexId, u64)>,
    rewrite_index: bool,
    /// Packs that stay, with every entry the index lists for them.
    keep: Vec<(PackId, Vec<BlobEntry>)>,
    /// Packs to repack: (pack, how many blobs it holds, its needed entries).
    repack: Vec<(PackId, usize, Vec<BlobEntry>)>,
    /// Indexed packs with nothing needed: (pack, size, blob count).
    delete: Vec<(PackId, u64, usize)>,
    unreferenced_delete: Vec<(PackId, u64)>,
    unreferenced_kept: usize,
    missing: usize,
    snapshots: usize,
    trash_kept: usize,
    /// Trash entries to remove, before any pack (an entry must never name
    /// data that is gone).
    trash_remove: Vec<TrashEntry>,
    needed: usize,
    pack_bytes: HashMap<PackId, u64>,
    /// Temporary files older than the grace period.
    leftovers: Vec<Leftover>,
    leftovers_kept: usize,
}

/// Runs prune under the exclusive lock, or decides and reports without
/// changing anything ([`Access::DryRun`]).
pub fn prune<'a>(
    repo: &Repository,
    access: impl Into<Access<'a>>,
    opts: &PruneOptions,
) -> Result<PruneReport> {
    prune_with(repo, access, opts, &Steps::default())
}

/// [`prune`], telling `steps` what it does.
pub fn prune_with<'a>(
    repo: &Repository,
    access: impl Into<Access<'a>>,
    opts: &PruneOptions,
    steps: &Steps,
) -> Result<PruneReport> {
    let dry_run = access.into().is_dry_run();
    if !dry_run && !opts.assume_removed.is_empty() {
        return Err(Error::Invalid(
            "prune: snapshots can be assumed removed only in a dry run".into(),
        ));
    }
    let started = Instant::now();
    steps.start("reading the index and snapshot trees", Unit::Packs, 0);
    let mut plan = plan(repo, opts)?;
    let mut r = PruneReport {
        dry_run,
        snapshots: plan.snapshots,
        trash_kept: plan.trash_kept,
        trash_removed: plan.trash_remove.len(),
        packs_before: plan.pack_bytes.len(),
        packs_deleted: plan.delete.len() + plan.unreferenced_delete.len(),
        packs_repacked: plan.repack.len(),
        unreferenced_packs_deleted: plan.unreferenced_delete.len(),
        unreferenced_packs_kept: plan.unreferenced_kept,
        missing_packs_forgotten: plan.missing,
        blobs_needed: plan.needed,
        leftovers_removed: plan.leftovers.len(),
        leftover_bytes_removed: plan.leftovers.iter().map(|l| l.size).sum(),
        leftovers_kept: plan.leftovers_kept,
        bytes_before: plan.pack_bytes.values().sum::<u64>()
            + plan.old_index.iter().map(|(_, n)| n).sum::<u64>(),
        ..PruneReport::default()
    };
    for (_, total, needed) in &plan.repack {
        r.blobs_removed += total - needed.len();
        r.blobs_repacked += needed.len();
        r.bytes_repacked += needed.iter().map(|e| e.stored_len as u64).sum::<u64>();
    }
    r.blobs_removed += plan.delete.iter().map(|(_, _, n)| n).sum::<usize>();
    let old_index_bytes: u64 = plan.old_index.iter().map(|(_, n)| n).sum();
    let untouched_bytes = plan
        .keep
        .iter()
        .map(|(p, _)| plan.pack_bytes[p])
        .sum::<u64>()
        + unreferenced_kept_bytes(&plan);
    if dry_run {
        let blobs_after: u64 =
            plan.keep.iter().map(|(_, e)| e.len() as u64).sum::<u64>() + r.blobs_repacked as u64;
        let new_packs = r.bytes_repacked.div_ceil(repo.config().pack_size as u64) as usize;
        r.bytes_after = untouched_bytes
            + r.bytes_repacked
            + if plan.rewrite_index {
                64 + 46 * blobs_after
            } else {
                old_index_bytes
            };
        r.index_files_deleted = if plan.rewrite_index {
            plan.old_index.len()
        } else {
            0
        };
        r.packs_after = r.packs_before - r.packs_deleted - r.packs_repacked + new_packs;
    } else {
        for e in &plan.trash_remove {
            repo.delete_trash_entry(e)?;
        }
        for l in &plan.leftovers {
            repo.backend().remove_leftover(l)?;
        }
        let written = execute(repo, &mut plan, steps)?;
        r.packs_written = written.packs;
        r.index_files_written = written.index_files;
        r.index_files_deleted = written.index_files_deleted;
        r.bytes_after = untouched_bytes
            + written.pack_bytes
            + if plan.rewrite_index {
                written.index_bytes
            } else {
                old_index_bytes
            };
        r.packs_after = repo.backend().list(ObjectKind::Pack)?.len();
    }
    r.bytes_freed = r.bytes_before.saturating_sub(r.bytes_after);
    r.duration_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(r)
}

fn unreferenced_kept_bytes(plan: &Plan) -> u64 {
    let accounted: HashSet<PackId> = plan
        .keep
        .iter()
        .map(|(p, _)| *p)
        .chain(plan.repack.iter().map(|(p, _, _)| *p))
        .chain(plan.delete.iter().map(|(p, _, _)| *p))
        .chain(plan.unreferenced_delete.iter().map(|(p, _)| *p))
        .collect();
    plan.pack_bytes
        .iter()
        .filter(|(p, _)| !accounted.contains(p))
        .map(|(_, n)| n)
        .sum()
}

/// Stages 1-3.
fn plan(repo: &Repository, opts: &PruneOptions) -> Result<Plan> {
    // Stage 1: read. The index keeps, of each blob, one location in a pack
    // that exists: the one the mark assigns it.
    let backend = repo.backend();
    let InForce {
        catalog,
        read,
        superseded,
        packs: mut indexed,
        index,
    } = repo.catalog_in_force(IndexMode::Strict)?;
    let old_index: Vec<(IndexId, u64)> = read
        .iter()
        .map(|id| {
            let size = catalog.index_sizes.get(&id.to_hex()).copied();
            (*id, size.unwrap_or(0))
        })
        .collect();
    let files_read = read.len();
    drop(read);
    // One entry per blob and pack: a blob listed twice in a pack is kept once.
    for entries in indexed.values_mut() {
        entries.dedup_by_key(|e| e.id);
    }
    let pack_bytes = catalog.packs;
    let index = index.finish(|p, _| pack_bytes.contains_key(p));

    // Stage 2: mark. An unreadable snapshot stops prune: what it needs is
    // unknown (a dry run may assume it removed, as `forget --dry-run --prune`).
    let (mut snaps, bad) = repo.snapshots_lenient()?;
    if let Some((id, e)) = bad
        .into_iter()
        .find(|(id, _)| !opts.assume_removed.contains(id))
    {
        return Err(Error::SnapshotUnreadable {
            id: id.to_hex(),
            detail: e.to_string(),
        });
    }
    // Forgotten snapshots go to the trash: in a dry run, those assumed
    // removed stay needed unless their trash entry would expire at once.
    let keep_assumed = !opts.keep_deleted.is_zero();
    let assumed = snaps
        .iter()
        .filter(|s| opts.assume_removed.contains(&s.id))
        .count();
    snaps.retain(|s| keep_assumed || !opts.assume_removed.contains(&s.id));
    let live = snaps.len() - if keep_assumed { assumed } else { 0 };
    let mut trash_kept = if keep_assumed { assumed } else { 0 };
    // The trash, on the storage's clock (it wrote the removal times).
    let now = backend.now()?;
    let trash = repo.trash()?;
    let mut trash_remove = trash.stale;
    let mut kept_trash = Vec::new();
    for t in trash.entries {
        if now < t.entry.expires(opts.keep_deleted) {
            trash_kept += 1;
            kept_trash.push(t.snapshot);
        } else {
            trash_remove.push(t.entry);
        }
    }
    for (e, err) in trash.unreadable {
        if now < e.expires(opts.keep_deleted) {
            return Err(Error::SnapshotUnreadable {
                id: e.id.to_hex(),
                detail: format!(
                    "its trash entry trash/{} (kept until {}): {err}; prune cannot know what it needs: run `pvsnap prune --keep-deleted 0` to empty the trash",
                    e.name(),
                    e.expires(opts.keep_deleted)
                ),
            });
        }
        trash_remove.push(e);
    }
    let indexed_repo = repo.clone().with_index(index);
    // Why a blob has no location: its pack is gone, or no index lists it.
    let why_missing = |id: &Id| match indexed
        .iter()
        .find(|(_, es)| es.iter().any(|e| e.id == *id))
    {
        Some((p, _)) => format!("its pack {p} is missing"),
        None => "it is not in the index".to_string(),
    };
    let mut marks = Marks::new(indexed_repo.index().len());
    mark(&indexed_repo, &snaps, &mut marks, Some(&why_missing))?;
    // What trashed snapshots need is kept as far as it exists: a damaged
    // snapshot forgotten into the trash must not stop prune.
    let mut with_trash = marks.clone();
    match mark(&indexed_repo, &kept_trash, &mut with_trash, None) {
        Ok(()) => marks = with_trash,
        Err(_) => {
            for s in &kept_trash {
                let mut one = marks.clone();
                match mark(&indexed_repo, std::slice::from_ref(s), &mut one, None) {
                    Ok(()) => marks = one,
                    Err(e) => tracing::warn!(
                        "snapshot {} in the trash is damaged ({e}): only the data it needs that prune could find is kept",
                        s.short_id()
                    ),
                }
            }
        }
    }
    let index = indexed_repo.index();
    // A blob is used in the pack that holds its marked location.
    let used_here = |pack: &PackId, e: &BlobEntry| {
        index
            .find(&e.id)
            .is_some_and(|(i, loc)| loc.pack == *pack && marks.get(i))
    };

    // Stage 3: sort packs. Ages are on the storage's clock, which wrote
    // the packs' times: a client whose clock is off gets no shorter grace.
    let mut plan = Plan {
        rewrite_index: files_read > 1 || !superseded.is_empty(),
        old_index,
        keep: vec![],
        repack: vec![],
        delete: vec![],
        unreferenced_delete: vec![],
        unreferenced_kept: 0,
        missing: 0,
        snapshots: live,
        trash_kept,
        trash_remove,
        needed: marks.count(),
        pack_bytes: HashMap::new(),
        leftovers: Vec::new(),
        leftovers_kept: 0,
    };
    let (old, young): (Vec<Leftover>, Vec<Leftover>) = backend
        .leftovers()?
        .into_iter()
        .partition(|l| l.older_than(opts.grace, now));
    plan.leftovers = old;
    plan.leftovers_kept = young.len();
    let indexed_packs: HashSet<PackId> = indexed.keys().copied().collect();
    for (pack, entries) in indexed {
        let Some(&size) = pack_bytes.get(&pack) else {
            plan.missing += 1;
            continue;
        };
        let (mut used, mut unused_bytes) = (0usize, 0u64);
        for e in &entries {
            if used_here(&pack, e) {
                used += 1;
            } else {
                unused_bytes += e.stored_len as u64;
            }
        }
        if used == 0 {
            plan.delete.push((pack, size, entries.len()));
        } else if unused_bytes as f64 * 100.0 > opts.max_unused_percent * size as f64 {
            let total = entries.len();
            let used: Vec<BlobEntry> = entries
                .into_iter()
                .filter(|e| used_here(&pack, e))
                .collect();
            plan.repack.push((pack, total, used));
        } else {
            plan.keep.push((pack, entries));
        }
    }
    for (pack, &size) in &pack_bytes {
        if indexed_packs.contains(pack) {
            continue;
        }
        let age = backend
            .modified(&ObjectKey::new(ObjectKind::Pack, pack.to_hex()))?
            .map(|t| now.duration_since(t));
        let grace = jiff::SignedDuration::try_from(opts.grace).unwrap_or(jiff::SignedDuration::MAX);
        if age.is_some_and(|a| a >= grace) {
            plan.unreferenced_delete.push((*pack, size));
        } else {
            plan.unreferenced_kept += 1;
        }
    }
    plan.unreferenced_delete.sort();
    plan.rewrite_index |= plan.missing > 0 || !plan.delete.is_empty() || !plan.repack.is_empty();
    plan.pack_bytes = pack_bytes;
    Ok(plan)
}

/// One bit per blob of the index (in its id order): needed or not. At ten
/// million blobs, 1.2 MiB where a map of the needed ids held hundreds.
#[derive(Clone)]
struct Marks(Vec<u64>);

impl Marks {
    fn new(blobs: usize) -> Self {
        Marks(vec![0; blobs.div_ceil(64)])
    }

    /// Marks blob `i`; false if it was marked already.
    fn set(&mut self, i: usize) -> bool {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let was = self.0[word] & bit != 0;
        self.0[word] |= bit;
        !was
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1u64 << (i % 64)) != 0
    }

    fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Marks every blob reachable from `snaps` in `marks`, by its position in
/// `repo`'s index. Trees are read level by level, in parallel; each tree
/// once (a tree marked already was walked whole). A tree that cannot be
/// read fails the mark. A data chunk the index does not hold fails it too
/// when `strict` says why it is missing, and is passed over otherwise.
fn mark(
    repo: &crate::repo::IndexedRepository,
    snaps: &[crate::snapshot::Snapshot],
    marks: &mut Marks,
    strict: Option<&dyn Fn(&Id) -> String>,
) -> Result<()> {
    let index = repo.index();
    let missing = |snap: &SnapshotId, kind: BlobKind, id: &Id, detail: String| {
        MaintenanceError::MissingBlob {
            snapshot: snap.to_hex(),
            kind: kind.name(),
            blob: id.to_hex(),
            detail,
        }
    };
    // Whether to walk a tree: not if it was marked already. One the index
    // does not hold fails a strict mark even when it can be read (from the
    // trailer of a pack no index file names: that pack would be deleted);
    // otherwise it is walked, and a read that fails fails the mark.
    let visit = |marks: &mut Marks, t: &TreeId, snap: &SnapshotId| match index.find(&t.0) {
        Some((i, _)) => Ok(marks.set(i)),
        None => match strict {
            Some(why) => Err(missing(snap, BlobKind::Tree, &t.0, why(&t.0))),
            None => Ok(true),
        },
    };
    let mut frontier: Vec<(TreeId, SnapshotId)> = Vec::new();
    for s in snaps {
        if visit(marks, &s.tree, &s.id)? {
            frontier.push((s.tree, s.id));
        }
    }
    while !frontier.is_empty() {
        let trees: Vec<_> = frontier
            .par_iter()
            .map(|(t, s)| (*s, *t, repo.read_tree(t)))
            .collect();
        frontier = Vec::new();
        for (snap, id, tree) in trees {
            let tree = tree.map_err(|e| missing(&snap, BlobKind::Tree, &id.0, e.to_string()))?;
            for node in &tree.nodes {
                if let NodeKind::Dir { subtree } = &node.kind
                    && visit(marks, subtree, &snap)?
                {
                    frontier.push((*subtree, snap));
                }
                for c in node.chunks() {
                    match index.find(&c.0) {
                        Some((i, _)) => {
                            marks.set(i);
                        }
                        None => {
                            if let Some(why) = strict {
                                return Err(missing(&snap, BlobKind::Data, &c.0, why(&c.0)).into());
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

struct Written {
    packs: usize,
    pack_bytes: u64,
    index_files: usize,
    index_bytes: u64,
    index_files_deleted: usize,
}

/// Stages 4-6.
/// The kept packs' entries move into the new index (`plan.keep` is left
/// empty): at millions of blobs a copy of them was hundreds of MiB.
fn execute(repo: &Repository, plan: &mut Plan, steps: &Steps) -> Result<Written> {
    let backend = repo.backend();
    let crypto = repo.crypto();
    let mut w = Written {
        packs: 0,
        pack_bytes: 0,
        index_files: 0,
        index_bytes: 0,
        index_files_deleted: 0,
    };

    // Stage 4: repack, checking every blob copied.
    let packer = Packer::new(repo);
    let mut bufs = blob::DecodeBuffers::default();
    if !plan.repack.is_empty() {
        steps.start(
            "repacking",
            Unit::Bytes,
            plan.repack
                .iter()
                .map(|(p, _, _)| plan.pack_bytes.get(p).copied().unwrap_or(0))
                .sum(),
        );
    }
    for (pack, _, needed) in &plan.repack {
        let bytes = backend.get(&ObjectKey::new(ObjectKind::Pack, pack.to_hex()))?;
        for e in needed {
            let (start, end) = (e.offset as usize, e.offset as usize + e.stored_len as usize);
            let stored = bytes.get(start..end).ok_or_else(|| Error::CorruptBlob {
                id: e.id.to_hex(),
                pack: pack.to_hex(),
                detail: "lies past the end of the pack".into(),
            })?;
            blob::decode_in(crypto, pack, e, stored, &mut bufs)?;
            packer.add_stored(e, stored)?;
        }
        steps.add(plan.pack_bytes.get(pack).copied().unwrap_or(0));
    }
    let stored = packer.finish()?;
    let new_packs = stored.packs;
    (w.packs, w.pack_bytes) = (new_packs.len(), stored.bytes);

    // A pack is named by the hash of its bytes, so a repacked pack can have
    // the very name of an old pack about to be deleted (same blobs, same
    // order, unencrypted): that name now holds needed data and must stay.
    let written: HashSet<PackId> = new_packs.iter().map(|(p, _)| *p).collect();
    if plan.rewrite_index {
        // Stage 5: the new index.
        let mut all = std::mem::take(&mut plan.keep);
        all.extend(new_packs);
        let old: Vec<IndexId> = plan.old_index.iter().map(|(id, _)| *id).collect();
        let (files, bytes) = packer::write_index(repo, &all, &old)?;
        (w.index_files, w.index_bytes) = (files.len(), bytes);

        // Stage 6a: the old index files, now superseded.
        for (id, _) in &plan.old_index {
            backend.delete(&ObjectKey::new(ObjectKind::Index, id.to_hex()))?;
            w.index_files_deleted += 1;
        }
    }

    // Stage 6b: packs that no index in force names any more.
    let obsolete = plan
        .delete
        .iter()
        .map(|(p, _, _)| p)
        .chain(plan.repack.iter().map(|(p, _, _)| p))
        .chain(plan.unreferenced_delete.iter().map(|(p, _)| p))
        .filter(|p| !written.contains(p))
        .collect::<Vec<_>>();
    if !obsolete.is_empty() {
        steps.start("deleting packs", Unit::Packs, obsolete.len() as u64);
    }
    for pack in obsolete {
        backend.delete(&ObjectKey::new(ObjectKind::Pack, pack.to_hex()))?;
        steps.add(1);
    }
    Ok(w)
}
