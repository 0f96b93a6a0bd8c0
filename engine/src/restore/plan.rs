//! Phase 1 of a restore: walk the snapshot's trees, make folders, symlinks
//! and special files, and note which chunk goes to which file offset.
//!
//! A folder whose tree cannot be read (missing, damaged, of the wrong kind)
//! or that lies deeper than [`MAX_DEPTH`] is noted in [`Plan::lost`] and the
//! walk goes on, so one damaged tree costs only what is below it. Only the
//! restored folder's own tree is needed: without it the restore fails. A file
//! whose extents add up past what a file can hold is noted there too.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::dirs::{self, Dirs};
use crate::error::{Error, Result};
use crate::repo::IndexedRepository;
use crate::repo::id::{ChunkId, TreeId};
use crate::tree::filter::Excludes;
use crate::tree::{MAX_DEPTH, Node, NodeKind};

pub(super) struct PlannedFile {
    /// Its folder (see [`Dirs`]); its name is `node.name`.
    pub dir: usize,
    pub path: PathBuf,
    pub node: Node,
    /// An existing file updated in place (see `Overwrite::IfChanged`).
    pub reuse: bool,
    /// Its length had to be changed.
    pub resized: bool,
}

/// An entry restored in phase 1 or 3: (folder, path, node).
pub(super) type Placed = (usize, PathBuf, Node);

/// The first name of a hardlinked file: (folder, name). It outlives the
/// batch it was written in (see [`Walk::batch`]).
pub(super) type First = (usize, Vec<u8>);

/// Entries planned before the walk hands them on to be written (see
/// [`Walk::batch`]): restore memory is bounded by this, not by the snapshot.
/// The unit tests use batches of 3, so every restore in them spans batches.
pub(super) const BATCH: usize = if cfg!(test) { 3 } else { 8192 };

#[derive(Default)]
pub(super) struct Plan {
    pub files: Vec<PlannedFile>,
    /// (link, the first name, already planned or written).
    pub hardlinks: Vec<(Placed, First)>,
    pub others: Vec<Placed>,
    /// (folder, its node, depth).
    pub dirs: Vec<(usize, Node, usize)>,
    /// chunk → every (file index, offset) it goes to.
    pub targets: HashMap<ChunkId, Vec<(usize, u64)>>,
    /// Folders and files that cannot be restored, with the reason.
    pub lost: Vec<(String, String)>,
    /// Folders whose trees could not be read (not to be cleaned in place).
    pub unread: std::collections::HashSet<usize>,
    /// Folders planned only for what an include selects below them (not
    /// to be cleaned: what is in them lies outside the selection).
    pub partial: std::collections::HashSet<usize>,
    /// Existing entries kept as they are ([`Mode::keep_existing`]).
    pub kept: Vec<PathBuf>,
    /// For each include pattern, whether it matched an entry.
    pub include_hits: Vec<bool>,
}

/// How the walk treats the target.
#[derive(Clone, Copy, Default)]
pub(super) struct Mode {
    /// Make nothing: folders, symlinks and special files are only planned.
    pub dry: bool,
    /// An existing entry where the snapshot has a file, symlink or special
    /// file (or a non-folder where it has a folder) is kept and not planned.
    pub keep_existing: bool,
}

pub(super) struct Filter {
    pub includes: Option<Excludes>,
    pub excludes: Excludes,
}

impl Filter {
    /// (restore this entry, descend into it)
    fn check(&self, rel: &Path, name: &OsStr, inside_included: bool) -> (bool, bool) {
        if !self.excludes.is_empty() && self.excludes.matches(rel, name) {
            return (false, false);
        }
        match &self.includes {
            None => (true, true),
            Some(_) if inside_included => (true, true),
            Some(inc) => {
                let hit = inc.matches(rel, name);
                (hit, true)
            }
        }
    }
}

