//! The index: which pack holds each blob.
//!
//! On disk, `index/<id>` files list packs and their blob entries; they are
//! written after the packs they describe, and an index file may name older index
//! files it *supersedes* (prune writes one complete index and then deletes the
//! old ones). An index file is named by the hash of its bytes, and since
//! version 2 those bytes begin with a random part: no two writes ever give
//! the same name, so a file that supersedes another can only ever hide files
//! its writer had read, never one written after it (a later snapshot that
//! stores the same packs writes a file of its own, with a name of its own). In memory, [`Index`] is one sorted vector of fixed-size entries,
//! 52 bytes a blob (see `ARCHITECTURE.md` for the measurement), and a table of
//! where each 16-bit id prefix starts: a lookup binary-searches one bucket.

use std::collections::HashSet;

use rayon::prelude::*;

use crate::error::FormatError;
use crate::repo::crypto::Crypto;
use crate::repo::format::{HEADER_LEN, Header, ObjectKind, Reader};
use crate::repo::id::{Id, IndexId, PackId};
use crate::store::blob::{BlobEntry, BlobKind};

const INDEX_AAD: &[u8] = b"pvsnap index v1";
/// Length of the random part that starts the body of a version 2 index file.
pub const INDEX_NONCE_LEN: usize = 16;

/// Contents of one index file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFile {
    pub supersedes: Vec<IndexId>,
    pub packs: Vec<(PackId, Vec<BlobEntry>)>,
}

impl IndexFile {
    /// Encodes to the stored bytes, returning them with their id.
    pub fn encode(&self, crypto: &Crypto) -> (IndexId, Vec<u8>) {
        let mut body = Vec::new();
        body.extend_from_slice(&rand::random::<[u8; INDEX_NONCE_LEN]>());
        body.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for s in &self.supersedes {
            body.extend_from_slice(&s.0.0);
        }
        body.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for (p, entries) in &self.packs {
            body.extend_from_slice(&p.0.0);
            body.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for e in entries {
                e.encode_into(&mut body);
            }
        }
        let mut out = Header::new(ObjectKind::Index, crypto.is_encrypted())
            .encode()
            .to_vec();
        out.extend_from_slice(&crypto.seal(INDEX_AAD, body));
        (IndexId(Id(*blake3::hash(&out).as_bytes())), out)
    }

    /// Decodes an index file. When `name` is an index id (as it is for every
    /// stored file), the bytes must hash to it: a damaged index file is
    /// refused as a whole, in unencrypted repositories too.
    pub fn decode(bytes: &[u8], crypto: &Crypto, name: &str) -> Result<Self, crate::error::Error> {
        if let Ok(id) = name.parse::<IndexId>()
            && blake3::hash(bytes).as_bytes() != &id.0.0
        {
            return Err(FormatError::ChecksumMismatch {
                what: format!("index {name}"),
            }
            .into());
        }
        let header = Header::decode(bytes, ObjectKind::Index)?;
        if header.encrypted() != crypto.is_encrypted() {
            return Err(FormatError::Invalid {
                what: format!("index {name}"),
                detail: "encryption flag does not match the repository".into(),
            }
            .into());
        }
        let body = crypto.open(INDEX_AAD, &bytes[HEADER_LEN..], &|| format!("index {name}"))?;
        let mut r = Reader::new(&body, "index file");
        if header.version >= 2 {
            r.take(INDEX_NONCE_LEN)?;
        }
        let n = r.u32()? as usize;
        let mut supersedes = Vec::with_capacity(n.min(r.remaining() / 32));
        for _ in 0..n {
            supersedes.push(IndexId(Id(r.id()?)));
        }
        let np = r.u32()? as usize;
        let mut packs = Vec::with_capacity(np.min(r.remaining() / 36));
        for _ in 0..np {
            let pack = PackId(Id(r.id()?));
            let ne = r.u32()? as usize;
            if ne.saturating_mul(BlobEntry::ENCODED_LEN) > r.remaining() {
                return Err(FormatError::Invalid {
                    what: format!("index {name}"),
                    detail: format!("pack {pack} claims {ne} entries past the end"),
                }
                .into());
            }
            let entries = (0..ne)
                .map(|_| BlobEntry::decode(&mut r))
                .collect::<Result<Vec<_>, _>>()?;
            packs.push((pack, entries));
        }
        if r.remaining() != 0 {
            return Err(FormatError::Invalid {
                what: format!("index {name}"),
                detail: format!("{} unexpected trailing bytes", r.remaining()),
            }
            .into());
        }
        Ok(IndexFile { supersedes, packs })
    }
}

