//! Checks a restored folder against its snapshot, independently of the
//! restore that wrote it: every entry of the snapshot is looked up on disk
//! and compared (type, size, permissions, modification time, symlink
//! target, owner when this process could set it), every file's content is
//! read back and each stored run hashed with the repository's content id
//! (holes must read as zeros), and an entry on disk that the snapshot does
//! not have is reported too. Extended attributes are not compared.
//!
//! The restore drill (`pvsnap drill`) runs it after restoring into a
//! scratch folder: it proves the bytes landed, not just that the restore
//! returned.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::Result;
use crate::repo::IndexedRepository;
use crate::repo::id::ChunkId;
use crate::tree::{Extent, Node, NodeKind};

/// What [`verify`] found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Verified {
    /// Regular files whose content and metadata matched.
    pub files_verified: u64,
    /// Entries of every kind compared (files, folders, symlinks, …).
    pub entries: u64,
    /// Content bytes read back and hashed.
    pub bytes: u64,
    /// Each difference: the path below the folder and what differs.
    pub mismatches: Vec<(String, String)>,
}

impl Verified {
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct VerifyProgress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
}

/// Compares `folder` with the tree `root` (a snapshot's root folder, or a
/// folder inside it) of `repo`; see the module documentation.
pub fn verify(
    repo: &IndexedRepository,
    root: &Node,
    folder: &Path,
    progress: &VerifyProgress,
) -> Result<Verified> {
    let NodeKind::Dir { subtree } = &root.kind else {
        return Err(crate::Error::Invalid(format!(
            "{}: only a folder can be verified, and the snapshot's entry is a {}",
            folder.display(),
            root.kind.name()
        )));
    };
    // Paths from the names' bytes: a name that is not UTF-8 is found too.
    let mut nodes: Vec<(PathBuf, Node)> = Vec::new();
    collect(repo, subtree, Path::new(""), 1, &mut nodes)?;
    let same_owner = crate::fsmeta::is_root();
    let found: Vec<Option<(PathBuf, String)>> = nodes
        .par_iter()
        .map(|(path, node)| {
            compare(repo, node, &folder.join(path), same_owner, progress)
                .err()
                .map(|why| (path.clone(), why))
        })
        .collect();
    let wanted: HashSet<&Path> = nodes.iter().map(|(p, _)| p.as_path()).collect();
    let mut bad: Vec<(PathBuf, String)> = found.into_iter().flatten().collect();
    extras(folder, folder, &wanted, &mut bad);
    bad.sort();
    let failed: HashSet<&Path> = bad.iter().map(|(p, _)| p.as_path()).collect();
    let mut out = Verified {
        entries: nodes.len() as u64,
        files_verified: nodes
            .iter()
            .filter(|(p, n)| {
                matches!(n.kind, NodeKind::File { .. }) && !failed.contains(p.as_path())
            })
            .count() as u64,
        ..Verified::default()
    };
    out.mismatches = bad
        .into_iter()
        .map(|(p, why)| (p.to_string_lossy().into_owned(), why))
        .collect();
    out.bytes = progress.bytes.load(Ordering::Relaxed);
    Ok(out)
}

