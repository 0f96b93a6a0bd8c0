//! Walking and comparing snapshot trees.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::repo::IndexedRepository;
use crate::repo::id::TreeId;
use crate::tree::{MAX_DEPTH, Node, NodeKind};

/// Calls `f(path, node)` for every entry below `tree`, depth first, parents
/// before children; paths are `/`-joined below `prefix`. Fails on the first
/// tree that cannot be read (see [`walk_lenient`] to go on past it).
pub fn walk(
    repo: &IndexedRepository,
    tree: &TreeId,
    prefix: &str,
    f: &mut dyn FnMut(&str, &Node) -> Result<()>,
) -> Result<()> {
    walk_in(repo, tree, prefix, 1, f, &mut None)
}

/// Like [`walk`], but a folder below `tree` whose tree cannot be read (or
/// that lies deeper than [`MAX_DEPTH`]) is skipped, after its own entry was
/// passed to `f`, and returned with its path and the reason; the walk goes
/// on. `tree` itself must be readable.
pub fn walk_lenient(
    repo: &IndexedRepository,
    tree: &TreeId,
    prefix: &str,
    f: &mut dyn FnMut(&str, &Node) -> Result<()>,
) -> Result<Vec<(String, String)>> {
    let mut lost = Some(Vec::new());
    walk_in(repo, tree, prefix, 1, f, &mut lost)?;
    Ok(lost.unwrap_or_default())
}

fn walk_in(
    repo: &IndexedRepository,
    tree: &TreeId,
    prefix: &str,
    depth: usize,
    f: &mut dyn FnMut(&str, &Node) -> Result<()>,
    lost: &mut Option<Vec<(String, String)>>,
) -> Result<()> {
    let here = || if prefix.is_empty() { "/" } else { prefix }.to_string();
    let t = if depth > MAX_DEPTH {
        Err(too_deep(&here()))
    } else {
        repo.read_tree(tree)
    };
    let t = match (t, lost.as_mut()) {
        (Ok(t), _) => t,
        (Err(e), Some(lost)) if depth > 1 => {
            lost.push((
                here(),
                format!("folder contents lost: tree {}: {e}", tree.short()),
            ));
            return Ok(());
        }
        (Err(e), Some(_)) => {
            return Err(Error::TopTreeUnreadable {
                path: here(),
                tree: tree.short(),
                detail: e.to_string(),
            });
        }
        (Err(e), None) => return Err(e),
    };
    for node in &t.nodes {
        let path = join(prefix, &node.name_lossy());
        f(&path, node)?;
        if let NodeKind::Dir { subtree } = &node.kind {
            walk_in(repo, subtree, &path, depth + 1, f, lost)?;
        }
    }
    Ok(())
}

fn too_deep(path: &str) -> Error {
    Error::Invalid(format!(
        "{path}: folders nest deeper than {MAX_DEPTH} levels; the snapshot is damaged or crafted, run `pvsnap check`"
    ))
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() || prefix == "/" {
        format!("/{name}")
    } else {
        format!("{prefix}/{name}")
    }
}

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `+` added, `-` removed, `M` content changed, `U` metadata changed, `T` type changed.
    pub change: char,
    pub path: String,
}

/// Differences between two trees; unchanged subtrees (same id) are skipped
/// without being read.
pub fn diff(repo: &IndexedRepository, a: &TreeId, b: &TreeId) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    diff_into(repo, Some(a), Some(b), "", 1, &mut out)?;
    Ok(out)
}

fn diff_into(
    repo: &IndexedRepository,
    a: Option<&TreeId>,
    b: Option<&TreeId>,
    prefix: &str,
    depth: usize,
    out: &mut Vec<Change>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    if depth > MAX_DEPTH {
        return Err(too_deep(prefix));
    }
    let ta = match a {
        Some(id) => repo.read_tree(id)?.nodes,
        None => vec![],
    };
    let tb = match b {
        Some(id) => repo.read_tree(id)?.nodes,
        None => vec![],
    };
    let (mut i, mut j) = (0, 0);
    while i < ta.len() || j < tb.len() {
        let ord = match (ta.get(i), tb.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                let n = &ta[i];
                let path = join(prefix, &n.name_lossy());
                out.push(Change {
                    change: '-',
                    path: path.clone(),
                });
                if let NodeKind::Dir { subtree } = &n.kind {
                    diff_into(repo, Some(subtree), None, &path, depth + 1, out)?;
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let n = &tb[j];
                let path = join(prefix, &n.name_lossy());
                out.push(Change {
                    change: '+',
                    path: path.clone(),
                });
                if let NodeKind::Dir { subtree } = &n.kind {
                    diff_into(repo, None, Some(subtree), &path, depth + 1, out)?;
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (&ta[i], &tb[j]);
                let path = join(prefix, &x.name_lossy());
                match (&x.kind, &y.kind) {
                    (NodeKind::Dir { subtree: sa }, NodeKind::Dir { subtree: sb }) => {
                        if !same_meta(x, y) {
                            out.push(Change {
                                change: 'U',
                                path: path.clone(),
                            });
                        }
                        diff_into(repo, Some(sa), Some(sb), &path, depth + 1, out)?;
                    }
                    (ka, kb) if std::mem::discriminant(ka) != std::mem::discriminant(kb) => {
                        out.push(Change { change: 'T', path });
                    }
                    (ka, kb) if ka != kb => out.push(Change { change: 'M', path }),
                    _ if !same_meta(x, y) => out.push(Change { change: 'U', path }),
                    _ => {}
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn same_meta(a: &Node, b: &Node) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime_ns == b.mtime_ns
        && a.xattrs == b.xattrs
}