/// The index files among `files` that another file present supersedes; they
/// are left out of the index and are prune's to delete.
pub fn superseded(files: &[(IndexId, IndexFile)]) -> HashSet<IndexId> {
    superseded_by(files.iter().map(|(id, f)| (*id, f.supersedes.as_slice())))
}

/// [`superseded`], of files given as (id, the files it supersedes).
pub fn superseded_by<'a>(
    files: impl Iterator<Item = (IndexId, &'a [IndexId])> + Clone,
) -> HashSet<IndexId> {
    let present: HashSet<IndexId> = files.clone().map(|(id, _)| id).collect();
    files
        .flat_map(|(_, s)| s.iter().copied())
        .filter(|s| present.contains(s))
        .collect()
}

/// One blob's location, as kept in memory: 52 bytes with padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
struct Slot {
    id: [u8; 32],
    pack: u32,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
    kind_flags: u8,
}

/// Sorts by id, then pack number (then the rest of the slot): in place by the id's first byte into 256
/// buckets (one pass of swaps, no second buffer), then each bucket on its
/// own, in parallel, comparing the first 8 bytes of the ids as one number
/// before the rest. At ten million blobs a plain sort of the whole vector
/// was most of the time taken to open the repository.
fn sort_slots(slots: &mut [Slot]) {
    // A total order: of a blob listed twice in one pack (a damaged or
    // crafted index), every way of building the index keeps the same one.
    fn order(a: &Slot, b: &Slot) -> std::cmp::Ordering {
        head(&a.id)
            .cmp(&head(&b.id))
            .then_with(|| a.id.cmp(&b.id))
            .then(a.pack.cmp(&b.pack))
            .then(a.offset.cmp(&b.offset))
            .then(a.stored_len.cmp(&b.stored_len))
            .then(a.raw_len.cmp(&b.raw_len))
            .then(a.kind_flags.cmp(&b.kind_flags))
    }
    if slots.len() < 1 << 16 {
        slots.sort_unstable_by(order);
        return;
    }
    let mut ends = [0usize; 256];
    for s in slots.iter() {
        ends[s.id[0] as usize] += 1;
    }
    let mut next = [0usize; 256];
    let mut sum = 0;
    for b in 0..256 {
        next[b] = sum;
        sum += ends[b];
        ends[b] = sum;
    }
    let starts = next;
    for b in 0..256 {
        while next[b] < ends[b] {
            let i = next[b];
            let t = slots[i].id[0] as usize;
            if t == b {
                next[b] += 1;
            } else {
                // Into its own bucket; what comes back is looked at next.
                slots.swap(i, next[t]);
                next[t] += 1;
            }
        }
    }
    let mut buckets = Vec::with_capacity(256);
    let mut rest = slots;
    for b in 0..256 {
        let (bucket, tail) = rest.split_at_mut(ends[b] - starts[b]);
        buckets.push(bucket);
        rest = tail;
    }
    buckets
        .into_par_iter()
        .for_each(|bucket| bucket.sort_unstable_by(order));
}

/// The slots of one pack's entries, the pack numbered `pack`.
fn slots(pack: u32, entries: &[BlobEntry]) -> impl Iterator<Item = Slot> + '_ {
    entries.iter().map(move |e| Slot {
        id: e.id.0,
        pack,
        offset: e.offset,
        stored_len: e.stored_len,
        raw_len: e.raw_len,
        kind_flags: (e.kind as u8) << 4 | e.flags,
    })
}

impl Slot {
    fn entry(&self) -> BlobEntry {
        BlobEntry {
            kind: if self.kind_flags >> 4 == 1 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            flags: self.kind_flags & 0x0f,
            id: Id(self.id),
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
        }
    }
}

/// Everything needed to read one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub entry: BlobEntry,
}

