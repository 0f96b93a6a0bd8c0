//! `pvsnap copy`: snapshots of one repository copied into another.
//!
//! A copy is matched to what it copies by its *origin*, the id of the
//! snapshot as first taken ([`Snapshot::origin`]): a source snapshot whose
//! origin some target snapshot shares is there already. The target has its
//! own keys, chunker and retention; a copy is an ordinary snapshot there,
//! with [`Snapshot::original`] set.
//!
//! Blobs are sent only when the target lacks them. When both repositories
//! name blobs alike (both unencrypted, or both with the same master key),
//! a blob's stored bytes are copied as they are, after verification. When
//! they do not (content ids are keyed by the master key: [`Crypto::content_id`]),
//! every blob is opened, verified, and stored again under the target's id;
//! trees are rewritten bottom-up with their children's new ids, since a
//! tree's id is the id of its bytes.
//!
//! Order and resuming. Packs go through the one [`Packer`]; every
//! [`CHECKPOINT_PACKS`] packs an index file names the packs stored so far
//! (a checkpoint), and each snapshot object is written only after the packs
//! and index files of everything it references. A run killed at any point
//! leaves packs that are indexed (the next run finds their blobs in the
//! index) or a few that are not yet: the next run finds their blobs in
//! their trailers ([`IndexedRepository::locate`]), verifies each it needs,
//! and indexes those packs instead of sending their blobs again. So no
//! blob, and no pack, is sent twice. Every tree is walked on each run: a
//! tree in the target does not prove that its children are (a tree pack
//! may be stored and indexed before the data pack of its files).
//!
//! The caller holds a shared lock on both repositories (copy is a reader of
//! the source and a writer of the target, like `snapshot`), so no prune
//! runs on the target while the copy deduplicates against its index; the
//! target's grace period for unindexed packs covers the rest (see
//! `ARCHITECTURE.md`, "Prune and concurrent snapshots").

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::repo::IndexedRepository;
use crate::repo::crypto::Crypto;
use crate::repo::format::ObjectKind;
use crate::repo::id::{ChunkId, Id, PackId, SnapshotId, TreeId};
use crate::snapshot::Snapshot;
use crate::store::blob::{self, BlobKind};
use crate::store::packer::{PackList, Packer, write_index};
use crate::tree::{MAX_DEPTH, NodeKind, Tree};

/// Packs stored between two index checkpoints.
pub const CHECKPOINT_PACKS: usize = 8;

/// Stored bytes read and verified at once when blobs move as stored: a
/// bound on the memory a folder of large files takes during a copy.
const VERIFY_BATCH_BYTES: u64 = 32 << 20;

/// Which snapshots of the source to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every snapshot.
    All,
    /// Snapshots named as `resolve_in` takes them (ids, prefixes, `latest`,
    /// `latest:SOURCE`); a name matching nothing is an error.
    Specs(Vec<String>),
    /// Every snapshot of one source key (already through
    /// [`crate::repo::source_key`]); none is an error.
    Source(String),
}

