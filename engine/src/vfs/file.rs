//! Files: their extents indexed for random access, and reads with read-ahead.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Found, Vfs, VfsError, VfsResult};
use crate::error::Error;
use crate::repo::IndexedRepository;
use crate::repo::id::ChunkId;
use crate::tree::{Extent, NodeKind};

/// At most this many chunks are being read ahead at once.
const MAX_PREFETCHES: usize = 16;

/// Bytes returned by [`Vfs::read`]: a window of one cached chunk (no copy) or
/// an assembled buffer.
pub enum ReadData {
    Shared {
        chunk: Arc<Vec<u8>>,
        start: usize,
        len: usize,
    },
    Owned(Vec<u8>),
}

impl std::ops::Deref for ReadData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadData::Shared { chunk, start, len } => &chunk[*start..*start + *len],
            ReadData::Owned(v) => v,
        }
    }
}

/// A regular file's extents, indexed for random access.
#[derive(Debug)]
pub struct FileMap {
    extents: Vec<Extent>,
    /// `starts[i]` is the file offset where extent `i` begins.
    starts: Vec<u64>,
    content_len: u64,
    /// The extent that the previous read ended in (`usize::MAX`: none yet),
    /// to recognise sequential readers.
    last_extent: AtomicUsize,
}

impl FileMap {
    pub fn new(extents: Vec<Extent>) -> Self {
        let mut starts = Vec::with_capacity(extents.len());
        let mut pos = 0u64;
        for e in &extents {
            starts.push(pos);
            pos = pos.saturating_add(e.len);
        }
        FileMap {
            extents,
            starts,
            content_len: pos,
            last_extent: AtomicUsize::new(usize::MAX),
        }
    }

    /// The index of the extent holding byte `offset`; `None` past the content.
    /// Empty extents are never returned.
    pub fn extent_at(&self, offset: u64) -> Option<usize> {
        if offset >= self.content_len {
            return None;
        }
        Some(self.starts.partition_point(|&s| s <= offset) - 1)
    }

    /// Where the first data (`data`) or hole (`!data`) at or after `offset`
    /// begins, in a file of `size` bytes; the end of the file counts as a hole.
    /// `None` when there is no such place before `size`.
    pub fn seek(&self, offset: u64, data: bool, size: u64) -> Option<u64> {
        if offset >= size {
            return None;
        }
        let found = match self.extent_at(offset) {
            Some(first) => (first..self.extents.len())
                .find(|&i| self.extents[i].len > 0 && self.extents[i].chunk.is_some() == data)
                .map(|i| self.starts[i].max(offset)),
            None => None,
        };
        // Past the extents the file reads as zeros: a hole up to its end.
        let found = match found {
            Some(at) => Some(at),
            None if data => None,
            None => Some(self.content_len.max(offset)),
        };
        match found {
            Some(at) if at < size => Some(at),
            _ if data => None,
            _ => Some(size),
        }
    }

    /// Bytes of stored (non-hole) content.
    pub fn stored_len(&self) -> u64 {
        self.extents
            .iter()
            .filter(|e| e.chunk.is_some())
            .map(|e| e.len)
            .sum()
    }
}

impl Vfs {
    /// `lseek(SEEK_DATA)` (`data`) or `lseek(SEEK_HOLE)` on file `ino`.
    pub fn seek(&self, ino: u64, offset: u64, data: bool) -> VfsResult<u64> {
        let (file, size) = self.file_map(ino)?;
        file.seek(offset, data, size).ok_or(VfsError::PastEnd)
    }

    /// File `ino`'s extents indexed for reads, and its size: from the cache
    /// of file maps, else from its node (in the tree cache or read again).
    fn file_map(&self, ino: u64) -> VfsResult<(Arc<FileMap>, u64)> {
        if let Some(f) = self.files.lock().expect("file maps").get(&ino) {
            return Ok(f);
        }
        let node = match self.find(ino)?.1 {
            Found::Node { node, .. } => node,
            Found::Layout(p) => {
                let dir = p.is_empty()
                    || matches!(self.state().layout.resolve(&p), Some(super::VNode::Dir(_)));
                return Err(if dir {
                    VfsError::IsDir(ino)
                } else {
                    VfsError::NotFile(ino)
                });
            }
        };
        let content = match &node.kind {
            NodeKind::File { content } => content.clone(),
            NodeKind::Dir { .. } => return Err(VfsError::IsDir(ino)),
            _ => return Err(VfsError::NotFile(ino)),
        };
        let size = node.size;
        let weight = content.len() * (std::mem::size_of::<Extent>() + 8) + 128;
        let file = (Arc::new(FileMap::new(content)), size);
        self.files
            .lock()
            .expect("file maps")
            .insert(ino, file.clone(), weight);
        Ok(file)
    }

