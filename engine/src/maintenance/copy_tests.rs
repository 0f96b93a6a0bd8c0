//! `copy` between in-memory repositories: every pairing of encryption,
//! interruption at every write, what is refused.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::backend::faulty::FaultyBackend;
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, DynBackend};
use crate::maintenance::check::{self, ReadData};
use crate::maintenance::copy::{CopyProgress, CopyReport, Selection, copy};
use crate::repo::format::ObjectKind;
use crate::repo::id::PackId;
use crate::repo::{ChunkerParams, InitOptions, Repository};
use crate::snapshot::Snapshot;
use crate::testutil::{self, cheap_kdf, mem_repo, reopen, restore_files};

type Files = BTreeMap<String, Vec<u8>>;

/// Three versions of a folder in `repo`, each changing part of the last.
fn history(repo: &Repository) -> Vec<(Snapshot, Files)> {
    let dir = tempfile::tempdir().unwrap();
    let mut files = testutil::files(7, 10, 20_000);
    let mut out = Vec::new();
    for v in 0..3u64 {
        if v > 0 {
            files.insert(format!("d0/f{v:02}"), testutil::noise(900 + v, 25_000));
            files.insert(format!("new{v}"), testutil::half_compressible(v, 30_000));
        }
        testutil::write_tree(dir.path(), &files);
        let time = format!("2026-02-0{}T00:00:00Z", v + 1);
        out.push((
            testutil::snapshot(repo, dir.path(), "/data", &time),
            files.clone(),
        ));
    }
    out
}

/// A target in memory: encrypted with its own password (so its own master
/// key) or not, with other chunk and pack sizes than the source.
fn target(encrypted: bool) -> (Arc<MemoryBackend>, Repository) {
    let mem = Arc::new(MemoryBackend::new());
    let opts = InitOptions {
        password: encrypted.then(|| b"pw".to_vec()),
        chunker: ChunkerParams {
            min: 2048,
            avg: 8192,
            max: 32768,
            ..ChunkerParams::default()
        },
        pack_size: 64 * 1024,
        kdf: cheap_kdf(),
        ..InitOptions::default()
    };
    let repo = Repository::init(mem.clone(), opts).unwrap();
    (mem, repo)
}

fn run(src: &Repository, dst: &Repository, sel: &Selection) -> crate::Result<CopyReport> {
    let src = src.clone().load_index()?;
    let dst = dst.clone().load_index()?;
    copy(&src, &dst, sel, &CopyProgress::default())
}

/// The ids of every blob in every pack of `repo`, as often as stored.
fn stored_blobs(repo: &Repository) -> Vec<crate::repo::id::Id> {
    let be = repo.backend();
    let mut ids = Vec::new();
    for (name, size) in be.list(ObjectKind::Pack).unwrap() {
        let id: PackId = name.parse().unwrap();
        for e in crate::store::pack::read_trailer(be.as_ref(), repo.crypto(), &id, size).unwrap() {
            ids.push(e.id);
        }
    }
    ids
}

/// The target is sound and each copy restores the files of its original.
fn assert_copies_restore(dst: &Repository, hist: &[(Snapshot, Files)]) {
    let r = check::check(dst, ReadData::All).unwrap();
    assert!(r.ok, "check of the target: {r:?}");
    let copies = dst.snapshots().unwrap();
    assert_eq!(copies.len(), hist.len());
    for (orig, files) in hist {
        let c = copies
            .iter()
            .find(|c| c.original == Some(orig.id))
            .expect("a copy of every snapshot");
        assert_eq!(c.time, orig.time);
        assert_eq!(c.source, orig.source);
        let (got, damaged) = restore_files(dst, c);
        assert!(damaged.is_empty(), "{damaged:?}");
        assert_eq!(&got, files, "copy of {}", orig.id);
    }
    let ids = stored_blobs(dst);
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a blob was stored twice");
}

#[test]
fn copies_restore_bit_exact_between_every_pairing_of_encryption() {
    for (src_enc, dst_enc) in [(false, false), (false, true), (true, false), (true, true)] {
        let (_, src) = mem_repo(src_enc);
        let hist = history(&src);
        let (_, dst) = target(dst_enc);
        let r = run(&src, &dst, &Selection::All).unwrap();
        assert_eq!(r.copied.len(), 3, "{src_enc} -> {dst_enc}");
        // Keys differ unless both are unencrypted: then ids are re-made.
        assert_eq!(r.reencoded, src_enc || dst_enc);
        assert!(r.blobs_copied > 0 && r.bytes_sent > 0);
        assert_copies_restore(&dst, &hist);
        // Again: nothing to do, nothing sent.
        let again = run(&src, &dst, &Selection::All).unwrap();
        assert_eq!(
            (again.copied.len(), again.blobs_copied, again.bytes_sent),
            (0, 0, 0)
        );
        assert_eq!(again.already_there.len(), 3);
        // The source is untouched by all this.
        assert_eq!(src.snapshots().unwrap().len(), 3);
        assert!(
            src.snapshots()
                .unwrap()
                .iter()
                .all(|s| s.original.is_none())
        );
    }
}

