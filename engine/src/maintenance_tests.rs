//! Tests of prune, check and repair together, on in-memory repositories:
//! crash points, broken repositories that check must diagnose, and repairs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;

use crate::backend::faulty::FaultyBackend;
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, DynBackend, ObjectKey};
use crate::maintenance::check::{self, ProblemKind, ReadData};
use crate::maintenance::forget::{self, Selection};
use crate::maintenance::prune::{self, PruneOptions};
use crate::maintenance::repair;
use crate::maintenance::retention::{GroupBy, KeepPolicy};
use crate::repo::Repository;
use crate::repo::format::ObjectKind;
use crate::repo::id::{IndexId, PackId};
use crate::repo::lock::Access;
use crate::snapshot::Snapshot;
use crate::testutil::{self, exclusive, mem_repo, reopen, restore_files, stored_bytes};
use crate::tree::NodeKind;
use crate::tree::walk;

type Files = BTreeMap<String, Vec<u8>>;

/// Four versions of a folder, each changing part of the last; returns the
/// snapshots with the files each holds.
fn history(repo: &Repository) -> Vec<(Snapshot, Files)> {
    let dir = tempfile::tempdir().unwrap();
    let mut files = testutil::files(1, 12, 20_000);
    let mut out = Vec::new();
    for (v, time) in [
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
        "2026-01-04T00:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        if v > 0 {
            // Replace a third of the files and add one.
            for i in (v % 3..12).step_by(3) {
                files.insert(
                    format!("d{}/f{i:02}", i % 3),
                    testutil::noise(100 * v as u64 + i as u64, 20_000),
                );
            }
            files.insert(
                format!("new{v}"),
                testutil::noise(50_000 + v as u64, 30_000),
            );
        }
        testutil::write_tree(dir.path(), &files);
        out.push((
            testutil::snapshot(repo, dir.path(), "/data", time),
            files.clone(),
        ));
    }
    out
}

/// Keeps the last two snapshots; returns them with their files.
fn forget_all_but_two(
    repo: &Repository,
    backend: &DynBackend,
    hist: &[(Snapshot, Files)],
) -> Vec<(Snapshot, Files)> {
    let lock = exclusive(backend);
    let sel = Selection::Policy {
        keep: KeepPolicy {
            last: Some(2),
            ..KeepPolicy::default()
        },
        group_by: GroupBy::default(),
    };
    let r = forget::forget(repo, &lock, &sel, &TimeZone::UTC).unwrap();
    assert_eq!(r.removed, 2);
    hist[2..].to_vec()
}

/// A repository holding [`history`], of which [`forget_all_but_two`] has
/// forgotten the first two snapshots: garbage for prune. Returns the memory
/// behind it, the same as a backend, the repository and the kept snapshots.
fn forgotten_history(
    encrypted: bool,
) -> (
    Arc<MemoryBackend>,
    DynBackend,
    Repository,
    Vec<(Snapshot, Files)>,
) {
    let (mem, repo) = mem_repo(encrypted);
    let backend: DynBackend = mem.clone();
    let hist = history(&repo);
    let kept = forget_all_but_two(&repo, &backend, &hist);
    (mem, backend, repo, kept)
}

fn opts(max_unused: f64, grace: Duration) -> PruneOptions {
    PruneOptions {
        max_unused_percent: max_unused,
        grace,
        // Forgotten snapshots leave the trash at once.
        keep_deleted: Duration::ZERO,
        ..PruneOptions::default()
    }
}

/// What prune would do with `max_unused` percent tolerated and no grace.
fn dry_prune(repo: &Repository, max_unused: f64) -> prune::PruneReport {
    prune::prune(repo, Access::DryRun, &opts(max_unused, Duration::ZERO)).unwrap()
}

fn assert_restorable(repo: &Repository, kept: &[(Snapshot, Files)]) {
    for (s, files) in kept {
        let (got, damaged) = restore_files(repo, s);
        assert!(damaged.is_empty(), "{damaged:?}");
        assert_eq!(&got, files, "snapshot {}", s.id);
    }
}

