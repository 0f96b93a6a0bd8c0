//! Stages 1 and 2: walking a folder (entries by name, excludes, one file
//! system) and comparing each file with the parent snapshot's entry.

use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use crate::error::Result;
use crate::fsmeta::{self, SourceKind};
use crate::repo::id::TreeId;
use crate::tree::{Node, NodeKind, Tree};

use super::pipeline::{Archiver, ns};

impl Archiver<'_> {
    /// Stages 1-6 for one folder; returns its tree id once written.
    pub(super) fn folder(&self, path: &Path, rel: &Path, parent: Option<&Tree>) -> Result<TreeId> {
        self.dirs.fetch_add(1, Ordering::Relaxed);
        let mut names: Vec<OsString> = Vec::new();
        match std::fs::read_dir(path) {
            Ok(rd) => {
                for ent in rd {
                    match ent {
                        Ok(e) => names.push(e.file_name()),
                        Err(e) => self.issue("unreadable", path, format!("listing failed: {e}")),
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.issue("vanished", path, "folder vanished")
            }
            Err(e) => self.issue("unreadable", path, format!("cannot list folder: {e}")),
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let nodes: Vec<Option<Node>> = names
            .par_iter()
            .map(|name| {
                let child_rel = rel.join(name);
                if !self.excludes.is_empty() && self.excludes.matches(&child_rel, name) {
                    return Ok(None);
                }
                let prev = parent.and_then(|t| t.find(name.as_bytes()));
                self.entry(&path.join(name), &child_rel, name, prev)
            })
            .collect::<Result<_>>()?;
        let tree = Tree {
            nodes: nodes.into_iter().flatten().collect(),
        };
        self.store_tree(&tree)
    }

    /// One entry: Ok(None) when it is skipped (excluded, vanished, unreadable).
    pub(super) fn entry(
        &self,
        path: &Path,
        rel: &Path,
        name: &OsStr,
        prev: Option<&Node>,
    ) -> Result<Option<Node>> {
        self.stop.check()?;
        let Some(meta) = self.readable(path, std::fs::symlink_metadata(path)) else {
            return Ok(None);
        };
        // Setting an xattr changes ctime: with ctime and inode unchanged, the
        // parent's xattrs are still true and need not be read again.
        let xattrs = match prev {
            Some(p)
                if p.ctime_ns == ns(meta.ctime(), meta.ctime_nsec())
                    && p.inode == meta.ino()
                    && !self.racy(p) =>
            {
                p.xattrs.clone()
            }
            _ => match fsmeta::read_xattrs(path) {
                Ok(x) => x,
                Err(e) => {
                    self.issue("unreadable", path, format!("extended attributes: {e}"));
                    vec![]
                }
            },
        };
        let kind = match fsmeta::source_kind(&meta) {
            SourceKind::Dir => {
                if self.one_file_system && meta.dev() != self.root_dev {
                    NodeKind::Dir {
                        subtree: self.store_tree(&Tree::default())?,
                    }
                } else {
                    let prev_tree = match prev.map(|p| &p.kind) {
                        Some(NodeKind::Dir { subtree }) => self.load_parent_tree(subtree),
                        _ => None,
                    };
                    NodeKind::Dir {
                        subtree: self.folder(path, rel, prev_tree.as_ref())?,
                    }
                }
            }
            SourceKind::File => return self.file(path, name, &meta, prev, xattrs),
            SourceKind::Symlink => match std::fs::read_link(path) {
                Ok(t) => NodeKind::Symlink {
                    target: t.as_os_str().as_bytes().to_vec(),
                },
                Err(e) => {
                    self.issue("unreadable", path, e);
                    return Ok(None);
                }
            },
            SourceKind::Fifo => NodeKind::Fifo,
            SourceKind::Char(rdev) => NodeKind::CharDevice { rdev },
            SourceKind::Block(rdev) => NodeKind::BlockDevice { rdev },
            SourceKind::Socket => {
                self.issue(
                    "skipped",
                    path,
                    "socket skipped (sockets cannot be restored)",
                );
                return Ok(None);
            }
        };
        Ok(Some(fsmeta::node_from_meta(
            name,
            &meta,
            kind,
            &self.names,
            xattrs,
        )))
    }

    /// Whether the parent recorded `p` so close to its own start that a
    /// change in the same timestamp tick would not show (see
    /// `pipeline::racy_from`).
    fn racy(&self, p: &Node) -> bool {
        use super::pipeline::{RACY_FINE_NS, RACY_WHOLE_SECONDS_NS};
        let whole_seconds = p.mtime_ns % 1_000_000_000 == 0 && p.ctime_ns % 1_000_000_000 == 0;
        let margin = if whole_seconds {
            RACY_WHOLE_SECONDS_NS
        } else {
            RACY_FINE_NS
        };
        p.mtime_ns.max(p.ctime_ns) >= self.racy_from_ns.saturating_sub(margin)
    }

    pub(super) fn file(
        &self,
        path: &Path,
        name: &OsStr,
        meta: &Metadata,
        prev: Option<&Node>,
        xattrs: Vec<crate::tree::Xattr>,
    ) -> Result<Option<Node>> {
        self.total_bytes.fetch_add(meta.len(), Ordering::Relaxed);
        let done = |node: Node| {
            self.progress.files.fetch_add(1, Ordering::Relaxed);
            Ok(Some(node))
        };
        // Stage 2: unchanged since the parent?
        if let Some(p) = prev {
            let same = matches!(p.kind, NodeKind::File { .. })
                && p.size == meta.len()
                && p.mtime_ns == ns(meta.mtime(), meta.mtime_nsec())
                && p.ctime_ns == ns(meta.ctime(), meta.ctime_nsec())
                && p.inode == meta.ino()
                && !self.racy(p)
                && p.chunks().all(|c| self.repo.index().contains(&c.0));
            if same {
                self.files_unmodified.fetch_add(1, Ordering::Relaxed);
                self.progress.bytes.fetch_add(meta.len(), Ordering::Relaxed);
                let mut node =
                    fsmeta::node_from_meta(name, meta, p.kind.clone(), &self.names, xattrs);
                node.size = p.size;
                return done(node);
            }
        }
        let counter = if prev.is_some() {
            tracing::debug!("{}: changed, reading", path.display());
            &self.files_changed
        } else {
            tracing::debug!("{}: new, reading", path.display());
            &self.files_new
        };
        // Another name of an inode already read in this run?
        let link_key = (meta.dev(), meta.ino());
        if meta.nlink() > 1 {
            let mtime = ns(meta.mtime(), meta.mtime_nsec());
            if let Some((m, content)) = self.hardlinks.lock().expect("hardlinks").get(&link_key)
                && *m == mtime
            {
                counter.fetch_add(1, Ordering::Relaxed);
                let mut node = fsmeta::node_from_meta(
                    name,
                    meta,
                    NodeKind::File {
                        content: content.clone(),
                    },
                    &self.names,
                    xattrs,
                );
                // The size of what was read, not of what the inode is now.
                node.size = content.iter().map(|e| e.len).sum();
                self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
                return done(node);
            }
        }
        // Stages 3-6.
        let (content, opened_meta) = match self.read_content(path) {
            Ok(Some(x)) => x,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Holes are not read, but they are part of the file's size.
        let holes: u64 = content
            .iter()
            .filter(|e| e.chunk.is_none())
            .map(|e| e.len)
            .sum();
        self.progress.bytes.fetch_add(holes, Ordering::Relaxed);
        counter.fetch_add(1, Ordering::Relaxed);
        if opened_meta.nlink() > 1 {
            self.hardlinks.lock().expect("hardlinks").insert(
                link_key,
                (
                    ns(opened_meta.mtime(), opened_meta.mtime_nsec()),
                    content.clone(),
                ),
            );
        }
        let mut node = fsmeta::node_from_meta(
            name,
            &opened_meta,
            NodeKind::File { content },
            &self.names,
            xattrs,
        );
        node.size = match &node.kind {
            NodeKind::File { content } => content.iter().map(|e| e.len).sum(),
            _ => 0,
        };
        done(node)
    }
}
