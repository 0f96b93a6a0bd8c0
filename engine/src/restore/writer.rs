//! Phase 2 of a restore: the data. A [`Restorer`] reads each unit of the
//! schedule (see [`super::schedule`]) once, checks and decodes its blobs,
//! and writes every piece to each file offset that needs it, on a fixed
//! set of worker threads; a worker that meets a busy file leaves its bytes
//! with the file's writer (see [`super::handoff`]). The write that
//! completes a file sets its metadata through the open descriptor.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::dirs::Dirs;
use super::handoff::Handoff;
use super::plan::{Plan, PlannedFile};
use super::schedule::{self, Unit};
use super::zeros::ZeroWriter;
use super::{RestoreProgress, inplace};
use crate::backend::ObjectKey;
use crate::error::{BackendError, Error, Result};
use crate::fsmeta;
use crate::repo::IndexedRepository;
use crate::repo::format::ObjectKind;
use crate::repo::id::{ChunkId, PackId};
use crate::stop::Stop;
use crate::store::blob::{self, BlobEntry};
use crate::tree::{Node, NodeKind};

/// Where each chunk goes: chunk → every (file index, offset).
pub(super) type Targets = HashMap<ChunkId, Vec<(usize, u64)>>;

/// What phase 2 did.
pub(super) struct Written {
    /// Bytes written into files.
    pub bytes: u64,
    /// Files left incomplete by damage (file index, reason), one entry per
    /// file; they have their metadata all the same.
    pub damaged: Vec<(usize, String)>,
}

/// Writes the planned files' content; shared by the worker threads.
pub(super) struct Restorer<'a> {
    repo: &'a IndexedRepository,
    /// The planned files; each chunk's targets index into them.
    files: &'a [PlannedFile],
    targets: &'a Targets,
    dirs: &'a Dirs,
    set_owner: bool,
    progress: &'a RestoreProgress,
    /// Writes still owed to each file; the writer that brings it to zero sets
    /// the file's metadata through the open descriptor.
    remaining: Vec<AtomicU64>,
    /// Whether some worker has given the file its final size already.
    sized: Vec<AtomicBool>,
    damaged: Mutex<Vec<(usize, String)>>,
    written: AtomicU64,
    /// Unit buffers, back from writers that are done with them.
    pool: Arc<Mutex<Vec<UnitData>>>,
    handoff: Handoff<Job>,
    zeros: ZeroWriter,
    stop: Stop,
}

impl<'a> Restorer<'a> {
    /// Ready to restore `plan`'s files below `dirs`; `set_owner`: give
    /// them their owners (this process may).
    pub(super) fn new(
        repo: &'a IndexedRepository,
        plan: &'a Plan,
        dirs: &'a Dirs,
        set_owner: bool,
        progress: &'a RestoreProgress,
    ) -> Self {
        let (files, targets) = (&plan.files[..], &plan.targets);
        let remaining: Vec<AtomicU64> = (0..files.len()).map(|_| AtomicU64::new(0)).collect();
        for places in targets.values() {
            for (fi, _) in places {
                remaining[*fi].fetch_add(1, Ordering::Relaxed);
            }
        }
        Restorer {
            repo,
            files,
            targets,
            dirs,
            set_owner,
            progress,
            remaining,
            sized: (0..files.len()).map(|_| AtomicBool::new(false)).collect(),
            damaged: Mutex::new(Vec::new()),
            written: AtomicU64::new(0),
            pool: Arc::new(Mutex::new(Vec::new())),
            handoff: Handoff::new(schedule::UNIT_BYTES),
            zeros: ZeroWriter::new(),
            stop: Stop::default(),
        }
    }

    /// Stops the data phase when `stop` is requested: each writer ends
    /// after its unit in hand, and [`Restorer::run`] returns
    /// [`Error::RestoreInterrupted`].
    pub(super) fn stopped_by(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }

    /// Restores every file: those without stored content (empty, or only
    /// holes) first, then the data, then the metadata of files that damage
    /// left incomplete.
    pub(super) fn run(&self) -> Result<Written> {
        (0..self.files.len())
            .into_par_iter()
            .filter(|fi| self.remaining[*fi].load(Ordering::Relaxed) == 0)
            .try_for_each(|fi| self.finish_file(fi, &self.open_file(fi, true)?))?;
        self.write_data()?;
        let mut damaged = std::mem::take(&mut *self.damaged.lock().expect("damaged"));
        damaged.sort();
        damaged.dedup_by(|a, b| a.0 == b.0);
        // (They may never have been opened: create them at their size.)
        for (fi, _) in &damaged {
            self.finish_file(*fi, &self.open_file(*fi, true)?)?;
        }
        Ok(Written {
            bytes: self.written.load(Ordering::Relaxed),
            damaged,
        })
    }

