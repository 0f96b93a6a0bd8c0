//! Restoring over existing content: keep what is already right, delete
//! what the snapshot does not have.
//!
//! * **Reuse** ([`prepare_existing`], [`keep_matching`]): an existing
//!   regular file with a single name is opened for writing (never through a
//!   symlink) and given its final length. Then, for each chunk of the
//!   snapshot's file, the bytes at the chunk's offset are read and hashed
//!   with the repository's content id; where the id matches, the chunk is
//!   dropped from the restore plan, so it is neither fetched from the
//!   repository nor written. Where the snapshot has a hole, any data still
//!   in the file there is punched out (or overwritten with zeros where the
//!   file system cannot punch holes). A file with more than one name is not
//!   reused: writing into it would change the other names too.
//! * **Delete** ([`delete_extra`]): in every folder of the plan, entries
//!   whose names the snapshot's tree does not have are removed. Folders are
//!   reached by descriptor from the target (see [`super::dirs`]), a symlink
//!   is removed as a link, and a folder is emptied through descriptors of
//!   its own subfolders, so removal stays below the target. A folder whose
//!   tree could not be read is left as it is, and so are folders outside a
//!   restore's selection and entries its excludes match.
//! * **Preview** ([`preview_file`], `delete_extra` with `dry`): the same
//!   comparisons for a dry run, reading only.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::PlannedFile;
use super::dirs::{self, Dirs};
use super::plan::Plan;
use crate::error::{Error, Result};
use crate::repo::IndexedRepository;
use crate::repo::id::ChunkId;
use crate::sys;
use crate::sys::dir::EntryKind;
use crate::sys::io::read_at_full;
use crate::tree::filter::Excludes;
use crate::tree::{Node, NodeKind};

/// Removes the entries of each planned folder that its tree does not name
/// (only lists them when `dry`). Folders whose tree could not be read
/// (`unread`) are left alone: what is in them cannot be compared; so are
/// folders only partly selected (`partial`), and entries `excludes` match.
/// Returns the paths removed (a folder counts once).
pub(super) fn delete_extra(
    repo: &IndexedRepository,
    dirs: &Dirs,
    plan: &Plan,
    excludes: &Excludes,
    dry: bool,
) -> Result<Vec<PathBuf>> {
    let mut deleted = Vec::new();
    let top = dirs.path(dirs::TARGET);
    for (dir, node, _) in &plan.dirs {
        let NodeKind::Dir { subtree } = &node.kind else {
            continue;
        };
        if plan.unread.contains(dir) || plan.partial.contains(dir) {
            continue;
        }
        let Ok(tree) = repo.read_tree(subtree) else {
            continue;
        };
        let path = dirs.path(*dir);
        let keep: HashSet<&[u8]> = tree.nodes.iter().map(|n| n.name.as_slice()).collect();
        let d = match dirs.open(*dir) {
            Ok(d) => d,
            // Not there yet (or not a folder, to be replaced): nothing extra.
            Err(_) if dry => continue,
            Err(e) => return Err(e),
        };
        let names = d.names().map_err(|e| Error::io(path, "list folder", e))?;
        let rel = path.strip_prefix(top).unwrap_or(path);
        for name in names {
            if keep.contains(name.as_bytes())
                || (!excludes.is_empty() && excludes.matches(&rel.join(&name), &name))
            {
                continue;
            }
            let extra = path.join(&name);
            if !dry {
                tracing::debug!("{}: not in the snapshot, deleting", extra.display());
                dirs::remove_existing(&d, name.as_bytes(), &extra)?;
            }
            deleted.push(extra);
        }
    }
    Ok(deleted)
}

/// For a dry run: the bytes an if-changed restore would write into planned
/// file `f`, or `None` when the file is already exactly in place. Reads
/// only; a folder that is not there yet means a new file.
pub(super) fn preview_file(
    repo: &IndexedRepository,
    dirs: &Dirs,
    f: &PlannedFile,
) -> Result<Option<u64>> {
    let whole = Some(f.node.size);
    let Ok(d) = dirs.open(f.dir) else {
        return Ok(whole);
    };
    let name = OsStr::from_bytes(&f.node.name);
    match d
        .entry(name)
        .map_err(|e| Error::io(&f.path, "inspect", e))?
    {
        Some(e) if e.kind == EntryKind::File && e.nlink == 1 => {}
        _ => return Ok(whole),
    }
    let Ok(file) = d.open_file(name, libc::O_RDONLY, 0) else {
        return Ok(whole);
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io(&f.path, "inspect", e))?
        .len();
    let m = compare_file(repo, &file, f, true)?;
    if m.untouched && len == f.node.size {
        return Ok(None);
    }
    let NodeKind::File { content } = &f.node.kind else {
        return Ok(whole);
    };
    let data: u64 = content
        .iter()
        .filter(|e| e.chunk.is_some())
        .map(|e| e.len)
        .sum();
    let in_place: u64 = m.in_place.iter().map(|(_, _, len)| len).sum();
    Ok(Some(data.saturating_sub(in_place)))
}

