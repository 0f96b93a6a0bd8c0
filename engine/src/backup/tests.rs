use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::*;
use crate::backend::{Backend, DynBackend, Forward, ObjectKey};
use crate::error::BackendError;
use crate::repo::format::ObjectKind;
use crate::repo::id::ChunkId;
use crate::snapshot::Source;
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

#[test]
fn the_pre_scan_counts_what_the_snapshot_reads_and_the_counters_end_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let files = testutil::files(7, 30, 20 * 1024);
    testutil::write_tree(dir.path(), &files);
    let root = dir.path();
    // Excluded, a hole, a second name, a symlink and a folder of its own.
    std::fs::create_dir_all(root.join("cache/deep")).unwrap();
    std::fs::write(root.join("cache/deep/big"), vec![1u8; 100_000]).unwrap();
    std::fs::File::create(root.join("sparse"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let first = files.keys().next().unwrap();
    std::fs::hard_link(root.join(first), root.join("link")).unwrap();
    std::os::unix::fs::symlink("sparse", root.join("sym")).unwrap();
    let (_, repo) = testutil::mem_repo(false);
    let mut indexed = repo.load_index().unwrap();
    let opts = BackupOptions {
        excludes: vec!["cache".into()],
        ..BackupOptions::default()
    };
    let progress = Progress::default();
    progress.want_scan.store(true, Ordering::Relaxed);
    let s = backup(&mut indexed, root, &opts, &progress)
        .unwrap()
        .snapshot;
    assert!(progress.scan_done.load(Ordering::Relaxed));
    let got = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(got(&progress.scanned_files), s.summary.total_files);
    assert_eq!(got(&progress.scanned_bytes), s.summary.total_bytes);
    // The scan on its own (above, the snapshot may have overtaken it).
    let abs = std::fs::canonicalize(root).unwrap();
    let alone = Progress::default();
    let excludes = crate::tree::filter::Excludes::for_root(&opts.excludes, &abs).unwrap();
    let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(&abs).unwrap());
    let stop = std::sync::atomic::AtomicBool::new(false);
    super::scan::scan(&abs, &excludes, false, dev, &alone, &stop);
    assert!(alone.scan_done.load(Ordering::Relaxed));
    assert_eq!(got(&alone.scanned_files), s.summary.total_files);
    assert_eq!(got(&alone.scanned_bytes), s.summary.total_bytes);
    // Stopped at once: not done, so a display keeps saying "scanning".
    let stopped = Progress::default();
    stop.store(true, Ordering::Relaxed);
    super::scan::scan(&abs, &excludes, false, dev, &stopped, &stop);
    assert!(!stopped.scan_done.load(Ordering::Relaxed));
    assert_eq!(got(&progress.files), s.summary.total_files);
    assert_eq!(
        got(&progress.bytes),
        s.summary.total_bytes,
        "holes and links count"
    );
    // Without a display asking, no scan.
    let quiet = Progress::default();
    backup(&mut indexed, root, &opts, &quiet).unwrap();
    assert_eq!(got(&quiet.scanned_files), 0);
    assert!(!quiet.scan_done.load(Ordering::Relaxed));
}

/// A run that checkpoints by blob count drops the lists of the packs each
/// checkpoint named: its commit adds only the last packs to the index and
/// notes the checkpoints' files. The next snapshot through the same value
/// loads them first and stores nothing again; the repository opened anew
/// indexes every blob; a run that never loads them ends without them in
/// memory and loses nothing.
#[test]
fn checkpointed_blob_lists_are_read_back_only_for_a_next_snapshot() {
    let (_, repo) = testutil::mem_repo(false);
    let dir = tempfile::tempdir().unwrap();
    // 300 files of 2 KiB noise: a blob or two each, 20 or so to a 48 KiB
    // pack.
    testutil::write_tree(dir.path(), &testutil::files(7, 300, 2048));
    let mut indexed = repo.clone().load_index().unwrap();
    let opts = |source: &str| BackupOptions {
        source: Some(Source::Path {
            path: source.into(),
        }),
        checkpoints: Checkpoints {
            blobs: 50,
            ..Checkpoints::default()
        },
        ..BackupOptions::default()
    };
    let first = store(&indexed, dir.path(), &opts("/a"), &Progress::default()).unwrap();
    assert!(
        first.checkpoint_files.len() >= 3,
        "checkpoints by blob count: {}",
        first.checkpoint_files.len()
    );
    let in_hand: usize = first.new_packs.iter().map(|(_, e)| e.len()).sum();
    assert!(
        in_hand < 100,
        "only the last packs' lists are held: {in_hand}"
    );
    let first = first.commit(&mut indexed).unwrap().snapshot;
    assert!(first.summary.data_blobs_added >= 300);
    assert_eq!(
        indexed.index().len(),
        in_hand,
        "the checkpointed blobs wait"
    );

    // The next snapshot of the same run loads them and adds nothing.
    let second = backup(&mut indexed, dir.path(), &opts("/b"), &Progress::default()).unwrap();
    assert_eq!(second.snapshot.summary.data_blobs_added, 0);
    assert!(indexed.index().len() > 300, "every blob and the trees");

    // Opened anew, the repository indexes every blob, and both restore.
    let fresh = repo.clone().load_index().unwrap();
    assert_eq!(fresh.index().len(), indexed.index().len());
    let want = testutil::files(7, 300, 2048);
    for s in [&first, &second.snapshot] {
        let (files, damaged) = testutil::restore_files(&repo, s);
        assert!(damaged.is_empty());
        assert_eq!(files, want);
    }
}