fn assert_clean(repo: &Repository) -> check::CheckReport {
    let r = check::check(repo, ReadData::All).unwrap();
    assert!(r.ok, "{r:#?}");
    r
}

#[test]
fn prune_leaves_about_the_size_of_a_fresh_repository_with_the_kept_snapshots() {
    // Snapshot workers fill packs side by side, so which blobs share a pack
    // varies from run to run; in some layouts every pack is wholly kept or
    // wholly dropped and nothing needs repacking. Every run must meet every
    // other assertion; some run of each kind must repack.
    for encrypted in [false, true] {
        let mut repacked = 0;
        for _ in 0..8 {
            repacked += prune_to_the_size_of_a_fresh_repository(encrypted);
            if repacked > 0 {
                break;
            }
        }
        assert!(
            repacked > 0,
            "no layout needed repacking (encrypted: {encrypted})"
        );
    }
}

/// One run of the test above; returns how many packs prune repacked.
fn prune_to_the_size_of_a_fresh_repository(encrypted: bool) -> usize {
    {
        let (mem, repo) = mem_repo(encrypted);
        let backend: DynBackend = mem.clone();
        let hist = history(&repo);
        let before = stored_bytes(mem.as_ref());
        let kept = forget_all_but_two(&repo, &backend, &hist);

        let after_forget = stored_bytes(mem.as_ref());
        let dry = dry_prune(&repo, 0.0);
        assert_eq!(
            stored_bytes(mem.as_ref()),
            after_forget,
            "a dry run changes nothing"
        );
        let r = prune::prune(&repo, &exclusive(&backend), &opts(0.0, Duration::ZERO)).unwrap();
        assert_eq!(
            (dry.packs_deleted, dry.packs_repacked),
            (r.packs_deleted, r.packs_repacked)
        );
        assert!(r.packs_deleted > 0, "{r:#?}");
        assert!(r.bytes_freed > 0, "{r:#?}");
        assert_eq!(
            r.bytes_after,
            testutil::pack_and_index_bytes(mem.as_ref()),
            "{r:#?}"
        );
        assert_eq!(r.bytes_before - r.bytes_freed, r.bytes_after);
        assert_clean(&repo);
        assert_restorable(&repo, &kept);

        // A fresh repository holding the same two folder states.
        let (fresh_mem, fresh) = mem_repo(encrypted);
        let dir = tempfile::tempdir().unwrap();
        for (s, files) in &kept {
            testutil::write_tree(dir.path(), files);
            testutil::snapshot(&fresh, dir.path(), "/data", &s.time.to_string());
        }
        let (pruned, fresh) = (
            stored_bytes(mem.as_ref()) as f64,
            stored_bytes(fresh_mem.as_ref()) as f64,
        );
        assert!(
            before as f64 > 1.25 * fresh,
            "the test needs garbage to remove: {before} vs {fresh}"
        );
        assert!(
            (pruned - fresh).abs() / fresh < 0.05,
            "pruned {pruned} vs fresh {fresh}"
        );

        // Nothing left to do: a second prune changes nothing.
        let again = prune::prune(&repo, &exclusive(&backend), &opts(0.0, Duration::ZERO)).unwrap();
        assert_eq!(
            (
                again.packs_deleted,
                again.packs_repacked,
                again.index_files_written
            ),
            (0, 0, 0),
            "{again:#?}"
        );
        r.packs_repacked
    }
}

#[test]
fn max_unused_decides_between_keeping_and_repacking() {
    // As above: some pack layouts leave nothing to repack; try a few.
    let mut repacked = 0;
    for _ in 0..8 {
        let (_, _, repo, _) = forgotten_history(false);
        let lenient = dry_prune(&repo, 100.0);
        assert_eq!(lenient.packs_repacked, 0, "100% tolerates any waste");
        assert!(lenient.packs_deleted > 0);
        let strict = dry_prune(&repo, 0.0);
        assert_eq!(strict.packs_deleted, lenient.packs_deleted);
        repacked = strict.packs_repacked;
        if repacked > 0 {
            break;
        }
    }
    assert!(repacked > 0, "no layout left a pack partly used");
}

