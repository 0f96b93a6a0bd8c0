//! Reading and applying file metadata (POSIX): owners, modes, times, xattrs,
//! device numbers and holes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use crate::sys;
use crate::tree::{Node, NodeKind, Xattr};

/// Caches uid → user name and gid → group name lookups.
#[derive(Default)]
pub struct NameCache {
    users: Mutex<HashMap<u32, Option<String>>>,
    groups: Mutex<HashMap<u32, Option<String>>>,
}

impl NameCache {
    pub fn user(&self, uid: u32) -> Option<String> {
        self.users
            .lock()
            .expect("name cache")
            .entry(uid)
            .or_insert_with(|| sys::host::user_name(uid))
            .clone()
    }
    pub fn group(&self, gid: u32) -> Option<String> {
        self.groups
            .lock()
            .expect("name cache")
            .entry(gid)
            .or_insert_with(|| sys::host::group_name(gid))
            .clone()
    }
}

/// The extended attributes of `path` (not following a final symlink).
pub fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        if let Some(value) = xattr::get(path, &name)? {
            out.push(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A node for `name` with metadata from `meta`; `kind` filled by the caller.
pub fn node_from_meta(
    name: &OsStr,
    meta: &Metadata,
    kind: NodeKind,
    names: &NameCache,
    xattrs: Vec<Xattr>,
) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: names.user(meta.uid()),
        group: names.group(meta.gid()),
        size: if meta.is_file() { meta.len() } else { 0 },
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        xattrs,
    }
}

/// The file type of `meta` as a node kind without content.
pub enum SourceKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char(u64),
    Block(u64),
    Socket,
}

pub fn source_kind(meta: &Metadata) -> SourceKind {
    let t = meta.file_type();
    if t.is_file() {
        SourceKind::File
    } else if t.is_dir() {
        SourceKind::Dir
    } else if t.is_symlink() {
        SourceKind::Symlink
    } else if t.is_fifo() {
        SourceKind::Fifo
    } else if t.is_char_device() {
        SourceKind::Char(meta.rdev())
    } else if t.is_block_device() {
        SourceKind::Block(meta.rdev())
    } else {
        SourceKind::Socket
    }
}

/// The data segments `(offset, len)` of an open file of `size` bytes; the gaps
/// between them are holes. Files without holes give one segment.
///
/// Allocated but unwritten extents (from `fallocate`, or a restore's zeroed
/// runs) read as zeros and `SEEK_HOLE` reports them as holes; they are data
/// here, so the space they hold is restored as allocated, not sparse.
pub fn data_segments(file: &File, meta: &Metadata) -> Vec<(u64, u64)> {
    let segs = seek_data_segments(file, meta);
    if meta.len() == 0 || segs == [(0, meta.len())] {
        return segs;
    }
    match sys::extents::unwritten_extents(file) {
        Ok(unwritten) if !unwritten.is_empty() => union(segs, unwritten, meta.len()),
        _ => segs,
    }
}

/// Both lists of `(offset, len)` as one sorted list without overlaps, cut
/// at `size`.
fn union(mut a: Vec<(u64, u64)>, b: Vec<(u64, u64)>, size: u64) -> Vec<(u64, u64)> {
    a.extend(b);
    a.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(a.len());
    for (off, len) in a {
        let end = (off + len).min(size);
        if end <= off {
            continue;
        }
        match out.last_mut() {
            Some((o, l)) if off <= *o + *l => *l = (*l).max(end - *o),
            _ => out.push((off, end - off)),
        }
    }
    out
}

/// [`data_segments`] as `SEEK_DATA`/`SEEK_HOLE` see them.
fn seek_data_segments(file: &File, meta: &Metadata) -> Vec<(u64, u64)> {
    let size = meta.len();
    if size == 0 {
        return vec![];
    }
    if meta.blocks() * 512 >= size {
        return vec![(0, size)];
    }
    match sys::extents::data_ranges(file, 0, size) {
        Some(ranges) => ranges.into_iter().map(|(s, e)| (s, e - s)).collect(),
        // SEEK_DATA unsupported: treat as dense.
        None => vec![(0, size)],
    }
}

/// Sets owner (if root), xattrs, mode and times of `path` from `node`, in the
/// order that keeps setuid bits and ACL masks right. Does not follow symlinks.
pub fn apply_metadata(path: &Path, node: &Node, set_owner: bool) -> std::io::Result<()> {
    let is_link = matches!(node.kind, NodeKind::Symlink { .. });
    if set_owner {
        sys::meta::lchown(path, node.uid, node.gid)?;
    }
    if !is_link {
        for x in &node.xattrs {
            let name = OsStr::from_bytes(&x.name);
            if let Err(e) = xattr::set(path, name, &x.value) {
                // Unprivileged users cannot set trusted.* / security.*; say so, don't fail the restore.
                if e.raw_os_error() != Some(libc::EPERM) && e.raw_os_error() != Some(libc::ENOTSUP)
                {
                    return Err(e);
                }
                tracing::warn!(
                    "{}: could not set xattr {}: {e}",
                    path.display(),
                    name.to_string_lossy()
                );
            }
        }
        sys::meta::chmod(path, node.mode)?;
    }
    // Access times are not recorded (they would change every tree on every
    // run); a restored entry's atime is its mtime.
    sys::meta::set_times_nofollow(path, node.mtime_ns)
}

/// Like [`apply_metadata`], on an open regular file (saves path lookups).
pub fn apply_metadata_fd(file: &File, node: &Node, set_owner: bool) -> std::io::Result<()> {
    use xattr::FileExt as _;
    if set_owner {
        sys::meta::fchown(file, node.uid, node.gid)?;
    }
    for x in &node.xattrs {
        let name = OsStr::from_bytes(&x.name);
        if let Err(e) = file.set_xattr(name, &x.value) {
            if e.raw_os_error() != Some(libc::EPERM) && e.raw_os_error() != Some(libc::ENOTSUP) {
                return Err(e);
            }
            tracing::warn!("could not set xattr {}: {e}", name.to_string_lossy());
        }
    }
    sys::meta::fchmod(file, node.mode)?;
    sys::meta::set_times_fd(file, node.mtime_ns)
}

/// Creates a fifo or device node.
pub fn make_special(path: &Path, node: &Node) -> std::io::Result<()> {
    let (kind, rdev) = match node.kind {
        NodeKind::Fifo => (libc::S_IFIFO, 0),
        NodeKind::CharDevice { rdev } => (libc::S_IFCHR, rdev),
        NodeKind::BlockDevice { rdev } => (libc::S_IFBLK, rdev),
        _ => return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
    };
    sys::meta::mknod(path, kind | (node.mode & 0o777), rdev)
}

/// Whether this process may set file owners.
pub fn is_root() -> bool {
    sys::host::euid() == 0
}

#[cfg(test)]
mod tests {
    use super::union;

    #[test]
    fn union_merges_overlapping_and_touching_segments_and_cuts_at_the_size() {
        let data = vec![(0, 10), (50, 10)];
        let unwritten = vec![(8, 4), (20, 5), (25, 5), (55, 100)];
        assert_eq!(
            union(data, unwritten, 90),
            vec![(0, 12), (20, 10), (50, 40)]
        );
        assert_eq!(union(vec![], vec![(100, 5)], 90), vec![]);
    }
}