/// One entry against what is on disk; the difference as text.
fn compare(
    repo: &IndexedRepository,
    node: &Node,
    path: &Path,
    same_owner: bool,
    progress: &VerifyProgress,
) -> std::result::Result<(), String> {
    let m = std::fs::symlink_metadata(path).map_err(|e| format!("missing: {e}"))?;
    let ft = m.file_type();
    let kind_on_disk = if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "chardev"
        } else if ft.is_block_device() {
            "blockdev"
        } else {
            "socket"
        }
    };
    if kind_on_disk != node.kind.name() {
        return Err(format!(
            "is a {kind_on_disk}, the snapshot has a {}",
            node.kind.name()
        ));
    }
    // Every difference of the entry, content first.
    let mut found: Vec<String> = Vec::new();
    match &node.kind {
        NodeKind::File { content } => {
            if m.len() != node.size {
                found.push(format!("{} bytes, the snapshot has {}", m.len(), node.size));
            } else {
                match File::open(path) {
                    Ok(f) => {
                        if let Err(e) = content_matches(repo, &f, content, progress) {
                            found.push(e);
                        }
                    }
                    Err(e) => found.push(format!("cannot be read: {e}")),
                }
            }
            progress.files.fetch_add(1, Ordering::Relaxed);
        }
        NodeKind::Symlink { target } => {
            use std::os::unix::ffi::OsStrExt;
            match std::fs::read_link(path) {
                Ok(on_disk) if on_disk.as_os_str().as_bytes() != target.as_slice() => {
                    found.push(format!(
                        "points to {}, the snapshot's to {}",
                        on_disk.display(),
                        String::from_utf8_lossy(target)
                    ))
                }
                Ok(_) => {}
                Err(e) => found.push(format!("unreadable link: {e}")),
            }
        }
        NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } if m.rdev() != *rdev => {
            found.push(format!(
                "device {:#x}, the snapshot has {rdev:#x}",
                m.rdev()
            ));
        }
        _ => {}
    }
    if !ft.is_symlink() && m.mode() & 0o7777 != node.mode & 0o7777 {
        found.push(format!(
            "mode {:04o}, the snapshot has {:04o}",
            m.mode() & 0o7777,
            node.mode & 0o7777
        ));
    }
    if same_owner && (m.uid() != node.uid || m.gid() != node.gid) {
        found.push(format!(
            "owner {}:{}, the snapshot has {}:{}",
            m.uid(),
            m.gid(),
            node.uid,
            node.gid
        ));
    }
    let mtime = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
    if !ft.is_symlink() && mtime != node.mtime_ns as i128 {
        found.push(format!(
            "modified at {mtime} ns, the snapshot has {} ns",
            node.mtime_ns
        ));
    }
    match found.is_empty() {
        true => Ok(()),
        false => Err(found.join("; ")),
    }
}

/// Reads `f` run by run: each stored run must hash to its chunk's id under
/// the repository's keys, each hole must read as zeros.
fn content_matches(
    repo: &IndexedRepository,
    f: &File,
    content: &[Extent],
    progress: &VerifyProgress,
) -> std::result::Result<(), String> {
    let mut buf = Vec::new();
    let mut offset = 0u64;
    for e in content {
        buf.resize(e.len as usize, 0);
        f.read_exact_at(&mut buf, offset)
            .map_err(|err| format!("cannot read {} bytes at {offset}: {err}", e.len))?;
        match e.chunk {
            Some(id) => {
                let got = ChunkId(repo.crypto().content_id(&buf));
                if got != id {
                    return Err(format!(
                        "the {} bytes at {offset} differ from chunk {}",
                        e.len,
                        id.short()
                    ));
                }
            }
            None if buf.iter().any(|b| *b != 0) => {
                return Err(format!(
                    "the hole of {} bytes at {offset} holds data",
                    e.len
                ));
            }
            None => {}
        }
        progress.bytes.fetch_add(e.len, Ordering::Relaxed);
        offset += e.len;
    }
    Ok(())
}

/// Every entry below tree `tree`, with its path below the top folder.
fn collect(
    repo: &IndexedRepository,
    tree: &crate::repo::id::TreeId,
    prefix: &Path,
    depth: usize,
    out: &mut Vec<(PathBuf, Node)>,
) -> Result<()> {
    if depth > crate::tree::MAX_DEPTH {
        return Err(crate::Error::Invalid(format!(
            "{}: folders nest deeper than {}",
            prefix.display(),
            crate::tree::MAX_DEPTH
        )));
    }
    for node in repo.read_tree(tree)?.nodes {
        use std::os::unix::ffi::OsStrExt;
        let path = prefix.join(std::ffi::OsStr::from_bytes(&node.name));
        if let NodeKind::Dir { subtree } = &node.kind {
            collect(repo, subtree, &path, depth + 1, out)?;
        }
        out.push((path, node));
    }
    Ok(())
}

/// Entries below `dir` that the snapshot does not have.
fn extras(top: &Path, dir: &Path, wanted: &HashSet<&Path>, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let p: PathBuf = entry.path();
        let rel = p.strip_prefix(top).expect("below the folder").to_path_buf();
        if !wanted.contains(rel.as_path()) {
            out.push((rel, "not in the snapshot".into()));
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            extras(top, &p, wanted, out);
        }
    }
}
