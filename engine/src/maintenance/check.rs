//! `check`: is every snapshot restorable, and is the repository consistent?
//!
//! 1. **index files**: each must read, decode and hash to its name;
//! 2. **packs**: every pack the index names must exist, every index entry must
//!    lie inside its pack, and the pack's own trailer must list exactly the
//!    entries the index lists for it; packs no index names are reported as
//!    warnings (a crashed snapshot or prune leaves them; prune removes them);
//! 3. **data** (optional, all packs or a subset): each pack is read whole, its
//!    bytes must hash to its name, and every blob must open, decompress and
//!    hash to its id;
//! 4. **snapshots**: every tree and data chunk of every snapshot must be in
//!    the index and not found damaged above; damage is reported per snapshot
//!    as the paths of the files and folders that cannot be restored, and
//!    whether `repair snapshots` has made a repaired copy of it already.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::Timestamp;
use rayon::prelude::*;
use serde::Serialize;

use crate::backend::ObjectKey;
use crate::error::{Error, Result};
use crate::maintenance::steps::{Steps, Unit};
use crate::repo::catalog::IndexMode;
use crate::repo::format::{HEADER_LEN, ObjectKind};
use crate::repo::id::{Id, IndexId, PackId, SnapshotId, TreeId};
use crate::repo::{IndexedRepository, Repository};
use crate::store::blob::{self, BlobEntry};
use crate::store::pack;
use crate::tree::{NodeKind, Tree};

mod read_data;
pub use read_data::ReadData;

/// What kind of problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// An index file cannot be read or decoded, or does not hash to its name.
    IndexDamaged,
    /// The index names a pack that does not exist.
    PackMissing,
    /// A pack's header or trailer cannot be read.
    PackDamaged,
    /// A pack's bytes do not hash to its name.
    PackHashMismatch,
    /// The index and the pack's trailer disagree, or an entry lies outside the pack.
    IndexMismatch,
    /// A blob does not open, decompress or hash to its id.
    BlobDamaged,
    /// A snapshot object cannot be read.
    SnapshotDamaged,
    /// A retention policy object cannot be read.
    PolicyDamaged,
    /// Warning: a pack no index names (left by an interrupted run; prune removes it).
    UnreferencedPack,
    /// Warning: an index file superseded by another one (prune removes it).
    SupersededIndex,
    /// Warning: temporary files left by interrupted writes (prune removes them).
    Leftovers,
    /// Warning: a snapshot in the trash cannot be read, or its tree is
    /// damaged: `undelete` would bring back a snapshot that cannot be
    /// restored whole. Live snapshots are not affected.
    TrashDamaged,
}

/// One problem, naming the objects concerned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack: Option<PackId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotId>,
    pub detail: String,
}

impl Problem {
    fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            pack: None,
            index: None,
            blob: None,
            snapshot: None,
            detail: detail.into(),
        }
    }
    fn pack(mut self, p: PackId) -> Self {
        self.pack = Some(p);
        self
    }
    fn blob(mut self, b: Id) -> Self {
        self.blob = Some(b);
        self
    }
}

/// A path inside a snapshot that cannot be restored intact.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DamagedPath {
    /// `/`-separated below the snapshot root, starting with `/`.
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DamagedSnapshot {
    pub id: SnapshotId,
    pub short_id: String,
    pub time: Timestamp,
    pub source: String,
    pub paths: Vec<DamagedPath>,
    /// The repaired copy `repair snapshots` made of it, if one exists: the
    /// damaged original is then only waiting to be forgotten.
    pub repaired_as: Option<SnapshotId>,
}

/// The outcome of `check`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// No error and no damaged snapshot (warnings allowed).
    pub ok: bool,
    pub read_data: String,
    pub snapshots: usize,
    /// Snapshots in the trash whose trees were checked too.
    pub trashed_snapshots: usize,
    pub index_files: usize,
    pub packs: usize,
    pub blobs: usize,
    pub trees_checked: usize,
    pub packs_read: usize,
    pub blobs_read: usize,
    /// Temporary files left by interrupted writes, and their bytes.
    pub leftovers: usize,
    pub leftover_bytes: u64,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub damaged_snapshots: Vec<DamagedSnapshot>,
    pub duration_s: f64,
}

