//! Owners, modes, times and special files by path (never following a final
//! symlink where the call allows) and by open descriptor.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Access and modification time, both `ns` after the epoch.
fn times(ns: i64) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    };
    [ts, ts]
}

/// `lchown`: the owner of `path` itself, not of what a symlink points to.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    check(unsafe { libc::lchown(c.as_ptr(), uid, gid) })
}

/// `chmod` (follows a symlink: callers do not call it on one).
pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    check(unsafe { libc::chmod(c.as_ptr(), mode as libc::mode_t) })
}

/// Access and modification time of `path` itself (`AT_SYMLINK_NOFOLLOW`),
/// both set to `ns` after the epoch.
pub fn set_times_nofollow(path: &Path, ns: i64) -> io::Result<()> {
    let c = cstr(path)?;
    let times = times(ns);
    // SAFETY: c is valid and times points to two timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// `fchown` of an open file.
pub fn fchown(file: &File, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: the descriptor is open for the duration of the call.
    check(unsafe { libc::fchown(file.as_raw_fd(), uid, gid) })
}

/// `fchmod` of an open file.
pub fn fchmod(file: &File, mode: u32) -> io::Result<()> {
    // SAFETY: the descriptor is open for the duration of the call.
    check(unsafe { libc::fchmod(file.as_raw_fd(), mode as libc::mode_t) })
}

/// Access and modification time of an open file, both `ns` after the epoch.
pub fn set_times_fd(file: &File, ns: i64) -> io::Result<()> {
    let times = times(ns);
    // SAFETY: the descriptor is open; times points to two timespecs.
    check(unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) })
}

/// `mknod`: a fifo or device node at `path` (`mode` holds the type bits).
pub fn mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    check(unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) })
}
