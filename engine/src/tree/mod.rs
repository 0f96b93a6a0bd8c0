//! Trees: one blob per directory, listing its entries with their metadata.
//!
//! A tree blob's plaintext is one version byte ([`TREE_VERSION`]) followed by the
//! postcard encoding of [`Tree`]. Postcard's wire format is frozen at 1.0;
//! enum variants are encoded by their position, so variants are only ever
//! appended, never reordered or removed. Entries are sorted by name bytes and
//! names are validated on decode, so a tree can never name `..` or a path.

pub mod filter;
pub mod walk;

use serde::{Deserialize, Serialize};

use crate::error::FormatError;
use crate::repo::format::TREE_VERSION;
use crate::repo::id::{ChunkId, TreeId};

/// One directory's entries, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// An extended attribute (POSIX ACLs travel as `system.posix_acl_*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// A run of file content: a stored chunk, or a hole (`chunk: None`) that is
/// neither stored nor written on restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub chunk: Option<ChunkId>,
    pub len: u64,
}

/// What kind of entry a node is, with its kind-specific payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File { content: Vec<Extent> },
    Dir { subtree: TreeId },
    Symlink { target: Vec<u8> },
    Fifo,
    CharDevice { rdev: u64 },
    BlockDevice { rdev: u64 },
}

impl NodeKind {
    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::File { .. } => "file",
            NodeKind::Dir { .. } => "dir",
            NodeKind::Symlink { .. } => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::CharDevice { .. } => "chardev",
            NodeKind::BlockDevice { .. } => "blockdev",
        }
    }
}

/// One directory entry and everything needed to recreate it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The entry's name: any bytes but `/` and NUL, not `.` or `..`.
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Full `st_mode` permission and special bits (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: Option<String>,
    pub group: Option<String>,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    pub xattrs: Vec<Xattr>,
}

impl Node {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }

    /// The chunks of a regular file's content (holes skipped).
    pub fn chunks(&self) -> impl Iterator<Item = ChunkId> + '_ {
        let content: &[Extent] = match &self.kind {
            NodeKind::File { content } => content,
            _ => &[],
        };
        content.iter().filter_map(|e| e.chunk)
    }
}

/// Deepest folder level that restore, `check`, listings and the mount follow
/// below a snapshot's root; deeper folders are reported as lost. Trees are
/// named by their content, so they cannot form a cycle, but a crafted chain
/// of trees can be arbitrarily deep: this bounds every walk and its stack.
/// It is far beyond what a path of `PATH_MAX` (4096 bytes) can reach.
pub const MAX_DEPTH: usize = 1024;

/// Refuses names that could escape a restore target or are not one path part.
pub fn validate_name(name: &[u8]) -> Result<(), FormatError> {
    let bad = name.is_empty()
        || name == b"."
        || name == b".."
        || name.contains(&b'/')
        || name.contains(&0);
    if bad {
        return Err(FormatError::Invalid {
            what: "tree".into(),
            detail: format!("invalid entry name {:?}", String::from_utf8_lossy(name)),
        });
    }
    Ok(())
}

/// Refuses a tree blob's plaintext that is empty or of another version.
pub fn check_version(bytes: &[u8], id: &TreeId) -> Result<(), FormatError> {
    match bytes.first() {
        Some(&TREE_VERSION) => Ok(()),
        Some(&v) => Err(FormatError::UnsupportedVersion {
            what: "tree",
            found: v as u32,
            supported: TREE_VERSION as u32,
        }),
        None => Err(FormatError::Invalid {
            what: format!("tree {id}"),
            detail: "empty".into(),
        }),
    }
}