    /// Opens (creating) planned file `fi` for writing; `set_size` gives it
    /// its final size.
    fn open_file(&self, fi: usize, set_size: bool) -> Result<File> {
        let f = &self.files[fi];
        let file = self
            .dirs
            .open(f.dir)?
            .open_file(
                OsStr::from_bytes(&f.node.name),
                libc::O_WRONLY | libc::O_CREAT,
                0o600,
            )
            .map_err(|e| Error::io(&f.path, "create", e))?;
        // The final size up front: holes stay holes, and the file is whole
        // whatever order its chunks arrive in.
        if set_size && !single_chunk(&f.node) {
            file.set_len(f.node.size)
                .map_err(|e| Error::io(&f.path, "set size", e))?;
        }
        Ok(file)
    }

    /// Sets the metadata of planned file `fi` through `file`.
    fn finish_file(&self, fi: usize, file: &File) -> Result<()> {
        let f = &self.files[fi];
        if f.reuse {
            inplace::remove_extra_xattrs(file, &f.path, &f.node)
                .map_err(|e| Error::io(&f.path, "set metadata", e))?;
        }
        fsmeta::apply_metadata_fd(file, &f.node, self.set_owner)
            .map_err(|e| Error::io(&f.path, "set metadata", e))?;
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Notes that every file `chunk` goes to is damaged, for `why`.
    fn mark_damaged(&self, chunk: &ChunkId, why: String) {
        let mut d = self.damaged.lock().expect("damaged");
        for (fi, _) in &self.targets[chunk] {
            d.push((*fi, why.clone()));
        }
    }

    /// Groups the chunks into units by pack and runs them on the workers.
    fn write_data(&self) -> Result<()> {
        let mut by_pack: HashMap<PackId, Vec<(BlobEntry, ChunkId)>> = HashMap::new();
        let mut missing: Vec<ChunkId> = Vec::new();
        for chunk in self.targets.keys() {
            match self.repo.locate(&chunk.0) {
                Some(loc) => by_pack
                    .entry(loc.pack)
                    .or_default()
                    .push((loc.entry, *chunk)),
                None => missing.push(*chunk),
            }
        }
        for c in &missing {
            self.mark_damaged(
                c,
                format!("chunk {}: {}", c.short(), self.repo.why_unlocated(&c.0)),
            );
        }
        let units = schedule::units(by_pack, self.targets);
        let scheduler = schedule::Scheduler::new(&units);
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        // One worker per core, or per connection to a remote repository:
        // a worker there waits mostly on the network.
        let workers = rayon::current_num_threads()
            .max(self.repo.backend().parallel_gets())
            .clamp(1, units.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    // The worker's files, kept open from one unit to the next.
                    let mut open = HashMap::new();
                    while !stop.load(Ordering::Relaxed) && !self.stop.requested() {
                        let Some(i) = scheduler.next() else { break };
                        let r = self.run_unit(&units[i], &mut open);
                        scheduler.done(i);
                        if let Err(e) = r {
                            stop.store(true, Ordering::Relaxed);
                            failed.lock().expect("failed").get_or_insert(e);
                        }
                    }
                });
            }
        });
        match failed.into_inner().expect("failed") {
            Some(e) => Err(e),
            None if self.stop.requested() => Err(Error::RestoreInterrupted {
                bytes: self.written.load(Ordering::Relaxed),
            }),
            None => Ok(()),
        }
    }

    /// One unit of work: read its range of the pack, check and decode each
    /// blob, then hand each file its pieces (see `handoff`). `open` keeps the
    /// worker's files open from one unit to the next.
    fn run_unit(&self, unit: &Unit, open: &mut HashMap<usize, File>) -> Result<()> {
        open.retain(|fi, _| unit.files.binary_search(fi).is_ok());
        let mut data = self.pool.lock().expect("pool").pop().unwrap_or_default();
        let pack = &unit.pack;
        let first = unit.blobs[0].0.offset as u64;
        // The furthest end of any blob (a damaged index may list a blob that
        // reaches past the last one's end).
        let end = unit
            .blobs
            .iter()
            .map(|(e, _)| e.offset as u64 + e.stored_len as u64)
            .max()
            .unwrap_or(first);
        let key = ObjectKey::new(ObjectKind::Pack, pack.to_hex());
        let backend = self.repo.backend();
        let read = match backend.get_range_into(&key, first, end - first, &mut data.bytes) {
            // A truncated pack: the blobs before its end are still whole.
            Err(BackendError::OutOfRange { size, .. }) if size > first => {
                backend.get_range_into(&key, first, size - first, &mut data.bytes)
            }
            r => r,
        };
        if let Err(e) = read {
            for (_, c) in &unit.blobs {
                self.mark_damaged(c, format!("pack {}: {e}", pack.short()));
            }
            self.pool.lock().expect("pool").push(data);
            return Ok(());
        }
        data.out.clear();
        data.at.clear();
        // Each file's pieces, in the order of `unit.files`.
        let mut pieces: Vec<Vec<(u64, usize)>> = vec![Vec::new(); unit.files.len()];
        for (i, (entry, chunk)) in unit.blobs.iter().enumerate() {
            let start = (entry.offset as u64 - first) as usize;
            let Some(stored) = data.bytes.get_mut(start..start + entry.stored_len as usize) else {
                data.at.push(Piece::Damaged);
                self.mark_damaged(
                    chunk,
                    format!(
                        "pack {} is truncated or the index is wrong: chunk {} lay past what could be read; run `pvsnap check --read-data`",
                        pack.short(),
                        chunk.short()
                    ),
                );
                continue;
            };
            match blob::decode_in_place(self.repo.crypto(), pack, entry, stored, &mut data.out) {
                Ok(blob::Content::Stored(r)) => {
                    data.at.push(Piece::Bytes(start + r.start..start + r.end));
                }
                Ok(blob::Content::Out(r)) => data.at.push(Piece::Out(r)),
                Err(e) => {
                    data.at.push(Piece::Damaged);
                    self.mark_damaged(chunk, e.to_string());
                    continue;
                }
            }
            for (fi, off) in &self.targets[chunk] {
                let k = unit.files.binary_search(fi).expect("unit lists its files");
                pieces[k].push((*off, i));
            }
        }
        let data = Arc::new(Pooled {
            data: Some(data),
            pool: self.pool.clone(),
        });
        for (k, p) in pieces.into_iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let fi = unit.files[k];
            let bytes: u64 = p.iter().map(|(_, b)| data.content(*b).len() as u64).sum();
            let job = Job {
                data: data.clone(),
                pieces: p,
            };
            self.handoff
                .submit(fi, job, bytes, |job| self.write_job(fi, job, open))?;
        }
        Ok(())
    }

    /// Writes `job`'s pieces into file `fi` through the worker's descriptor;
    /// the write that completes the file sets its metadata.
    fn write_job(&self, fi: usize, job: Job, open: &mut HashMap<usize, File>) -> Result<()> {
        let file = match open.entry(fi) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                v.insert(self.open_file(fi, !self.sized[fi].swap(true, Ordering::AcqRel))?)
            }
        };
        for &(off, blob) in &job.pieces {
            let raw = job.data.content(blob);
            self.zeros
                .write_at(file, raw, off)
                .map_err(|e| Error::io(&self.files[fi].path, "write", e))?;
            self.written.fetch_add(raw.len() as u64, Ordering::Relaxed);
            self.progress
                .bytes
                .fetch_add(raw.len() as u64, Ordering::Relaxed);
            if self.remaining[fi].fetch_sub(1, Ordering::AcqRel) == 1 {
                let file = open.remove(&fi).expect("just used");
                return self.finish_file(fi, &file);
            }
        }
        Ok(())
    }
}

