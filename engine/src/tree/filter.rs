//! Include and exclude patterns: which entries of a tree a snapshot or a
//! restore takes.

use std::ffi::OsStr;
use std::path::Path;

use globset::{GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Exclude patterns: a pattern without `/` matches an entry's name anywhere; one
/// with `/` matches the path relative to the snapshot root (a leading `/`
/// anchors it there explicitly).
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
    /// The index in the given patterns of each glob of `names` and `paths`.
    name_ix: Vec<usize>,
    path_ix: Vec<usize>,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        let (mut name_ix, mut path_ix) = (Vec::new(), Vec::new());
        for (i, p) in patterns.iter().enumerate() {
            let (set, pat) = match p.strip_prefix('/') {
                Some(rest) => (&mut paths, rest),
                None if p.contains('/') => (&mut paths, p.as_str()),
                None => (&mut names, p.as_str()),
            };
            if p.contains('/') {
                path_ix.push(i);
            } else {
                name_ix.push(i);
            }
            let glob = globset::GlobBuilder::new(pat.trim_end_matches('/'))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Pattern {
                    pattern: p.clone(),
                    detail: e.kind().to_string(),
                })?;
            set.add(glob);
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| Error::Pattern {
                pattern: patterns.join(" "),
                detail: e.to_string(),
            })
        };
        Ok(Excludes {
            names: build(names)?,
            paths: build(paths)?,
            name_ix,
            path_ix,
        })
    }

    /// The indexes (in the patterns given to [`Excludes::new`]) of the
    /// patterns that match this entry.
    pub fn matching(&self, rel: &Path, name: &OsStr) -> Vec<usize> {
        let mut hits: Vec<usize> = self
            .names
            .matches(Path::new(name))
            .into_iter()
            .map(|i| self.name_ix[i])
            .collect();
        hits.extend(self.paths.matches(rel).into_iter().map(|i| self.path_ix[i]));
        hits
    }

    pub fn matches(&self, rel: &Path, name: &OsStr) -> bool {
        self.names.is_match(Path::new(name)) || self.paths.is_match(rel)
    }

    /// How many patterns were given.
    pub fn len(&self) -> usize {
        self.name_ix.len() + self.path_ix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.paths.is_empty()
    }
}
