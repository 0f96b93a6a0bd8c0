//! The mount's lifecycle: mounting (mount(2) as root, `fusermount3`
//! otherwise), serving on background threads, unmounting or detaching.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use pvsnap_engine::vfs::Vfs;

use crate::fs::PvsnapFs;
use crate::mountinfo::mount_table;

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
    let fs = PvsnapFs::new(vfs);
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
/// 128 KiB; a wider window lets the kernel ask for
/// [`MAX_READ`](crate::fs::MAX_READ) at a time, ahead of the reader. Best
/// effort: it needs root and sysfs.
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
