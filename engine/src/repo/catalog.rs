//! The catalog: the one way to read index files, with the listing of the
//! packs beside them.
//!
//! [`Repository::catalog`] lists `index/`, reads and decodes every index
//! file (in parallel), then lists the packs, so every pack those files name
//! was written before the listing. Each file is verified against its name
//! (its decoder refuses bytes that do not hash to it). The [`IndexMode`]
//! says what a file that cannot be read does; readers, check, repair and
//! prune differ only in the mode.

use std::collections::{BTreeMap, HashMap, HashSet};

use rayon::prelude::*;

use super::Repository;
use crate::backend::ObjectKey;
use crate::error::{BackendError, Error, FormatError, Result};
use crate::repo::format::ObjectKind;
use crate::repo::id::{IndexId, PackId};
use crate::store::blob::BlobEntry;
use crate::store::index::{self, IndexBuilder, IndexFile};

/// How [`Repository::catalog`] treats an index file it cannot read (missing
/// meanwhile, truncated, failing authentication, undecodable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexMode {
    /// Fail. For operations that delete (prune): a pack described only by an
    /// unreadable file would look unused.
    Strict,
    /// Skip the file and report it. For readers: whatever the other files
    /// describe can still be read, and a snapshot simply stores again any
    /// chunk it cannot find.
    Lenient,
    /// As lenient, and also name every object in `index/` whose name is no
    /// index id ([`Catalog::strays`]). For check, which reports them all.
    Verified,
}

/// An index file that could not be read, and why.
#[derive(Debug)]
pub struct UnreadableIndex {
    /// Its name in `index/`.
    pub name: String,
    pub error: Error,
}

impl std::fmt::Display for UnreadableIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "index file {} is unreadable and was skipped: {}; readers find what it listed through the packs' trailers until `pvsnap repair index` rebuilds the index",
            self.name, self.error
        )
    }
}

/// The index files read, those that could not be (not in strict mode), and
/// the packs present.
#[derive(Debug, Default)]
pub struct Catalog {
    pub files: Vec<(IndexId, IndexFile)>,
    pub unreadable: Vec<UnreadableIndex>,
    /// Objects in `index/` whose name is no index id ([`IndexMode::Verified`]
    /// only; the other modes ignore them).
    pub strays: Vec<String>,
    /// Every object listed in `index/`, with its size.
    pub index_sizes: HashMap<String, u64>,
    /// Every pack present, with its size, listed after the index files
    /// were read.
    pub packs: HashMap<PackId, u64>,
}

/// What check and prune need of the index files, read one batch at a time
/// so that no decoded file is held beside what is kept of it: the entries
/// of the files in force per pack (48 bytes an entry) and a builder of the
/// in-memory index (52 bytes an entry). At ten million blobs, holding every
/// decoded file as well cost another 480 MiB.
pub struct InForce {
    /// The catalog; its `files` is empty.
    pub catalog: Catalog,
    /// Every index file read, in listing order (superseded ones too).
    pub read: Vec<IndexId>,
    /// The files read that another file read supersedes.
    pub superseded: HashSet<IndexId>,
    /// The entries of the files in force (not superseded), per pack,
    /// sorted by offset and without repeats.
    pub packs: BTreeMap<PackId, Vec<BlobEntry>>,
    /// The in-memory index of every file read, as [`IndexBuilder`] builds it.
    pub index: IndexBuilder,
}

impl Repository {
    /// Reads every index file and lists the packs; `mode` says what an
    /// unreadable file does (see the module documentation).
    pub fn catalog(&self, mode: IndexMode) -> Result<Catalog> {
        let mut files = Vec::new();
        let mut out = self.catalog_each(mode, |id, f| files.push((id, f)))?;
        out.files = files;
        Ok(out)
    }

    /// [`Repository::catalog`], handing each decoded index file to `each`
    /// (in listing order) instead of keeping it: the returned catalog's
    /// `files` is empty. Files are read in parallel a batch at a time (up
    /// to [`CATALOG_BATCH_BYTES`] of them), so a reader that keeps only
    /// what it needs of each (the in-memory index) never holds every
    /// decoded file at once.
    pub fn catalog_each(
        &self,
        mode: IndexMode,
        mut each: impl FnMut(IndexId, IndexFile),
    ) -> Result<Catalog> {
        let names = self.backend.list(ObjectKind::Index)?;
        // Other names are no index files of ours (check reports them).
        let ours: Vec<&(String, u64)> = names
            .iter()
            .filter(|(name, _)| name.parse::<IndexId>().is_ok())
            .collect();
        let mut out = Catalog::default();
        for batch in batches(&ours) {
            // (name, (id, file), or why not). A file whose bytes do not hash
            // to its name is refused by its decoder, so it lands in
            // `unreadable`.
            type Read = (String, Result<(IndexId, IndexFile)>);
            let read: Vec<Read> = batch
                .par_iter()
                .map(|(name, _)| {
                    let r = self.read_index_file(name).map(|(id, f, _)| (id, f));
                    (name.clone(), r)
                })
                .collect();
            for (name, r) in read {
                match r {
                    Ok((id, f)) => each(id, f),
                    // Deleted since it was listed (a prune finishing): it was superseded.
                    Err(Error::Backend(BackendError::NotFound { .. })) => {}
                    Err(e) if mode == IndexMode::Strict => {
                        return Err(Error::IndexUnreadable {
                            name,
                            detail: e.to_string(),
                        });
                    }
                    Err(error) => out.unreadable.push(UnreadableIndex { name, error }),
                }
            }
        }
        if mode == IndexMode::Verified {
            out.strays = names
                .iter()
                .filter(|(n, _)| n.parse::<IndexId>().is_err())
                .map(|(n, _)| n.clone())
                .collect();
        }
        out.index_sizes = names.into_iter().collect();
        out.packs = self
            .backend
            .list(ObjectKind::Pack)?
            .into_iter()
            .filter_map(|(n, size)| n.parse::<PackId>().ok().map(|p| (p, size)))
            .collect();
        Ok(out)
    }

