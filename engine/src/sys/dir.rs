//! Folders held open by descriptor, and entries made and opened relative to
//! them (`openat`, `mkdirat`, `symlinkat`, `mknodat`, `linkat`, `unlinkat`).
//!
//! Every name given here is one path component and is never followed when
//! it is a symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), and a folder is
//! only ever entered through [`Dir::open_dir`] (`O_DIRECTORY|O_NOFOLLOW`).
//! So a chain of [`Dir`]s from a restore target reaches only what is really
//! below it: a folder swapped for a symlink on the way makes the step fail
//! (`ELOOP`/`ENOTDIR`) instead of leading elsewhere.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// An open folder.
#[derive(Debug)]
pub struct Dir {
    file: File,
}

/// What stands at a name, as `fstatat` without following symlinks says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryInfo {
    pub kind: EntryKind,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    Other,
}

fn cname(name: &OsStr) -> io::Result<CString> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} is not a single file name", name.to_string_lossy()),
        ));
    }
    CString::new(b).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

impl Dir {
    /// Opens the folder at `path`; the last component is not followed.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: c is a valid NUL-terminated string; the flags create nothing.
        let fd = unsafe { libc::open(c.as_ptr(), DIR_FLAGS) };
        Self::from_fd(fd)
    }

    fn from_fd(fd: RawFd) -> io::Result<Dir> {
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by the kernel and is owned by no one else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Dir { file })
    }

    /// The folder as a [`File`], for metadata calls on its descriptor.
    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// Opens the folder `name` in this one; a symlink there is an error.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let c = cname(name)?;
        // SAFETY: valid descriptor and NUL-terminated name; creates nothing.
        let fd = unsafe { libc::openat(self.file.as_raw_fd(), c.as_ptr(), DIR_FLAGS) };
        Self::from_fd(fd)
    }

    /// Opens (and with `O_CREAT` in `flags` creates) the file `name`;
    /// `O_NOFOLLOW` and `O_CLOEXEC` are always added.
    pub fn open_file(&self, name: &OsStr, flags: libc::c_int, mode: u32) -> io::Result<File> {
        let c = cname(name)?;
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: valid descriptor and NUL-terminated name; mode is passed
        // as the variadic argument openat expects with O_CREAT.
        let fd = unsafe {
            libc::openat(
                self.file.as_raw_fd(),
                c.as_ptr(),
                flags,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as in `from_fd`.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn create_dir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let c = cname(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::mkdirat(self.file.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })
    }

    pub fn symlink(&self, target: &OsStr, name: &OsStr) -> io::Result<()> {
        let c = cname(name)?;
        let t = CString::new(target.as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: valid descriptor and two NUL-terminated strings.
        check(unsafe { libc::symlinkat(t.as_ptr(), self.file.as_raw_fd(), c.as_ptr()) })
    }

    /// `mknodat`: a fifo or device node (`mode` holds the type bits).
    pub fn mknod(&self, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
        let c = cname(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe {
            libc::mknodat(
                self.file.as_raw_fd(),
                c.as_ptr(),
                mode as libc::mode_t,
                rdev as libc::dev_t,
            )
        })
    }

    /// A hard link `name` here to `from_name` in `from` (not followed).
    pub fn hard_link(&self, name: &OsStr, from: &Dir, from_name: &OsStr) -> io::Result<()> {
        let (c, f) = (cname(name)?, cname(from_name)?);
        // SAFETY: valid descriptors and NUL-terminated names.
        check(unsafe {
            libc::linkat(
                from.file.as_raw_fd(),
                f.as_ptr(),
                self.file.as_raw_fd(),
                c.as_ptr(),
                0,
            )
        })
    }

    /// What is at `name`, not following a symlink; `None` when nothing.
    pub fn entry(&self, name: &OsStr) -> io::Result<Option<EntryInfo>> {
        let c = cname(name)?;
        // SAFETY: stat is a plain C struct for which all-zero bytes are valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, NUL-terminated name, st is writable.
        let r = unsafe {
            libc::fstatat(
                self.file.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                _ => Err(e),
            };
        }
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => EntryKind::Dir,
            libc::S_IFREG => EntryKind::File,
            libc::S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        Ok(Some(EntryInfo {
            kind,
            ino: st.st_ino,
            dev: st.st_dev,
            nlink: st.st_nlink,
        }))
    }

    /// Removes the non-folder `name` (a symlink itself, never its target).
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        let c = cname(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::unlinkat(self.file.as_raw_fd(), c.as_ptr(), 0) })
    }

    /// Removes whatever is at `name`; a folder with everything in it. Only
    /// what is below this folder is touched: folders are entered through
    /// [`Dir::open_dir`], and symlinks are removed, not followed.
    pub fn remove_all(&self, name: &OsStr) -> io::Result<()> {
        match self.entry(name)? {
            None => Ok(()),
            Some(e) if e.kind == EntryKind::Dir => {
                let sub = self.open_dir(name)?;
                for child in sub.names()? {
                    sub.remove_all(&child)?;
                }
                let c = cname(name)?;
                // SAFETY: valid descriptor and NUL-terminated name.
                check(unsafe {
                    libc::unlinkat(self.file.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR)
                })
            }
            Some(_) => self.remove_file(name),
        }
    }

    /// The names in this folder (without `.` and `..`).
    pub fn names(&self) -> io::Result<Vec<std::ffi::OsString>> {
        // fdopendir takes the descriptor over, so give it a copy.
        let dup = self.file.try_clone()?;
        let fd: OwnedFd = dup.into();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        // SAFETY: raw is an open descriptor we own; on success the stream owns it.
        let stream = unsafe { libc::fdopendir(raw) };
        if stream.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so raw is still ours to close.
            unsafe { libc::close(raw) };
            return Err(e);
        }
        // The copy shares its position with the original: start over.
        // SAFETY: stream is a valid directory stream.
        unsafe { libc::rewinddir(stream) };
        let mut out = Vec::new();
        let result = loop {
            // readdir reports errors only through errno.
            // SAFETY: errno location is thread-local and always valid.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: stream is a valid directory stream until closedir below.
            let ent = unsafe { libc::readdir(stream) };
            if ent.is_null() {
                let e = io::Error::last_os_error();
                break if e.raw_os_error().unwrap_or(0) == 0 {
                    Ok(())
                } else {
                    Err(e)
                };
            }
            // SAFETY: d_name of a returned entry is a NUL-terminated string
            // valid until the next readdir on the stream.
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
            let b = name.to_bytes();
            if b != b"." && b != b".." {
                out.push(OsStr::from_bytes(b).to_os_string());
            }
        };
        // SAFETY: stream is valid and closed exactly once.
        unsafe { libc::closedir(stream) };
        result.map(|()| out)
    }

    /// A path naming `name` in this very folder, whatever happens to the
    /// folder's own path meanwhile (`/proc/self/fd/N/name`), for the few
    /// calls that have no descriptor-relative form (extended attributes of
    /// a symlink or a special file). The caller must not follow its last
    /// component.
    pub fn proc_path(&self, name: &OsStr) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        p.push(name);
        p
    }

    /// `fchownat` without following `name`.
    pub fn chown(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        let c = cname(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe {
            libc::fchownat(
                self.file.as_raw_fd(),
                c.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    /// `fchmodat` without following `name` (a symlink there is an error).
    /// Where the C library cannot change a mode without following (old
    /// kernels without `/proc`), the entry is checked not to be a symlink
    /// and changed the plain way.
    pub fn chmod(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let c = cname(name)?;
        let at = |flags| {
            // SAFETY: valid descriptor and NUL-terminated name.
            check(unsafe {
                libc::fchmodat(
                    self.file.as_raw_fd(),
                    c.as_ptr(),
                    mode as libc::mode_t,
                    flags,
                )
            })
        };
        match at(libc::AT_SYMLINK_NOFOLLOW) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => match self.entry(name)? {
                Some(i) if i.kind != EntryKind::Symlink => at(0),
                _ => Err(e),
            },
            r => r,
        }
    }

    /// `utimensat` (access and modification time) without following `name`.
    pub fn set_times(&self, name: &OsStr, ns: i64) -> io::Result<()> {
        let c = cname(name)?;
        let ts = libc::timespec {
            tv_sec: ns.div_euclid(1_000_000_000),
            tv_nsec: ns.rem_euclid(1_000_000_000),
        };
        let times = [ts, ts];
        // SAFETY: valid descriptor, NUL-terminated name, two timespecs.
        check(unsafe {
            libc::utimensat(
                self.file.as_raw_fd(),
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }
}
