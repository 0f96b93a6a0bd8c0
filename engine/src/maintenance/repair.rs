//! `repair index` and `repair snapshots`.
//!
//! - **index**: the index is rebuilt from the packs themselves. Every pack's
//!   trailer is read. A pack whose trailer is unreadable (a truncated pack has
//!   lost it) is salvaged: each blob a readable old index file placed in it is
//!   read and verified (inside the pack, opens, decompresses, hashes to its
//!   id), and the whole ones are copied, as stored, into new packs; the
//!   damaged pack leaves the index (prune deletes it after the grace period)
//!   and so do its lost blobs, so the next snapshot stores those chunks again
//!   instead of deduplicating against bytes that are gone, and check finds
//!   only intact packs. The new index supersedes every old index file
//!   (readable or not), which are then deleted, in the same crash-safe order
//!   as prune.
//! - **snapshots**: for every snapshot that references lost blobs, a repaired
//!   copy is written: new tree blobs without the files whose content is lost
//!   (a folder whose tree is lost becomes empty), then a new snapshot object
//!   tagged `repaired` with the label `repaired_from=<original id>`, whose
//!   summary counts the files and bytes it holds (not the original's). The
//!   original is never changed or removed; the user forgets it once satisfied
//!   (`check` names the originals that have a repaired copy).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::ObjectKey;
use crate::error::{BackendError, Result};
use crate::maintenance::check::{self, DamagedPath, ReadData, Scan};
use crate::maintenance::steps::{Steps, Unit};
use crate::repo::Repository;
use crate::repo::catalog::IndexMode;
use crate::repo::format::{HEADER_LEN, ObjectKind};
use crate::repo::id::{Id, IndexId, PackId, SnapshotId, TreeId};
use crate::repo::lock::Access;
use crate::snapshot::PathIssue;
use crate::store::blob::{self, BlobEntry, BlobKind};
use crate::store::pack;
use crate::store::packer::{self, Packer};
use crate::tree::{NodeKind, Tree};

/// The tag of repaired snapshots.
pub const REPAIRED_TAG: &str = "repaired";
/// The label naming the snapshot a repaired one was made from.
pub const REPAIRED_FROM_LABEL: &str = "repaired_from";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreadablePack {
    pub pack: PackId,
    pub error: String,
}

/// A pack whose trailer is unreadable, and what could be saved of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SalvagedPack {
    pub pack: PackId,
    /// Blobs verified whole, copied into new packs.
    pub kept: usize,
    /// Blobs lost (past the pack's end) or damaged, left out of the index.
    pub dropped: usize,
    /// Why the trailer could not be read.
    pub error: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepairIndexReport {
    pub dry_run: bool,
    pub packs: usize,
    pub blobs: usize,
    /// Packs whose trailer could not be read but which a readable old index
    /// file described; they keep the entries whose blobs are whole.
    pub packs_salvaged: Vec<SalvagedPack>,
    /// Blobs left out of the index because their bytes are lost or damaged.
    pub blobs_dropped: usize,
    /// Packs neither their trailer nor an old index describes: they are in
    /// no index now, and prune deletes them once past the grace period.
    pub packs_unreadable: Vec<UnreadablePack>,
    /// Packs the old index named that do not exist.
    pub packs_missing: Vec<PackId>,
    pub index_files_written: usize,
    pub index_files_deleted: usize,
    pub duration_s: f64,
}

/// Rebuilds the index from the pack trailers, under the exclusive lock or
/// as a dry run.
pub fn repair_index<'a>(
    repo: &Repository,
    access: impl Into<Access<'a>>,
) -> Result<RepairIndexReport> {
    repair_index_with(repo, access, &Steps::default())
}

