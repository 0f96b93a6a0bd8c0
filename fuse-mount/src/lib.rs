//! The FUSE adapter of pvsnap: it serves the engine's read-only
//! [`pvsnap_engine::vfs::Vfs`] to the kernel and does nothing else. Every path
//! lookup, listing and read is the engine's; this crate converts attributes and
//! errors and chooses how long the kernel may cache what.
//!
//! The mount is read-only (`ro`, `nodev`, `nosuid`, `default_permissions`):
//! the kernel itself refuses writes with `EROFS`, and every write-ish request
//! that reaches us is answered `EROFS` too. Requests are served by a
//! multithreaded fuser session (one `/dev/fuse` clone per thread), so a slow
//! read does not hold up a `stat`.
//!
//! Files are opened for direct I/O where the kernel allows mmap of such files
//! (Linux 6.6+): reads bypass the kernel's page cache and the vfs's own chunk
//! cache and read-ahead serve them, which halves the CPU a sequential read
//! costs. Elsewhere the page cache is used, with a widened read-ahead window.
//!
//! Mounting needs no libfuse: as root this crate calls mount(2) itself; other
//! users need the setuid `fusermount3`.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Config, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, MountOption,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, Session, SessionACL, SessionUnmounter, TimeOrNow, WriteFlags,
};
use pvsnap_engine::vfs::{Attr, FileKind, Vfs, VfsError};

/// How long the kernel may cache a snapshot's entries: they never change.
const STABLE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long the kernel may cache the layout's folders and links, which change
/// when snapshots are added.
const LAYOUT_TTL: Duration = Duration::from_secs(1);
/// Block size reported by `stat`; tools size their reads by it.
const BLKSIZE: u32 = 128 * 1024;
/// The largest read request the kernel may send (it caps this at its own limit).
const MAX_READ: u32 = 1024 * 1024;
/// The kernel's read-ahead window on the mount, in KiB.
const READAHEAD_KB: u32 = 4096;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Threads serving requests.
    pub threads: usize,
    /// Let users other than the mounting one in (modes are still enforced).
    pub allow_other: bool,
    /// The "device" shown in `/proc/mounts`.
    pub fs_name: String,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            threads: 4,
            allow_other: false,
            fs_name: "pvsnap".into(),
        }
    }
}

/// How a mount ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Unmounted and every request served.
    Clean,
    /// The mount was in use: it was detached, and ends when its last user goes.
    Lazy,
}

/// A mounted filesystem, served by background threads.
pub struct Mount {
    session: Option<JoinHandle<io::Result<()>>>,
    mountpoint: PathBuf,
    /// Set when fuser mounted through `fusermount3` (not root) and must unmount too.
    fusermount: Option<SessionUnmounter>,
}

/// Mounts `vfs` read-only on `mountpoint` and serves it in the background.
///
/// As root the mount is made here with mount(2) (type `fuse.pvsnap`), so that
/// this crate alone decides when and how it is unmounted; other users go
/// through fuser and the setuid `fusermount3`.
pub fn mount(vfs: Arc<Vfs>, mountpoint: &Path, opts: &MountOptions) -> io::Result<Mount> {
    let mountpoint = mountpoint.canonicalize()?;
    let acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
        MountOption::FSName(opts.fs_name.clone()),
        MountOption::Subtype("pvsnap".into()),
    ];
    config.acl = acl;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let fs = PvsnapFs {
        vfs,
        direct_io: false,
    };
    // SAFETY: geteuid has no preconditions.
    let (session, fusermount) = if unsafe { libc::geteuid() } == 0 {
        let fd = mount_fuse(&mountpoint, opts)?;
        match Session::from_fd(fs, fd, acl, config) {
            Ok(s) => (s, None),
            Err(e) => {
                detach(&mountpoint);
                return Err(e);
            }
        }
    } else {
        let mut s = Session::new(fs, &mountpoint, &config)?;
        let u = s.unmount_callable();
        (s, Some(u))
    };
    let session = std::thread::Builder::new()
        .name("pvsnap-fuse".into())
        .spawn(move || session.run())?;
    if fusermount.is_none() {
        raise_readahead(&mountpoint);
    }
    Ok(Mount {
        session: Some(session),
        mountpoint,
        fusermount,
    })
}