/// Runs prune through a backend that fails after `puts` puts and `deletes`
/// deletes; returns whether it completed.
fn interrupted_prune(mem: &Arc<MemoryBackend>, puts: i64, deletes: i64) -> bool {
    let faulty: DynBackend =
        Arc::new(FaultyBackend::new(mem.clone(), puts).fail_deletes_after(deletes));
    let repo = reopen(faulty);
    let lock = exclusive(&(mem.clone() as DynBackend));
    prune::prune(&repo, &lock, &opts(0.0, Duration::ZERO)).is_ok()
}

#[test]
fn prune_interrupted_at_any_write_or_delete_leaves_a_sound_repository() {
    // The size an uninterrupted prune reaches.
    let (mem, ..) = forgotten_history(false);
    assert!(interrupted_prune(&mem, -1, -1));
    let target = stored_bytes(mem.as_ref());

    let mut crash_points = 0;
    for fail_deletes in [false, true] {
        for n in 0..60 {
            let (puts, deletes) = if fail_deletes { (-1, n) } else { (n, -1) };
            let (mem, backend, repo, kept) = forgotten_history(false);
            if interrupted_prune(&mem, puts, deletes) {
                break; // past the last write (or delete): every crash point was tried
            }
            crash_points += 1;
            let r = check::check(&repo, ReadData::All).unwrap();
            assert!(r.ok, "puts {puts} deletes {deletes}: {r:#?}");
            assert_restorable(&repo, &kept);

            // The next prune finishes the job; within the grace period it
            // leaves the packs that no index names alone.
            let young = prune::prune(
                &repo,
                &exclusive(&backend),
                &opts(0.0, Duration::from_secs(3600)),
            )
            .unwrap();
            assert_eq!(young.unreferenced_packs_deleted, 0);
            assert_clean(&repo);
            prune::prune(&repo, &exclusive(&backend), &opts(0.0, Duration::ZERO)).unwrap();
            let r = assert_clean(&repo);
            assert!(
                r.warnings.is_empty(),
                "puts {puts} deletes {deletes}: {:?}",
                r.warnings
            );
            assert_restorable(&repo, &kept);
            let size = stored_bytes(mem.as_ref());
            assert!(
                size as f64 <= target as f64 * 1.02,
                "puts {puts} deletes {deletes}: {size} vs {target}"
            );
        }
    }
    assert!(
        crash_points >= 10,
        "only {crash_points} crash points were exercised"
    );
}

#[test]
fn young_unreferenced_packs_are_kept_and_old_ones_deleted() {
    let (mem, repo) = mem_repo(false);
    let backend: DynBackend = mem.clone();
    let dir = tempfile::tempdir().unwrap();
    testutil::write_tree(dir.path(), &testutil::files(5, 3, 5000));
    let s = testutil::snapshot(&repo, dir.path(), "/x", "2026-01-01T00:00:00Z");
    // A pack written by a snapshot still running: no index names it yet.
    let mut pb = crate::store::pack::PackBuilder::new(false, 0);
    let raw = testutil::noise(77, 3000);
    let id = repo.crypto().content_id(&raw);
    let (stored, flags) = crate::store::blob::encode(
        repo.crypto(),
        3,
        crate::store::blob::BlobKind::Data,
        &id,
        &raw,
    );
    pb.add(
        crate::store::blob::BlobEntry {
            kind: crate::store::blob::BlobKind::Data,
            flags,
            id,
            offset: 0,
            stored_len: 0,
            raw_len: raw.len() as u32,
        },
        &stored,
    );
    let fp = pb.finish(repo.crypto());
    let key = ObjectKey::new(ObjectKind::Pack, fp.id.to_hex());
    mem.put(&key, &fp.bytes).unwrap();

    let r = check::check(&repo, ReadData::None).unwrap();
    assert!(r.ok, "an unreferenced pack is a warning, not damage");
    assert_eq!(
        r.warnings
            .iter()
            .map(|w| (w.kind, w.pack))
            .collect::<Vec<_>>(),
        vec![(ProblemKind::UnreferencedPack, Some(fp.id))]
    );

    let grace = Duration::from_secs(6 * 3600);
    let r = prune::prune(&repo, &exclusive(&backend), &opts(10.0, grace)).unwrap();
    assert_eq!(
        (r.unreferenced_packs_kept, r.unreferenced_packs_deleted),
        (1, 0)
    );
    assert!(mem.exists(&key).unwrap());
    mem.set_modified(
        &key,
        jiff::Timestamp::now() - jiff::SignedDuration::from_hours(7),
    );
    let r = prune::prune(&repo, &exclusive(&backend), &opts(10.0, grace)).unwrap();
    assert_eq!(
        (r.unreferenced_packs_kept, r.unreferenced_packs_deleted),
        (0, 1)
    );
    assert!(!mem.exists(&key).unwrap());
    assert_restorable(&repo, &[(s, testutil::files(5, 3, 5000))]);
}