    /// Up to `size` bytes of file `ino` at `offset` (fewer only at the end).
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> VfsResult<ReadData> {
        let (file, file_size) = self.file_map(ino)?;
        let file = &*file;
        let end = offset.saturating_add(size as u64).min(file_size);
        if offset >= end {
            return Ok(ReadData::Owned(Vec::new()));
        }
        let repo = self.state().repo.clone();
        let first = file.extent_at(offset);
        if let Some(first) = first {
            self.read_ahead(&repo, file, first, end);
            let (e, start) = (file.extents[first], file.starts[first]);
            if let Some(c) = e.chunk
                && end <= start + e.len
            {
                let chunk = self.chunk(&repo, &c, e.len)?;
                return Ok(ReadData::Shared {
                    chunk,
                    start: (offset - start) as usize,
                    len: (end - offset) as usize,
                });
            }
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        let mut next = first;
        while pos < end {
            match next {
                Some(i) if i < file.extents.len() => {
                    let (e, start) = (file.extents[i], file.starts[i]);
                    let stop = end.min(start + e.len);
                    match e.chunk {
                        Some(c) => {
                            let chunk = self.chunk(&repo, &c, e.len)?;
                            out.extend_from_slice(
                                &chunk[(pos - start) as usize..(stop - start) as usize],
                            );
                        }
                        None => out.resize(out.len() + (stop - pos) as usize, 0),
                    }
                    pos = stop;
                    next = Some(i + 1);
                }
                // Past the extents (a size larger than the content): zeros.
                _ => {
                    out.resize(out.len() + (end - pos) as usize, 0);
                    pos = end;
                }
            }
        }
        Ok(ReadData::Owned(out))
    }

    fn chunk(&self, repo: &IndexedRepository, id: &ChunkId, len: u64) -> VfsResult<Arc<Vec<u8>>> {
        Ok(self
            .chunks
            .get(id, len as usize, &|| load_chunk(repo, id, len))?)
    }

    /// When a read continues where the previous one ended (or starts the
    /// file), starts loading the chunks after `end`.
    fn read_ahead(&self, repo: &Arc<IndexedRepository>, file: &FileMap, first: usize, end: u64) {
        if self.opts.readahead_bytes == 0 {
            return;
        }
        let last = file
            .extent_at(end - 1)
            .unwrap_or(file.extents.len().saturating_sub(1));
        let prev = file.last_extent.swap(last, Ordering::Relaxed);
        // Requests of one sequential reader may arrive slightly out of order.
        let sequential = first == 0 || (prev != usize::MAX && first.abs_diff(prev) <= 1);
        if !sequential {
            return;
        }
        let mut ahead = 0u64;
        for (e, _) in file.extents.iter().zip(&file.starts).skip(last + 1) {
            if ahead >= self.opts.readahead_bytes || self.loader.pending() >= MAX_PREFETCHES {
                break;
            }
            ahead += e.len;
            let Some(id) = e.chunk else { continue };
            let Some(claim) = self.chunks.claim(&id, e.len as usize) else {
                continue;
            };
            let (cache, repo, len) = (self.chunks.clone(), repo.clone(), e.len);
            self.loader.spawn(move || {
                if let Err(e) = cache.fill_claim(claim, &|| load_chunk(&repo, &id, len)) {
                    tracing::debug!("read-ahead of chunk {} failed: {e}", id.short());
                }
            });
        }
    }
}

fn load_chunk(repo: &IndexedRepository, id: &ChunkId, len: u64) -> crate::Result<Vec<u8>> {
    let data = repo.read_chunk(id)?;
    if data.len() as u64 != len {
        return Err(Error::Invalid(format!(
            "chunk {} holds {} bytes where the file's extent says {len}; run `pvsnap check`",
            id.short(),
            data.len()
        )));
    }
    Ok(data)
}
