//! The engine's answers in the kernel's terms: attributes, times, device
//! numbers, errors, and how long the kernel may cache each.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, ReplyXattr};
use pvsnap_engine::vfs::{Attr, FileKind, VfsError};

/// How long the kernel may cache a snapshot's entries: they never change.
const STABLE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long the kernel may cache the layout's folders and links, which change
/// when snapshots are added.
const LAYOUT_TTL: Duration = Duration::from_secs(1);
/// Block size reported by `stat`; tools size their reads by it.
pub(crate) const BLKSIZE: u32 = 128 * 1024;
pub(crate) fn errno(e: &VfsError) -> Errno {
    if let VfsError::Repo(err) = e {
        tracing::warn!("{err}");
    }
    Errno::from_i32(e.errno())
}

pub(crate) fn time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// A glibc `dev_t` in the kernel's 32-bit `new_encode_dev` form, which FUSE carries.
pub(crate) fn encode_rdev(dev: u64) -> u32 {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u32
}

pub(crate) fn file_attr(a: &Attr) -> FileAttr {
    let mtime = time(a.mtime_ns);
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: mtime,
        mtime,
        ctime: time(a.ctime_ns),
        crtime: mtime,
        kind: match a.kind {
            FileKind::Dir => FileType::Directory,
            FileKind::File => FileType::RegularFile,
            FileKind::Symlink => FileType::Symlink,
            FileKind::Fifo => FileType::NamedPipe,
            FileKind::CharDevice => FileType::CharDevice,
            FileKind::BlockDevice => FileType::BlockDevice,
        },
        perm: (a.perm & 0o7777) as u16,
        nlink: a.nlink.min(u32::MAX as u64) as u32,
        uid: a.uid,
        gid: a.gid,
        rdev: encode_rdev(a.rdev),
        blksize: BLKSIZE,
        flags: 0,
    }
}

pub(crate) fn ttl(a: &Attr) -> &'static Duration {
    if a.stable { &STABLE_TTL } else { &LAYOUT_TTL }
}

/// Answers an xattr request: the size when asked for it, else the bytes.
pub(crate) fn reply_xattr(bytes: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_survive_the_kernel_encoding() {
        // glibc makedev(major, minor), and the kernel's new_decode_dev.
        let makedev = |major: u64, minor: u64| {
            ((major & 0xfff) << 8)
                | ((major & !0xfff) << 32)
                | (minor & 0xff)
                | ((minor & !0xff) << 12)
        };
        let decode = |d: u32| {
            let d = d as u64;
            ((d & 0xfff00) >> 8, (d & 0xff) | ((d >> 12) & 0xfff00))
        };
        for (major, minor) in [(1, 3), (8, 1), (259, 65536), (4095, 1048575), (0, 0)] {
            assert_eq!(decode(encode_rdev(makedev(major, minor))), (major, minor));
        }
    }

    #[test]
    fn times_before_1970_are_kept() {
        assert_eq!(
            time(-1_500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        assert_eq!(time(2_000_000_001), UNIX_EPOCH + Duration::new(2, 1));
    }
}
