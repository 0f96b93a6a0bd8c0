//! Crafted repositories: hostile snapshots and trees written through the
//! engine's own API, and every reader run over them.
//!
//! Each case builds one small unencrypted repository in memory whose
//! snapshot holds one kind of hostility (escaping names in the root and in
//! entries, a root that is a symlink or a file, a cycle claimed through the
//! index, duplicate and unsorted names, a data blob where a tree belongs,
//! extents of absurd length, truncated tree blobs, index ranges past the
//! pack, a chain of trees deeper than [`MAX_DEPTH`]). Then restore (into an
//! empty target, and in place with deletion), check, the recursive listing,
//! dump, diff and the mount's engine side all run over it. None may panic or
//! walk without end; restore and check must refuse or report damage where
//! the case is damage; and a sentinel folder beside the target, whose
//! listing and content are compared before and after, must be untouched,
//! with nothing new beside the target.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use crate::maintenance::check::{self, ReadData};
use crate::repo::id::{ChunkId, Id, SnapshotId, TreeId};
use crate::repo::{IndexedRepository, Repository};
use crate::restore::{self, RestoreOptions, RestoreProgress};
use crate::snapshot::{Snapshot, Source, Summary};
use crate::store::blob::{self, BlobEntry, BlobKind};
use crate::store::index::IndexFile;
use crate::store::pack::PackBuilder;
use crate::testutil::mem_repo;
use crate::tree::walk;
use crate::tree::{Extent, MAX_DEPTH, Node, NodeKind, Tree};
use crate::vfs::{FileKind, ROOT, Vfs, VfsOptions};

fn node(name: &[u8], kind: NodeKind) -> Node {
    let size = match &kind {
        NodeKind::File { content } => content.iter().fold(0u64, |t, e| t.wrapping_add(e.len)),
        _ => 0,
    };
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        user: None,
        group: None,
        size,
        mtime_ns: 1_600_000_000_000_000_000,
        ctime_ns: 0,
        inode: 0,
        device: 0,
        links: 1,
        xattrs: vec![],
    }
}

fn dir(name: &[u8], subtree: TreeId) -> Node {
    node(name, NodeKind::Dir { subtree })
}

fn file(name: &[u8], content: Vec<Extent>) -> Node {
    node(name, NodeKind::File { content })
}

fn chunk(id: Id, len: u64) -> Extent {
    Extent {
        chunk: Some(ChunkId(id)),
        len,
    }
}

/// Writes blobs through a pack and an index file; `lie` may change the
/// index entries (not the pack) before the index is written. Returns the
/// ids in order.
fn store(
    repo: &Repository,
    kind: BlobKind,
    raws: &[Vec<u8>],
    lie: &dyn Fn(&mut Vec<BlobEntry>),
) -> Vec<Id> {
    let crypto = repo.crypto();
    let mut b = PackBuilder::new(false, 1 << 16);
    let mut ids = vec![];
    for raw in raws {
        let id = crypto.content_id(raw);
        let (stored, flags) = blob::encode(crypto, 3, kind, &id, raw);
        let e = BlobEntry {
            kind,
            flags,
            id,
            offset: 0,
            stored_len: 0,
            raw_len: raw.len() as u32,
        };
        b.add(e, &stored);
        ids.push(id);
    }
    let fp = b.finish(crypto);
    repo.backend()
        .put(
            &crate::backend::ObjectKey::new(crate::repo::format::ObjectKind::Pack, fp.id.to_hex()),
            &fp.bytes,
        )
        .expect("put pack");
    let mut entries = fp.entries.clone();
    lie(&mut entries);
    repo.write_index(&IndexFile {
        supersedes: vec![],
        packs: vec![(fp.id, entries)],
    })
    .expect("write index");
    ids
}

fn no_lie(_: &mut Vec<BlobEntry>) {}

