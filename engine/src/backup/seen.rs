//! The blobs a snapshot run has taken to store (stage 4, dedup): each is
//! stored once, however many files hold it, and memory stays a few bytes a
//! blob however many the run adds.
//!
//! A blob's id is written down once, in the order taken: the latest
//! [`Seen::TAIL`] ids in memory, the earlier ones in a spill file (32 bytes
//! each, at `32 × n`; unlinked as soon as it is made, so nothing is left
//! behind even by a kill -9). A hash table finds the number `n` of an id:
//! open addressing with linear probing, 4 bytes an entry, at most 3/4 full
//! (a new id probes 8.5 entries on average then, 32 at 7/8), so 5.3 to 10.7
//! bytes a blob in memory. An entry holds `n + 1` in its low
//! `bits` bits and, above them, the same bits of the id's hash: a tag that
//! tells most other ids apart without reading theirs. Only an entry whose
//! tag matches is confirmed against the id itself, which for a spilled id
//! is a 32-byte read of a file the page cache holds. The answer is always
//! exact: an id is never taken for another.
//!
//! Where the spill file cannot be made or written (no room in the temporary
//! folder, `TMPDIR`), the ids stay in memory (32 bytes each more) with a
//! warning: the run is not failed for it.
//!
//! Why not a hash set of ids (what the run held before): 35-70 bytes a blob,
//! about 700 MiB for a first snapshot of ten million small files.

use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::repo::id::Id;

/// The smallest table: 1,024 entries.
const MIN_BITS: u32 = 10;

/// The ids of one run's blobs; see the module documentation.
pub struct Seen {
    /// Ids `spilled..`, in the order taken.
    tail: Vec<[u8; 32]>,
    /// Ids `0..spilled` lie in `file`.
    spilled: usize,
    file: Option<File>,
    /// Where the spill file is made.
    dir: PathBuf,
    /// False once spilling failed: later ids stay in `tail`.
    spilling: bool,
    /// Ids kept in memory before they are spilled.
    keep: usize,
    table: Vec<u32>,
    bits: u32,
    /// Keyed, so ids crafted to share a place in the table cannot be made
    /// without the key.
    hasher: RandomState,
}

/// Where a lookup ended: at the id, or at the free entry it would take.
enum Found {
    Taken,
    Free(usize),
}

impl Seen {
    /// Ids kept in memory before they go to the spill file: 1 MiB of them.
    pub const TAIL: usize = 1 << 15;

    /// A set spilling to the temporary folder (`TMPDIR`, else `/tmp`).
    pub fn new() -> Self {
        Self::spilling_to(&std::env::temp_dir(), Self::TAIL)
    }

    /// A set spilling to `dir` once more than `keep` ids are held.
    pub fn spilling_to(dir: &Path, keep: usize) -> Self {
        Seen {
            tail: Vec::new(),
            spilled: 0,
            file: None,
            dir: dir.to_owned(),
            spilling: true,
            keep: keep.max(1),
            table: vec![0; 1 << MIN_BITS],
            bits: MIN_BITS,
            hasher: RandomState::new(),
        }
    }

    /// Takes blob `id`: true when it was not taken before (the caller
    /// stores it), false when it was.
    pub fn insert(&mut self, id: &Id) -> Result<bool> {
        let h = self.hash(id);
        match self.find(id, h)? {
            Found::Taken => Ok(false),
            Found::Free(at) => {
                let n = self.len();
                self.table[at] = (n as u32 + 1) | self.tag(h);
                self.tail.push(id.0);
                if self.tail.len() > self.keep {
                    self.spill();
                }
                if self.len() > (self.table.len() >> 2) * 3 {
                    self.grow()?;
                }
                Ok(true)
            }
        }
    }

    /// Whether blob `id` was taken.
    #[cfg(test)]
    pub fn contains(&self, id: &Id) -> Result<bool> {
        Ok(matches!(self.find(id, self.hash(id))?, Found::Taken))
    }

    /// Blobs taken.
    pub fn len(&self) -> usize {
        self.spilled + self.tail.len()
    }

    /// Ids in the spill file.
    pub fn spilled(&self) -> usize {
        self.spilled
    }