/// The in-memory index: every blob of the repository, sorted by id.
#[derive(Default)]
pub struct Index {
    packs: Vec<PackId>,
    slots: Vec<Slot>,
    /// `starts[p]` is the first slot whose id begins with the 16-bit prefix
    /// `p` (65,537 entries, 256 KiB whatever the size): a lookup binary-searches
    /// only its bucket, a few cache lines instead of ~24 misses at 10M blobs.
    starts: Vec<u32>,
}

const BUCKETS: usize = 1 << 16;

/// Steps a lookup takes from its guess before it falls back to a binary
/// search of the bucket (see [`Index::position`]).
const MAX_STEPS: usize = 64;

/// An id's first 8 bytes as a number: ids in this order are in id order.
fn head(id: &[u8; 32]) -> u64 {
    u64::from_be_bytes(id[..8].try_into().expect("8 bytes"))
}

fn prefix(id: &[u8; 32]) -> usize {
    (id[0] as usize) << 8 | id[1] as usize
}

impl Index {
    /// Builds the index from decoded index files. Index files superseded by
    /// another one present are skipped; a blob stored in several packs keeps one
    /// location (the duplicates are prune's to remove).
    pub fn from_files(files: &[(IndexId, IndexFile)]) -> Self {
        Self::from_files_where(files, |_, _| true)
    }

    /// [`Index::from_files`], keeping only the entries `usable` accepts
    /// (before duplicates are dropped, so a blob stored in a usable and an
    /// unusable pack keeps the usable location).
    pub fn from_files_where(
        files: &[(IndexId, IndexFile)],
        usable: impl Fn(&PackId, &BlobEntry) -> bool,
    ) -> Self {
        let mut builder = IndexBuilder::default();
        builder.reserve(
            files
                .iter()
                .flat_map(|(_, f)| f.packs.iter())
                .map(|(_, e)| e.len())
                .sum(),
        );
        for (id, f) in files {
            builder.add(*id, f);
        }
        builder.finish(usable)
    }

    fn push_pack(&mut self, pack: PackId, entries: &[BlobEntry]) {
        let pi = self.add_pack(pack);
        self.slots.extend(slots(pi, entries));
    }

    /// Numbers a new pack.
    fn add_pack(&mut self, pack: PackId) -> u32 {
        let pi = u32::try_from(self.packs.len()).expect("fewer than 4 billion packs");
        self.packs.push(pack);
        pi
    }

    fn finish(&mut self) {
        sort_slots(&mut self.slots);
        self.slots.dedup_by(|a, b| a.id == b.id);
        self.slots.shrink_to_fit();
        self.set_starts();
    }

    /// The prefix table of the sorted slots.
    fn set_starts(&mut self) {
        let mut starts = vec![0u32; BUCKETS + 1];
        for s in &self.slots {
            starts[prefix(&s.id) + 1] += 1;
        }
        for i in 1..=BUCKETS {
            starts[i] += starts[i - 1];
        }
        self.starts = starts;
    }

    /// Adds the blobs of freshly written packs (after a backup wrote them).
    /// Only the new entries are sorted, then merged into the sorted slots
    /// from the back, in place: a commit of a few new blobs into an index
    /// of ten million no longer sorts the ten million again. A blob already
    /// present keeps its location, and of one listed twice among the new,
    /// the first pack's, as building the index from all of them would.
    ///
    /// Each pack's entries are dropped as they become slots, so the new
    /// blobs are held at most twice while the index grows (as slots to
    /// merge and in the index), as when the whole index was sorted again.
    pub fn extend(&mut self, packs: Vec<(PackId, Vec<BlobEntry>)>) {
        let mut new = Vec::with_capacity(packs.iter().map(|(_, e)| e.len()).sum());
        for (p, e) in packs {
            let pi = self.add_pack(p);
            new.extend(slots(pi, &e));
        }
        sort_slots(&mut new);
        new.dedup_by(|a, b| a.id == b.id);
        new.retain(|s| self.position(&Id(s.id)).is_none());
        if new.is_empty() {
            return;
        }
        let (n, m) = (self.slots.len(), new.len());
        // Exactly: a doubling growth would reserve another index's worth.
        self.slots.reserve_exact(m);
        self.slots.resize(n + m, Slot::default());
        let (mut i, mut j) = (n, m);
        for k in (0..n + m).rev() {
            if j == 0 {
                break; // the rest of the old slots are in place
            }
            if i > 0 && self.slots[i - 1].id > new[j - 1].id {
                self.slots[k] = self.slots[i - 1];
                i -= 1;
            } else {
                self.slots[k] = new[j - 1];
                j -= 1;
            }
        }
        self.set_starts();
    }