/// [`repair_index`], telling `steps` what it does.
pub fn repair_index_with<'a>(
    repo: &Repository,
    access: impl Into<Access<'a>>,
    steps: &Steps,
) -> Result<RepairIndexReport> {
    let dry_run = access.into().is_dry_run();
    let started = Instant::now();
    let backend = repo.backend();
    let catalog = repo.catalog(IndexMode::Lenient)?;
    let mut old_names: Vec<IndexId> = catalog.files.iter().map(|(id, _)| *id).collect();
    old_names.extend(
        catalog
            .unreadable
            .iter()
            .filter_map(|u| u.name.parse::<IndexId>().ok()),
    );
    let mut old: HashMap<PackId, Vec<BlobEntry>> = HashMap::new();
    for (_, f) in catalog.files {
        for (p, e) in f.packs {
            old.entry(p).or_default().extend(e);
        }
    }
    let mut packs: Vec<(PackId, u64)> = catalog.packs.into_iter().collect();
    packs.sort();
    steps.start("reading pack trailers", Unit::Packs, packs.len() as u64);
    let read: Vec<(PackId, Result<Vec<BlobEntry>>)> = packs
        .par_iter()
        .map(|(p, size)| {
            let trailer = pack::read_trailer(backend.as_ref(), repo.crypto(), p, *size);
            steps.add(1);
            (*p, trailer)
        })
        .collect();
    let mut r = RepairIndexReport {
        dry_run,
        packs: packs.len(),
        ..RepairIndexReport::default()
    };
    let present: HashSet<PackId> = packs.iter().map(|(p, _)| *p).collect();
    r.packs_missing = old
        .keys()
        .copied()
        .filter(|p| !present.contains(p))
        .collect();
    r.packs_missing.sort();
    let sizes: HashMap<PackId, u64> = packs.iter().copied().collect();
    let mut new: Vec<(PackId, Vec<BlobEntry>)> = Vec::new();
    let copier = Packer::new(repo).dry_run(dry_run).replacing_damaged();
    for (p, entries) in read {
        match entries {
            Ok(mut e) => {
                // A trailer is trusted for what it says, not for pointing
                // outside its own pack.
                let listed = e.len();
                e.retain(|e| {
                    e.offset as u64 >= HEADER_LEN as u64
                        && e.offset as u64 + e.stored_len as u64 <= sizes[&p]
                });
                r.blobs_dropped += listed - e.len();
                // A plain trailer has no checksum of its own: where it and
                // a readable index file disagree, one of them is damaged.
                // Every blob either names is verified; the whole ones are
                // copied (a pack rebuilt bit for bit replaces its damaged
                // copy).
                if let Some(mut known) = old.remove(&p)
                    && !same_entries(&mut known, &mut e)
                {
                    known.extend(e);
                    known.sort_by_key(|e| (e.offset, e.id));
                    known.dedup();
                    let kept = salvage(repo, &p, sizes[&p], &known, &copier)?;
                    r.blobs_dropped += known.len() - kept;
                    r.packs_salvaged.push(SalvagedPack {
                        pack: p,
                        kept,
                        dropped: known.len() - kept,
                        error: "its trailer and the index disagree".into(),
                    });
                    continue;
                }
                new.push((p, e));
            }
            Err(err) => match old.remove(&p) {
                Some(mut e) => {
                    e.sort_by_key(|e| (e.offset, e.id));
                    e.dedup();
                    let kept = salvage(repo, &p, sizes[&p], &e, &copier)?;
                    r.blobs_dropped += e.len() - kept;
                    r.packs_salvaged.push(SalvagedPack {
                        pack: p,
                        kept,
                        dropped: e.len() - kept,
                        error: err.to_string(),
                    });
                }
                None => r.packs_unreadable.push(UnreadablePack {
                    pack: p,
                    error: err.to_string(),
                }),
            },
        }
    }
    new.extend(copier.finish()?.packs);
    r.blobs = new.iter().map(|(_, e)| e.len()).sum();
    if !dry_run {
        r.index_files_written = packer::write_index(repo, &new, &old_names)?.0.len();
        for id in &old_names {
            backend.delete(&ObjectKey::new(ObjectKind::Index, id.to_hex()))?;
            r.index_files_deleted += 1;
        }
    }
    r.duration_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(r)
}

/// Whether two lists of a pack's entries hold the same entries (both are
/// sorted and deduplicated on the way).
fn same_entries(a: &mut Vec<BlobEntry>, b: &mut Vec<BlobEntry>) -> bool {
    for l in [&mut *a, &mut *b] {
        l.sort_by_key(|e| (e.offset, e.id));
        l.dedup();
    }
    a == b
}