/// Opens /dev/fuse and mounts it read-only on `mountpoint`; returns the device.
fn mount_fuse(mountpoint: &Path, opts: &MountOptions) -> io::Result<OwnedFd> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let fd = OwnedFd::from(dev);
    // SAFETY: getuid and getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode={:o},user_id={uid},group_id={gid},default_permissions",
        fd.as_raw_fd(),
        libc::S_IFDIR | 0o755
    );
    if opts.allow_other {
        data.push_str(",allow_other");
    }
    let c = |s: &[u8]| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (source, target, fstype, data) = (
        c(opts.fs_name.as_bytes())?,
        c(mountpoint.as_os_str().as_bytes())?,
        c(b"fuse.pvsnap")?,
        c(data.as_bytes())?,
    );
    let flags = libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOSUID | libc::MS_NOATIME;
    // SAFETY: all four strings are valid and NUL-terminated for the call.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Widens the kernel's read-ahead window of the mount to [`READAHEAD_KB`]. By
/// default it is 128 KiB, and a sequential reader then costs one request per
/// 128 KiB; a wider window lets the kernel ask for [`MAX_READ`] at a time, ahead
/// of the reader. Best effort: it needs root and sysfs.
fn raise_readahead(mountpoint: &Path) {
    let table = match mount_table() {
        Ok(t) => t,
        Err(e) => return tracing::debug!("cannot read the mount table: {e}"),
    };
    let Some(entry) = table.iter().rev().find(|e| e.point == mountpoint) else {
        return;
    };
    let knob = format!("/sys/class/bdi/{}/read_ahead_kb", entry.device);
    if let Err(e) = std::fs::write(&knob, READAHEAD_KB.to_string()) {
        tracing::debug!("{knob}: cannot raise the read-ahead: {e}");
    }
}

/// One mount, as `/proc/self/mountinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted device.
    pub device: String,
    pub point: PathBuf,
}

/// The mounts this process sees.
pub fn mount_table() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read("/proc/self/mountinfo")?))
}

/// Whether `path` (absolute, resolved) is a mount point.
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    Ok(mount_table()?.iter().any(|e| e.point == path))
}

/// Fields 3 (device) and 5 (mount point, octal escapes undone) of each line.
fn parse_mountinfo(info: &[u8]) -> Vec<MountEntry> {
    let unescape = |field: &[u8]| {
        let mut out = Vec::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            let octal = field
                .get(i + 1..i + 4)
                .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
            match octal {
                Some(d) => {
                    out.push(
                        d.iter()
                            .fold(0u8, |acc, c| acc.wrapping_mul(8) + (c - b'0')),
                    );
                    i += 4;
                }
                None => {
                    out.push(field[i]);
                    i += 1;
                }
            }
        }
        PathBuf::from(OsStr::from_bytes(&out))
    };
    info.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut fields = line.split(|&b| b == b' ');
            let device = fields.nth(2)?;
            let point = fields.nth(1)?;
            Some(MountEntry {
                device: String::from_utf8_lossy(device).into_owned(),
                point: unescape(point),
            })
        })
        .collect()
}

/// Detaches the mount at `mountpoint` (`umount -l`).
fn detach(mountpoint: &Path) -> bool {
    let Ok(path) = CString::new(mountpoint.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: path is a valid NUL-terminated string.
    unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) == 0 }
}