/// Stores one tree blob of `nodes` as given (not sorted, not checked).
fn tree(repo: &Repository, nodes: Vec<Node>) -> TreeId {
    TreeId(store(repo, BlobKind::Tree, &[Tree { nodes }.encode()], &no_lie)[0])
}

fn data(repo: &Repository, raw: &[u8]) -> Id {
    store(repo, BlobKind::Data, &[raw.to_vec()], &no_lie)[0]
}

fn snapshot(root: Node) -> Snapshot {
    let tree = match &root.kind {
        NodeKind::Dir { subtree } => *subtree,
        _ => TreeId(Id([0; 32])),
    };
    Snapshot {
        id: SnapshotId(Id::random()),
        time: "2026-01-01T00:00:00Z".parse().expect("time"),
        hostname: "crafted".into(),
        source: Source::Path {
            path: "/crafted".into(),
        },
        tags: vec![],
        labels: BTreeMap::new(),
        parent: None,
        root,
        tree,
        summary: Summary::default(),
        errors: vec![],
        hooks: vec![],
        program_version: "crafted".into(),
        original: None,
        source_snapshot: None,
    }
}

/// A good folder below the root, so that a restore has something to do.
fn good_content(repo: &Repository) -> Vec<Node> {
    let d = data(repo, b"good content");
    let sub = tree(repo, vec![file(b"inner", vec![chunk(d, 12)])]);
    vec![file(b"a-good-file", vec![chunk(d, 12)]), dir(b"sub", sub)]
}

/// Root `root_name`/kind over good content.
fn root_case(repo: &Repository, name: &[u8], kind: Option<NodeKind>) -> Snapshot {
    let t = tree(repo, good_content(repo));
    let kind = kind.unwrap_or(NodeKind::Dir { subtree: t });
    let mut s = snapshot(node(name, kind));
    s.tree = t;
    s
}

/// A root folder holding `bad` next to good content.
fn entries_case(repo: &Repository, bad: Vec<Node>) -> Snapshot {
    let mut nodes = good_content(repo);
    nodes.extend(bad);
    // The root's own tree is well formed; the hostility is in `bad`.
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let t = tree(repo, nodes);
    snapshot(dir(b"", t))
}

/// A root whose subfolder `x` has the tree of raw bytes `raw` (as a tree blob).
fn raw_tree_case(repo: &Repository, raw: Vec<u8>) -> Snapshot {
    let bad = TreeId(store(repo, BlobKind::Tree, &[raw], &no_lie)[0]);
    entries_case(repo, vec![dir(b"x", bad)])
}

type Build = fn(&Repository) -> Snapshot;

struct Case {
    name: &'static str,
    build: Build,
    /// Restore and check must refuse or report damage.
    damage: bool,
    /// Check must report it (roots are checked when the snapshot is loaded).
    check_flags: bool,
}

fn bad_name_tree(repo: &Repository, name: &[u8]) -> Snapshot {
    let d = data(repo, b"escaped");
    let t = tree(repo, vec![file(name, vec![chunk(d, 7)])]);
    entries_case(repo, vec![dir(b"x", t)])
}

