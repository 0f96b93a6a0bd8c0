//! Reading and applying file metadata (POSIX): owners, modes, times, xattrs,
//! device numbers and holes.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

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
            .or_insert_with(|| lookup_user(uid))
            .clone()
    }
    pub fn group(&self, gid: u32) -> Option<String> {
        self.groups
            .lock()
            .expect("name cache")
            .entry(gid)
            .or_insert_with(|| lookup_group(gid))
            .clone()
    }
}

fn lookup_user(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16384];
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers refer to live, correctly sized buffers owned here.
    let r =
        unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside buf.
    Some(
        unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn lookup_group(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16384];
    let mut grp: libc::group = unsafe_zeroed_group();
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers refer to live, correctly sized buffers owned here.
    let r =
        unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points to a NUL-terminated string inside buf.
    Some(
        unsafe { std::ffi::CStr::from_ptr(grp.gr_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is a plain C struct for which all-zero bytes are valid.
    unsafe { std::mem::zeroed() }
}
fn unsafe_zeroed_group() -> libc::group {
    // SAFETY: group is a plain C struct for which all-zero bytes are valid.
    unsafe { std::mem::zeroed() }
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
    match unwritten_extents(file) {
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

/// The file's allocated but unwritten extents `(offset, len)`, from the
/// `FS_IOC_FIEMAP` ioctl; an error where the file system has no extent map.
pub fn unwritten_extents(file: &File) -> std::io::Result<Vec<(u64, u64)>> {
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const EXTENT_LAST: u32 = 0x1;
    const EXTENT_UNWRITTEN: u32 = 0x800;
    const BATCH: usize = 128;
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Map {
        start: u64,
        length: u64,
        flags: u32,
        mapped: u32,
        count: u32,
        reserved: u32,
        extents: [Extent; BATCH],
    }
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let mut map = Map {
            start,
            length: u64::MAX - start,
            flags: 0,
            mapped: 0,
            count: BATCH as u32,
            reserved: 0,
            extents: [Extent::default(); BATCH],
        };
        // SAFETY: `map` is a `struct fiemap` followed by room for `count`
        // extents, as the ioctl expects; it lives across the call.
        if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map as *mut Map) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let got = &map.extents[..(map.mapped as usize).min(BATCH)];
        let Some(last) = got.last() else {
            return Ok(out);
        };
        for e in got {
            if e.flags & EXTENT_UNWRITTEN != 0 {
                match out.last_mut() {
                    Some((o, l)) if *o + *l == e.logical => *l += e.length,
                    _ => out.push((e.logical, e.length)),
                }
            }
        }
        let next = last.logical + last.length;
        if last.flags & EXTENT_LAST != 0 || got.len() < BATCH || next <= start {
            return Ok(out);
        }
        start = next;
    }
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
    let fd = file.as_raw_fd();
    let mut segs = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek on a valid fd has no memory-safety preconditions.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error().raw_os_error();
            if err == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            return vec![(0, size)]; // SEEK_DATA unsupported: treat as dense
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 {
            size as i64
        } else {
            hole.min(size as i64)
        };
        if end > data {
            segs.push((data as u64, (end - data) as u64));
        }
        pos = end;
        if hole < 0 {
            break;
        }
    }
    segs
}

fn cstr(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Sets owner (if root), xattrs, mode and times of `path` from `node`, in the
/// order that keeps setuid bits and ACL masks right. Does not follow symlinks.
pub fn apply_metadata(path: &Path, node: &Node, set_owner: bool) -> std::io::Result<()> {
    let c = cstr(path)?;
    let is_link = matches!(node.kind, NodeKind::Symlink { .. });
    if set_owner {
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::lchown(c.as_ptr(), node.uid, node.gid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
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
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::chmod(c.as_ptr(), node.mode as libc::mode_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let ts = |ns: i64| libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    };
    // Access times are not recorded (they would change every tree on every
    // run); a restored entry's atime is its mtime.
    let times = [ts(node.mtime_ns), ts(node.mtime_ns)];
    // SAFETY: c is valid and times points to two timespecs.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Like [`apply_metadata`], on an open regular file (saves path lookups).
pub fn apply_metadata_fd(file: &File, node: &Node, set_owner: bool) -> std::io::Result<()> {
    use xattr::FileExt as _;
    let fd = file.as_raw_fd();
    // SAFETY: fd is a valid open descriptor for the duration of these calls.
    if set_owner && unsafe { libc::fchown(fd, node.uid, node.gid) } != 0 {
        return Err(std::io::Error::last_os_error());
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
    // SAFETY: as above.
    if unsafe { libc::fchmod(fd, node.mode as libc::mode_t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let ts = libc::timespec {
        tv_sec: node.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: node.mtime_ns.rem_euclid(1_000_000_000),
    };
    let times = [ts, ts];
    // SAFETY: as above; times points to two timespecs.
    if unsafe { libc::futimens(fd, times.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Creates a fifo or device node.
pub fn make_special(path: &Path, node: &Node) -> std::io::Result<()> {
    let c = cstr(path)?;
    let (kind, rdev) = match node.kind {
        NodeKind::Fifo => (libc::S_IFIFO, 0),
        NodeKind::CharDevice { rdev } => (libc::S_IFCHR, rdev),
        NodeKind::BlockDevice { rdev } => (libc::S_IFBLK, rdev),
        _ => return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
    };
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe {
        libc::mknod(
            c.as_ptr(),
            kind | (node.mode & 0o777) as libc::mode_t,
            rdev as libc::dev_t,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this process may set file owners.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
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