impl Tree {
    /// Sorts entries by name; call before encoding.
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The node called `name`, by binary search.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![TREE_VERSION];
        postcard::to_io(self, &mut out).expect("writing to a Vec cannot fail");
        out
    }

    pub fn decode(bytes: &[u8], id: &TreeId) -> Result<Tree, FormatError> {
        let what = || format!("tree {id}");
        check_version(bytes, id)?;
        let tree: Tree = postcard::from_bytes(&bytes[1..]).map_err(|e| FormatError::Invalid {
            what: what(),
            detail: e.to_string(),
        })?;
        for n in &tree.nodes {
            validate_name(&n.name)?;
        }
        if tree.nodes.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err(FormatError::Invalid {
                what: what(),
                detail: "entries are not sorted and unique".into(),
            });
        }
        Ok(tree)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::repo::id::Id;
    use proptest::prelude::*;

    /// A fifo named `name`, with nothing else set.
    pub fn fifo(name: &[u8]) -> Node {
        Node {
            name: name.to_vec(),
            kind: NodeKind::Fifo,
            mode: 0,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            device: 0,
            links: 1,
            xattrs: vec![],
        }
    }

    pub fn arb_node() -> impl Strategy<Value = Node> {
        let kind = prop_oneof![
            proptest::collection::vec(
                (proptest::option::of(any::<[u8; 32]>()), any::<u64>()),
                0..4
            )
            .prop_map(|v| NodeKind::File {
                content: v
                    .into_iter()
                    .map(|(c, len)| Extent {
                        chunk: c.map(|c| ChunkId(Id(c))),
                        len
                    })
                    .collect()
            }),
            any::<[u8; 32]>().prop_map(|t| NodeKind::Dir {
                subtree: TreeId(Id(t))
            }),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|target| NodeKind::Symlink { target }),
            Just(NodeKind::Fifo),
            any::<u64>().prop_map(|rdev| NodeKind::CharDevice { rdev }),
            any::<u64>().prop_map(|rdev| NodeKind::BlockDevice { rdev }),
        ];
        (
            proptest::collection::vec(1u8..=255, 1..20)
                .prop_filter("valid name", |n| validate_name(n).is_ok()),
            kind,
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                proptest::option::of("[a-z]{1,8}"),
                any::<u64>(),
            ),
            (any::<i64>(), any::<i64>(), any::<u64>(), any::<u64>()),
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 1..10),
                    proptest::collection::vec(any::<u8>(), 0..10),
                ),
                0..3,
            ),
        )
            .prop_map(
                |(
                    name,
                    kind,
                    (mode, uid, gid, user, size),
                    (mtime_ns, ctime_ns, inode, links),
                    xattrs,
                )| Node {
                    name,
                    kind,
                    mode,
                    uid,
                    gid,
                    group: user.clone(),
                    user,
                    size,
                    mtime_ns,
                    ctime_ns,
                    inode,
                    device: 1,
                    links,
                    xattrs: xattrs
                        .into_iter()
                        .map(|(name, value)| Xattr { name, value })
                        .collect(),
                },
            )
    }

    proptest! {
        #[test]
        fn tree_round_trip(nodes in proptest::collection::vec(arb_node(), 0..8)) {
            let mut t = Tree { nodes };
            t.sort();
            t.nodes.dedup_by(|a, b| a.name == b.name);
            let bytes = t.encode();
            prop_assert_eq!(Tree::decode(&bytes, &TreeId::default()).unwrap(), t);
            for cut in 0..bytes.len().min(64) {
                let _ = Tree::decode(&bytes[..cut], &TreeId::default());
            }
        }
    }

    #[test]
    fn escaping_names_are_refused() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"a\0"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(b"\xff\xfe not utf8").is_ok());
        let mut t = Tree::default();
        t.nodes.push(fifo(b".."));
        assert!(Tree::decode(&t.encode(), &TreeId::default()).is_err());
    }

    #[test]
    fn newer_tree_version_is_refused() {
        let mut bytes = Tree::default().encode();
        bytes[0] = 9;
        assert!(matches!(
            Tree::decode(&bytes, &TreeId::default()),
            Err(FormatError::UnsupportedVersion { found: 9, .. })
        ));
    }
}