/// The repository-level findings (stages 1-3), shared with `repair`.
pub(crate) struct Scan {
    /// The repository, with the index as the readable index files give it.
    pub repo: IndexedRepository,
    /// Blobs that cannot be read intact, with the reason.
    pub bad: HashMap<Id, String>,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub index_files: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub blobs_read: usize,
}

impl Scan {
    /// Why the blob `id` cannot be restored, if it cannot.
    pub fn problem(&self, id: &Id) -> Option<String> {
        if !self.repo.index().contains(id) {
            return Some(format!("blob {} is not in the index", id.short()));
        }
        self.bad.get(id).cloned()
    }

    /// Reads a tree, or says why it cannot be read.
    pub fn read_tree(&self, id: &TreeId) -> std::result::Result<Tree, String> {
        match self.problem(&id.0) {
            Some(why) => Err(why),
            None => self.repo.read_tree(id).map_err(|e| e.to_string()),
        }
    }
}

/// Stages 1-3.
pub(crate) fn scan(repo: &Repository, read_data: ReadData, steps: &Steps) -> Result<Scan> {
    let backend = repo.backend();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    // Stage 1: index files, read leniently (each damaged one is named), and
    // each must hash to its name.
    let in_force = repo.catalog_in_force(IndexMode::Verified)?;
    let catalog = &in_force.catalog;
    for name in &catalog.strays {
        errors.push(Problem::new(
            ProblemKind::IndexDamaged,
            format!("index file {name}: the name is not an index id; move it out of index/"),
        ));
    }
    for u in &catalog.unreadable {
        let mut p = Problem::new(
            ProblemKind::IndexDamaged,
            format!(
                "index file {}: {}; run `pvsnap repair index`",
                u.name, u.error
            ),
        );
        p.index = u.name.parse().ok();
        errors.push(p);
    }
    for id in &in_force.superseded {
        let mut p = Problem::new(
            ProblemKind::SupersededIndex,
            format!("index file {id} is superseded; prune removes it"),
        );
        p.index = Some(*id);
        warnings.push(p);
    }
    let indexed = &in_force.packs;
    let index = in_force.index.finish(|_, _| true);
    let chosen = |id: &Id, p: &PackId| index.get(id).is_some_and(|l| l.pack == *p);
    let mut bad: HashMap<Id, String> = HashMap::new();

    // Stage 2: packs against the index.
    let sizes = &catalog.packs;
    for p in sizes.keys().filter(|p| !indexed.contains_key(p)) {
        warnings.push(
            Problem::new(
                ProblemKind::UnreferencedPack,
                format!("pack {p} is in no index: left by an interrupted run (prune removes it once it is old enough), or listed by an index file that was lost (`pvsnap repair index` lists it again)"),
            )
            .pack(*p),
        );
    }
    let found = Mutex::new((Vec::new(), Vec::new()));
    steps.start("checking pack trailers", Unit::Packs, indexed.len() as u64);
    indexed.par_iter().for_each(|(p, entries)| {
        let (mut errs, mut bads) = (Vec::new(), Vec::new());
        match sizes.get(p) {
            None => {
                errs.push(
                    Problem::new(
                        ProblemKind::PackMissing,
                        format!("pack {p} is named by the index but does not exist"),
                    )
                    .pack(*p),
                );
                bads.extend(
                    entries
                        .iter()
                        .map(|e| (e.id, format!("its pack {} is missing", p.short()))),
                );
            }
            Some(&size) => check_pack(repo, p, size, entries, &mut errs, &mut bads),
        }
        let mut g = found.lock().expect("check results");
        g.0.extend(errs);
        g.1.extend(bads.into_iter().filter(|(id, _)| chosen(id, p)));
        steps.add(1);
    });
    let (errs, bads) = found.into_inner().expect("check results");
    errors.extend(errs);
    bad.extend(bads);

    // Stage 3: data.
    let present: Vec<PackId> = indexed
        .keys()
        .copied()
        .filter(|p| sizes.contains_key(p))
        .collect();
    let selected = read_data.select(&present);
    steps.start(
        "reading packs",
        Unit::Bytes,
        selected.iter().map(|p| sizes[p]).sum(),
    );
    let found = Mutex::new((Vec::new(), Vec::new(), 0usize));
    // Each worker reads every pack into one buffer and decodes every blob
    // into one set of buffers: no pack or blob allocates memory of its own.
    let init = || (Vec::new(), blob::DecodeBuffers::default());
    selected.par_iter().for_each_init(init, |(bytes, bufs), p| {
        let (mut errs, mut bads, mut n) = (Vec::new(), Vec::new(), 0);
        let key = ObjectKey::new(ObjectKind::Pack, p.to_hex());
        match backend.get_range_into(&key, 0, sizes[p], bytes) {
            Err(e) => {
                errs.push(Problem::new(ProblemKind::PackDamaged, format!("pack {p}: {e}")).pack(*p))
            }
            Ok(()) => {
                if *blake3::hash(bytes).as_bytes() != p.0.0 {
                    errs.push(
                        Problem::new(
                            ProblemKind::PackHashMismatch,
                            format!("pack {p}: its bytes do not hash to its name"),
                        )
                        .pack(*p),
                    );
                }
                for e in &indexed[p] {
                    let Some(stored) =
                        bytes.get(e.offset as usize..e.offset as usize + e.stored_len as usize)
                    else {
                        continue;
                    };
                    n += 1;
                    if let Err(err) = blob::decode_in(repo.crypto(), p, e, stored, bufs) {
                        let why = match err {
                            Error::CorruptBlob { detail, .. } => detail,
                            other => other.to_string(),
                        };
                        let detail = format!("{} blob {} in pack {p}: {why}", e.kind.name(), e.id);
                        errs.push(
                            Problem::new(ProblemKind::BlobDamaged, detail)
                                .pack(*p)
                                .blob(e.id),
                        );
                        bads.push((
                            e.id,
                            format!(
                                "{} blob {} in pack {} is damaged",
                                e.kind.name(),
                                e.id.short(),
                                p.short()
                            ),
                        ));
                    }
                }
            }
        }
        let mut g = found.lock().expect("check results");
        g.0.extend(errs);
        g.1.extend(bads.into_iter().filter(|(id, _)| chosen(id, p)));
        g.2 += n;
        steps.add(sizes[p]);
    });
    let (errs, bads, blobs_read) = found.into_inner().expect("check results");
    errors.extend(errs);
    bad.extend(bads);
    errors.sort_by_key(|p| (p.kind, p.pack, p.index, p.blob));
    warnings.sort_by_key(|p| (p.kind, p.pack, p.index));
    Ok(Scan {
        repo: repo.clone().with_index(index),
        bad,
        errors,
        warnings,
        index_files: catalog.index_sizes.len(),
        packs: sizes.len(),
        packs_read: selected.len(),
        blobs_read,
    })
}