    /// The position of the blob's slot. Ids are hashes, spread evenly, so
    /// the id's next 16 bits after the prefix say about where in its bucket
    /// it lies: the search starts there and steps to it, a cache line or
    /// two, where a binary search of the bucket (about 150 slots at ten
    /// million blobs) missed the cache at most of its eight probes. Ids that
    /// are not spread (a crafted index) fall back to the binary search
    /// after [`MAX_STEPS`].
    fn position(&self, id: &Id) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let p = prefix(&id.0);
        let (start, end) = (self.starts[p] as usize, self.starts[p + 1] as usize);
        let n = end - start;
        if n == 0 {
            return None;
        }
        let key = head(&id.0);
        let slots = &self.slots[start..end];
        let guess = (u16::from_be_bytes([id.0[2], id.0[3]]) as usize * n) >> 16;
        // The first slot whose head is not below the key, found by stepping.
        let mut i = guess;
        let mut steps = 0;
        let first = loop {
            if steps == MAX_STEPS {
                break slots.partition_point(|s| head(&s.id) < key);
            }
            steps += 1;
            if i < n && head(&slots[i].id) < key {
                i += 1;
            } else if i > 0 && head(&slots[i - 1].id) >= key {
                i -= 1;
            } else {
                break i;
            }
        };
        slots[first..]
            .iter()
            .take_while(|s| head(&s.id) == key)
            .position(|s| s.id == id.0)
            .map(|j| start + first + j)
    }

    fn slot(&self, id: &Id) -> Option<&Slot> {
        self.position(id).map(|i| &self.slots[i])
    }

    /// The blob's position among the index's blobs (in id order, from 0 to
    /// [`Index::len`]) and its location.
    pub fn find(&self, id: &Id) -> Option<(usize, BlobLocation)> {
        self.position(id)
            .map(|i| (i, self.location(&self.slots[i])))
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.slot(id).is_some()
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        self.slot(id).map(|s| self.location(s))
    }

    fn location(&self, s: &Slot) -> BlobLocation {
        BlobLocation {
            pack: self.packs[s.pack as usize],
            entry: s.entry(),
        }
    }

    /// Number of distinct blobs.
    /// The packs that hold at least one entry.
    pub fn pack_ids(&self) -> impl Iterator<Item = PackId> + '_ {
        self.packs.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every blob's location, in id order, each blob once.
    pub fn iter(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        self.slots.iter().map(|s| self.location(s))
    }

    /// Bytes of heap memory held by the index.
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.packs.capacity() * std::mem::size_of::<PackId>()
            + self.starts.capacity() * 4
    }

    /// Size of one in-memory entry, for the record in `ARCHITECTURE.md`.
    pub const fn bytes_per_blob() -> usize {
        std::mem::size_of::<Slot>()
    }
}

/// Builds an [`Index`] from index files handed over one at a time, so that
/// a reader need not hold every decoded file beside the index it builds
/// (at ten million blobs the decoded files are as large as the index):
/// each file's entries go straight into the index's own vector, and which
/// files are superseded, and which entries are usable, is settled in
/// [`IndexBuilder::finish`]. The result equals [`Index::from_files_where`]
/// over the same files in the same order.
#[derive(Default)]
pub struct IndexBuilder {
    index: Index,
    /// `pack_file[i]`: the position among the added files of the file that
    /// listed `index.packs[i]`.
    pack_file: Vec<u32>,
    /// Each added file's id and the files it supersedes.
    files: Vec<(IndexId, Vec<IndexId>)>,
}

impl IndexBuilder {
    /// Makes room for `blobs` more entries.
    pub fn reserve(&mut self, blobs: usize) {
        self.index.slots.reserve_exact(blobs);
    }

    /// Adds the entries of one index file.
    pub fn add(&mut self, id: IndexId, file: &IndexFile) {
        let fi = u32::try_from(self.files.len()).expect("fewer than 4 billion index files");
        self.files.push((id, file.supersedes.clone()));
        for (pack, entries) in &file.packs {
            self.pack_file.push(fi);
            self.index.push_pack(*pack, entries);
        }
    }