#[test]
fn a_copy_of_a_copy_is_matched_by_the_first_snapshot() {
    let (_, a) = mem_repo(false);
    let hist = history(&a);
    let (_, b) = target(true);
    let (_, c) = target(false);
    run(&a, &b, &Selection::All).unwrap();
    run(&b, &c, &Selection::All).unwrap();
    // c already holds copies of a's snapshots, through b.
    let r = run(&a, &c, &Selection::All).unwrap();
    assert_eq!((r.copied.len(), r.already_there.len()), (0, 3));
    let copies = c.snapshots().unwrap();
    assert!(
        hist.iter()
            .all(|(s, _)| copies.iter().any(|c| c.original == Some(s.id)))
    );
    // Back into a: nothing, a has the originals.
    let r = run(&c, &a, &Selection::All).unwrap();
    assert_eq!(r.copied.len(), 0);
}

#[test]
fn an_interrupted_copy_resumes_without_storing_a_blob_twice() {
    for dst_enc in [false, true] {
        let (_, src) = mem_repo(false);
        let hist = history(&src);
        let mut writes = 0;
        loop {
            let (mem, dst) = target(dst_enc);
            let faulty: DynBackend = Arc::new(FaultyBackend::new(mem.clone(), writes));
            let first = run(&src, &reopen(faulty), &Selection::All);
            let r = run(&src, &reopen(mem.clone()), &Selection::All).unwrap();
            assert_copies_restore(&dst, &hist);
            if first.is_ok() {
                assert_eq!(r.copied.len(), 0);
                break;
            }
            writes += 1;
        }
        assert!(writes > 10, "only {writes} writes: the test covers little");
    }
}

#[test]
fn selections_copy_only_what_they_name_and_refuse_what_matches_nothing() {
    let (_, src) = mem_repo(false);
    let hist = history(&src);
    let (_, dst) = target(false);
    let first = hist[0].0.id.to_hex()[..10].to_string();
    let r = run(&src, &dst, &Selection::Specs(vec![first.clone(), first])).unwrap();
    assert_eq!(r.copied.len(), 1);
    assert_eq!(dst.snapshots().unwrap()[0].original, Some(hist[0].0.id));
    let e = run(&src, &dst, &Selection::Specs(vec!["ffffffff".into()])).unwrap_err();
    assert!(e.to_string().contains("ffffffff"), "{e}");
    let e = run(&src, &dst, &Selection::Source("/elsewhere".into())).unwrap_err();
    assert!(e.to_string().contains("/elsewhere"), "{e}");
    let r = run(&src, &dst, &Selection::Source("/data/".into())).unwrap();
    assert_eq!((r.copied.len(), r.already_there.len()), (2, 1));
    // The second copy's parent is the first copy, in the target.
    let copies = dst.snapshots().unwrap();
    assert_eq!(copies[1].parent, Some(copies[0].id));
}

#[test]
fn a_repository_is_not_copied_into_itself() {
    let (mem, src) = mem_repo(false);
    history(&src);
    let e = run(&src, &reopen(mem.clone()), &Selection::All).unwrap_err();
    assert!(e.to_string().contains("same repository"), "{e}");
    assert_eq!(mem.list(ObjectKind::Snapshot).unwrap().len(), 3);
}

#[test]
fn a_target_made_with_the_sources_chunker_cuts_alike() {
    for (src_enc, dst_enc) in [(false, false), (true, true), (true, false), (false, true)] {
        let (_, src) = mem_repo(src_enc);
        let mem = Arc::new(MemoryBackend::new());
        let opts = InitOptions {
            password: dst_enc.then(|| b"pw".to_vec()),
            chunker: ChunkerParams {
                seed: Some(src.chunker_seed()),
                ..src.config().chunker
            },
            kdf: cheap_kdf(),
            ..InitOptions::default()
        };
        Repository::init(mem.clone(), opts).unwrap();
        let dst = reopen(mem.clone());
        assert_eq!(
            dst.chunker_seed(),
            src.chunker_seed(),
            "{src_enc} -> {dst_enc}"
        );
        let config =
            String::from_utf8_lossy(&mem.get(&crate::backend::ObjectKey::config()).unwrap())
                .into_owned();
        // An encrypted target does not show the seed.
        assert_eq!(
            config.contains(&src.chunker_seed().to_string()),
            !dst_enc,
            "{config}"
        );
    }
}
