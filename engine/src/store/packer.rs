//! The one way blobs become packs: used by the snapshot pipeline, prune's
//! repacking, repair and `copy`.
//!
//! A [`Packer`] keeps one pack builder per blob kind (data and trees go to
//! separate packs). A blob is added raw ([`Packer::add`]: compressed and
//! sealed here) or as stored ([`Packer::add_stored`]: copied as it lies in
//! another pack). The caller that fills a pack finishes it (trailer, hash)
//! and stores it, or, inside [`Packer::with_writer`], hands it over a
//! rendezvous channel to a writer thread, so the caller goes on while the
//! pack is written and fsynced. There are as many writer threads as the
//! backend takes puts at a time ([`crate::backend::Backend::parallel_puts`]: one for a local
//! disk, several for object storage). [`Packer::finish`] returns every pack
//! stored; [`write_index`] writes index files describing packs.
//!
//! No pack buffer is allocated per pack once the first packs are written:
//! stored packs return their buffers to a small pool.
//!
//! A snapshot's packer writes index checkpoints ([`Packer::checkpointing`]):
//! every [`Checkpoints::bytes`] or [`Checkpoints::blobs`] stored or
//! [`Checkpoints::interval`] elapsed, whichever comes first, an index file
//! names the packs stored since the last one, so a process killed partway
//! leaves its packs indexed. Each pack is named by exactly one index file of
//! the run: [`Stored::indexed`] says how many of [`Stored::packs`] the
//! checkpoints named, the caller indexes the rest. A checkpoint drops the
//! blob lists of the packs it named (their index files hold them, listed in
//! [`Stored::index_ids`]), so a run holds the lists of at most one
//! checkpoint's packs, however many blobs it stores.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use crate::backend::ObjectKey;
use crate::error::{BackendError, Error, Result};
use crate::repo::Repository;
use crate::repo::format::ObjectKind;
use crate::repo::id::{Id, IndexId, PackId};
use crate::store::blob::{self, BlobEntry, BlobKind};
use crate::store::index::IndexFile;
use crate::store::pack::{FinishedPack, PackBuilder};

/// Pack buffers kept for reuse: with one pack being filled, one handed over
/// and one being written, two spares cover the steady state; one more for
/// each further writer thread.
const SPARE_PACKS: usize = 2;

/// Packs with their entries, as written to an index file.
pub type PackList = Vec<(PackId, Vec<BlobEntry>)>;

/// What a [`Packer`] stored.
pub struct Stored {
    /// Every pack, in the order stored; the first [`Stored::indexed`] with
    /// no blob list (it is in their index files).
    pub packs: PackList,
    /// Their bytes (none in a dry run).
    pub bytes: u64,
    /// How many of `packs` (the first ones) index checkpoints named.
    pub indexed: usize,
    /// Index files the checkpoints wrote, and their bytes.
    pub index_ids: Vec<IndexId>,
    pub index_bytes: u64,
}

/// When a snapshot writes an index checkpoint: after this many bytes of
/// packs or blobs stored since the last one, or when a pack is stored this
/// long after it, whichever comes first (restic saves its index every 5
/// minutes; kopia checkpoints snapshots on a timer too). The bytes bound
/// what a killed snapshot stores again, the blobs the memory their lists
/// take until written; each checkpoint costs an index file or a few (about
/// 100 bytes per blob it names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoints {
    pub bytes: u64,
    pub blobs: usize,
    pub interval: Duration,
}

impl Checkpoints {
    /// 256 MiB of packs (16 of them) per checkpoint.
    pub const BYTES: u64 = 256 << 20;
    /// 65,536 blobs per checkpoint: their lists take 3 MiB (48 bytes a
    /// blob) until written, and fill one index file (index files hold at
    /// most ~64k blobs anyway, so small blobs make no more files for it).
    pub const BLOBS: usize = 1 << 16;
    /// At most 5 minutes between checkpoints while packs are stored.
    pub const INTERVAL: Duration = Duration::from_secs(5 * 60);
}

impl Default for Checkpoints {
    fn default() -> Self {
        Checkpoints {
            bytes: Self::BYTES,
            blobs: Self::BLOBS,
            interval: Self::INTERVAL,
        }
    }
}

/// Where the checkpoints of a run stand.
struct CheckpointState {
    every: Checkpoints,
    /// Packs (the first of `Packer::stored`) named by a checkpoint.
    indexed: usize,
    /// Bytes and blobs stored since the last checkpoint.
    pending: u64,
    pending_blobs: usize,
    last: Instant,
    ids: Vec<IndexId>,
    bytes: u64,
    /// Set by [`Packer::finish`]: the packs it stores last are indexed by
    /// the caller right after, once the pack buffers are freed, so no
    /// checkpoint is written for them beside those buffers (one asked for
    /// by an interruption still is).
    finishing: bool,
}