/// The packs holding each file's chunks, for choosing what to damage.
fn packs_of_files(repo: &Repository, s: &Snapshot) -> BTreeMap<String, BTreeSet<PackId>> {
    let idx = repo.clone().load_index().unwrap();
    let mut out = BTreeMap::new();
    walk::walk(&idx, &s.tree, "", &mut |path, node| {
        if matches!(node.kind, NodeKind::File { .. }) {
            let packs = node
                .chunks()
                .map(|c| idx.index().get(&c.0).unwrap().pack)
                .collect();
            out.insert(path.to_string(), packs);
        }
        Ok(())
    })
    .unwrap();
    out
}

/// Files of `s` whose content includes chunk `id`.
fn files_with_chunk(repo: &Repository, s: &Snapshot, id: &crate::repo::id::Id) -> BTreeSet<String> {
    let idx = repo.clone().load_index().unwrap();
    let mut out = BTreeSet::new();
    walk::walk(&idx, &s.tree, "", &mut |path, node| {
        if node.chunks().any(|c| c.0 == *id) {
            out.insert(path.to_string());
        }
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn check_names_the_pack_snapshot_and_files_of_a_flipped_byte() {
    let (mem, repo) = mem_repo(true);
    let hist = history(&repo);
    let (s, _) = &hist[0];
    let pack = *packs_of_files(&repo, s)["/d1/f04"].iter().next().unwrap();
    let idx = repo.clone().load_index().unwrap();
    let loc = idx
        .index()
        .iter()
        .find(|l| l.pack == pack && l.entry.kind == crate::store::blob::BlobKind::Data)
        .unwrap();
    let key = ObjectKey::new(ObjectKind::Pack, pack.to_hex());
    mem.tamper(&key, |b| b[loc.entry.offset as usize + 5] ^= 0x40);

    assert!(
        check::check(&repo, ReadData::None).unwrap().ok,
        "structure alone cannot see it"
    );
    let r = check::check(&repo, ReadData::All).unwrap();
    assert!(!r.ok);
    assert!(
        r.errors.iter().any(|e| e.kind == ProblemKind::BlobDamaged
            && e.pack == Some(pack)
            && e.blob == Some(loc.entry.id)),
        "{r:#?}"
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.kind == ProblemKind::PackHashMismatch && e.pack == Some(pack))
    );
    // Workers reuse their buffers from pack to pack: no other pack is blamed.
    assert!(
        r.errors.iter().all(|e| e.pack == Some(pack)),
        "{:#?}",
        r.errors
    );
    for (snap, _) in &hist {
        let expected = files_with_chunk(&repo, snap, &loc.entry.id);
        let named: BTreeSet<String> = r
            .damaged_snapshots
            .iter()
            .filter(|d| d.id == snap.id)
            .flat_map(|d| d.paths.iter().map(|p| p.path.clone()))
            .collect();
        assert_eq!(named, expected, "snapshot {}", snap.id);
    }
    let dmg = r
        .damaged_snapshots
        .iter()
        .find(|d| d.id == s.id)
        .expect("snapshot named");
    assert!(
        dmg.paths.iter().all(|p| p.reason.contains(&pack.short())),
        "{:?}",
        dmg.paths
    );

    // The parts of a subset cover every pack exactly once.
    let mut read = 0;
    for n in 1..=3 {
        read += check::check(&repo, ReadData::Part { n, k: 3 })
            .unwrap()
            .packs_read;
    }
    assert_eq!(read, r.packs_read);
    assert_eq!(r.packs_read, mem.list(ObjectKind::Pack).unwrap().len());
}

#[test]
fn check_names_a_truncated_index_file_and_a_missing_pack() {
    let (mem, repo) = mem_repo(false);
    let hist = history(&repo);
    assert_clean(&repo);
    // Truncate the index file written by the last snapshot.
    let last = &hist[3].0;
    let by_file = packs_of_files(&repo, last);
    let new_packs: BTreeSet<PackId> = by_file.get("/new3").unwrap().clone();
    let files = repo.read_index_files().unwrap();
    let (victim, _) = files
        .iter()
        .find(|(_, f)| f.packs.iter().any(|(p, _)| new_packs.contains(p)))
        .unwrap();
    let key = ObjectKey::new(ObjectKind::Index, victim.to_hex());
    mem.tamper(&key, |b| b.truncate(b.len() / 2));
    let r = check::check(&repo, ReadData::None).unwrap();
    assert!(!r.ok);
    assert!(
        r.errors
            .iter()
            .any(|e| e.kind == ProblemKind::IndexDamaged && e.index == Some(*victim)),
        "{:?}",
        r.errors
    );
    // The index file also held the snapshot's trees: its whole content is lost.
    let dmg = r
        .damaged_snapshots
        .iter()
        .find(|d| d.id == last.id)
        .expect("last snapshot named");
    assert_eq!(dmg.paths.len(), 1, "{:?}", dmg.paths);
    assert!(
        dmg.paths[0].path == "/" && dmg.paths[0].reason.contains("not in the index"),
        "{:?}",
        dmg.paths
    );
    assert!(
        r.damaged_snapshots.iter().all(|d| d.id != hist[0].0.id),
        "the first snapshot does not use that index file"
    );
    assert!(
        prune::prune(
            &repo,
            &exclusive(&(mem.clone() as DynBackend)),
            &opts(10.0, Duration::ZERO)
        )
        .is_err(),
        "prune refuses a damaged index"
    );

    // Repair the index from the packs: everything is whole again.
    let rep = repair::repair_index(&repo, &exclusive(&(mem.clone() as DynBackend))).unwrap();
    assert!(rep.packs_unreadable.is_empty());
    assert_clean(&repo);
    assert_restorable(&repo, &hist);

    // A missing pack.
    let (_, gone) = by_file.iter().find(|(f, _)| f.as_str() == "/new3").unwrap();
    let gone = *gone.iter().next().unwrap();
    mem.delete(&ObjectKey::new(ObjectKind::Pack, gone.to_hex()))
        .unwrap();
    let r = check::check(&repo, ReadData::None).unwrap();
    assert!(
        r.errors
            .iter()
            .any(|e| e.kind == ProblemKind::PackMissing && e.pack == Some(gone)),
        "{:?}",
        r.errors
    );
    let dmg = r
        .damaged_snapshots
        .iter()
        .find(|d| d.id == last.id)
        .unwrap();
    assert!(
        dmg.paths
            .iter()
            .any(|p| p.path == "/new3" && p.reason.contains("missing")),
        "{:?}",
        dmg.paths
    );
}

#[test]
fn repair_index_rebuilds_a_repository_without_index_files() {
    let (mem, repo) = mem_repo(true);
    let hist = history(&repo);
    let ids: Vec<IndexId> = repo
        .read_index_files()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for id in &ids {
        mem.delete(&ObjectKey::new(ObjectKind::Index, id.to_hex()))
            .unwrap();
    }
    let r = check::check(&repo, ReadData::None).unwrap();
    assert_eq!(
        r.damaged_snapshots.len(),
        4,
        "every snapshot is unreadable without an index"
    );
    let rep = repair::repair_index(&repo, &exclusive(&(mem.clone() as DynBackend))).unwrap();
    assert_eq!(rep.packs, mem.list(ObjectKind::Pack).unwrap().len());
    assert_eq!(rep.index_files_written, 1);
    assert_clean(&repo);
    assert_restorable(&repo, &hist);
}

#[test]
fn repair_snapshots_writes_a_copy_without_the_lost_files() {
    let (mem, repo) = mem_repo(false);
    let backend: DynBackend = mem.clone();
    let hist = history(&repo);
    let (s, files) = &hist[3];
    let by_file = packs_of_files(&repo, s);
    let gone = *by_file["/new3"].iter().next().unwrap();
    mem.delete(&ObjectKey::new(ObjectKind::Pack, gone.to_hex()))
        .unwrap();
    let lost: BTreeSet<String> = by_file
        .iter()
        .filter(|(_, p)| p.contains(&gone))
        .map(|(f, _)| f.clone())
        .collect();

    let dry = repair::repair_snapshots(&repo, Access::DryRun, false).unwrap();
    assert_eq!(
        repo.snapshots().unwrap().len(),
        4,
        "a dry run writes nothing"
    );
    let r = repair::repair_snapshots(&repo, &exclusive(&backend), false).unwrap();
    assert_eq!(dry.repaired.len(), r.repaired.len());
    let fixed = r
        .repaired
        .iter()
        .find(|x| x.original == s.id)
        .expect("last snapshot repaired");
    let got_lost: BTreeSet<String> = fixed.lost.iter().map(|d| d.path.clone()).collect();
    assert_eq!(got_lost, lost);

    let copy = repo.load_snapshot(&fixed.repaired.unwrap()).unwrap();
    assert!(copy.tags.contains(&repair::REPAIRED_TAG.to_string()));
    assert_eq!(copy.labels[repair::REPAIRED_FROM_LABEL], s.id.to_hex());
    let (restored, damaged) = restore_files(&repo, &copy);
    assert!(damaged.is_empty(), "{damaged:?}");
    let expected: Files = files
        .iter()
        .filter(|(f, _)| !lost.contains(&format!("/{f}")))
        .map(|(f, c)| (f.clone(), c.clone()))
        .collect();
    assert_eq!(restored, expected);
    assert!(repo.load_snapshot(&s.id).is_ok(), "the original stays");

    let again = repair::repair_snapshots(&repo, &exclusive(&backend), false).unwrap();
    assert!(
        again.repaired.is_empty() && again.already_repaired.contains(&s.id),
        "{again:#?}"
    );

    // Once the damaged originals are forgotten, prune drops the missing pack
    // from the index and check is clean.
    let originals: Vec<_> = r.repaired.iter().map(|x| x.original).collect();
    forget::forget(
        &repo,
        &exclusive(&backend),
        &Selection::Ids(originals),
        &TimeZone::UTC,
    )
    .unwrap();
    let p = prune::prune(&repo, &exclusive(&backend), &opts(10.0, Duration::ZERO)).unwrap();
    assert_eq!(p.missing_packs_forgotten, 1);
    assert_clean(&repo);
}

#[test]
fn prune_refuses_when_a_kept_snapshot_needs_a_missing_pack() {
    let (mem, repo) = mem_repo(false);
    let hist = history(&repo);
    let by_file = packs_of_files(&repo, &hist[3].0);
    let gone = *by_file["/new3"].iter().next().unwrap();
    mem.delete(&ObjectKey::new(ObjectKind::Pack, gone.to_hex()))
        .unwrap();
    let before = stored_bytes(mem.as_ref());
    let err = prune::prune(
        &repo,
        &exclusive(&(mem.clone() as DynBackend)),
        &opts(0.0, Duration::ZERO),
    )
    .unwrap_err();
    assert!(err.to_string().contains(&gone.to_hex()), "{err}");
    assert_eq!(stored_bytes(mem.as_ref()), before, "nothing was changed");
}
