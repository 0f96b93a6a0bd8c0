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
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let (set, pat) = match p.strip_prefix('/') {
                Some(rest) => (&mut paths, rest),
                None if p.contains('/') => (&mut paths, p.as_str()),
                None => (&mut names, p.as_str()),
            };
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
        })
    }

    pub fn matches(&self, rel: &Path, name: &OsStr) -> bool {
        self.names.is_match(Path::new(name)) || self.paths.is_match(rel)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.paths.is_empty()
    }
}