/// Counters that move while a copy runs.
#[derive(Debug, Default)]
pub struct CopyProgress {
    /// Snapshots written to the target.
    pub snapshots: AtomicU64,
    /// File content covered so far and in all (the selected snapshots'
    /// total sizes): what a progress line and its ETA show.
    pub content_done: AtomicU64,
    pub content_total: AtomicU64,
    /// Bytes stored in the target so far.
    pub bytes_sent: AtomicU64,
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CopyReport {
    /// (source id, id of the new copy in the target), oldest first.
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// Selected snapshots the target had already.
    pub already_there: Vec<SnapshotId>,
    /// Selected native restore points, not copied: their content is a
    /// native snapshot on this host's storage, which another repository's
    /// `forget` must not destroy.
    pub native_only_skipped: Vec<SnapshotId>,
    /// Blobs stored in the target.
    pub blobs_copied: u64,
    /// Blobs the target had already.
    pub blobs_present: u64,
    /// Bytes stored in the target: packs, index files, snapshot objects.
    pub bytes_sent: u64,
    pub packs_written: u64,
    pub index_files_written: u64,
    /// Packs an interrupted copy left unindexed and this one indexed.
    pub packs_adopted: u64,
    /// Whether blobs were re-encoded under the target's ids.
    pub reencoded: bool,
    pub duration_s: f64,
}

/// Copies the selected snapshots of `src` that `dst` lacks into `dst`.
/// The caller holds shared locks on both.
pub fn copy(
    src: &IndexedRepository,
    dst: &IndexedRepository,
    selection: &Selection,
    progress: &CopyProgress,
) -> Result<CopyReport> {
    let started = Instant::now();
    if src.config().id == dst.config().id {
        return Err(Error::Invalid(format!(
            "{} and {} are the same repository (id {}); copy needs another repository as --to, created with `pvsnap init`",
            src.backend().location(),
            dst.backend().location(),
            src.config().id.short()
        )));
    }
    let (snaps, bad) = src.snapshots_lenient()?;
    crate::repo::warn_unreadable_snapshots(&bad);
    let selected = select(&snaps, selection)?;
    let (in_target, bad) = dst.snapshots_lenient()?;
    crate::repo::warn_unreadable_snapshots(&bad);
    // origin → id in the target
    let mut present: HashMap<SnapshotId, SnapshotId> =
        in_target.iter().map(|s| (s.origin(), s.id)).collect();
    let mut report = CopyReport {
        reencoded: !same_ids(src.crypto(), dst.crypto()),
        ..CopyReport::default()
    };
    let todo: Vec<&Snapshot> = selected
        .into_iter()
        .filter(|s| {
            if s.is_native_only() {
                report.native_only_skipped.push(s.id);
                return false;
            }
            let there = present.contains_key(&s.origin());
            if there {
                report.already_there.push(s.id);
            }
            !there
        })
        .collect();
    progress.content_total.store(
        todo.iter().map(|s| s.summary.total_bytes).sum(),
        Ordering::Relaxed,
    );
    let origin_of: HashMap<SnapshotId, SnapshotId> =
        snaps.iter().map(|s| (s.id, s.origin())).collect();
    let mut copier = Copier {
        src,
        dst,
        same_ids: !report.reencoded,
        trees: HashMap::new(),
        chunks: HashMap::new(),
        added: HashSet::new(),
        adopted: BTreeSet::new(),
        pack_sizes: None,
        pending: Vec::new(),
        packer_bytes: 0,
        report: &mut report,
        progress,
    };
    let mut covered = 0;
    for snap in todo {
        let copy = copier.snapshot(snap, &present, &origin_of)?;
        present.insert(snap.origin(), copy.id);
        covered += snap.summary.total_bytes;
        progress.content_done.store(covered, Ordering::Relaxed);
        progress.snapshots.fetch_add(1, Ordering::Relaxed);
        copier.report.copied.push((snap.id, copy.id));
    }
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The snapshots `selection` names, oldest first, each once.
fn select<'a>(snaps: &'a [Snapshot], selection: &Selection) -> Result<Vec<&'a Snapshot>> {
    let mut out: Vec<&Snapshot> = match selection {
        Selection::All => snaps.iter().collect(),
        Selection::Source(key) => {
            let found: Vec<&Snapshot> = snaps
                .iter()
                .filter(|s| crate::repo::same_source(&s.source.key(), key))
                .collect();
            if found.is_empty() {
                return Err(Error::NoSnapshotOfSource {
                    given: key.clone(),
                    key: key.clone(),
                    sources: snaps
                        .iter()
                        .map(|s| s.source.key())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                });
            }
            found
        }
        Selection::Specs(specs) => specs
            .iter()
            .map(|spec| crate::repo::resolve_in(snaps, spec))
            .collect::<Result<_>>()?,
    };
    crate::repo::sort_snapshots(&mut out);
    out.dedup_by_key(|s| s.id);
    Ok(out)
}