/// Stage 2 for one existing pack: bounds, then the trailer against the index.
fn check_pack(
    repo: &Repository,
    p: &PackId,
    size: u64,
    entries: &[BlobEntry],
    errs: &mut Vec<Problem>,
    bads: &mut Vec<(Id, String)>,
) {
    for e in entries {
        if (e.offset as u64) < HEADER_LEN as u64 || e.offset as u64 + e.stored_len as u64 > size {
            errs.push(
                Problem::new(
                    ProblemKind::IndexMismatch,
                    format!("blob {} lies outside pack {p} ({size} bytes)", e.id),
                )
                .pack(*p)
                .blob(e.id),
            );
            bads.push((
                e.id,
                format!("its index entry points outside pack {}", p.short()),
            ));
        }
    }
    let trailer = match pack::read_trailer(repo.backend().as_ref(), repo.crypto(), p, size) {
        Ok(t) => t,
        Err(e) => {
            errs.push(Problem::new(ProblemKind::PackDamaged, format!("pack {p}: {e}")).pack(*p));
            return;
        }
    };
    let by_id: HashMap<Id, &BlobEntry> = trailer.iter().map(|e| (e.id, e)).collect();
    for e in entries {
        match by_id.get(&e.id) {
            Some(t) if *t == e => {}
            Some(_) => {
                errs.push(
                    Problem::new(
                        ProblemKind::IndexMismatch,
                        format!(
                            "pack {p}: the index and the trailer place blob {} differently",
                            e.id
                        ),
                    )
                    .pack(*p)
                    .blob(e.id),
                );
                bads.push((
                    e.id,
                    format!("its index entry disagrees with pack {}", p.short()),
                ));
            }
            None => {
                errs.push(
                    Problem::new(
                        ProblemKind::IndexMismatch,
                        format!(
                            "pack {p}: blob {} is in the index but not in the pack's trailer",
                            e.id
                        ),
                    )
                    .pack(*p)
                    .blob(e.id),
                );
                bads.push((e.id, format!("pack {} does not hold it", p.short())));
            }
        }
    }
    let extra = trailer
        .len()
        .saturating_sub(entries.iter().filter(|e| by_id.contains_key(&e.id)).count());
    if extra > 0 {
        errs.push(Problem::new(ProblemKind::IndexMismatch, format!("pack {p}: {extra} blob(s) in the trailer are not in the index; `pvsnap repair index` adds them")).pack(*p));
    }
}