impl Mount {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the session ended (someone ran `fusermount3 -u` or `umount`).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.is_finished())
    }

    /// Waits for the session to end.
    pub fn join(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(s) => s
                .join()
                .map_err(|_| io::Error::other("the FUSE session panicked"))?,
            None => Ok(()),
        }
    }

    /// Unmounts. A mount in use (an open file, a shell inside) cannot be
    /// unmounted cleanly; it is then detached (`umount -l`) and the session is
    /// left running, so its users see it vanish when this process exits.
    pub fn unmount(mut self) -> io::Result<Unmounted> {
        if let Some(mut u) = self.fusermount.take() {
            u.unmount()?;
            self.join()?;
            return Ok(Unmounted::Clean);
        }
        let path = CString::new(self.mountpoint.as_os_str().as_bytes())?;
        // SAFETY: path is a valid NUL-terminated string.
        if unsafe { libc::umount(path.as_ptr()) } == 0 {
            self.join()?;
            return Ok(Unmounted::Clean);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // Unmounted meanwhile (`fusermount3 -u` raced us).
            Some(libc::EINVAL) | Some(libc::ENOENT) if self.is_finished() => {
                self.join()?;
                Ok(Unmounted::Clean)
            }
            Some(libc::EBUSY) if detach(&self.mountpoint) => Ok(Unmounted::Lazy),
            _ => Err(err),
        }
    }
}

/// The fuser filesystem: a thin translation of [`Vfs`].
struct PvsnapFs {
    vfs: Arc<Vfs>,
    /// Whether files are opened for direct I/O; see [`Filesystem::init`] below.
    direct_io: bool,
}

fn errno(e: &VfsError) -> Errno {
    if let VfsError::Repo(err) = e {
        tracing::warn!("{err}");
    }
    Errno::from_i32(e.errno())
}

fn time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// A glibc `dev_t` in the kernel's 32-bit `new_encode_dev` form, which FUSE carries.
fn encode_rdev(dev: u64) -> u32 {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u32
}

fn file_attr(a: &Attr) -> FileAttr {
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

fn ttl(a: &Attr) -> &'static Duration {
    if a.stable { &STABLE_TTL } else { &LAYOUT_TTL }
}

/// Answers an xattr request: the size when asked for it, else the bytes.
fn reply_xattr(bytes: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

impl Filesystem for PvsnapFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Listings with attributes save one lookup per entry (`ls -l`, `cp -a`).
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        if let Err(max) = config.set_max_readahead(MAX_READ) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        // Direct I/O hands each read() to us and copies our reply straight
        // into the reader's buffer: one copy fewer than going through the page
        // cache, and no kernel read-ahead to wait on (the vfs reads ahead).
        // A sequential read then costs about half the CPU. It is used only
        // where the kernel still allows mmap of such files (Linux 6.6+), so
        // that programs can still be run and mapped from the mount.
        self.direct_io = config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok();
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.vfs.lookup(parent.0, name.as_bytes()) {
            Ok(a) => reply.entry(ttl(&a), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.vfs.getattr(ino.0) {
            Ok(a) => reply.attr(ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.vfs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.vfs.getattr(ino.0) {
            // Content never changes: cached pages may outlive this open.
            Ok(a) if a.stable && self.direct_io => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Ok(a) if a.stable => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.vfs.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        match self.vfs.seek(ino.0, offset, data) {
            Ok(at) => reply.offset(at as i64),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.vfs.readdir(ino.0, offset, &mut |e| {
            let kind = file_attr(&e.attr).kind;
            reply.add(
                INodeNo(e.attr.ino),
                e.next_offset,
                kind,
                OsStr::from_bytes(e.name),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.vfs.readdir(ino.0, offset, &mut |e| {
            reply.add(
                INodeNo(e.attr.ino),
                e.next_offset,
                OsStr::from_bytes(e.name),
                ttl(&e.attr),
                &file_attr(&e.attr),
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(
            0,
            0,
            0,
            self.vfs.inode_count() as u64,
            0,
            BLKSIZE,
            255,
            BLKSIZE,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.vfs.getxattr(ino.0, name.as_bytes()) {
            Ok(v) => reply_xattr(&v, size, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.vfs.listxattr(ino.0) {
            Ok(v) => reply_xattr(&v, size, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        match self.vfs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    // Everything below would change the filesystem: read-only.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
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
    fn mountinfo_lines_give_device_and_unescaped_mount_point() {
        let info = b"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n36 22 0:31 / /mnt/with\\040space rw - fuse.pvsnap pvsnap rw\n";
        let entries = parse_mountinfo(info);
        let want = [("8:1", "/"), ("0:31", "/mnt/with space")].map(|(d, p)| MountEntry {
            device: d.into(),
            point: p.into(),
        });
        assert_eq!(entries, want);
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