/// Whether two repositories give the same plaintext the same id and seal
/// it alike, so stored bytes can move unchanged: both unencrypted, or both
/// keyed by one master key (the id key and the data key come from it).
fn same_ids(a: &Crypto, b: &Crypto) -> bool {
    const PROBE: &[u8] = b"pvsnap copy: do these repositories name blobs alike?";
    a.is_encrypted() == b.is_encrypted() && a.content_id(PROBE) == b.content_id(PROBE)
}

struct Copier<'a, 'r> {
    src: &'a IndexedRepository,
    dst: &'a IndexedRepository,
    same_ids: bool,
    /// Source tree id → target tree id, for trees done in this run.
    trees: HashMap<TreeId, TreeId>,
    /// Source chunk id → target chunk id, when ids differ.
    chunks: HashMap<ChunkId, ChunkId>,
    /// Target ids of blobs this run stored or found.
    added: HashSet<Id>,
    /// Unindexed target packs holding blobs this run needs, not yet indexed.
    adopted: BTreeSet<PackId>,
    /// Sizes of the target's packs, listed when the first pack is adopted.
    pack_sizes: Option<HashMap<PackId, u64>>,
    /// Packs stored and not yet indexed.
    pending: PackList,
    /// Bytes the current packer had stored at the last count.
    packer_bytes: u64,
    report: &'r mut CopyReport,
    progress: &'a CopyProgress,
}

impl Copier<'_, '_> {
    /// Copies what `snap` references, then writes its copy.
    fn snapshot(
        &mut self,
        snap: &Snapshot,
        present: &HashMap<SnapshotId, SnapshotId>,
        origin_of: &HashMap<SnapshotId, SnapshotId>,
    ) -> Result<Snapshot> {
        let dst = self.dst;
        let packer = Packer::new(dst);
        let tree = packer.with_writer(|| self.tree(&packer, &snap.tree, 0))?;
        let rest = packer.finish()?;
        self.count_sent(rest.bytes);
        self.packer_bytes = 0;
        let mut packs = std::mem::take(&mut self.pending);
        packs.extend(rest.packs);
        self.index(packs)?;
        self.index_adopted()?;
        let mut root = snap.root.clone();
        root.kind = NodeKind::Dir { subtree: tree };
        let copy = Snapshot {
            id: SnapshotId(Id::random()),
            tree,
            root,
            parent: snap
                .parent
                .and_then(|p| present.get(origin_of.get(&p).unwrap_or(&p)).copied()),
            original: Some(snap.origin()),
            // A native snapshot kept on the storage belongs to the
            // repository that made it: the copy records it, not kept.
            source_snapshot: snap.source_snapshot.clone().map(|mut n| {
                n.kept = false;
                n
            }),
            ..snap.clone()
        };
        let n = dst.save_snapshot(&copy)?;
        self.report.bytes_sent += n;
        self.progress.bytes_sent.fetch_add(n, Ordering::Relaxed);
        Ok(copy)
    }

    /// Copies tree `id` and everything below it; returns its id in the
    /// target. Children first, so a tree's new bytes name their new ids.
    fn tree(&mut self, packer: &Packer<'_>, id: &TreeId, depth: usize) -> Result<TreeId> {
        if let Some(done) = self.trees.get(id) {
            return Ok(*done);
        }
        if depth > MAX_DEPTH {
            return Err(Error::Invalid(format!(
                "tree {id} lies more than {MAX_DEPTH} folders deep; the source is damaged or crafted, run `pvsnap check` on it"
            )));
        }
        let plain = self.src.read_blob(BlobKind::Tree, &id.0)?;
        let mut tree = Tree::decode(&plain, id)?;
        if self.same_ids {
            // Ids do not change: the folder's chunks are sent in batches,
            // verified on all cores, before its subfolders.
            self.chunks_as_stored(packer, &tree)?;
        }
        for node in &mut tree.nodes {
            match &mut node.kind {
                NodeKind::File { content } => {
                    for extent in content.iter_mut() {
                        if let Some(c) = &mut extent.chunk
                            && !self.same_ids
                        {
                            *c = self.chunk(packer, c)?;
                        }
                        self.progress
                            .content_done
                            .fetch_add(extent.len, Ordering::Relaxed);
                    }
                }
                NodeKind::Dir { subtree } => *subtree = self.tree(packer, subtree, depth + 1)?,
                _ => {}
            }
        }
        let new = if self.same_ids {
            self.blob_as_stored(packer, BlobKind::Tree, &id.0)?;
            *id
        } else {
            let bytes = tree.encode();
            let new = self.dst.crypto().content_id(&bytes);
            self.blob_reencoded(packer, BlobKind::Tree, new, &bytes)?;
            TreeId(new)
        };
        self.trees.insert(*id, new);
        self.checkpoint(packer)?;
        Ok(new)
    }