/// A unit's pack range and decoded blobs, kept for whichever worker writes
/// them and reused from one unit to the next.
#[derive(Default)]
struct UnitData {
    /// The unit's range of its pack; uncompressed blobs are written from
    /// here (opened in place when encrypted).
    bytes: Vec<u8>,
    /// The compressed blobs' content, back to back.
    out: Vec<u8>,
    /// Where each blob of the unit is, in the unit's order.
    at: Vec<Piece>,
}

enum Piece {
    Bytes(std::ops::Range<usize>),
    Out(std::ops::Range<usize>),
    /// Failed its check; nothing of it is written.
    Damaged,
}

/// A [`UnitData`] that goes back to the pool when the last writer is done
/// with it, so restoring allocates (and faults in) no fresh buffers.
struct Pooled {
    data: Option<UnitData>,
    pool: Arc<Mutex<Vec<UnitData>>>,
}

impl Pooled {
    fn content(&self, blob: usize) -> &[u8] {
        let d = self.data.as_ref().expect("until dropped");
        match &d.at[blob] {
            Piece::Bytes(r) => &d.bytes[r.clone()],
            Piece::Out(r) => &d.out[r.clone()],
            Piece::Damaged => unreachable!("damaged blobs get no pieces"),
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let (Some(d), Ok(mut pool)) = (self.data.take(), self.pool.lock()) {
            pool.push(d);
        }
    }
}

/// What one file gets from one unit: (file offset, blob index) pieces.
struct Job {
    data: Arc<Pooled>,
    pieces: Vec<(u64, usize)>,
}

/// Whether a file's content is exactly one chunk (its write sets the size).
fn single_chunk(node: &Node) -> bool {
    matches!(&node.kind, NodeKind::File { content } if content.len() == 1 && content[0].chunk.is_some())
}