/// Runs every stage; the caller holds a (shared) lock.
pub fn check(repo: &Repository, read_data: ReadData) -> Result<CheckReport> {
    check_with(repo, read_data, &Steps::default())
}

/// [`check`], telling `steps` what it does.
pub fn check_with(repo: &Repository, read_data: ReadData, steps: &Steps) -> Result<CheckReport> {
    let started = Instant::now();
    steps.start("reading index files", Unit::Packs, 0);
    let scan = scan(repo, read_data, steps)?;
    let mut errors = scan.errors.clone();
    let mut snaps = Vec::new();
    let names = repo.backend().list(ObjectKind::Snapshot)?;
    for (name, _) in &names {
        let Ok(id) = name.parse::<SnapshotId>() else {
            continue;
        };
        match repo.load_snapshot(&id) {
            Ok(s) => snaps.push(s),
            Err(e) => {
                let mut p = Problem::new(
                    ProblemKind::SnapshotDamaged,
                    format!(
                        "{e}; remove it with `pvsnap forget {id}` (prune refuses to run while it exists)"
                    ),
                );
                p.snapshot = Some(id);
                errors.push(p);
            }
        }
    }
    crate::repo::sort_snapshots(&mut snaps);
    // Trashed snapshots may come back (`undelete`): their trees are
    // checked too, and damage in them is a warning.
    let trash = repo.trash()?;
    let mut trash_warnings = Vec::new();
    for (e, err) in &trash.unreadable {
        let mut p = Problem::new(
            ProblemKind::TrashDamaged,
            format!(
                "trash/{}: {err}; `pvsnap prune --keep-deleted 0` removes it",
                e.name()
            ),
        );
        p.snapshot = Some(e.id);
        trash_warnings.push(p);
    }
    for (object, detail) in crate::repo::policy::damaged(repo)? {
        errors.push(Problem::new(
            ProblemKind::PolicyDamaged,
            format!("policies/{object}: {detail}"),
        ));
    }
    let mut warnings = scan.warnings.clone();
    warnings.append(&mut trash_warnings);
    let leftovers = repo.backend().leftovers()?;
    let leftover_bytes: u64 = leftovers.iter().map(|l| l.size).sum();
    if !leftovers.is_empty() {
        warnings.push(Problem::new(
            ProblemKind::Leftovers,
            format!(
                "{} temporary file(s), {leftover_bytes} bytes, left by interrupted writes (e.g. {}); `pvsnap prune` removes those older than its grace period, `pvsnap prune --grace 0` all of them when no other pvsnap command is running",
                leftovers.len(),
                leftovers[0].path
            ),
        ));
    }
    let (index_files, packs, packs_read, blobs_read, blobs) = (
        scan.index_files,
        scan.packs,
        scan.packs_read,
        scan.blobs_read,
        scan.repo.index().len(),
    );
    let mut walker = Walker {
        scan: &scan,
        memo: HashMap::new(),
    };
    let repaired_as: HashMap<String, SnapshotId> = snaps
        .iter()
        .filter_map(|s| {
            let from = s
                .labels
                .get(crate::maintenance::repair::REPAIRED_FROM_LABEL)?;
            Some((from.clone(), s.id))
        })
        .collect();
    let mut damaged_snapshots = Vec::new();
    steps.start(
        "checking snapshot trees",
        Unit::Snapshots,
        snaps.len() as u64,
    );
    for s in &snaps {
        let paths = walker.tree(&s.tree, 1);
        steps.add(1);
        if !paths.is_empty() {
            damaged_snapshots.push(DamagedSnapshot {
                id: s.id,
                short_id: s.short_id(),
                time: s.time,
                source: s.source.key(),
                paths: paths
                    .iter()
                    .map(|d| DamagedPath {
                        path: format!("/{}", d.path),
                        reason: d.reason.clone(),
                    })
                    .collect(),
                repaired_as: repaired_as.get(&s.id.to_hex()).copied(),
            });
        }
    }
    for t in &trash.entries {
        let paths = walker.tree(&t.snapshot.tree, 1);
        if let Some(d) = paths.first() {
            let mut p = Problem::new(
                ProblemKind::TrashDamaged,
                format!(
                    "snapshot {} in the trash (forgotten {}): {} path(s) cannot be restored, e.g. /{}: {}",
                    t.snapshot.short_id(),
                    t.entry.deleted,
                    paths.len(),
                    d.path,
                    d.reason
                ),
            );
            p.snapshot = Some(t.entry.id);
            warnings.push(p);
        }
    }
    let trees_checked = walker.memo.len();
    Ok(CheckReport {
        ok: errors.is_empty() && damaged_snapshots.is_empty(),
        read_data: read_data.to_string(),
        snapshots: snaps.len(),
        trashed_snapshots: trash.entries.len(),
        index_files,
        packs,
        blobs,
        trees_checked,
        packs_read,
        blobs_read,
        leftovers: leftovers.len(),
        leftover_bytes,
        errors,
        warnings,
        damaged_snapshots,
        duration_s: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    })
}