fn cases() -> Vec<Case> {
    let c = |name, build: Build, damage, check_flags| Case {
        name,
        build,
        damage,
        check_flags,
    };
    vec![
        // Roots (`check` refuses them when it loads the snapshot).
        c("root named ..", |r| root_case(r, b"..", None), true, true),
        c(
            "root named ../sentinel",
            |r| root_case(r, b"../sentinel", None),
            true,
            true,
        ),
        c(
            "root named /abs",
            |r| root_case(r, b"/tmp/pvsnap-escape", None),
            true,
            true,
        ),
        c("root named a/b", |r| root_case(r, b"a/b", None), true, true),
        c(
            "root named with NUL",
            |r| root_case(r, b"a\0b", None),
            true,
            true,
        ),
        c("root named .", |r| root_case(r, b".", None), true, true),
        c(
            "root named like a folder",
            |r| root_case(r, b"sentinel", None),
            true,
            true,
        ),
        c(
            "root is a symlink out",
            |r| {
                root_case(
                    r,
                    b"link",
                    Some(NodeKind::Symlink {
                        target: b"../sentinel".to_vec(),
                    }),
                )
            },
            true,
            true,
        ),
        c(
            "root is a symlink with an escaping name",
            |r| {
                root_case(
                    r,
                    b"../sentinel/planted",
                    Some(NodeKind::Symlink {
                        target: b"/".to_vec(),
                    }),
                )
            },
            true,
            true,
        ),
        c(
            "root is a file named ../sentinel/keep",
            |r| {
                let d = data(r, b"overwrite");
                root_case(
                    r,
                    b"../sentinel/keep",
                    Some(NodeKind::File {
                        content: vec![chunk(d, 9)],
                    }),
                )
            },
            true,
            true,
        ),
        c(
            "root is a fifo",
            |r| root_case(r, b"f", Some(NodeKind::Fifo)),
            true,
            true,
        ),
        // Entry names (a tree naming them is refused when decoded).
        c("entry named ..", |r| bad_name_tree(r, b".."), true, true),
        c("entry named .", |r| bad_name_tree(r, b"."), true, true),
        c(
            "entry named /abs",
            |r| bad_name_tree(r, b"/tmp/pvsnap-escape"),
            true,
            true,
        ),
        c(
            "entry named a/b",
            |r| bad_name_tree(r, b"../sentinel"),
            true,
            true,
        ),
        c(
            "entry with empty name",
            |r| bad_name_tree(r, b""),
            true,
            true,
        ),
        c("entry with NUL", |r| bad_name_tree(r, b"a\0b"), true, true),
        c(
            "duplicate names (symlink then folder)",
            |r| {
                let inner = tree(r, vec![file(b"f", vec![])]);
                let t = tree(
                    r,
                    vec![
                        node(
                            b"d",
                            NodeKind::Symlink {
                                target: b"../../sentinel".to_vec(),
                            },
                        ),
                        dir(b"d", inner),
                    ],
                );
                entries_case(r, vec![dir(b"x", t)])
            },
            true,
            true,
        ),
        c(
            "unsorted names",
            |r| {
                let t = tree(r, vec![file(b"b", vec![]), file(b"a", vec![])]);
                entries_case(r, vec![dir(b"x", t)])
            },
            true,
            true,
        ),
        // Kinds.
        c(
            "a data blob where a tree belongs",
            |r| {
                let d = data(r, b"not a tree");
                entries_case(r, vec![dir(b"x", TreeId(d))])
            },
            true,
            true,
        ),
        c(
            "a tree that is not in the index",
            |r| entries_case(r, vec![dir(b"x", TreeId(Id([7; 32])))]),
            true,
            true,
        ),
        c(
            "a tree blob where a chunk belongs (harmless: its bytes are checked)",
            |r| {
                let t = tree(r, vec![]);
                let len = Tree::default().encode().len() as u64;
                entries_case(r, vec![file(b"f", vec![chunk(t.0, len)])])
            },
            false,
            false,
        ),
        // Cycles: a tree is named by its content, so a tree holding itself
        // can only be claimed by an index entry that lies; its check fails.
        c(
            "a tree that holds itself (claimed through the index)",
            |r| {
                let claimed = Id([0x5a; 32]);
                let raw = Tree {
                    nodes: vec![dir(b"loop", TreeId(claimed))],
                }
                .encode();
                store(r, BlobKind::Tree, &[raw], &|e| e[0].id = claimed);
                entries_case(r, vec![dir(b"x", TreeId(claimed))])
            },
            true,
            true,
        ),
        c("a chain deeper than MAX_DEPTH", deep_chain, true, true),
        // Lengths.
        c(
            "an extent of 2^63 bytes",
            |r| {
                let d = data(r, b"short");
                entries_case(r, vec![file(b"huge", vec![chunk(d, 1 << 63)])])
            },
            true,
            true,
        ),
        c(
            "extents that overflow u64",
            |r| {
                let d = data(r, b"short");
                entries_case(
                    r,
                    vec![file(
                        b"huge",
                        vec![
                            Extent {
                                chunk: None,
                                len: u64::MAX,
                            },
                            chunk(d, 5),
                        ],
                    )],
                )
            },
            true,
            true,
        ),
        c(
            "an extent longer than its chunk",
            |r| {
                let d = data(r, b"short");
                entries_case(r, vec![file(b"f", vec![chunk(d, 6), chunk(d, 5)])])
            },
            true,
            true,
        ),
        c(
            "a size of 2^63 over small content",
            |r| {
                let d = data(r, b"short");
                let mut f = file(b"f", vec![chunk(d, 5)]);
                f.size = 1 << 63;
                entries_case(r, vec![f])
            },
            true,
            false,
        ),
        // Truncated objects.
        c(
            "an empty tree blob",
            |r| raw_tree_case(r, vec![]),
            true,
            true,
        ),
        c(
            "a truncated tree blob",
            |r| {
                let d = data(r, b"abc");
                let mut raw = Tree {
                    nodes: vec![file(b"one", vec![chunk(d, 3)]), file(b"two", vec![])],
                }
                .encode();
                raw.truncate(raw.len() / 2);
                raw_tree_case(r, raw)
            },
            true,
            true,
        ),
        c(
            "a tree blob with trailing garbage",
            |r| {
                let mut raw = Tree::default().encode();
                raw.extend_from_slice(&[0xff; 40]);
                raw_tree_case(r, raw)
            },
            false,
            false,
        ),
        c(
            "a tree blob of a newer version",
            |r| raw_tree_case(r, vec![9, 0]),
            true,
            true,
        ),
        // Index ranges (defect 9): past the pack, and overlapping.
        c(
            "an index stored_len past the pack",
            |r| index_lie_case(r, |e| e[0].stored_len = u32::MAX),
            true,
            true,
        ),
        c(
            "an index offset past the pack",
            |r| index_lie_case(r, |e| e[0].offset = u32::MAX - 3),
            true,
            true,
        ),
        c(
            "an index stored_len reaching past the next blob",
            |r| {
                index_lie_case(r, |e| {
                    e[0].stored_len = e[1].offset + e[1].stored_len - e[0].offset + 9
                })
            },
            true,
            true,
        ),
        c(
            "an index raw_len that disagrees with the extent",
            |r| index_lie_case(r, |e| e[1].raw_len += 1000),
            true,
            true,
        ),
    ]
}