    /// Bytes of heap memory held.
    pub fn heap_bytes(&self) -> usize {
        self.tail.capacity() * 32 + self.table.capacity() * 4
    }

    fn hash(&self, id: &Id) -> u64 {
        self.hasher
            .hash_one(u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes")))
    }

    fn mask(&self) -> usize {
        (1 << self.bits) - 1
    }

    /// The tag bits of hash `h` (see the module documentation).
    fn tag(&self, h: u64) -> u32 {
        (h as u32) & !(self.mask() as u32)
    }

    fn find(&self, id: &Id, h: u64) -> Result<Found> {
        let (mask, tag) = (self.mask(), self.tag(h));
        let mut i = (h >> (64 - self.bits)) as usize;
        loop {
            let e = self.table[i];
            if e == 0 {
                return Ok(Found::Free(i));
            }
            if e & !(mask as u32) == tag {
                let n = (e as usize & mask) - 1;
                if self.id(n)? == id.0 {
                    return Ok(Found::Taken);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// The id numbered `n`.
    fn id(&self, n: usize) -> Result<[u8; 32]> {
        if n >= self.spilled {
            return Ok(self.tail[n - self.spilled]);
        }
        let mut id = [0; 32];
        let file = self.file.as_ref().expect("ids are spilled only to a file");
        file.read_exact_at(&mut id, 32 * n as u64)
            .map_err(|e| self.spill_error(e))?;
        Ok(id)
    }

    /// Moves the ids in memory to the end of the spill file; on failure,
    /// warns and keeps every later id in memory.
    fn spill(&mut self) {
        if !self.spilling {
            return;
        }
        let dir = &self.dir;
        if self.file.is_none() {
            match spill_file(dir) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    tracing::warn!(
                        "cannot make a file in {} for the snapshot's list of new blobs ({e}); it is kept in memory, 32 bytes a blob (set TMPDIR to a folder with room)",
                        dir.display()
                    );
                    self.spilling = false;
                    return;
                }
            }
        }
        let file = self.file.as_ref().expect("made above");
        let bytes = self.tail.as_flattened();
        if let Err(e) = file.write_all_at(bytes, 32 * self.spilled as u64) {
            tracing::warn!(
                "cannot write the snapshot's list of new blobs to {} ({e}); the rest is kept in memory, 32 bytes a blob (set TMPDIR to a folder with room)",
                dir.display()
            );
            self.spilling = false;
            return;
        }
        self.spilled += self.tail.len();
        self.tail.clear();
    }

    fn spill_error(&self, e: std::io::Error) -> Error {
        Error::io(
            &self.dir,
            "reading the snapshot's list of new blobs from a file in it",
            e,
        )
    }

    /// Doubles the table: every id is placed again, in the order taken
    /// (the spill file is read front to back, the table at random).
    fn grow(&mut self) -> Result<()> {
        assert!(
            self.bits < 31,
            "more than 1.8 billion new blobs in one snapshot run"
        );
        self.bits += 1;
        self.table = Vec::new();
        self.table = vec![0; 1 << self.bits];
        const BLOCK: usize = 1 << 15;
        let mut buf = vec![0u8; 32 * BLOCK];
        let mut n = 0;
        while n < self.spilled {
            let k = BLOCK.min(self.spilled - n);
            let file = self.file.as_ref().expect("ids are spilled only to a file");
            file.read_exact_at(&mut buf[..32 * k], 32 * n as u64)
                .map_err(|e| self.spill_error(e))?;
            for (j, id) in buf[..32 * k].chunks_exact(32).enumerate() {
                self.place(n + j, id.try_into().expect("32 bytes"));
            }
            n += k;
        }
        for j in 0..self.tail.len() {
            self.place(self.spilled + j, self.tail[j]);
        }
        Ok(())
    }

    /// Puts id number `n` in the table, which does not hold it.
    fn place(&mut self, n: usize, id: [u8; 32]) {
        let h = self.hash(&Id(id));
        let mask = self.mask();
        let mut i = (h >> (64 - self.bits)) as usize;
        while self.table[i] != 0 {
            i = (i + 1) & mask;
        }
        self.table[i] = (n as u32 + 1) | self.tag(h);
    }
}

impl Default for Seen {
    fn default() -> Self {
        Self::new()
    }
}

/// A new file in `dir`, open for reading and writing and already unlinked.
fn spill_file(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!(
        ".pvsnap-new-blobs-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spread(i: u32) -> Id {
        Id(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    /// Ids that share their first 8 bytes share their hash, place and tag:
    /// only the id itself tells them apart.
    fn same_head(i: u32) -> Id {
        let mut x = [0x5a; 32];
        x[28..].copy_from_slice(&i.to_le_bytes());
        Id(x)
    }

    #[test]
    fn each_blob_is_taken_once_through_spills_growth_and_crafted_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Seen::spilling_to(dir.path(), 100);
        for i in 0..20_000 {
            assert!(seen.insert(&spread(i)).unwrap(), "{i} taken the first time");
            if i % 3 == 0 {
                assert!(!seen.insert(&spread(i)).unwrap(), "{i} taken twice");
            }
        }
        for i in 0..300 {
            assert!(seen.insert(&same_head(i)).unwrap());
        }
        assert!(seen.bits > MIN_BITS, "the table grew");
        assert!(seen.spilled() >= 20_000, "ids were spilled");
        assert!(seen.tail.len() <= 100);
        for i in 0..20_000 {
            assert!(!seen.insert(&spread(i)).unwrap(), "{i} taken again");
            assert!(seen.contains(&spread(i)).unwrap());
        }
        for i in 0..300 {
            assert!(!seen.insert(&same_head(i)).unwrap());
        }
        assert!(!seen.contains(&same_head(300)).unwrap());
        assert!(!seen.contains(&spread(20_000)).unwrap());
        assert_eq!(seen.len(), 20_300);
        assert!(seen.len() <= seen.table.len() / 4 * 3, "at most 3/4 full");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the spill file is unlinked"
        );
        // The memory held is the table and the tail, not the ids.
        assert!(seen.heap_bytes() < 20_300 * 12, "{}", seen.heap_bytes());
    }

    #[test]
    fn a_folder_that_takes_no_file_keeps_the_ids_in_memory_and_stays_exact() {
        let mut seen = Seen::spilling_to(Path::new("/nonexistent/pvsnap-spill"), 10);
        for i in 0..5_000 {
            assert!(seen.insert(&spread(i)).unwrap());
        }
        assert_eq!(seen.spilled(), 0);
        assert!(!seen.spilling, "spilling is given up");
        for i in 0..5_000 {
            assert!(!seen.insert(&spread(i)).unwrap());
        }
        assert_eq!(seen.len(), 5_000);
    }

    #[test]
    fn a_spill_file_that_fills_up_leaves_the_rest_in_memory() {
        // /dev/full takes no write: the first spill fails, after its file
        // opened (here the file is the device itself).
        let mut seen = Seen::spilling_to(Path::new("/tmp"), 10);
        seen.file = Some(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/full")
                .unwrap(),
        );
        for i in 0..1_000 {
            assert!(seen.insert(&spread(i)).unwrap());
        }
        assert_eq!(seen.spilled(), 0);
        for i in 0..1_000 {
            assert!(seen.contains(&spread(i)).unwrap());
        }
        assert!(!seen.contains(&spread(1_000)).unwrap());
    }

    proptest! {
        /// Against a model (a hash set): the same answer for every insert
        /// and lookup, whatever is spilled and however often it grows.
        #[test]
        fn answers_as_a_hash_set_does(
            ops in proptest::collection::vec((any::<bool>(), 0u16..400), 0..600),
            keep in 1usize..50,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let id = |b: u16| if b.is_multiple_of(2) { spread(b as u32) } else { same_head(b as u32) };
            let mut seen = Seen::spilling_to(dir.path(), keep);
            let mut model = std::collections::HashSet::new();
            for (insert, b) in ops {
                let i = id(b);
                if insert {
                    prop_assert_eq!(seen.insert(&i).unwrap(), model.insert(i));
                } else {
                    prop_assert_eq!(seen.contains(&i).unwrap(), model.contains(&i));
                }
            }
            prop_assert_eq!(seen.len(), model.len());
        }
    }
}