/// Copies the blobs among `entries` that lie inside pack `p` of `size`
/// bytes and open, decompress and hash to their id into `copier`; returns how
/// many it copied.
fn salvage(
    repo: &Repository,
    p: &PackId,
    size: u64,
    entries: &[BlobEntry],
    copier: &Packer<'_>,
) -> Result<usize> {
    let bytes =
        match repo
            .backend()
            .get_range(&ObjectKey::new(ObjectKind::Pack, p.to_hex()), 0, size)
        {
            Ok(b) => b,
            // Gone or shrunk since it was listed: nothing in it can be trusted.
            Err(BackendError::NotFound { .. } | BackendError::OutOfRange { .. }) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
    let mut bufs = blob::DecodeBuffers::default();
    let mut kept = 0;
    for e in entries {
        let start = e.offset as usize;
        let Some(stored) = (start >= HEADER_LEN)
            .then(|| bytes.get(start..start.saturating_add(e.stored_len as usize)))
            .flatten()
        else {
            continue;
        };
        if blob::decode_in(repo.crypto(), p, e, stored, &mut bufs).is_ok() {
            copier.add_stored(e, stored)?;
            kept += 1;
        }
    }
    Ok(kept)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepairedSnapshot {
    pub original: SnapshotId,
    /// The new snapshot (`None` in a dry run).
    pub repaired: Option<SnapshotId>,
    pub source: String,
    pub time: jiff::Timestamp,
    /// What the repaired snapshot no longer holds.
    pub lost: Vec<DamagedPath>,
    /// The files and bytes the repaired snapshot holds (its summary's
    /// `total_files` and `total_bytes`).
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepairSnapshotsReport {
    pub dry_run: bool,
    pub snapshots_checked: usize,
    pub repaired: Vec<RepairedSnapshot>,
    /// Damaged snapshots skipped because a repaired copy of them exists.
    pub already_repaired: Vec<SnapshotId>,
    /// Snapshot objects that cannot be read at all (nothing to copy).
    pub unreadable: Vec<String>,
    pub trees_written: usize,
    pub duration_s: f64,
}

/// Writes repaired copies of damaged snapshots, under the exclusive lock or
/// as a dry run. With `read_data`, every blob is read first, so damaged (not
/// only missing) content counts as lost too.
pub fn repair_snapshots<'a>(
    repo: &Repository,
    access: impl Into<Access<'a>>,
    read_data: bool,
) -> Result<RepairSnapshotsReport> {
    repair_snapshots_with(repo, access, read_data, &Steps::default())
}

/// [`repair_snapshots`], telling `steps` what it does.
pub fn repair_snapshots_with<'a>(
    repo: &Repository,
    access: impl Into<Access<'a>>,
    read_data: bool,
    steps: &Steps,
) -> Result<RepairSnapshotsReport> {
    let dry_run = access.into().is_dry_run();
    let started = Instant::now();
    let scan = check::scan(
        repo,
        if read_data {
            ReadData::All
        } else {
            ReadData::None
        },
        steps,
    )?;
    let mut r = RepairSnapshotsReport {
        dry_run,
        ..RepairSnapshotsReport::default()
    };
    let mut snaps = Vec::new();
    for (name, _) in repo.backend().list(ObjectKind::Snapshot)? {
        let Ok(id) = name.parse::<SnapshotId>() else {
            continue;
        };
        match repo.load_snapshot(&id) {
            Ok(s) => snaps.push(s),
            Err(e) => r
                .unreadable
                .push(format!("{e}; remove it with `pvsnap forget {id}`")),
        }
    }
    crate::repo::sort_snapshots(&mut snaps);
    r.snapshots_checked = snaps.len();
    let repaired_from: HashSet<String> = snaps
        .iter()
        .filter_map(|s| s.labels.get(REPAIRED_FROM_LABEL).cloned())
        .collect();
    let mut rw = Rewriter {
        scan: &scan,
        repo,
        memo: HashMap::new(),
        written: HashSet::new(),
        packer: Packer::new(repo),
        dry_run,
    };
    let mut new_snaps = Vec::new();
    for s in &snaps {
        let Rewritten { tree, lost, held } = rw.tree(&s.tree)?;
        if lost.is_empty() {
            continue;
        }
        if repaired_from.contains(&s.id.to_hex()) {
            r.already_repaired.push(s.id);
            continue;
        }
        let lost: Vec<DamagedPath> = lost
            .into_iter()
            .map(|d| DamagedPath {
                path: format!("/{}", d.path),
                reason: d.reason,
            })
            .collect();
        let mut copy = s.clone();
        copy.id = SnapshotId(Id::random());
        copy.tree = tree;
        copy.root.kind = NodeKind::Dir { subtree: tree };
        // The summary describes what the copy holds, not the original.
        copy.summary.total_files = held.files;
        copy.summary.total_bytes = held.bytes;
        if !copy.tags.iter().any(|t| t == REPAIRED_TAG) {
            copy.tags.push(REPAIRED_TAG.into());
        }
        copy.labels
            .insert(REPAIRED_FROM_LABEL.into(), s.id.to_hex());
        copy.errors.extend(lost.iter().map(|d| PathIssue {
            kind: "lost".into(),
            path: d.path.clone(),
            message: format!("removed by `pvsnap repair snapshots`: {}", d.reason),
        }));
        r.repaired.push(RepairedSnapshot {
            original: s.id,
            repaired: (!dry_run).then_some(copy.id),
            source: s.source.key(),
            time: s.time,
            lost,
            files: held.files,
            bytes: held.bytes,
        });
        new_snaps.push(copy);
    }
    // Commit order as in a backup: packs, index, then the snapshot objects.
    r.trees_written = rw.written.len();
    if !dry_run {
        let stored = rw.packer.finish()?;
        packer::write_index(repo, &stored.packs, &[])?;
        for s in &new_snaps {
            repo.save_snapshot(s)?;
        }
    }
    r.duration_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(r)
}

/// What a tree holds once its lost parts are left out.
#[derive(Debug, Clone)]
struct Rewritten {
    tree: TreeId,
    /// Lost paths below it, relative.
    lost: Vec<DamagedPath>,
    held: Held,
}

/// Files, and their bytes, below a tree (what a snapshot's summary counts
/// as `total_files` and `total_bytes`).
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    files: u64,
    bytes: u64,
}