    /// Copies the data chunks of the files of `tree` as stored (same ids):
    /// those the target lacks are read and verified in parallel, a batch
    /// of at most [`VERIFY_BATCH_BYTES`] at a time, and handed to the
    /// packer in the tree's order. Counts as [`Self::blob_as_stored`] does
    /// for each reference.
    fn chunks_as_stored(&mut self, packer: &Packer<'_>, tree: &Tree) -> Result<()> {
        let mut need: Vec<(Id, crate::store::index::BlobLocation)> = Vec::new();
        let mut queued: HashSet<Id> = HashSet::new();
        for node in &tree.nodes {
            let NodeKind::File { content } = &node.kind else {
                continue;
            };
            for id in content.iter().filter_map(|e| e.chunk.map(|c| c.0)) {
                if queued.contains(&id) || self.target_has(BlobKind::Data, &id)? {
                    self.report.blobs_present += 1;
                    continue;
                }
                let loc = self.src.locate(&id).ok_or_else(|| Error::BlobNotInIndex {
                    id: id.to_hex(),
                    kind: BlobKind::Data.name(),
                })?;
                queued.insert(id);
                need.push((id, loc));
            }
        }
        let mut rest = need.as_slice();
        while !rest.is_empty() {
            let mut bytes = 0u64;
            let n = rest
                .iter()
                .take_while(|(_, loc)| {
                    let fits = bytes == 0 || bytes < VERIFY_BATCH_BYTES;
                    bytes += u64::from(loc.entry.stored_len);
                    fits
                })
                .count();
            let (batch, after) = rest.split_at(n);
            rest = after;
            let stored: Vec<Vec<u8>> = batch
                .par_iter()
                .map(|(_, loc)| self.read_verified(loc))
                .collect::<Result<_>>()?;
            for ((id, loc), bytes) in batch.iter().zip(stored) {
                packer.add_stored(&loc.entry, &bytes)?;
                self.stored_one(id);
            }
        }
        Ok(())
    }

    /// The stored bytes of the source blob at `loc`, after checking that
    /// they open to the content their id names.
    fn read_verified(&self, loc: &crate::store::index::BlobLocation) -> Result<Vec<u8>> {
        let key = crate::backend::ObjectKey::new(ObjectKind::Pack, loc.pack.to_hex());
        let stored = self.src.backend().get_range(
            &key,
            loc.entry.offset as u64,
            loc.entry.stored_len as u64,
        )?;
        blob::decode(self.src.crypto(), &loc.pack, &loc.entry, &stored)?;
        Ok(stored)
    }

    /// Copies one data chunk under the target's own id (ids differ);
    /// returns that id.
    fn chunk(&mut self, packer: &Packer<'_>, id: &ChunkId) -> Result<ChunkId> {
        if let Some(done) = self.chunks.get(id) {
            return Ok(*done);
        }
        let plain = self.src.read_blob(BlobKind::Data, &id.0)?;
        let new = self.dst.crypto().content_id(&plain);
        self.blob_reencoded(packer, BlobKind::Data, new, &plain)?;
        self.chunks.insert(*id, ChunkId(new));
        Ok(ChunkId(new))
    }

