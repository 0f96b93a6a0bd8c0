//! Writing restored content without copying its long zero runs.
//!
//! Disk images and database files carry long runs of zeros. Writing them costs
//! as much as any other bytes: each one is copied into the page cache and later
//! to disk. A run of whole file-system blocks is instead given to the file
//! system as a zeroed range (`fallocate` with `FALLOC_FL_ZERO_RANGE`): the
//! blocks are allocated, so the file uses the same space as one written byte by
//! byte and is not made sparse, and they read as zeros without being written.
//!
//! File systems that cannot zero a range (tmpfs, most network file systems)
//! answer `EOPNOTSUPP`; from then on the runs are written as bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys;

/// The block size runs are aligned to, in file offsets.
const BLOCK: usize = 4096;
/// Shorter runs are written: one `fallocate` costs about as much as copying
/// a few pages.
pub(super) const MIN_RUN: usize = 64 * 1024;

/// Writes pieces of content, zeroing long zero runs instead of writing them.
pub(super) struct ZeroWriter {
    /// Cleared when the target's file system cannot zero ranges.
    zero_range: AtomicBool,
}

impl ZeroWriter {
    pub(super) fn new() -> Self {
        ZeroWriter {
            zero_range: AtomicBool::new(true),
        }
    }

    /// A writer that always writes every byte.
    #[cfg(test)]
    pub(super) fn bytes_only() -> Self {
        ZeroWriter {
            zero_range: AtomicBool::new(false),
        }
    }

    /// Makes `raw` the content of `file` at `off`. On return the file is at
    /// least `off + raw.len()` bytes long.
    pub(super) fn write_at(&self, file: &File, raw: &[u8], off: u64) -> std::io::Result<()> {
        if raw.len() < MIN_RUN || !self.zero_range.load(Ordering::Relaxed) {
            return file.write_all_at(raw, off);
        }
        // Bytes of `raw` before `done` are in the file.
        let mut done = 0;
        let mut at = off.next_multiple_of(BLOCK as u64).saturating_sub(off) as usize;
        while at + BLOCK <= raw.len() {
            if !is_zero(&raw[at..at + BLOCK]) {
                at += BLOCK;
                continue;
            }
            let start = at;
            while at + BLOCK <= raw.len() && is_zero(&raw[at..at + BLOCK]) {
                at += BLOCK;
            }
            if at - start < MIN_RUN {
                continue;
            }
            file.write_all_at(&raw[done..start], off + done as u64)?;
            if !self.zero(file, off + start as u64, (at - start) as u64)? {
                return file.write_all_at(&raw[start..], off + start as u64);
            }
            done = at;
        }
        file.write_all_at(&raw[done..], off + done as u64)
    }

    /// Zeroes a range; false (and no further tries) where the file system
    /// cannot.
    fn zero(&self, file: &File, off: u64, len: u64) -> std::io::Result<bool> {
        let Err(e) = sys::extents::zero_range(file, off, len) else {
            return Ok(true);
        };
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => {
                self.zero_range.store(false, Ordering::Relaxed);
                Ok(false)
            }
            _ => Err(e),
        }
    }
}

/// Whether a block is all zeros; stops at the first 64 bytes that are not,
/// so data costs a glance.
fn is_zero(block: &[u8]) -> bool {
    block
        .chunks(64)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Content with zero runs of several lengths and alignments between
    /// non-zero bytes.
    fn content() -> Vec<u8> {
        let mut v = Vec::new();
        let mut fill = |n: usize, zero: bool| {
            let at = v.len();
            v.extend((0..n).map(|i| if zero { 0 } else { (at + i) as u8 | 1 }));
        };
        fill(5000, false);
        fill(300 * 1024, true); // starts unaligned
        fill(BLOCK, false);
        fill(MIN_RUN - BLOCK, true); // too short to zero
        fill(1, false);
        fill(MIN_RUN + 3 * BLOCK + 17, true);
        fill(100, false);
        fill(2 * MIN_RUN, true); // runs to the end
        v
    }

    #[test]
    fn content_is_exact_at_any_offset_and_zero_runs_stay_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let data = content();
        for (i, off) in [0u64, 1, 4095, 4096, 70_000].into_iter().enumerate() {
            for writer in [ZeroWriter::new(), ZeroWriter::bytes_only()] {
                let path = dir.path().join(format!("f{i}"));
                let file = File::create(&path).unwrap();
                // Garbage where the runs go: zeroing must overwrite, not skip.
                file.write_all_at(&vec![0xAA; data.len() + off as usize], 0)
                    .unwrap();
                writer.write_at(&file, &data, off).unwrap();
                let back = std::fs::read(&path).unwrap();
                assert_eq!(back.len(), data.len() + off as usize);
                assert!(back[..off as usize].iter().all(|&b| b == 0xAA));
                assert!(back[off as usize..] == data[..], "offset {off}");
                let blocks = file.metadata().unwrap().blocks() * 512;
                assert!(blocks >= back.len() as u64, "sparse after offset {off}");
            }
        }
    }

    /// Bytes in whole blocks (file offsets from 0) inside zero runs of at
    /// least MIN_RUN such blocks, for content written at `off`.
    fn zeroable(data: &[u8], off: usize) -> usize {
        let mut total = 0;
        let mut run = 0;
        let mut at = off.next_multiple_of(BLOCK);
        while at + BLOCK <= off + data.len() {
            if data[at - off..at - off + BLOCK].iter().all(|&b| b == 0) {
                run += BLOCK;
            } else {
                total += if run >= MIN_RUN { run } else { 0 };
                run = 0;
            }
            at += BLOCK;
        }
        total + if run >= MIN_RUN { run } else { 0 }
    }

    #[test]
    fn long_zero_runs_are_not_written_as_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data = content();
        for off in [0usize, 4095, 70_000] {
            let path = dir.path().join(format!("f{off}"));
            let file = File::create(&path).unwrap();
            let writer = ZeroWriter::new();
            writer.write_at(&file, &data, off as u64).unwrap();
            let unable = !writer.zero_range.load(Ordering::Relaxed);
            let why = unable.then_some("this file system cannot zero ranges");
            if !crate::testutil::can_run("long_zero_runs_are_not_written_as_bytes", why) {
                return;
            }
            // Allocation settles on writeback; read the extent map after it,
            // not while delayed allocation may still be merging extents.
            file.sync_all().unwrap();
            let unwritten = sys::extents::unwritten_extents(&file).unwrap();
            let total: u64 = unwritten.iter().map(|(_, len)| len).sum();
            let want = zeroable(&data, off);
            assert!(want >= 3 * MIN_RUN, "the content has three long runs");
            assert_eq!(total as usize, want, "offset {off}: {unwritten:?}");
        }
    }
}