pub(super) struct Walk<'a> {
    pub repo: &'a IndexedRepository,
    pub filter: &'a Filter,
    pub plan: Plan,
    pub dirs: Dirs,
    /// Hardlinked files (`links > 1` only) by the original's (device,
    /// inode): where the first name went. Kept for the whole walk.
    pub seen: HashMap<(u64, u64), First>,
    pub mode: Mode,
    /// Hands the planned files, links and special files on every [`BATCH`]
    /// entries (see `restore::flush`): without it the plan is held whole.
    pub batch: Option<super::Batch<'a>>,
    /// Entries planned and handed on already.
    pub flushed: usize,
}

impl Walk<'_> {
    /// Plans the entries of tree `tree_id` into folder `dir`.
    pub fn dir(
        &mut self,
        tree_id: &TreeId,
        dir: usize,
        rel: &Path,
        depth: usize,
        inside_included: bool,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            self.plan.unread.insert(dir);
            self.plan.lost.push((
                self.dirs.path(dir).display().to_string(),
                format!("folder contents not restored: deeper than {MAX_DEPTH} levels"),
            ));
            return Ok(());
        }
        let tree = match self.repo.read_tree(tree_id) {
            Ok(t) => t,
            // Nothing at all can be restored: an error, not damage.
            Err(e) if depth == 1 => {
                return Err(Error::TopTreeUnreadable {
                    path: self.dirs.path(dir).display().to_string(),
                    tree: tree_id.short(),
                    detail: e.to_string(),
                });
            }
            Err(e) => {
                self.plan.unread.insert(dir);
                self.plan.lost.push((
                    self.dirs.path(dir).display().to_string(),
                    format!("folder contents lost: tree {}: {e}", tree_id.short()),
                ));
                return Ok(());
            }
        };
        for node in &tree.nodes {
            let name = OsStr::from_bytes(&node.name);
            let child_rel = rel.join(name);
            if let Some(inc) = &self.filter.includes
                && self.plan.include_hits.contains(&false)
            {
                for i in inc.matching(&child_rel, name) {
                    self.plan.include_hits[i] = true;
                }
            }
            let (take, descend) = self.filter.check(&child_rel, name, inside_included);
            match &node.kind {
                NodeKind::Dir { subtree } => {
                    if !descend {
                        continue;
                    }
                    if take && self.keep(dir, node, true)? {
                        continue;
                    }
                    if take && !self.mode.dry {
                        self.dirs.ensure(dir)?;
                        let d = self.dirs.open(dir)?;
                        let path = self.dirs.path(dir).join(name);
                        dirs::ensure_dir(&d, &node.name, &path)?;
                    }
                    let child = self.dirs.add(dir, &node.name, take);
                    if take {
                        self.plan.dirs.push((child, node.clone(), depth));
                    }
                    let before = self.placed();
                    self.dir(subtree, child, &child_rel, depth + 1, take)?;
                    if !take && self.placed() > before {
                        self.plan.dirs.push((child, node.clone(), depth));
                        self.plan.partial.insert(child);
                    }
                }
                _ if take => {
                    if !self.mode.dry {
                        self.dirs.ensure(dir)?;
                    }
                    if !self.keep(dir, node, false)? {
                        self.entry(node, dir)?;
                    }
                    if self.batch.is_some() && self.pending() >= BATCH {
                        super::flush(self)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// With [`Mode::keep_existing`]: whether an existing entry stands in
    /// `node`'s place and is kept (noted in [`Plan::kept`]). A folder
    /// (`is_dir`) keeps only a non-folder in its place; an existing folder
    /// is restored into.
    pub fn keep(&mut self, dir: usize, node: &Node, is_dir: bool) -> Result<bool> {
        if !self.mode.keep_existing {
            return Ok(false);
        }
        let path = self.dirs.path(dir).join(OsStr::from_bytes(&node.name));
        // A folder that cannot be opened holds nothing to keep.
        let Ok(d) = self.dirs.open(dir) else {
            return Ok(false);
        };
        let found = d
            .entry(OsStr::from_bytes(&node.name))
            .map_err(|e| Error::io(&path, "inspect", e))?;
        let keep = match found {
            None => false,
            Some(e) => !(is_dir && e.kind == dirs::EntryKind::Dir),
        };
        if keep {
            self.plan.kept.push(path);
        }
        Ok(keep)
    }

    /// Entries planned and not yet handed on.
    pub fn pending(&self) -> usize {
        self.plan.files.len() + self.plan.others.len() + self.plan.hardlinks.len()
    }

    fn placed(&self) -> usize {
        self.flushed + self.pending()
    }

    /// Plans a non-folder entry `node` in folder `dir` (which exists).
    pub fn entry(&mut self, node: &Node, dir: usize) -> Result<()> {
        let path = self.dirs.path(dir).join(OsStr::from_bytes(&node.name));
        let plan = &mut self.plan;
        match &node.kind {
            NodeKind::File { content } => {
                if node.links > 1
                    && let Some(first) = self.seen.get(&(node.device, node.inode))
                {
                    plan.hardlinks
                        .push(((dir, path, node.clone()), first.clone()));
                    return Ok(());
                }
                // Offsets past what a file can hold are damage, not a write
                // that fails half way.
                let mut off = 0u64;
                let mut at = Vec::new();
                for e in content {
                    if let Some(c) = e.chunk {
                        // A chunk of another length than its extent would
                        // shift what follows: damage, named as such.
                        if let Some(loc) = self.repo.locate(&c.0)
                            && loc.entry.raw_len as u64 != e.len
                        {
                            plan.lost.push((
                                path.display().to_string(),
                                format!(
                                    "not restored: chunk {} holds {} bytes where the file's extent says {}",
                                    c.short(),
                                    loc.entry.raw_len,
                                    e.len
                                ),
                            ));
                            return Ok(());
                        }
                        at.push((c, off));
                    }
                    off = match off.checked_add(e.len) {
                        Some(o) if o <= i64::MAX as u64 => o,
                        _ => {
                            plan.lost.push((
                                path.display().to_string(),
                                "not restored: its extents add up to more than a file can hold"
                                    .into(),
                            ));
                            return Ok(());
                        }
                    };
                }
                if node.size > i64::MAX as u64 {
                    plan.lost.push((
                        path.display().to_string(),
                        format!(
                            "not restored: its size {} is more than a file can hold",
                            node.size
                        ),
                    ));
                    return Ok(());
                }
                let fi = plan.files.len();
                if node.links > 1 {
                    self.seen
                        .insert((node.device, node.inode), (dir, node.name.clone()));
                }
                for (c, off) in at {
                    plan.targets.entry(c).or_default().push((fi, off));
                }
                plan.files.push(PlannedFile {
                    dir,
                    path,
                    node: node.clone(),
                    reuse: false,
                    resized: false,
                });
            }
            NodeKind::Symlink { .. }
            | NodeKind::Fifo
            | NodeKind::CharDevice { .. }
            | NodeKind::BlockDevice { .. }
                if self.mode.dry =>
            {
                plan.others.push((dir, path, node.clone()));
            }
            NodeKind::Symlink { target } => {
                let d = self.dirs.open(dir)?;
                dirs::remove_existing(&d, &node.name, &path)?;
                d.symlink(OsStr::from_bytes(target), OsStr::from_bytes(&node.name))
                    .map_err(|e| crate::error::Error::io(&path, "create symlink", e))?;
                plan.others.push((dir, path, node.clone()));
            }
            NodeKind::Fifo | NodeKind::CharDevice { .. } | NodeKind::BlockDevice { .. } => {
                let (kind, rdev) = match node.kind {
                    NodeKind::CharDevice { rdev } => (libc::S_IFCHR, rdev),
                    NodeKind::BlockDevice { rdev } => (libc::S_IFBLK, rdev),
                    _ => (libc::S_IFIFO, 0),
                };
                let d = self.dirs.open(dir)?;
                dirs::remove_existing(&d, &node.name, &path)?;
                d.mknod(
                    OsStr::from_bytes(&node.name),
                    kind | (node.mode & 0o777),
                    rdev,
                )
                .map_err(|e| crate::error::Error::io(&path, "create special file", e))?;
                plan.others.push((dir, path, node.clone()));
            }
            NodeKind::Dir { .. } => unreachable!("folders are planned by Walk::dir"),
        }
        Ok(())
    }
}
