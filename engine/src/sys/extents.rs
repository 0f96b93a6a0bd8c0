//! Where a file's data lies, and changing its allocation: data ranges with
//! `SEEK_DATA`/`SEEK_HOLE`, allocated but unwritten extents with the
//! `FS_IOC_FIEMAP` ioctl, and `fallocate` to punch or zero a range.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `lseek` to the next data or hole at or after `pos`.
fn seek(file: &File, pos: u64, whence: libc::c_int) -> io::Result<u64> {
    let pos = libc::off_t::try_from(pos).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: lseek on a descriptor this `File` owns has no memory-safety
    // preconditions.
    let r = unsafe { libc::lseek(file.as_raw_fd(), pos, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// The data ranges `(start, end)` of `file` within `[start, end)`, in order;
/// the gaps between them are holes. `None` when the file system cannot tell
/// data from holes (the caller takes the whole range as data).
pub fn data_ranges(file: &File, start: u64, end: u64) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let data = match seek(file, pos, libc::SEEK_DATA) {
            Ok(d) => d,
            // Only a hole from here on.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(_) => return None,
        };
        if data >= end {
            break;
        }
        let seg_end = match seek(file, data, libc::SEEK_HOLE) {
            Ok(hole) => hole.min(end),
            Err(_) => end,
        };
        if seg_end <= data {
            break;
        }
        out.push((data, seg_end));
        pos = seg_end;
    }
    Some(out)
}

/// The file's allocated but unwritten extents `(offset, len)`, from the
/// `FS_IOC_FIEMAP` ioctl; an error where the file system has no extent map.
pub fn unwritten_extents(file: &File) -> io::Result<Vec<(u64, u64)>> {
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
            return Err(io::Error::last_os_error());
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

fn fallocate(file: &File, mode: libc::c_int, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on a descriptor this `File` owns has no
    // memory-safety preconditions.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            off as libc::off_t,
            len as libc::off_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Deallocates `len` bytes at `off`, keeping the file's size
/// (`FALLOC_FL_PUNCH_HOLE`).
pub fn punch_hole(file: &File, off: u64, len: u64) -> io::Result<()> {
    fallocate(
        file,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        off,
        len,
    )
}

/// Makes `len` bytes at `off` allocated zeros without writing them
/// (`FALLOC_FL_ZERO_RANGE`).
pub fn zero_range(file: &File, off: u64, len: u64) -> io::Result<()> {
    fallocate(file, libc::FALLOC_FL_ZERO_RANGE, off, len)
}

/// Allocates `len` bytes at `off` (plain `fallocate`), as a preallocating
/// program would.
pub fn allocate(file: &File, off: u64, len: u64) -> io::Result<()> {
    fallocate(file, 0, off, len)
}