    /// [`Repository::catalog`] for check and prune: see [`InForce`].
    pub fn catalog_in_force(&self, mode: IndexMode) -> Result<InForce> {
        let mut index = IndexBuilder::default();
        type Listed = (IndexId, Vec<IndexId>, Vec<(PackId, Vec<BlobEntry>)>);
        let mut listed: Vec<Listed> = Vec::new();
        let catalog = self.catalog_each(mode, |id, f| {
            index.add(id, &f);
            listed.push((id, f.supersedes, f.packs));
        })?;
        let superseded = index::superseded_by(listed.iter().map(|(id, s, _)| (*id, s.as_slice())));
        let mut read = Vec::with_capacity(listed.len());
        let mut packs: BTreeMap<PackId, Vec<BlobEntry>> = BTreeMap::new();
        for (id, _, file_packs) in listed {
            read.push(id);
            if superseded.contains(&id) {
                continue;
            }
            for (pack, entries) in file_packs {
                match packs.entry(pack) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(entries);
                    }
                    std::collections::btree_map::Entry::Occupied(mut o) => {
                        o.get_mut().extend_from_slice(&entries)
                    }
                }
            }
        }
        for entries in packs.values_mut() {
            entries.sort_by_key(|e| (e.offset, e.id));
            entries.dedup();
        }
        Ok(InForce {
            catalog,
            read,
            superseded,
            packs,
            index,
        })
    }

    /// Reads and decodes every index file; fails on the first that cannot
    /// be read ([`IndexMode::Strict`]).
    pub fn read_index_files(&self) -> Result<Vec<(IndexId, IndexFile)>> {
        Ok(self.catalog(IndexMode::Strict)?.files)
    }

    /// Reads and decodes one index file, named as in `index/`; returns the
    /// bytes too.
    pub fn read_index_file(&self, name: &str) -> Result<(IndexId, IndexFile, Vec<u8>)> {
        let id: IndexId = name.parse().map_err(|_| FormatError::Invalid {
            what: format!("index {name}"),
            detail: "the name is not an index id".into(),
        })?;
        let bytes = self.backend.get(&ObjectKey::new(ObjectKind::Index, name))?;
        let file = IndexFile::decode(&bytes, &self.crypto, name)?;
        Ok((id, file, bytes))
    }
}

/// Bytes of index files (as listed) that [`Repository::catalog_each`] reads
/// and decodes at a time; a batch holds at least one file, and at most
/// [`CATALOG_BATCH_FILES`]. Index files hold at most ~64k blobs (3 MiB),
/// so a batch is a few dozen files read in parallel (enough for an S3
/// repository's connections) and a few tens of MiB in memory.
pub const CATALOG_BATCH_BYTES: u64 = 32 << 20;
/// Most index files in one batch of [`Repository::catalog_each`].
pub const CATALOG_BATCH_FILES: usize = 256;

/// `names` cut into consecutive batches of at most [`CATALOG_BATCH_BYTES`]
/// (a larger file alone) and [`CATALOG_BATCH_FILES`].
fn batches<'a>(names: &'a [&'a (String, u64)]) -> Vec<&'a [&'a (String, u64)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, (_, size)) in names.iter().enumerate() {
        if i > start
            && (bytes.saturating_add(*size) > CATALOG_BATCH_BYTES
                || i - start >= CATALOG_BATCH_FILES)
        {
            out.push(&names[start..i]);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(*size);
    }
    if start < names.len() {
        out.push(&names[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_and_cover_every_name_in_order() {
        let mb = 1u64 << 20;
        let names: Vec<(String, u64)> = [1, 2, 30, 3, 100, 0, 0, 31, 1]
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("f{i}"), m * mb))
            .collect();
        let refs: Vec<&(String, u64)> = names.iter().collect();
        let got: Vec<Vec<&str>> = batches(&refs)
            .iter()
            .map(|b| b.iter().map(|(n, _)| n.as_str()).collect())
            .collect();
        assert_eq!(
            got,
            vec![
                vec!["f0", "f1"],
                vec!["f2"],
                vec!["f3"],
                vec!["f4"],
                vec!["f5", "f6", "f7", "f8"],
            ]
        );
        let many: Vec<(String, u64)> = (0..600).map(|i| (format!("{i}"), 10)).collect();
        let refs: Vec<&(String, u64)> = many.iter().collect();
        let sizes: Vec<usize> = batches(&refs).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![256, 256, 88]);
        assert!(batches(&[]).is_empty());
    }
}