/// Two chunks in one pack, with an index that lies about them.
fn index_lie_case(repo: &Repository, lie: fn(&mut Vec<BlobEntry>)) -> Snapshot {
    let one = crate::testutil::noise(1, 3000);
    let two = crate::testutil::noise(2, 3000);
    let ids = store(repo, BlobKind::Data, &[one, two], &lie);
    entries_case(
        repo,
        vec![
            file(b"one", vec![chunk(ids[0], 3000)]),
            file(b"two", vec![chunk(ids[1], 3000)]),
        ],
    )
}

fn deep_chain(repo: &Repository) -> Snapshot {
    let mut t = tree(repo, vec![file(b"bottom", vec![])]);
    for _ in 0..MAX_DEPTH + 3 {
        t = tree(repo, vec![dir(b"d", t)]);
    }
    snapshot(dir(b"", t))
}

/// Every path below `root` with its kind, mode and content hash.
fn fingerprint(root: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&d)
            .expect("read sentinel")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for p in names {
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let content = if m.is_file() {
                blake3::hash(&std::fs::read(&p).expect("read"))
                    .to_hex()
                    .to_string()
            } else if m.is_symlink() {
                format!("-> {:?}", std::fs::read_link(&p).expect("readlink"))
            } else {
                stack.push(p.clone());
                String::new()
            };
            out.push(format!(
                "{} {:o} {} {} {content}",
                p.display(),
                m.mode(),
                m.len(),
                m.mtime()
            ));
        }
    }
    out
}

