use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::*;
use crate::backend::{Backend, DynBackend, Forward, ObjectKey};
use crate::error::BackendError;
use crate::repo::format::ObjectKind;
use crate::repo::id::ChunkId;
use crate::testutil;
use crate::tree::NodeKind;

/// Fails the n-th pack put (and every later one); other objects pass, so
/// the snapshot could commit if a lost pack went unnoticed.
struct FailPack {
    inner: DynBackend,
    packs_left: AtomicI64,
}

impl Forward for FailPack {
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        if key.kind == ObjectKind::Pack && self.packs_left.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(BackendError::Injected(format!("put {key}")));
        }
        self.inner.put(key, data)
    }
}

#[test]
fn cuts_do_not_depend_on_read_blocks_and_content_survives() {
    // mem_repo chunks at 1/4/16 KiB, so read blocks are 32 KiB and these
    // files cross dozens of block boundaries, in both buffers.
    let dir = tempfile::tempdir().unwrap();
    let mut text = Vec::new();
    while text.len() < 300_000 {
        text.extend_from_slice(format!("line {} of a log\n", text.len()).as_bytes());
    }
    let mut mixed = testutil::noise(1, 200_000);
    mixed.extend_from_slice(&text);
    mixed.extend_from_slice(&testutil::noise(2, 77_777));
    let files: Vec<(String, Vec<u8>)> = vec![
        ("mixed".to_string(), mixed),
        ("one-block".to_string(), testutil::noise(3, 32 * 1024)),
        (
            "block-and-a-byte".to_string(),
            testutil::noise(4, 32 * 1024 + 1),
        ),
        ("two-blocks".to_string(), testutil::noise(5, 64 * 1024)),
    ];
    let files: std::collections::BTreeMap<_, _> = files.into_iter().collect();
    testutil::write_tree(dir.path(), &files);
    for encrypted in [false, true] {
        let (_, repo) = testutil::mem_repo(encrypted);
        let snap = testutil::snapshot(&repo, dir.path(), "/data", "2026-01-01T00:00:00Z");
        let indexed = repo.clone().load_index().unwrap();
        let tree = indexed.read_tree(&snap.tree).unwrap();
        let c = repo.config().chunker;
        for node in &tree.nodes {
            let name = String::from_utf8(node.name.clone()).unwrap();
            let content = &files[&name];
            let whole: Vec<(ChunkId, u64)> = fastcdc::v2020::FastCDC::with_level_and_seed(
                content,
                c.min,
                c.avg,
                c.max,
                fastcdc::v2020::Normalization::Level1,
                repo.chunker_seed(),
            )
            .map(|ch| {
                let data = &content[ch.offset..ch.offset + ch.length];
                (ChunkId(repo.crypto().content_id(data)), ch.length as u64)
            })
            .collect();
            let NodeKind::File { content: extents } = &node.kind else {
                panic!("{name} is not a file");
            };
            let stored: Vec<(ChunkId, u64)> = extents
                .iter()
                .map(|e| (e.chunk.expect("no holes"), e.len))
                .collect();
            assert_eq!(stored, whole, "{name} (encrypted: {encrypted})");
        }
        let (restored, damaged) = testutil::restore_files(&repo, &snap);
        assert!(damaged.is_empty());
        assert_eq!(restored, files);
    }
}

#[test]
fn a_failing_pack_store_fails_the_snapshot_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // mem_repo's 48 KiB packs: these files make dozens of packs.
    testutil::write_tree(dir.path(), &testutil::files(9, 40, 64 * 1024));
    for fail_at in [0, 1, 5, 20] {
        let (mem, _) = testutil::mem_repo(false);
        let inner: DynBackend = mem.clone();
        let failing: DynBackend = Arc::new(FailPack {
            inner,
            packs_left: AtomicI64::new(fail_at),
        });
        let mut indexed = testutil::reopen(failing).load_index().unwrap();
        let r = backup(
            &mut indexed,
            dir.path(),
            &BackupOptions::default(),
            &Progress::default(),
        );
        let listed = mem.list(ObjectKind::Snapshot).unwrap();
        match r {
            Err(_) => assert!(
                listed.is_empty(),
                "pack {fail_at}: no snapshot object after a failure"
            ),
            Ok(o) => panic!(
                "pack {fail_at}: snapshot {} committed though a pack was lost",
                o.snapshot.id
            ),
        }
    }
}