    /// Whether the target has blob `id` (of its own naming): in its index,
    /// stored by this run, or in a pack an interrupted copy left unindexed
    /// (then verified, and that pack is indexed at the next checkpoint).
    fn target_has(&mut self, kind: BlobKind, id: &Id) -> Result<bool> {
        if self.added.contains(id) || self.dst.index().contains(id) {
            return Ok(true);
        }
        let Some(loc) = self.dst.locate(id) else {
            return Ok(false);
        };
        if loc.entry.kind != kind || self.dst.read_blob(kind, id).is_err() {
            return Ok(false); // damaged: store it again
        }
        self.adopted.insert(loc.pack);
        self.added.insert(*id);
        Ok(true)
    }

    /// Copies blob `id` as stored in the source (same ids, same sealing),
    /// after verifying it, unless the target has it.
    fn blob_as_stored(&mut self, packer: &Packer<'_>, kind: BlobKind, id: &Id) -> Result<()> {
        if self.target_has(kind, id)? {
            self.report.blobs_present += 1;
            return Ok(());
        }
        let loc = self.src.locate(id).ok_or_else(|| Error::BlobNotInIndex {
            id: id.to_hex(),
            kind: kind.name(),
        })?;
        let stored = self.read_verified(&loc)?;
        packer.add_stored(&loc.entry, &stored)?;
        self.stored_one(id);
        Ok(())
    }

    /// Stores plaintext `plain` under the target's id `id`, unless the
    /// target has it.
    fn blob_reencoded(
        &mut self,
        packer: &Packer<'_>,
        kind: BlobKind,
        id: Id,
        plain: &[u8],
    ) -> Result<()> {
        if self.target_has(kind, &id)? {
            self.report.blobs_present += 1;
            return Ok(());
        }
        packer.add(kind, id, plain)?;
        self.stored_one(&id);
        Ok(())
    }

    fn stored_one(&mut self, id: &Id) {
        self.added.insert(*id);
        self.report.blobs_copied += 1;
    }

    /// Counts the pack bytes `packer` stored since the last call.
    fn count_sent(&mut self, packer_bytes: u64) {
        let new = packer_bytes - self.packer_bytes;
        self.packer_bytes = packer_bytes;
        self.report.bytes_sent += new;
        self.progress.bytes_sent.fetch_add(new, Ordering::Relaxed);
    }

    /// Indexes the packs stored so far once there are enough of them.
    fn checkpoint(&mut self, packer: &Packer<'_>) -> Result<()> {
        self.count_sent(packer.bytes_stored());
        self.pending.extend(packer.take_stored());
        if self.pending.len() >= CHECKPOINT_PACKS {
            let packs = std::mem::take(&mut self.pending);
            self.index(packs)?;
            self.index_adopted()?;
        }
        Ok(())
    }

    /// Writes index files for packs this run stored.
    fn index(&mut self, packs: PackList) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        self.report.packs_written += packs.len() as u64;
        self.write_index(&packs)
    }

    /// Writes index files naming `packs`, and counts them.
    fn write_index(&mut self, packs: &PackList) -> Result<()> {
        let (files, bytes) = write_index(self.dst, packs, &[])?;
        self.report.index_files_written += files.len() as u64;
        self.report.bytes_sent += bytes;
        self.progress.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Writes an index file for the unindexed packs found to hold blobs
    /// this run needs, from their trailers.
    fn index_adopted(&mut self) -> Result<()> {
        if self.adopted.is_empty() {
            return Ok(());
        }
        let backend = self.dst.backend();
        let sizes = match &self.pack_sizes {
            Some(s) => s,
            None => self.pack_sizes.insert(
                backend
                    .list(ObjectKind::Pack)?
                    .into_iter()
                    .filter_map(|(n, size)| n.parse::<PackId>().ok().map(|p| (p, size)))
                    .collect(),
            ),
        };
        let mut packs = Vec::new();
        for pack in std::mem::take(&mut self.adopted) {
            let Some(&size) = sizes.get(&pack) else {
                continue;
            };
            let entries =
                crate::store::pack::read_trailer(backend.as_ref(), self.dst.crypto(), &pack, size)?;
            packs.push((pack, entries));
        }
        self.report.packs_adopted += packs.len() as u64;
        self.write_index(&packs)
    }
}
