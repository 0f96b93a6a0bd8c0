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
//!   whose names the snapshot's tree does not have are removed. Folder paths
//!   come from validated tree names below the target, and by the time this
//!   runs every folder on the way has been made a real folder, so removal
//!   stays below the target; a symlink is removed as a link, and
//!   `remove_dir_all` does not follow symlinks inside what it removes.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{PlannedFile, remove_existing};
use crate::archiver::read_at_full;
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::repo::IndexedRepository;
use crate::tree::{Node, NodeKind};

/// Removes the entries of each planned folder that its tree does not name.
/// Returns how many entries were removed (a folder counts once).
pub(super) fn delete_extra(
    repo: &IndexedRepository,
    dirs: &[(PathBuf, Node, usize)],
) -> Result<u64> {
    let mut deleted = 0;
    for (path, node, _) in dirs {
        let NodeKind::Dir { subtree } = &node.kind else {
            continue;
        };
        let tree = repo.read_tree(subtree)?;
        let keep: HashSet<&[u8]> = tree.nodes.iter().map(|n| n.name.as_slice()).collect();
        let entries = fs::read_dir(path).map_err(|e| Error::io(path, "list folder", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(path, "list folder", e))?;
            let name = entry.file_name();
            if !keep.contains(name.as_bytes()) {
                let extra = path.join(&name);
                tracing::debug!("{}: not in the snapshot, deleting", extra.display());
                remove_existing(&extra)?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

/// Prepares an existing file at `path` for an in-place update: when it is a
/// regular file with a single name that can be opened for writing, sets its
/// length to `size` and returns whether that changed it. `None`: nothing
/// reusable there (the caller creates the file afresh).
pub(super) fn prepare_existing(path: &Path, size: u64) -> Result<Option<bool>> {
    let before = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, "inspect", e)),
    };
    if !before.file_type().is_file() || before.nlink() != 1 {
        return Ok(None);
    }
    let Ok(file) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return Ok(None);
    };
    let meta = file.metadata().map_err(|e| Error::io(path, "inspect", e))?;
    if !meta.file_type().is_file() || meta.ino() != before.ino() || meta.dev() != before.dev() {
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
    files: &[PlannedFile],
    targets: &mut HashMap<ChunkId, Vec<(usize, u64)>>,
) -> Result<Kept> {
    let found: Vec<(usize, FileMatch)> = files
        .par_iter()
        .enumerate()
        .filter(|(_, f)| f.reuse)
        .map(|(fi, f)| compare_file(repo, f).map(|m| (fi, m)))
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

fn compare_file(repo: &IndexedRepository, f: &PlannedFile) -> Result<FileMatch> {
    let mut m = FileMatch {
        in_place: Vec::new(),
        untouched: true,
    };
    let NodeKind::File { content } = &f.node.kind else {
        return Ok(m);
    };
    let io = |action: &'static str| move |e| Error::io(&f.path, action, e);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&f.path)
        .map_err(io("open for comparing"))?;
    let mut buf = Vec::new();
    let mut off = 0u64;
    for e in content {
        match e.chunk {
            Some(chunk) => {
                buf.resize(e.len as usize, 0);
                let n = read_at_full(&file, &mut buf, off).map_err(io("read"))?;
                if n == buf.len() && repo.crypto().content_id(&buf) == chunk.0 {
                    m.in_place.push((chunk, off, e.len));
                } else {
                    m.untouched = false;
                }
            }
            None => {
                if clear_range(&file, off, e.len).map_err(io("clear a hole"))? {
                    m.untouched = false;
                }
            }
        }
        off += e.len;
    }
    Ok(m)
}

/// Makes `len` bytes at `off` read as zeros; returns whether anything had to
/// change. Only data segments are read (holes are skipped with SEEK_DATA).
fn clear_range(file: &File, off: u64, len: u64) -> std::io::Result<bool> {
    const BLOCK: usize = 1 << 20;
    let end = off + len;
    let mut changed = false;
    let mut buf = vec![0u8; BLOCK];
    for (seg_start, seg_end) in data_within(file, off, end) {
        let mut pos = seg_start;
        while pos < seg_end {
            let want = ((seg_end - pos) as usize).min(BLOCK);
            let n = read_at_full(file, &mut buf[..want], pos)?;
            if buf[..n].iter().any(|&b| b != 0) {
                changed = true;
                if !punch_hole(file, pos, n as u64) {
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

/// The data segments of `file` within `[start, end)`; the whole range when
/// the file system cannot tell data from holes.
fn data_within(file: &File, start: u64, end: u64) -> Vec<(u64, u64)> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        // SAFETY: lseek on a valid descriptor has no memory-safety preconditions.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole from here on
            }
            return vec![(start, end)];
        }
        let data = data as u64;
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let seg_end = if hole < 0 {
            end
        } else {
            (hole as u64).min(end)
        };
        out.push((data, seg_end));
        pos = seg_end;
    }
    out
}

/// Deallocates a range, keeping the file size; false where unsupported.
fn punch_hole(file: &File, off: u64, len: u64) -> bool {
    // SAFETY: fallocate on a valid descriptor has no memory-safety preconditions.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as libc::off_t,
            len as libc::off_t,
        )
    };
    r == 0
}

/// Removes extended attributes that `node` does not have (an existing entry
/// may carry ones the snapshot never had). Attributes this process may not
/// remove are left with a warning, as `apply_metadata` does when setting.
pub(super) fn remove_extra_xattrs(path: &Path, node: &Node) -> std::io::Result<()> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        if node.xattrs.iter().any(|x| x.name == name.as_bytes()) {
            continue;
        }
        if let Err(e) = xattr::remove(path, &name) {
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
