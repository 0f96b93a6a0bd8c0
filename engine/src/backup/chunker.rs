//! Stage 3: reading file content in large blocks (holes skipped) and
//! cutting it with FastCDC; each chunk goes on to the packer.

use std::fs::{File, Metadata, OpenOptions};

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fsmeta::{self};
use crate::repo::id::ChunkId;
use crate::sys::io::read_at_full;
use crate::tree::Extent;

use super::pipeline::{Archiver, ns};

/// Read block for file content: one and a half times the largest chunk, so
/// every block yields at least one final cut. A large file holds two blocks
/// (12 MiB with default chunks), and two workers reading large files 24 MiB.
pub(super) fn read_block(max_chunk: u32) -> usize {
    max_chunk as usize * 3 / 2
}

/// Read blocks kept for reuse (about one per worker thread).
pub(super) const SPARE_BLOCKS: usize = 4;

impl Archiver<'_> {
    /// Reads a file's content into extents. Ok(None): the file could not be
    /// read and the issue is recorded. Err: the repository failed.
    pub(super) fn read_content(&self, path: &Path) -> Result<Option<(Vec<Extent>, Metadata)>> {
        let Some(file) = self.readable(path, open_for_read(path)) else {
            return Ok(None);
        };
        let before = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.issue("unreadable", path, e);
                return Ok(None);
            }
        };
        let mut extents = Vec::new();
        let mut pos = 0u64;
        let mut short = false;
        for (off, len) in fsmeta::data_segments(&file, &before) {
            if off > pos {
                extents.push(Extent {
                    chunk: None,
                    len: off - pos,
                });
            }
            let got = match self.chunk_segment(&file, off, len, &mut extents) {
                Ok(n) => n,
                Err(SegmentError::Io(e)) => {
                    self.issue("unreadable", path, format!("read failed: {e}"));
                    return Ok(None);
                }
                Err(SegmentError::Repo(e)) => return Err(e),
            };
            pos = off + got;
            if got < len {
                short = true;
                break;
            }
        }
        if !short && pos < before.len() {
            extents.push(Extent {
                chunk: None,
                len: before.len() - pos,
            });
        }
        let after = file.metadata().ok();
        let changed = short
            || after.is_none_or(|a| {
                a.len() != before.len()
                    || ns(a.mtime(), a.mtime_nsec()) != ns(before.mtime(), before.mtime_nsec())
                    || ns(a.ctime(), a.ctime_nsec()) != ns(before.ctime(), before.ctime_nsec())
            });
        if changed {
            self.issue(
                "changed",
                path,
                "changed while it was read; the snapshot holds the content as read",
            );
        }
        Ok(Some((extents, before)))
    }

    /// Chunks `len` bytes at `off`; returns how many bytes were read (fewer
    /// than `len` if the file shrank meanwhile).
    ///
    /// A segment longer than one read block is processed with two blocks:
    /// while the chunks of one are hashed, compressed and packed, the next is
    /// read and cut on another worker, so a single large file keeps both
    /// stages busy.
    pub(super) fn chunk_segment(
        &self,
        file: &File,
        off: u64,
        len: u64,
        out: &mut Vec<Extent>,
    ) -> std::result::Result<u64, SegmentError> {
        let c = self.repo.config().chunker;
        let block = read_block(c.max).min(usize::try_from(len).unwrap_or(usize::MAX));
        let take = || {
            let mut b = self
                .spare_blocks
                .lock()
                .expect("blocks")
                .pop()
                .unwrap_or_default();
            if b.len() < block {
                b.resize(block, 0);
            }
            b
        };
        let mut a = take();
        let mut b = if (block as u64) < len {
            take()
        } else {
            Vec::new()
        };
        // Both blocks have the same length (the second is empty for a short segment).
        let second = block.min(b.len());
        let r = self.chunk_blocks(file, off, len, [&mut a[..block], &mut b[..second]], out);
        let mut spare = self.spare_blocks.lock().expect("blocks");
        for buf in [a, b] {
            if spare.len() < SPARE_BLOCKS && !buf.is_empty() {
                spare.push(buf);
            }
        }
        r
    }

    /// Fills `buf[have..]` from the file at `*pos` (not beyond `end`); returns
    /// the bytes now in `buf` and whether the segment (or the file) ended.
    pub(super) fn fill(
        &self,
        file: &File,
        buf: &mut [u8],
        mut have: usize,
        pos: &mut u64,
        end: u64,
    ) -> std::result::Result<(usize, bool), SegmentError> {
        while have < buf.len() && *pos < end {
            let want = (buf.len() - have).min((end - *pos) as usize);
            let n =
                read_at_full(file, &mut buf[have..have + want], *pos).map_err(SegmentError::Io)?;
            have += n;
            *pos += n as u64;
            self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
            self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
            if n < want {
                return Ok((have, true));
            }
        }
        Ok((have, *pos >= end))
    }

    /// FastCDC cut points of `data`; unless `last`, the final cut (where the
    /// block ended, not where the content says) is left for the next block.
    pub(super) fn cut(&self, data: &[u8], last: bool) -> Vec<(usize, usize)> {
        let c = self.repo.config().chunker;
        let mut cuts: Vec<(usize, usize)> = fastcdc::v2020::FastCDC::with_level_and_seed(
            data,
            c.min,
            c.avg,
            c.max,
            fastcdc::v2020::Normalization::Level1,
            self.seed,
        )
        .map(|ch| (ch.offset, ch.length))
        .collect();
        if !last && cuts.len() > 1 {
            cuts.pop();
        }
        cuts
    }

    /// [`Self::chunk_segment`] over two read blocks of equal length (the
    /// second empty when the segment fits in the first).
    pub(super) fn chunk_blocks(
        &self,
        file: &File,
        off: u64,
        len: u64,
        [mut cur, mut next]: [&mut [u8]; 2],
        out: &mut Vec<Extent>,
    ) -> std::result::Result<u64, SegmentError> {
        let end = off + len;
        let mut pos = off;
        let (mut have, mut eof) = self.fill(file, cur, 0, &mut pos, end)?;
        let mut cuts = self.cut(&cur[..have], eof);
        let mut total = 0u64;
        while have > 0 {
            let consumed: usize = cuts.iter().map(|c| c.1).sum();
            let more = !eof || consumed < have;
            let data = &cur[..have];
            let (ids, following) = rayon::join(
                || -> Result<Vec<ChunkId>> {
                    if cuts.len() > 1 {
                        cuts.par_iter()
                            .map(|&(o, l)| self.store_chunk(&data[o..o + l]))
                            .collect()
                    } else {
                        cuts.iter()
                            .map(|&(o, l)| self.store_chunk(&data[o..o + l]))
                            .collect()
                    }
                },
                || -> std::result::Result<_, SegmentError> {
                    if !more {
                        return Ok(None);
                    }
                    let tail = have - consumed;
                    next[..tail].copy_from_slice(&data[consumed..]);
                    let (n, eof) = self.fill(file, next, tail, &mut pos, end)?;
                    Ok(Some((n, eof, self.cut(&next[..n], eof))))
                },
            );
            for (id, (_, l)) in ids.map_err(SegmentError::Repo)?.into_iter().zip(&cuts) {
                out.push(Extent {
                    chunk: Some(id),
                    len: *l as u64,
                });
            }
            total += consumed as u64;
            match following? {
                Some((n, e, c)) => {
                    std::mem::swap(&mut cur, &mut next);
                    (have, eof, cuts) = (n, e, c);
                }
                None => break,
            }
        }
        Ok(total)
    }
}

pub(super) enum SegmentError {
    Io(std::io::Error),
    Repo(Error),
}

/// Opens without following symlinks and, where allowed, without touching atime.
pub(super) fn open_for_read(path: &Path) -> std::io::Result<File> {
    let open = |flags: i32| {
        OpenOptions::new()
            .read(true)
            .custom_flags(flags | libc::O_NOFOLLOW)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        r => r,
    }
}
