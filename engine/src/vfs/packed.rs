//! A folder's tree as the mount keeps it: the blob's plaintext and where each
//! entry starts in it. An entry is decoded when asked for; a name is read in
//! place, so a lookup binary-searches the entries without decoding them.
//! This costs the blob's size plus 4 bytes an entry (about 90 bytes an entry
//! of a small file), where a decoded [`Tree`](crate::tree::Tree) costs about
//! 350: a folder of a million entries then fits in the mount's memory bound.

use crate::error::FormatError;
use crate::repo::id::TreeId;
use crate::tree::{Node, check_version, validate_name};

pub(crate) struct PackedTree {
    bytes: Vec<u8>,
    /// Where each entry starts in `bytes`, then where the last one ends.
    starts: Vec<u32>,
}

impl PackedTree {
    /// Checks a tree blob's plaintext as [`Tree::decode`](crate::tree::Tree::decode)
    /// does (version, valid names, sorted and unique) and indexes its entries.
    pub(crate) fn new(bytes: Vec<u8>, id: &TreeId) -> Result<PackedTree, FormatError> {
        check_version(&bytes, id)?;
        let invalid = |detail: String| FormatError::Invalid {
            what: format!("tree {id}"),
            detail,
        };
        if u32::try_from(bytes.len()).is_err() {
            return Err(invalid(format!(
                "{} bytes: too large a folder to show",
                bytes.len()
            )));
        }
        let (n, mut rest) =
            postcard::take_from_bytes::<u64>(&bytes[1..]).map_err(|e| invalid(e.to_string()))?;
        // Every entry takes more than one byte: a count beyond that is a lie.
        if n > rest.len() as u64 {
            return Err(invalid(format!("{n} entries in {} bytes", rest.len())));
        }
        let mut starts = Vec::with_capacity(n as usize + 1);
        let mut last: Option<Vec<u8>> = None;
        for _ in 0..n {
            starts.push((bytes.len() - rest.len()) as u32);
            let (node, r) =
                postcard::take_from_bytes::<Node>(rest).map_err(|e| invalid(e.to_string()))?;
            validate_name(&node.name)?;
            if last.as_ref().is_some_and(|l| *l >= node.name) {
                return Err(invalid("entries are not sorted and unique".into()));
            }
            last = Some(node.name);
            rest = r;
        }
        starts.push((bytes.len() - rest.len()) as u32);
        Ok(PackedTree { bytes, starts })
    }

    pub(crate) fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// Entry `i` (below [`PackedTree::len`]), decoded.
    pub(crate) fn node(&self, i: usize) -> Result<Node, FormatError> {
        let raw = &self.bytes[self.starts[i] as usize..self.starts[i + 1] as usize];
        postcard::from_bytes(raw).map_err(|e| FormatError::Invalid {
            what: "tree entry".into(),
            detail: e.to_string(),
        })
    }

    /// The name of the entry starting at `start`: a node begins with its
    /// name, a varint length and the bytes (checked by [`PackedTree::new`]).
    fn name_at(&self, start: u32) -> &[u8] {
        let b = &self.bytes[start as usize..];
        let (mut len, mut shift, mut i) = (0usize, 0, 0);
        while let Some(&byte) = b.get(i) {
            len |= ((byte & 0x7f) as usize) << shift;
            shift += 7;
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        &b[i..i + len]
    }

    /// The index of the entry called `name`, by binary search.
    pub(crate) fn find(&self, name: &[u8]) -> Option<usize> {
        self.starts[..self.len()]
            .binary_search_by(|&s| self.name_at(s).cmp(name))
            .ok()
    }

    /// Bytes held, for the tree cache's bound.
    pub(crate) fn weight(&self) -> usize {
        self.bytes.capacity() + self.starts.capacity() * 4 + 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;
    use crate::tree::Tree;
    use crate::tree::tests::{arb_node, fifo};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn entries_and_names_read_in_place_are_the_decoded_ones(
            nodes in proptest::collection::vec(arb_node(), 0..20)
        ) {
            let mut tree = Tree { nodes };
            tree.sort();
            tree.nodes.dedup_by(|a, b| a.name == b.name);
            let id = TreeId(Id([1; 32]));
            let packed = PackedTree::new(tree.encode(), &id).unwrap();
            prop_assert_eq!(packed.len(), tree.nodes.len());
            for (i, n) in tree.nodes.iter().enumerate() {
                prop_assert_eq!(&packed.node(i).unwrap(), n);
                prop_assert_eq!(packed.find(&n.name), Some(i));
                let mut other = n.name.clone();
                other.push(b'~');
                prop_assert_eq!(packed.find(&other), tree.nodes.iter().position(|m| m.name == other));
            }
        }
    }

    #[test]
    fn hostile_blobs_are_refused() {
        let id = TreeId(Id([2; 32]));
        let mut tree = Tree {
            nodes: vec![fifo(b"b"), fifo(b"a")],
        };
        assert!(PackedTree::new(tree.encode(), &id).is_err(), "unsorted");
        tree.sort();
        let good = tree.encode();
        assert!(PackedTree::new(good.clone(), &id).is_ok());
        for cut in 0..good.len() {
            assert!(
                PackedTree::new(good[..cut].to_vec(), &id).is_err(),
                "cut at {cut}"
            );
        }
        let mut huge = vec![good[0]];
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(
            PackedTree::new(huge, &id).is_err(),
            "a count beyond the bytes"
        );
        let mut bad_name = Tree {
            nodes: vec![fifo(b"..")],
        }
        .encode();
        assert!(PackedTree::new(bad_name.clone(), &id).is_err(), "`..`");
        bad_name[0] = 9;
        assert!(PackedTree::new(bad_name, &id).is_err(), "another version");
    }
}
