//! The matrix's model of a repository, computed with the engine before any
//! damage: which blobs each file needs, where each blob lies, and which index
//! file lists it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use pvsnap_engine::Repository;
use pvsnap_engine::backend::DynBackend;
use pvsnap_engine::backend::local::LocalBackend;
use pvsnap_engine::repo::id::{Id, IndexId, PackId, SnapshotId, TreeId};
use pvsnap_engine::tree::NodeKind;

use crate::util::Env;

/// A snapshot's files: relative path → (content, blobs needed).
pub type Files = BTreeMap<String, (Vec<u8>, BTreeSet<Id>)>;

/// Where each file's content and trees live, from the engine's view.
pub struct Model {
    /// Snapshot id (hex) → its files: relative path → (content, blobs needed).
    pub files: BTreeMap<String, Files>,
    /// Snapshot id (hex) → root tree.
    pub roots: BTreeMap<String, TreeId>,
    /// (snapshot id, folder path) → the folder's tree.
    pub trees: BTreeMap<(String, String), TreeId>,
    /// Blob → (pack, offset, stored length).
    pub blobs: HashMap<Id, (PackId, u64, u64)>,
    /// Index file → blobs it lists.
    pub index_files: BTreeMap<IndexId, BTreeSet<Id>>,
}

pub fn open(env: &Env) -> Repository {
    let backend: DynBackend = Arc::new(LocalBackend::new(env.repo()));
    let pw = || Ok(b"matrix password".to_vec());
    Repository::open(backend, Some(&pw)).expect("open the fixture")
}

/// A source folder: relative path → content.
pub type Source<'a> = (&'a PathBuf, &'a Vec<(&'a str, Vec<u8>)>);

pub fn model(env: &Env, snaps: &[String], sources: &[Source<'_>]) -> Model {
    let repo = open(env);
    let mut blobs = HashMap::new();
    let mut index_files = BTreeMap::new();
    for (iid, f) in repo.read_index_files().unwrap() {
        let mut listed = BTreeSet::new();
        for (pack, entries) in &f.packs {
            for e in entries {
                blobs.insert(e.id, (*pack, e.offset as u64, e.stored_len as u64));
                listed.insert(e.id);
            }
        }
        index_files.insert(iid, listed);
    }
    let indexed = repo.clone().load_index().unwrap();
    let mut files = BTreeMap::new();
    let mut roots = BTreeMap::new();
    let mut trees = BTreeMap::new();
    for (sid, (_, src)) in snaps.iter().zip(sources) {
        let snap = repo
            .load_snapshot(&sid.parse::<SnapshotId>().unwrap())
            .unwrap();
        roots.insert(sid.clone(), snap.tree);
        let content: HashMap<&str, &Vec<u8>> = src.iter().map(|(r, c)| (*r, c)).collect();
        let mut out = BTreeMap::new();
        let mut stack = vec![(String::new(), snap.tree, BTreeSet::from([snap.tree.id()]))];
        while let Some((prefix, tree, above)) = stack.pop() {
            for n in indexed.read_tree(&tree).unwrap().nodes {
                let rel = format!("{prefix}{}", String::from_utf8(n.name.clone()).unwrap());
                match &n.kind {
                    NodeKind::Dir { subtree } => {
                        let mut a = above.clone();
                        a.insert(subtree.id());
                        trees.insert((sid.clone(), rel.clone()), *subtree);
                        stack.push((format!("{rel}/"), *subtree, a));
                    }
                    NodeKind::File { content: extents } => {
                        let mut need = above.clone();
                        need.extend(extents.iter().filter_map(|e| e.chunk).map(|c| c.id()));
                        let bytes = content[rel.as_str()].clone();
                        out.insert(rel, (bytes, need));
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(out.len(), src.len(), "the model sees every file");
        files.insert(sid.clone(), out);
    }
    Model {
        files,
        roots,
        trees,
        blobs,
        index_files,
    }
}