/// Builds packs of blobs and stores them; see the module documentation.
pub struct Packer<'a> {
    repo: &'a Repository,
    level: i32,
    pack_size: usize,
    /// Bytes reserved for a pack buffer: it never grows by doubling.
    pack_capacity: usize,
    /// The pack being filled, per [`BlobKind`] (data, trees).
    builders: [Mutex<PackBuilder>; 2],
    /// Pack buffers of stored packs, for the next packs: every pack reuses
    /// memory that is already mapped instead of faulting in 16 fresh MiB.
    spare: Mutex<Vec<Vec<u8>>>,
    /// Finished packs on their way to the writer threads, while they run.
    writer: Mutex<Option<SyncSender<FinishedPack>>>,
    /// Writer threads [`Packer::with_writer`] starts.
    writers: usize,
    writer_error: Mutex<Option<Error>>,
    stored: Mutex<PackList>,
    bytes: AtomicU64,
    dry_run: bool,
    replace_damaged: bool,
    checkpoints: Option<Mutex<CheckpointState>>,
}

impl<'a> Packer<'a> {
    /// A packer storing into `repo`, with its pack size and compression.
    pub fn new(repo: &'a Repository) -> Self {
        let cfg = repo.config();
        let encrypted = repo.crypto().is_encrypted();
        Packer {
            repo,
            level: cfg.compression.level,
            pack_size: cfg.pack_size as usize,
            pack_capacity: cfg.pack_size as usize + cfg.chunker.max as usize + 64 * 1024,
            builders: [
                Mutex::new(PackBuilder::new(encrypted, 0)),
                Mutex::new(PackBuilder::new(encrypted, 0)),
            ],
            spare: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
            writers: repo.backend().parallel_puts().max(1),
            writer_error: Mutex::new(None),
            stored: Mutex::new(Vec::new()),
            bytes: AtomicU64::new(0),
            dry_run: false,
            replace_damaged: false,
            checkpoints: None,
        }
    }

    /// Writes index checkpoints while packs are stored (see the module
    /// documentation). For snapshots: prune and repair write one index that
    /// supersedes others, and must not name their packs before it.
    pub fn checkpointing(mut self, every: Checkpoints) -> Self {
        self.checkpoints = Some(Mutex::new(CheckpointState {
            every,
            indexed: 0,
            pending: 0,
            pending_blobs: 0,
            last: Instant::now(),
            ids: Vec::new(),
            bytes: 0,
            finishing: false,
        }));
        self
    }

    /// Builds packs but stores none (a dry run); [`Packer::finish`] still
    /// lists them.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// A pack whose name is taken by other bytes is a damaged copy of it
    /// (packs are named by the hash of their bytes): replace it with these
    /// (`Backend::replace_damaged`) instead of failing. For repair, which
    /// rebuilds packs from verified blobs.
    pub fn replacing_damaged(mut self) -> Self {
        self.replace_damaged = true;
        self
    }

    /// Compresses and seals blob `id` of `raw` bytes and adds it to the pack
    /// of its kind, storing the pack when full. Compression and sealing run
    /// outside the pack's lock, into per-thread buffers; only the copy into
    /// the pack is done under it.
    pub fn add(&self, kind: BlobKind, id: Id, raw: &[u8]) -> Result<()> {
        let crypto = self.repo.crypto();
        let full = blob::encode_with(crypto, self.level, kind, &id, raw, |stored, flags| {
            let entry = BlobEntry {
                kind,
                flags,
                id,
                offset: 0,
                stored_len: 0,
                raw_len: raw.len() as u32,
            };
            self.put_in(entry, stored)
        });
        match full {
            Some(p) => self.write(p),
            None => Ok(()),
        }
    }

    /// Adds a blob as stored in another pack (not recompressed, not
    /// resealed; the caller has verified it), storing the pack when full.
    pub fn add_stored(&self, entry: &BlobEntry, stored: &[u8]) -> Result<()> {
        match self.put_in(*entry, stored) {
            Some(p) => self.write(p),
            None => Ok(()),
        }
    }