/// Copies trees without their lost parts, each tree once.
struct Rewriter<'a> {
    scan: &'a Scan,
    repo: &'a Repository,
    /// Old tree → what it becomes.
    memo: HashMap<TreeId, Rewritten>,
    written: HashSet<Id>,
    packer: Packer<'a>,
    dry_run: bool,
}

impl Rewriter<'_> {
    fn tree(&mut self, id: &TreeId) -> Result<Rewritten> {
        if let Some(done) = self.memo.get(id) {
            return Ok(done.clone());
        }
        let mut held = Held::default();
        let (tree, mut lost) = match self.scan.read_tree(id) {
            Err(why) => (
                Tree::default(),
                vec![DamagedPath {
                    path: String::new(),
                    reason: format!("folder contents lost: tree {}: {why}", id.short()),
                }],
            ),
            Ok(mut tree) => {
                let mut lost = Vec::new();
                let mut kept = Vec::with_capacity(tree.nodes.len());
                for mut node in std::mem::take(&mut tree.nodes) {
                    let name = node.name_lossy();
                    match &node.kind {
                        NodeKind::Dir { subtree } => {
                            let below = self.tree(subtree)?;
                            let new = below.tree;
                            held.files += below.held.files;
                            held.bytes += below.held.bytes;
                            lost.extend(below.lost.into_iter().map(|d| DamagedPath {
                                path: if d.path.is_empty() {
                                    name.clone()
                                } else {
                                    format!("{name}/{}", d.path)
                                },
                                reason: d.reason,
                            }));
                            node.kind = NodeKind::Dir { subtree: new };
                        }
                        NodeKind::File { .. } => {
                            if let Some(why) = node.chunks().find_map(|c| self.scan.problem(&c.0)) {
                                lost.push(DamagedPath {
                                    path: name,
                                    reason: why,
                                });
                                continue;
                            }
                            held.files += 1;
                            held.bytes += node.size;
                        }
                        _ => {}
                    }
                    kept.push(node);
                }
                tree.nodes = kept;
                (tree, lost)
            }
        };
        let new = if lost.is_empty() {
            *id
        } else {
            self.store(&tree)?
        };
        lost.sort();
        let done = Rewritten {
            tree: new,
            lost,
            held,
        };
        self.memo.insert(*id, done.clone());
        Ok(done)
    }

    fn store(&mut self, tree: &Tree) -> Result<TreeId> {
        let raw = tree.encode();
        let id = self.repo.crypto().content_id(&raw);
        if self.scan.problem(&id).is_none() || !self.written.insert(id) || self.dry_run {
            return Ok(TreeId(id));
        }
        self.packer.add(BlobKind::Tree, id, &raw)?;
        Ok(TreeId(id))
    }
}