/// What the readers did with one case.
#[derive(Debug, Default)]
struct Outcome {
    restore_flagged: bool,
    in_place_flagged: bool,
    check_flagged: bool,
    ls_flagged: bool,
    load_refused: bool,
}

fn no_panic<T>(what: &str, case: &str, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| panic!("{case}: {what} panicked"))
}

fn flagged(r: &crate::Result<restore::RestoreSummary>) -> bool {
    match r {
        Ok(s) => !s.damaged.is_empty(),
        Err(_) => true,
    }
}

/// Reads a mounted view down to a bounded depth: listing, lookups, links,
/// and every file's bytes.
fn read_vfs(vfs: &Vfs, ino: u64, depth: usize, budget: &mut usize) {
    if depth > 40 || *budget == 0 {
        return;
    }
    let mut entries = vec![];
    let _ = vfs.readdir(ino, 0, &mut |e| {
        entries.push((e.name.to_vec(), e.attr));
        false
    });
    for (name, attr) in entries {
        *budget = budget.saturating_sub(1);
        if name == b"." || name == b".." {
            continue;
        }
        let Ok(a) = vfs.lookup(ino, &name) else {
            continue;
        };
        let _ = vfs.getxattr(a.ino, b"user.x");
        match attr.kind {
            FileKind::Dir => read_vfs(vfs, a.ino, depth + 1, budget),
            FileKind::File => {
                let _ = vfs.read(a.ino, 0, 1 << 16);
                let _ = vfs.read(a.ino, a.size.saturating_sub(10), 1 << 16);
                let _ = vfs.read(a.ino, u64::MAX - 5, 100);
            }
            FileKind::Symlink => {
                let _ = vfs.readlink(a.ino);
            }
            _ => {}
        }
    }
}