    /// The index: entries of files that another added file supersedes are
    /// left out, and so are those `usable` refuses (before duplicates are
    /// dropped, so a blob stored in a usable and an unusable pack keeps the
    /// usable location); of a blob listed several times, the listing in the
    /// first pack listed is kept (within one pack, the lowest offset).
    pub fn finish(self, usable: impl Fn(&PackId, &BlobEntry) -> bool) -> Index {
        let IndexBuilder {
            mut index,
            pack_file,
            files,
        } = self;
        let present: HashSet<IndexId> = files.iter().map(|(id, _)| *id).collect();
        let superseded: HashSet<IndexId> = files
            .iter()
            .flat_map(|(_, s)| s.iter().copied())
            .filter(|s| present.contains(s))
            .collect();
        // The packs of the files in force, numbered anew in the same order.
        let all_packs = std::mem::take(&mut index.packs);
        let mut renumbered = vec![u32::MAX; all_packs.len()];
        for (i, pack) in all_packs.iter().enumerate() {
            if !superseded.contains(&files[pack_file[i] as usize].0) {
                renumbered[i] = index.packs.len() as u32;
                index.packs.push(*pack);
            }
        }
        index.slots.retain_mut(|s| {
            let to = renumbered[s.pack as usize];
            if to == u32::MAX {
                return false;
            }
            let keep = usable(&all_packs[s.pack as usize], &s.entry());
            s.pack = to;
            keep
        });
        index.finish();
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(i: u8, kind: BlobKind) -> BlobEntry {
        BlobEntry {
            kind,
            flags: i % 2,
            id: Id([i; 32]),
            offset: i as u32 * 10,
            stored_len: i as u32,
            raw_len: i as u32 * 2,
        }
    }

    fn arb_entry() -> impl Strategy<Value = BlobEntry> {
        (
            any::<[u8; 32]>(),
            any::<bool>(),
            0u8..2,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(id, tree, flags, o, s, r)| BlobEntry {
                kind: if tree { BlobKind::Tree } else { BlobKind::Data },
                flags,
                id: Id(id),
                offset: o,
                stored_len: s,
                raw_len: r,
            })
    }

    proptest! {
        #[test]
        fn index_file_round_trip(
            sup in proptest::collection::vec(any::<[u8; 32]>(), 0..3),
            packs in proptest::collection::vec((any::<[u8; 32]>(), proptest::collection::vec(arb_entry(), 0..20)), 0..5),
            encrypted in any::<bool>(),
        ) {
            let crypto = if encrypted { Crypto::Keyed(Box::new(crate::repo::crypto::Keys::from_master(&[5; 32]))) } else { Crypto::None };
            let f = IndexFile {
                supersedes: sup.into_iter().map(|b| IndexId(Id(b))).collect(),
                packs: packs.into_iter().map(|(p, e)| (PackId(Id(p)), e)).collect(),
            };
            let (_, bytes) = f.encode(&crypto);
            prop_assert_eq!(IndexFile::decode(&bytes, &crypto, "t").unwrap(), f);
            // Any truncation is an error, never a panic.
            for cut in [bytes.len() - 1, bytes.len() / 2, 9] {
                prop_assert!(IndexFile::decode(&bytes[..cut.max(1)], &crypto, "t").is_err());
            }
        }
    }

    proptest! {
        #[test]
        fn every_indexed_id_is_found_and_no_other(
            ids in proptest::collection::hash_set(any::<[u8; 32]>(), 1..400),
            probes in proptest::collection::vec(any::<[u8; 32]>(), 20),
            // Ids sharing a 16-bit prefix land in one bucket.
            prefix in any::<[u8; 2]>(),
        ) {
            let mut all: Vec<[u8; 32]> = ids.into_iter().collect();
            for (i, p) in probes.iter().enumerate().take(10) {
                let mut x = *p;
                x[..2].copy_from_slice(&prefix);
                x[31] = i as u8;
                all.push(x);
            }
            all.sort();
            all.dedup();
            let entries: Vec<BlobEntry> = all.iter().map(|id| BlobEntry { kind: BlobKind::Data, flags: 0, id: Id(*id), offset: 1, stored_len: 2, raw_len: 3 }).collect();
            let idx = Index::from_files(&[(IndexId::default(), IndexFile { supersedes: vec![], packs: vec![(PackId::default(), entries)] })]);
            prop_assert_eq!(idx.len(), all.len());
            for id in &all {
                prop_assert!(idx.contains(&Id(*id)));
            }
            for p in &probes[10..] {
                prop_assert_eq!(idx.contains(&Id(*p)), all.binary_search(p).is_ok());
            }
        }
    }

    proptest! {
        /// Lookups start at a guess from the id's bits: ids that are not
        /// spread evenly (hundreds in one bucket, bunched at one end, whole
        /// runs sharing their first 8 bytes) are found all the same, at
        /// their rank in id order, and absent ones are not.
        #[test]
        fn lookups_find_unevenly_spread_ids_at_their_rank(
            spread in proptest::collection::vec(any::<[u8; 32]>(), 0..200),
            bunched in proptest::collection::vec((any::<u8>(), any::<[u8; 24]>()), 0..300),
            same_head in proptest::collection::vec(any::<[u8; 24]>(), 0..20),
            probes in proptest::collection::vec(any::<[u8; 32]>(), 40),
            high in any::<bool>(),
        ) {
            let mut all: Vec<[u8; 32]> = spread;
            for (b, rest) in &bunched {
                // One bucket, all at its low (or high) end.
                let mut x = [0u8; 32];
                x[..2].copy_from_slice(&[7, 9]);
                x[2] = if high { 0xff } else { 0 };
                x[3] = *b;
                x[8..].copy_from_slice(rest);
                all.push(x);
            }
            for rest in &same_head {
                let mut x = [0xaa; 32];
                x[8..].copy_from_slice(rest);
                all.push(x);
            }
            let mut probe_ids = probes.clone();
            for (i, p) in probes.iter().enumerate().take(20) {
                // Absent ids next to the present ones.
                let mut x = *p;
                x[..4].copy_from_slice(&[7, 9, if high { 0xff } else { 0 }, i as u8]);
                if i % 2 == 0 {
                    x[..8].copy_from_slice(&[0xaa; 8]);
                }
                probe_ids.push(x);
            }
            all.sort();
            all.dedup();
            let entries: Vec<BlobEntry> = all.iter().map(|id| BlobEntry { kind: BlobKind::Data, flags: 0, id: Id(*id), offset: 1, stored_len: 2, raw_len: 3 }).collect();
            let idx = Index::from_files(&[(IndexId::default(), IndexFile { supersedes: vec![], packs: vec![(PackId::default(), entries)] })]);
            for (rank, id) in all.iter().enumerate() {
                prop_assert_eq!(idx.find(&Id(*id)).map(|(i, l)| (i, l.entry.id)), Some((rank, Id(*id))));
            }
            for p in &probe_ids {
                prop_assert_eq!(idx.contains(&Id(*p)), all.binary_search(p).is_ok());
            }
        }
    }

    /// `from_files_where` as it was before [`IndexBuilder`]: every file
    /// decoded first, the superseded ones left out, then the entries.
    fn from_files_where_at_once(
        files: &[(IndexId, IndexFile)],
        usable: impl Fn(&PackId, &BlobEntry) -> bool,
    ) -> Index {
        let superseded = superseded(files);
        let mut idx = Index::default();
        for (_, f) in files.iter().filter(|(id, _)| !superseded.contains(id)) {
            for (pack, entries) in &f.packs {
                let kept: Vec<BlobEntry> = entries
                    .iter()
                    .filter(|e| usable(pack, e))
                    .copied()
                    .collect();
                idx.push_pack(*pack, &kept);
            }
        }
        idx.finish();
        idx
    }

    proptest! {
        /// Files handed over one at a time give the very index that
        /// building from all of them at once gave: the same packs in the
        /// same order, the same entries, the same location for a blob
        /// listed twice; superseded files and unusable entries left out.
        #[test]
        fn building_file_by_file_equals_building_at_once(
            files in proptest::collection::vec(
                (
                    proptest::collection::vec(0u8..6, 0..3),
                    proptest::collection::vec((0u8..5, proptest::collection::vec((0u8..12, 0u32..4), 0..6)), 0..4),
                ),
                0..6,
            ),
        ) {
            let ids: Vec<IndexId> = (0..files.len()).map(|i| IndexId(Id([i as u8 + 100; 32]))).collect();
            let files: Vec<(IndexId, IndexFile)> = files
                .into_iter()
                .enumerate()
                .map(|(i, (sup, packs))| {
                    let supersedes = sup.into_iter().map(|k| IndexId(Id([k + 100; 32]))).collect();
                    let packs = packs
                        .into_iter()
                        .map(|(p, es)| {
                            let entries = es
                                .into_iter()
                                .map(|(b, o)| BlobEntry { offset: o + i as u32, ..entry(b, BlobKind::Data) })
                                .collect();
                            (PackId(Id([p; 32])), entries)
                        })
                        .collect();
                    (ids[i], IndexFile { supersedes, packs })
                })
                .collect();
            let usable = |p: &PackId, e: &BlobEntry| p.0.0[0] != 3 && e.offset % 4 != 1;
            let old = from_files_where_at_once(&files, usable);
            let new = Index::from_files_where(&files, usable);
            prop_assert_eq!(old.pack_ids().collect::<Vec<_>>(), new.pack_ids().collect::<Vec<_>>());
            prop_assert_eq!(old.iter().collect::<Vec<_>>(), new.iter().collect::<Vec<_>>());
            prop_assert_eq!(&old.starts, &new.starts);
            let mut streamed = IndexBuilder::default();
            for (id, f) in &files {
                streamed.add(*id, f);
            }
            let streamed = streamed.finish(usable);
            prop_assert_eq!(old.iter().collect::<Vec<_>>(), streamed.iter().collect::<Vec<_>>());
            prop_assert_eq!(streamed.heap_bytes(), new.heap_bytes());
            // Each blob once, in id order (`stats` counts on it).
            let ids: Vec<Id> = new.iter().map(|l| l.entry.id).collect();
            prop_assert!(ids.windows(2).all(|w| w[0].0 < w[1].0));
        }

        /// Extending an index by packs, a few at a time, gives the index
        /// that building from every pack at once gives: the same packs,
        /// each blob once at the same location (the first pack's), and the
        /// same prefix table, blobs listed again included, in other packs
        /// and in the same one.
        #[test]
        fn extending_equals_building_at_once(
            batches in proptest::collection::vec(
                proptest::collection::vec((0u8..8, proptest::collection::vec((any::<u8>(), 0u8..3, 0u32..4), 0..8)), 0..4),
                1..5,
            ),
        ) {
            // Ids differing in their first bytes or only in their last.
            let id = |b: u8, tail: u8| { let mut x = [b; 32]; x[31] = tail; Id(x) };
            let batches: Vec<Vec<(PackId, Vec<BlobEntry>)>> = batches
                .into_iter()
                .map(|packs| packs
                    .into_iter()
                    .map(|(p, es)| {
                        let entries = es
                            .into_iter()
                            .map(|(b, t, o)| BlobEntry { id: id(b, t), offset: o, ..entry(0, BlobKind::Data) })
                            .collect();
                        (PackId(Id([p; 32])), entries)
                    })
                    .collect())
                .collect();
            let all: Vec<(PackId, Vec<BlobEntry>)> = batches.iter().flatten().cloned().collect();
            let whole = Index::from_files(&[(IndexId::default(), IndexFile { supersedes: vec![], packs: all })]);
            let mut grown = Index::from_files(&[(IndexId::default(), IndexFile { supersedes: vec![], packs: batches[0].clone() })]);
            for b in &batches[1..] {
                grown.extend(b.clone());
            }
            prop_assert_eq!(whole.pack_ids().collect::<Vec<_>>(), grown.pack_ids().collect::<Vec<_>>());
            prop_assert_eq!(whole.iter().collect::<Vec<_>>(), grown.iter().collect::<Vec<_>>());
            prop_assert_eq!(&whole.starts, &grown.starts);
            for l in whole.iter() {
                prop_assert_eq!(grown.get(&l.entry.id), Some(l));
            }
            prop_assert_eq!(grown.slots.capacity(), grown.slots.len(), "no room reserved beyond the entries");
        }
    }

    #[test]
    fn lookup_and_supersede() {
        let a = IndexFile {
            supersedes: vec![],
            packs: vec![(
                PackId(Id([1; 32])),
                vec![entry(1, BlobKind::Data), entry(2, BlobKind::Tree)],
            )],
        };
        let (aid, _) = a.encode(&Crypto::None);
        let b = IndexFile {
            supersedes: vec![aid],
            packs: vec![(PackId(Id([2; 32])), vec![entry(2, BlobKind::Tree)])],
        };
        let (bid, _) = b.encode(&Crypto::None);
        let idx = Index::from_files(&[(aid, a.clone()), (bid, b.clone())]);
        assert_eq!(idx.len(), 1, "a is superseded by b");
        let loc = idx.get(&Id([2; 32])).unwrap();
        assert_eq!(loc.pack, PackId(Id([2; 32])));
        assert_eq!(loc.entry, entry(2, BlobKind::Tree));
        assert!(!idx.contains(&Id([1; 32])));
        let both = Index::from_files(&[(aid, a)]);
        assert_eq!(
            both.get(&Id([1; 32])).unwrap().entry,
            entry(1, BlobKind::Data)
        );
    }

    /// The shape of the bug that made a snapshot unrestorable after prune: a
    /// later write of the very same content must never get the name of a
    /// file that another file supersedes.
    #[test]
    fn the_same_content_written_twice_gets_two_names() {
        for crypto in [
            Crypto::None,
            Crypto::Keyed(Box::new(crate::repo::crypto::Keys::from_master(&[5; 32]))),
        ] {
            let f = IndexFile {
                supersedes: vec![],
                packs: vec![(PackId(Id([1; 32])), vec![entry(1, BlobKind::Data)])],
            };
            let (a, abytes) = f.encode(&crypto);
            let (b, bbytes) = f.encode(&crypto);
            assert_ne!(a, b);
            assert_eq!(IndexFile::decode(&abytes, &crypto, &a.to_hex()).unwrap(), f);
            assert_eq!(IndexFile::decode(&bbytes, &crypto, &b.to_hex()).unwrap(), f);
            // Stored under another name (or damaged), it is refused.
            let err = IndexFile::decode(&abytes, &crypto, &b.to_hex()).unwrap_err();
            assert!(err.to_string().contains("checksum mismatch"), "{err}");
        }
    }

    /// Index files written by version 1 (no random part) still read.
    #[test]
    fn version_1_index_files_still_read() {
        let f = IndexFile {
            supersedes: vec![IndexId(Id([9; 32]))],
            packs: vec![(PackId(Id([1; 32])), vec![entry(3, BlobKind::Tree)])],
        };
        let (_, v2) = f.encode(&Crypto::None);
        let mut v1 = v2[..HEADER_LEN].to_vec();
        v1[5] = 1;
        v1.extend_from_slice(&v2[HEADER_LEN + INDEX_NONCE_LEN..]);
        let name = blake3::hash(&v1).to_hex().to_string();
        assert_eq!(IndexFile::decode(&v1, &Crypto::None, &name).unwrap(), f);
    }

    /// The bucketed parallel sort orders exactly as sorting the whole
    /// vector by id, then pack, did (large enough to take the bucketed way).
    #[test]
    fn bucketed_sort_equals_a_plain_sort() {
        let mut slots: Vec<Slot> = (0..200_000u32)
            .map(|i| {
                let mut id = *blake3::hash(&(i % 150_000).to_le_bytes()).as_bytes();
                if i % 7 == 0 {
                    id[..8].copy_from_slice(&[i as u8 % 3; 8]); // long shared prefixes
                }
                Slot {
                    id,
                    pack: i % 13,
                    offset: i,
                    stored_len: 1,
                    raw_len: 2,
                    kind_flags: 0,
                }
            })
            .collect();
        let mut plain = slots.clone();
        plain.sort_by(|a, b| {
            (
                a.id,
                a.pack,
                a.offset,
                a.stored_len,
                a.raw_len,
                a.kind_flags,
            )
                .cmp(&(
                    b.id,
                    b.pack,
                    b.offset,
                    b.stored_len,
                    b.raw_len,
                    b.kind_flags,
                ))
        });
        sort_slots(&mut slots);
        assert_eq!(slots, plain);
    }

    #[test]
    fn in_memory_entry_is_at_most_64_bytes() {
        assert!(Index::bytes_per_blob() <= 64, "{}", Index::bytes_per_blob());
    }
}