    /// Copies `stored` into the pack of its kind; returns the pack if it is
    /// now full, a fresh one taking its place.
    fn put_in(&self, entry: BlobEntry, stored: &[u8]) -> Option<PackBuilder> {
        let mut p = self.builders[entry.kind as usize]
            .lock()
            .expect("pack builder");
        if p.is_empty() && entry.kind == BlobKind::Data {
            p.reserve(self.pack_capacity);
        }
        p.add(entry, stored);
        // Full counting the trailer, so a pack of small blobs stays within
        // its buffer (`pack_capacity`) instead of growing it to twice.
        (p.len_with_trailer() >= self.pack_size).then(|| {
            std::mem::replace(
                &mut *p,
                PackBuilder::with_buffer(self.repo.crypto().is_encrypted(), self.pack_buffer()),
            )
        })
    }

    /// A buffer for the next pack: one already stored, or a new one of the
    /// pack's final size.
    fn pack_buffer(&self) -> Vec<u8> {
        self.spare
            .lock()
            .expect("spare packs")
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.pack_capacity))
    }

    /// Finishes a full pack and stores it, or hands it to the writer thread.
    fn write(&self, p: PackBuilder) -> Result<()> {
        let fp = p.finish(self.repo.crypto());
        let tx = self.writer.lock().expect("pack writer").clone();
        let Some(tx) = tx else {
            return self.store(fp);
        };
        if tx.send(fp).is_err() {
            return Err(Error::Invalid("the pack writer stopped".into()));
        }
        if let Some(e) = self.writer_error.lock().expect("pack writer error").take() {
            return Err(e);
        }
        Ok(())
    }

    /// Puts one pack in the backend (unless a dry run) and records it.
    fn store(&self, fp: FinishedPack) -> Result<()> {
        if !self.dry_run {
            let key = ObjectKey::new(ObjectKind::Pack, fp.id.to_hex());
            let trees = fp.entries.first().is_some_and(|e| e.kind == BlobKind::Tree);
            let put = if trees {
                self.repo.backend().put_tree_pack(&key, &fp.bytes)
            } else {
                self.repo.backend().put(&key, &fp.bytes)
            };
            match put {
                Ok(()) => {}
                // These are the bytes the name stands for, so the copy
                // stored under it is a damaged one. They restore it.
                Err(BackendError::Conflict { .. }) if self.replace_damaged => {
                    tracing::warn!(
                        "pack {}: its salvaged blobs rebuild it bit for bit; the damaged copy is replaced",
                        fp.id
                    );
                    self.repo.backend().replace_damaged(&key, &fp.bytes)?;
                }
                Err(e) => return Err(e.into()),
            }
            self.bytes
                .fetch_add(fp.bytes.len() as u64, Ordering::Relaxed);
        }
        let (len, blobs) = (fp.bytes.len() as u64, fp.entries.len());
        self.stored
            .lock()
            .expect("stored packs")
            .push((fp.id, fp.entries));
        {
            let mut spare = self.spare.lock().expect("spare packs");
            if spare.len() < SPARE_PACKS + self.writers - 1 {
                spare.push(fp.bytes);
            }
        }
        self.checkpoint_after(len, blobs, false)
    }

    /// Writes an index checkpoint now for the packs stored since the last
    /// one (if this packer checkpoints): a snapshot that is stopping does
    /// this before it stores the packs in hand, so a second signal that
    /// ends the process at once loses only those.
    pub fn checkpoint_now(&self) -> Result<()> {
        self.checkpoint_after(0, 0, true)
    }

    /// Writes an index checkpoint when one is due after a pack of `len`
    /// bytes and `blobs` blobs was stored: index files naming every pack
    /// stored since the last one. Packs are only appended to `stored`, each
    /// after its put returned, so the packs past the mark are all durable.
    /// Their blob lists are dropped once written: the index files hold them.
    fn checkpoint_after(&self, len: u64, blobs: usize, now: bool) -> Result<()> {
        let Some(state) = &self.checkpoints else {
            return Ok(());
        };
        if self.dry_run {
            return Ok(());
        }
        let mut c = state.lock().expect("checkpoints");
        if c.finishing && !now {
            return Ok(());
        }
        c.pending += len;
        c.pending_blobs += blobs;
        if !now
            && c.pending < c.every.bytes
            && c.pending_blobs < c.every.blobs
            && c.last.elapsed() < c.every.interval
        {
            return Ok(());
        }
        // The lists are taken out while they are written (writer threads
        // append packs meanwhile) and put back only if the write fails, so
        // that the next checkpoint or the caller indexes them.
        let mut packs: PackList = {
            let mut stored = self.stored.lock().expect("stored packs");
            stored[c.indexed..]
                .iter_mut()
                .map(|(p, e)| (*p, std::mem::take(e)))
                .collect()
        };
        if packs.is_empty() {
            return Ok(());
        }
        let written = write_index(self.repo, &packs, &[]);
        let (ids, bytes) = match written {
            Ok(w) => w,
            Err(e) => {
                let mut stored = self.stored.lock().expect("stored packs");
                for (slot, (_, e)) in stored[c.indexed..].iter_mut().zip(&mut packs) {
                    slot.1 = std::mem::take(e);
                }
                return Err(e);
            }
        };
        tracing::debug!(
            "index checkpoint: {} pack(s) in {} index file(s)",
            packs.len(),
            ids.len()
        );
        c.indexed += packs.len();
        c.pending = 0;
        c.pending_blobs = 0;
        c.last = Instant::now();
        c.ids.extend(ids);
        c.bytes += bytes;
        Ok(())
    }

    /// Runs `work` while packs are stored by writer threads of their own
    /// (as many as the backend takes puts at a time), so the threads adding
    /// blobs keep going while a pack is written and fsynced; then stores
    /// what is pending. A full pack waits in the thread that filled it until
    /// a writer takes it (a rendezvous channel), so at most two packs of a
    /// kind plus one per writer exist at a time (filling, handed over, being
    /// written). A queue of one more saved no time and cost 16 MiB. After a
    /// failed store the writers keep draining without storing (so no one
    /// blocks) and the error is returned.
    pub fn with_writer<R>(&self, work: impl FnOnce() -> Result<R>) -> Result<R> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<FinishedPack>(0);
        let rx = Mutex::new(rx);
        *self.writer.lock().expect("pack writer") = Some(tx);
        let r = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..self.writers)
                .map(|_| scope.spawn(|| self.write_packs(&rx)))
                .collect();
            let r = work().and_then(|r| self.flush().map(|()| r));
            self.writer.lock().expect("pack writer").take(); // closes the channel
            for w in writers {
                w.join().expect("a pack writer does not panic");
            }
            r
        })?;
        if let Some(e) = self.writer_error.lock().expect("pack writer error").take() {
            return Err(e);
        }
        Ok(r)
    }

    /// A writer thread: stores each pack it is handed until the channel
    /// closes; after any writer's failure, only drains.
    fn write_packs(&self, rx: &Mutex<Receiver<FinishedPack>>) {
        loop {
            // The lock is held only to take the next pack, not to store it.
            let next = rx.lock().expect("pack channel").recv();
            let Ok(fp) = next else { return };
            if self
                .writer_error
                .lock()
                .expect("pack writer error")
                .is_some()
            {
                continue;
            }
            if let Err(e) = self.store(fp) {
                self.writer_error
                    .lock()
                    .expect("pack writer error")
                    .get_or_insert(e);
            }
        }
    }

    /// Stores the packs being filled, if they hold anything.
    fn flush(&self) -> Result<()> {
        for builder in &self.builders {
            let p = std::mem::replace(
                &mut *builder.lock().expect("pack builder"),
                PackBuilder::new(self.repo.crypto().is_encrypted(), 0),
            );
            if !p.is_empty() {
                self.write(p)?;
            }
        }
        Ok(())
    }

    /// Takes the packs stored so far (by the writer thread too), so the
    /// caller can index them while adding goes on: an index checkpoint.
    /// [`Packer::finish`] returns only the packs stored after the last take.
    pub fn take_stored(&self) -> PackList {
        std::mem::take(&mut *self.stored.lock().expect("stored packs"))
    }

    /// Bytes of the packs stored so far.
    pub fn bytes_stored(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Stores what is pending; returns every pack stored (since the last
    /// [`Packer::take_stored`]).
    pub fn finish(self) -> Result<Stored> {
        if let Some(c) = &self.checkpoints {
            c.lock().expect("checkpoints").finishing = true;
        }
        self.flush()?;
        let (indexed, index_ids, index_bytes) = match self.checkpoints {
            Some(c) => {
                let c = c.into_inner().expect("checkpoints");
                (c.indexed, c.ids, c.bytes)
            }
            None => (0, Vec::new(), 0),
        };
        Ok(Stored {
            packs: self.stored.into_inner().expect("stored packs"),
            bytes: self.bytes.into_inner(),
            indexed,
            index_ids,
            index_bytes,
        })
    }
}

/// Writes index files describing `packs`, of at most ~64k blobs each. When
/// `supersedes` is not empty, the file naming it is written last (even if
/// `packs` is empty), so the old files stay in force until every new file
/// is durable: an interruption leaves old and new files side by side, both
/// describing existing packs. Returns the files written and their bytes.
pub fn write_index(
    repo: &Repository,
    packs: &[(PackId, Vec<BlobEntry>)],
    supersedes: &[IndexId],
) -> Result<(Vec<IndexId>, u64)> {
    let mut parts = split_for_index(packs);
    if parts.is_empty() && !supersedes.is_empty() {
        parts.push(&[]);
    }
    let (mut files, mut bytes) = (Vec::with_capacity(parts.len()), 0);
    let last = parts.len().saturating_sub(1);
    for (i, part) in parts.into_iter().enumerate() {
        let (id, n) = repo.write_index(&IndexFile {
            supersedes: if i == last {
                supersedes.to_vec()
            } else {
                vec![]
            },
            packs: part.to_vec(),
        })?;
        files.push(id);
        bytes += n;
    }
    Ok((files, bytes))
}

/// Splits pack lists into index files of at most ~64k blobs each.
fn split_for_index(packs: &[(PackId, Vec<BlobEntry>)]) -> Vec<&[(PackId, Vec<BlobEntry>)]> {
    const MAX_BLOBS: usize = 65_536;
    let mut parts = Vec::new();
    let (mut start, mut n) = (0, 0);
    for (i, (_, e)) in packs.iter().enumerate() {
        if n > 0 && n + e.len() > MAX_BLOBS {
            parts.push(&packs[start..i]);
            start = i;
            n = 0;
        }
        n += e.len();
    }
    if start < packs.len() {
        parts.push(&packs[start..]);
    }
    parts
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use crate::backend::{Backend, Forward, ObjectKey};
    use crate::backup::{self, BackupOptions, Progress};
    use crate::error::BackendError;
    use crate::repo::format::ObjectKind;
    use crate::testutil;

    /// Puts that take a while, as over a network, counting how many are in
    /// flight at once; optionally failing the pack puts after some.
    struct SlowPuts {
        inner: Arc<dyn Backend>,
        parallel: usize,
        in_flight: AtomicUsize,
        most: AtomicUsize,
        packs_put: AtomicUsize,
        fail_after: Option<usize>,
    }

    impl Forward for SlowPuts {
        fn inner(&self) -> &dyn Backend {
            &*self.inner
        }
        fn parallel_puts(&self) -> usize {
            self.parallel
        }
        fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
            if key.kind != ObjectKind::Pack {
                return self.inner.put(key, data);
            }
            let n = self.packs_put.fetch_add(1, Ordering::SeqCst);
            if self.fail_after.is_some_and(|f| n >= f) {
                return Err(BackendError::Injected(format!("put {key}")));
            }
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(40));
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.inner.put(key, data)
        }
    }

    fn run(parallel: usize, fail_after: Option<usize>) -> (Arc<SlowPuts>, crate::Result<()>) {
        let (mem, _) = testutil::mem_repo(false);
        let slow = Arc::new(SlowPuts {
            inner: mem,
            parallel,
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            packs_put: AtomicUsize::new(0),
            fail_after,
        });
        let repo = testutil::reopen(slow.clone());
        let mut indexed = repo.clone().load_index().expect("index");
        let src = tempfile::tempdir().unwrap();
        let files = testutil::files(11, 24, 64 * 1024);
        testutil::write_tree(src.path(), &files);
        let out = backup::backup(
            &mut indexed,
            src.path(),
            &BackupOptions::default(),
            &Progress::default(),
        );
        let out = out.map(|o| {
            let (restored, damaged) = testutil::restore_files(&repo, &o.snapshot);
            assert!(damaged.is_empty(), "{damaged:?}");
            assert_eq!(restored, files);
        });
        (slow, out)
    }

    #[test]
    fn packs_are_put_as_many_at_a_time_as_the_backend_takes() {
        let (one, r) = run(1, None);
        r.expect("backup");
        assert_eq!(one.most.load(Ordering::SeqCst), 1);
        let (four, r) = run(4, None);
        r.expect("backup");
        assert!(
            four.packs_put.load(Ordering::SeqCst) >= 12,
            "too few packs to tell"
        );
        assert_eq!(
            four.most.load(Ordering::SeqCst),
            4,
            "puts in flight at once"
        );
    }

    #[test]
    fn a_failed_put_among_parallel_ones_fails_the_snapshot_without_a_hang() {
        let (_, r) = run(4, Some(5));
        let e = r.expect_err("a put failed");
        assert!(e.to_string().contains("put"), "{e}");
    }
}