fn run(case: &Case) -> Outcome {
    let (_mem, repo) = mem_repo(false);
    let snap = (case.build)(&repo);
    repo.save_snapshot(&snap).expect("save snapshot");
    let idx: IndexedRepository = repo.clone().load_index().expect("index");
    let name = case.name;

    let base = tempfile::tempdir().expect("tempdir");
    let sentinel = base.path().join("sentinel");
    std::fs::create_dir_all(sentinel.join("inner")).expect("sentinel");
    std::fs::write(sentinel.join("keep"), b"must stay").expect("sentinel");
    std::fs::write(sentinel.join("inner/also"), b"must stay too").expect("sentinel");
    std::fs::set_permissions(
        sentinel.join("keep"),
        std::fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    let before = fingerprint(base.path());

    let mut out = Outcome::default();
    let progress = RestoreProgress::default();
    // Into an empty target.
    let target = base.path().join("target");
    let r = no_panic("restore", name, || {
        restore::restore(
            &idx,
            &snap,
            None,
            &target,
            &RestoreOptions::default(),
            &progress,
        )
    });
    out.restore_flagged = flagged(&r);
    if std::env::var_os("HOSTILE_DEBUG").is_some() {
        eprintln!(
            "DEBUG {name}: {:?}",
            r.as_ref().map(|s| &s.damaged).map_err(|e| e.to_string())
        );
    }
    // In place, deleting what the snapshot does not have.
    let again = base.path().join("again");
    std::fs::create_dir_all(again.join("sub")).expect("again");
    std::fs::write(again.join("extra"), b"x").expect("again");
    std::os::unix::fs::symlink("../sentinel", again.join("x")).expect("again");
    let in_place = RestoreOptions {
        delete_extra: true,
        ..RestoreOptions::default()
    };
    let r = no_panic("in-place restore", name, || {
        restore::restore(&idx, &snap, None, &again, &in_place, &progress)
    });
    out.in_place_flagged = flagged(&r);
    // Each top-level entry on its own.
    if let Ok(t) = idx.read_tree(&snap.tree) {
        for n in t.nodes.iter().take(8) {
            let sub = base.path().join("sub-target");
            let _ = no_panic("restore --path", name, || {
                restore::restore(
                    &idx,
                    &snap,
                    Some(&n.name_lossy()),
                    &sub,
                    &RestoreOptions::default(),
                    &progress,
                )
            });
            let _ = std::fs::remove_dir_all(&sub);
        }
    }

    out.load_refused = no_panic("load", name, || repo.load_snapshot(&snap.id)).is_err();
    let report = no_panic("check", name, || check::check(&repo, ReadData::All));
    out.check_flagged = report.map(|r| !r.ok).unwrap_or(true);

    let mut files = vec![];
    let ls = no_panic("ls", name, || {
        walk::walk_lenient(&idx, &snap.tree, "", &mut |p, n| {
            if matches!(n.kind, NodeKind::File { .. }) {
                files.push((p.to_string(), n.clone()));
            }
            Ok(())
        })
    });
    out.ls_flagged = ls.map(|lost| !lost.is_empty()).unwrap_or(true);
    files.push(("root".into(), snap.root.clone()));
    for (_, n) in files.iter().take(16) {
        let _ = no_panic("dump", name, || {
            restore::dump(&idx, n, &mut std::io::sink())
        });
    }
    let _ = no_panic("diff", name, || {
        walk::diff(&idx, &snap.tree, &TreeId(Id([0; 32])))
    });

    let vfs = no_panic("mount", name, || {
        Vfs::new(
            repo.clone().load_index().expect("index"),
            VfsOptions {
                snapshot: Some(snap.clone()),
                readahead_bytes: 0,
                ..VfsOptions::default()
            },
        )
    });
    if let Ok(vfs) = vfs {
        no_panic("mount reads", name, || read_vfs(&vfs, ROOT, 0, &mut 20_000));
    }

    // Nothing outside: the sentinel is as it was, and nothing new stands
    // beside the targets (nor at the absolute path a root tried to name).
    let _ = std::fs::remove_dir_all(&target);
    let _ = std::fs::remove_dir_all(&again);
    assert_eq!(
        fingerprint(base.path()),
        before,
        "{name}: something outside the target changed"
    );
    assert!(
        !Path::new("/tmp/pvsnap-escape").exists(),
        "{name}: wrote to an absolute path"
    );
    out
}

#[test]
fn crafted_repositories_are_refused_without_touching_anything_outside() {
    // The CLI's main thread has 8 MiB of stack; walks to MAX_DEPTH must fit.
    let results = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(|| {
            cases()
                .iter()
                .map(|c| (c.name, c.damage, c.check_flags, run(c)))
                .collect::<Vec<_>>()
        })
        .expect("spawn")
        .join()
        .expect("no case panicked");
    let mut failures = vec![];
    for (name, damage, check_flags, o) in &results {
        if *damage && !(o.restore_flagged && o.in_place_flagged) {
            failures.push(format!(
                "{name}: restore did not refuse or report it: {o:?}"
            ));
        }
        if *check_flags && !o.check_flagged {
            failures.push(format!("{name}: check did not report it: {o:?}"));
        }
        // A root is judged when the snapshot is loaded (as `ls` does); the
        // listing judges trees.
        if name.starts_with("root") && !o.load_refused {
            failures.push(format!(
                "{name}: loading the snapshot did not refuse it: {o:?}"
            ));
        }
        if *check_flags
            && !o.ls_flagged
            && !name.starts_with("root")
            && !name.contains("extent")
            && !name.contains("index")
        {
            failures.push(format!("{name}: the listing did not report it: {o:?}"));
        }
    }
    println!(
        "crafted repositories: {} cases, each through restore (fresh, in place, by path), check, ls, dump, diff and the mount; {} failures",
        results.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