/// Prepares an existing file for an in-place update: when it is a regular
/// file with a single name that can be opened for writing, sets its length
/// to the snapshot's and returns whether that changed it. `None`: nothing
/// reusable there (the caller creates the file afresh).
pub(super) fn prepare_existing(dirs: &Dirs, f: &PlannedFile) -> Result<Option<bool>> {
    let (path, size) = (&f.path, f.node.size);
    let d = dirs.open(f.dir)?;
    let name = OsStr::from_bytes(&f.node.name);
    let before = match d.entry(name).map_err(|e| Error::io(path, "inspect", e))? {
        None => return Ok(None),
        Some(b) => b,
    };
    if before.kind != EntryKind::File || before.nlink != 1 {
        return Ok(None);
    }
    let Ok(file) = d.open_file(name, libc::O_WRONLY, 0) else {
        return Ok(None);
    };
    let meta = file.metadata().map_err(|e| Error::io(path, "inspect", e))?;
    if !meta.file_type().is_file() || meta.ino() != before.ino || meta.dev() != before.dev {
        return Ok(None); // replaced between the two looks
    }
    if meta.len() == size {
        return Ok(Some(false));
    }
    file.set_len(size)
        .map_err(|e| Error::io(path, "set size", e))?;
    Ok(Some(true))
}

/// What [`keep_matching`] found already in place.
pub(super) struct Kept {
    /// Files needing no write at all.
    pub files: u64,
    /// Bytes of chunks already in place.
    pub bytes: u64,
}

/// Compares every reused file with its chunks and removes the chunks found
/// in place from `targets` (chunks left without targets are dropped).
pub(super) fn keep_matching(
    repo: &IndexedRepository,
    dirs: &Dirs,
    files: &[PlannedFile],
    targets: &mut HashMap<ChunkId, Vec<(usize, u64)>>,
) -> Result<Kept> {
    let found: Vec<(usize, FileMatch)> = files
        .par_iter()
        .enumerate()
        .filter(|(_, f)| f.reuse)
        .map(|(fi, f)| {
            let file = dirs
                .open(f.dir)?
                .open_file(OsStr::from_bytes(&f.node.name), libc::O_RDWR, 0)
                .map_err(|e| Error::io(&f.path, "open for comparing", e))?;
            compare_file(repo, &file, f, false).map(|m| (fi, m))
        })
        .collect::<Result<_>>()?;
    let mut kept = Kept { files: 0, bytes: 0 };
    for (fi, m) in found {
        if m.untouched && !files[fi].resized {
            kept.files += 1;
        }
        for (chunk, off, len) in m.in_place {
            if let Some(places) = targets.get_mut(&chunk) {
                places.retain(|&(f, o)| !(f == fi && o == off));
                if places.is_empty() {
                    targets.remove(&chunk);
                }
            }
            kept.bytes += len;
        }
    }
    Ok(kept)
}

struct FileMatch {
    /// (chunk, offset, length) of chunks already in place.
    in_place: Vec<(ChunkId, u64, u64)>,
    /// Nothing in the file had to change.
    untouched: bool,
}

/// Compares `file` with planned file `f` chunk by chunk; data where the
/// snapshot has a hole is cleared (only noted when `dry`).
fn compare_file(
    repo: &IndexedRepository,
    file: &File,
    f: &PlannedFile,
    dry: bool,
) -> Result<FileMatch> {
    let mut m = FileMatch {
        in_place: Vec::new(),
        untouched: true,
    };
    let NodeKind::File { content } = &f.node.kind else {
        return Ok(m);
    };
    let io = |action: &'static str| move |e| Error::io(&f.path, action, e);
    let mut buf = Vec::new();
    let mut off = 0u64;
    for e in content {
        match e.chunk {
            Some(chunk) => {
                buf.resize(e.len as usize, 0);
                let n = read_at_full(file, &mut buf, off).map_err(io("read"))?;
                if n == buf.len() && repo.crypto().content_id(&buf) == chunk.0 {
                    m.in_place.push((chunk, off, e.len));
                } else {
                    m.untouched = false;
                }
            }
            None => {
                if clear_range(file, off, e.len, dry).map_err(io("clear a hole"))? {
                    m.untouched = false;
                }
            }
        }
        off += e.len;
    }
    Ok(m)
}

/// Makes `len` bytes at `off` read as zeros (only looks when `dry`);
/// returns whether anything had to change. Only data segments are read
/// (holes are skipped with SEEK_DATA).
fn clear_range(file: &File, off: u64, len: u64, dry: bool) -> std::io::Result<bool> {
    const BLOCK: usize = 1 << 20;
    let end = off + len;
    let mut changed = false;
    let mut buf = vec![0u8; BLOCK];
    let data = sys::extents::data_ranges(file, off, end).unwrap_or_else(|| vec![(off, end)]);
    for (seg_start, seg_end) in data {
        let mut pos = seg_start;
        while pos < seg_end {
            let want = ((seg_end - pos) as usize).min(BLOCK);
            let n = read_at_full(file, &mut buf[..want], pos)?;
            if buf[..n].iter().any(|&b| b != 0) {
                changed = true;
                if dry {
                    return Ok(true);
                }
                if sys::extents::punch_hole(file, pos, n as u64).is_err() {
                    let zeros = vec![0u8; n];
                    file.write_all_at(&zeros, pos)?;
                }
            }
            if n < want {
                break;
            }
            pos += n as u64;
        }
    }
    Ok(changed)
}

/// Removes extended attributes that `node` does not have (an existing entry
/// may carry ones the snapshot never had), through the entry's descriptor.
/// Attributes this process may not remove are left with a warning, as
/// `apply_metadata` does when setting.
pub(super) fn remove_extra_xattrs(file: &File, path: &Path, node: &Node) -> std::io::Result<()> {
    use xattr::FileExt as _;
    let names = match file.list_xattr() {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        if node.xattrs.iter().any(|x| x.name == name.as_bytes()) {
            continue;
        }
        if let Err(e) = file.remove_xattr(&name) {
            if !matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::ENOTSUP | libc::ENODATA)
            ) {
                return Err(e);
            }
            tracing::warn!(
                "{}: could not remove xattr {}: {e}",
                path.display(),
                OsStr::new(&name).to_string_lossy()
            );
        }
    }
    Ok(())
}
