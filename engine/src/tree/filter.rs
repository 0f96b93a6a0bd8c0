//! Include and exclude patterns: which entries of a tree a snapshot or a
//! restore takes.

use std::ffi::OsStr;
use std::path::Path;

use globset::{GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Exclude patterns: a pattern without `/` matches an entry's name anywhere; one
/// with `/` matches the path relative to the snapshot root (a leading `/`
/// anchors it there explicitly). [`Excludes::for_root`] also takes the full
/// host path of something inside the root.
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

    /// The patterns of a snapshot of the folder `root` (an absolute path):
    /// a pattern that starts with `root/` is the full host path of
    /// something inside it and becomes the pattern anchored at the root
    /// (`/srv/data/cache` for the root `/srv/data` is `/cache`). The root
    /// itself is refused: it would exclude everything.
    pub fn for_root(patterns: &[String], root: &Path) -> Result<Self> {
        let Some(root_str) = root.to_str().filter(|r| *r != "/") else {
            return Excludes::new(patterns);
        };
        let root_str = root_str.trim_end_matches('/');
        let mut out = Vec::with_capacity(patterns.len());
        for p in patterns {
            match p.strip_prefix(root_str) {
                Some("" | "/") => {
                    return Err(Error::Pattern {
                        pattern: p.clone(),
                        detail: format!(
                            "this is the source folder {root_str} itself, which would exclude everything; name something inside it"
                        ),
                    });
                }
                Some(rest) if rest.starts_with('/') => {
                    tracing::info!(
                        "exclude pattern {p} is inside the source folder {root_str}: excluding {rest} there"
                    );
                    out.push(rest.to_string());
                }
                _ => out.push(p.clone()),
            }
        }
        Excludes::new(&out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(patterns: &[&str], root: &str, rel: &str) -> bool {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        let e = Excludes::for_root(&patterns, Path::new(root)).unwrap();
        let rel = Path::new(rel);
        e.matches(rel, rel.file_name().unwrap())
    }

    #[test]
    fn host_paths_inside_the_root_are_anchored_there() {
        assert!(excluded(&["/srv/data/cache"], "/srv/data", "cache"));
        assert!(excluded(&["/srv/data/cache/"], "/srv/data", "cache"));
        assert!(excluded(&["/srv/data/a/*.tmp"], "/srv/data", "a/x.tmp"));
        assert!(!excluded(&["/srv/data/cache"], "/srv/data", "a/cache"));
        // Anchored patterns keep their meaning.
        assert!(excluded(&["/cache"], "/srv/data", "cache"));
        // A sibling that shares a prefix is not inside.
        assert!(!excluded(&["/srv/data2/cache"], "/srv/data", "cache"));
        // Below `/`, every pattern is already a host path.
        assert!(excluded(&["/srv/x"], "/", "srv/x"));
        let root = ["/srv/data".to_string()];
        assert!(Excludes::for_root(&root, Path::new("/srv/data")).is_err());
    }
}