/// Stage 4: damage below each tree, each tree judged once.
struct Walker<'a> {
    scan: &'a Scan,
    memo: HashMap<TreeId, Arc<Vec<DamagedPath>>>,
}

impl Walker<'_> {
    /// Paths (relative, no leading `/`; "" is the tree itself) that cannot be restored.
    /// `depth` bounds the walk (see [`crate::tree::MAX_DEPTH`]).
    fn tree(&mut self, id: &TreeId, depth: usize) -> Arc<Vec<DamagedPath>> {
        if let Some(d) = self.memo.get(id) {
            return d.clone();
        }
        if depth > crate::tree::MAX_DEPTH {
            return Arc::new(vec![DamagedPath {
                path: String::new(),
                reason: format!(
                    "folder contents not restorable: deeper than {} levels (tree {})",
                    crate::tree::MAX_DEPTH,
                    id.short()
                ),
            }]);
        }
        let mut out = Vec::new();
        match self.scan.read_tree(id) {
            Err(why) => out.push(DamagedPath {
                path: String::new(),
                reason: format!("folder contents lost: tree {}: {why}", id.short()),
            }),
            Ok(tree) => {
                for node in &tree.nodes {
                    let name = node.name_lossy();
                    match &node.kind {
                        NodeKind::Dir { subtree } => {
                            for d in self.tree(subtree, depth + 1).iter() {
                                let path = if d.path.is_empty() {
                                    name.clone()
                                } else {
                                    format!("{name}/{}", d.path)
                                };
                                out.push(DamagedPath {
                                    path,
                                    reason: d.reason.clone(),
                                });
                            }
                        }
                        NodeKind::File { content } => {
                            if let Some(why) = file_problem(self.scan, content) {
                                out.push(DamagedPath {
                                    path: name,
                                    reason: why,
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let out = Arc::new(out);
        self.memo.insert(*id, out.clone());
        out
    }
}

/// Why a file cannot be restored, if it cannot: a chunk not in the index
/// or damaged (the first such), else what is wrong with its extents:
/// lengths that add up past what a file can hold, or a chunk whose stored
/// length is not the extent's (restore would put the following bytes at
/// the wrong place). One index lookup a chunk: at millions of chunks the
/// lookups are most of this stage.
fn file_problem(scan: &Scan, content: &[crate::tree::Extent]) -> Option<String> {
    let index = scan.repo.index();
    let mut total = 0u64;
    let mut extents = None;
    for e in content {
        total = match total.checked_add(e.len) {
            Some(t) if t <= i64::MAX as u64 => t,
            _ => {
                extents.get_or_insert_with(|| {
                    "its extents add up to more than a file can hold".to_string()
                });
                u64::MAX
            }
        };
        let Some(c) = e.chunk else { continue };
        let Some(loc) = index.get(&c.0) else {
            return Some(format!("blob {} is not in the index", c.0.short()));
        };
        if !scan.bad.is_empty()
            && let Some(why) = scan.bad.get(&c.0)
        {
            return Some(why.clone());
        }
        if loc.entry.raw_len as u64 != e.len && extents.is_none() {
            extents = Some(format!(
                "chunk {} holds {} bytes where the file's extent says {}",
                c.short(),
                loc.entry.raw_len,
                e.len
            ));
        }
    }
    extents
}
