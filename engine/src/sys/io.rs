//! Reading and descriptor flags the standard library does not cover.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Reads up to `want` bytes at `offset` of `file` and appends them to
/// `buf`, straight into its spare capacity: the pooled buffers of restore
/// and the mount are neither zero-filled first nor seen as initialised
/// before the kernel wrote them. Returns how many bytes were read (0 at the
/// end of the file); `EINTR` is retried.
pub fn read_at_append(
    file: &File,
    buf: &mut Vec<u8>,
    want: usize,
    offset: u64,
) -> io::Result<usize> {
    buf.reserve(want);
    let spare = buf.spare_capacity_mut();
    let len = want.min(spare.len());
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let n = loop {
        // SAFETY: the kernel writes at most `len` bytes to the pointer, all
        // inside the spare capacity (`len <= spare.len()`); no reference to
        // uninitialised bytes is made.
        let r = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), len, offset) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: pread initialised the first `n <= len` bytes of the spare
    // capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Renames `from` to `to` unless `to` exists (`renameat2` with
/// `RENAME_NOREPLACE`): `AlreadyExists` then, and nothing changes. File
/// systems that cannot promise it (NFS, older kernels) fail with `EINVAL`
/// or `ENOSYS`, and nothing is renamed.
pub fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths that live across the call; the
    // kernel only reads them.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Switches `O_DIRECT` off for an open file.
pub fn clear_direct(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this `File` owns, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads until `buf` is full or the file ends; returns bytes read.
pub fn read_at_full(file: &File, buf: &mut [u8], mut pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match std::os::unix::fs::FileExt::read_at(file, &mut buf[done..], pos) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn appends_what_was_read_and_nothing_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create_new(dir.path().join("f")).unwrap();
        f.write_all_at(b"0123456789", 0).unwrap();
        let f = File::open(dir.path().join("f")).unwrap();
        let mut buf = b"ab".to_vec();
        assert_eq!(read_at_append(&f, &mut buf, 4, 3).unwrap(), 4);
        assert_eq!(buf, b"ab3456");
        assert_eq!(read_at_append(&f, &mut buf, 100, 8).unwrap(), 2);
        assert_eq!(buf, b"ab345689");
        assert_eq!(read_at_append(&f, &mut buf, 5, 10).unwrap(), 0);
        assert_eq!(buf.len(), 8);
    }
}
